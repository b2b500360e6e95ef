"""Which experiment a checkpoint belongs to, read from its tensors.

A checkpoint's names and shapes fix the architecture: MaskFormer or Mask2Former (whose decoder
has learned query features, `sem_seg_head.predictor.query_feat.weight`), the backbone (ResNet
depth and stem, or Swin's width, depths, heads and window), the pixel decoder, the predictor's
input, queries, layers and widths, and the class count. Attention heads leave no trace in the
shapes of `nn.MultiheadAttention`; Mask2Former's deformable encoder shows its heads in the
width of `sampling_offsets` (heads x 3 levels x 4 points x 2). `checkpoint_signature` reads
these from the original's state-dict names, `config_signature` derives the same from a
`ModelConfig`, and `infer_experiment` returns the registered experiment whose signature is the
checkpoint's (an error naming the candidates when several fit, or the closest when none does).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from maskformer.config import ModelConfig
from maskformer.errors import CheckpointError

_PREDICTOR = "sem_seg_head.predictor"
_DECODER = "sem_seg_head.pixel_decoder"
# Mask2Former's deformable attention: levels (res3..res5) and sampling points per head and
# level, both fixed in the original.
_LEVELS, _POINTS = 3, 4


def _count(state: Mapping[str, Any], pattern: str) -> int:
    """How many distinct values the one group of `pattern` takes among the names."""
    regex = re.compile(pattern)
    return len({m[1] for m in map(regex.match, state) if m})


def _shape(state: Mapping[str, Any], key: str) -> tuple[int, ...]:
    if key not in state:
        raise CheckpointError(f"the checkpoint has no {key}: not a MaskFormer or Mask2Former "
                              "checkpoint in the original's names")
    return tuple(np.shape(state[key]))


def checkpoint_signature(state: Mapping[str, Any]) -> dict[str, Any]:
    """The architecture of a checkpoint in the original's (new-style) state-dict names."""
    signature: dict[str, Any] = {}
    if "backbone.patch_embed.proj.weight" in state:
        proj = _shape(state, "backbone.patch_embed.proj.weight")  # [C, 3, p, p]
        depths = [_count(state, rf"backbone\.layers\.{s}\.blocks\.(\d+)\.") for s in range(4)]
        tables = [_shape(state, f"backbone.layers.{s}.blocks.0.attn.relative_position_bias_table")
                  for s in range(4)]  # [(2w - 1)^2, heads]
        signature["backbone"] = {
            "type": "swin", "embed_dim": proj[0], "patch_size": proj[2], "depths": depths,
            "num_heads": [t[1] for t in tables],
            "window_size": (math.isqrt(tables[0][0]) + 1) // 2}
        res_channels = [proj[0] * 2**s for s in range(4)]
    else:
        deeplab = "backbone.stem.conv3.weight" in state
        stem = _shape(state, f"backbone.stem.conv{3 if deeplab else 1}.weight")
        blocks = [_count(state, rf"backbone\.res{s + 2}\.(\d+)\.") for s in range(4)]
        res_channels = [_shape(state, f"backbone.res{s + 2}.0.conv3.weight")[0] for s in range(4)]
        signature["backbone"] = {"type": "resnet", "stem_type": "deeplab" if deeplab else "basic",
                                 "stem_channels": stem[0], "blocks": blocks,
                                 "channels": res_channels}
    if f"{_PREDICTOR}.query_feat.weight" in state:
        signature.update(_mask2former_signature(state))
        return signature
    encoder_layers = _count(state, rf"{_DECODER}\.transformer\.encoder\.layers\.(\d+)\.")
    query = _shape(state, f"{_PREDICTOR}.query_embed.weight")  # [Q, hidden]
    proj = f"{_PREDICTOR}.input_proj.weight"
    signature.update({
        "architecture": "maskformer",
        "num_classes": _shape(state, f"{_PREDICTOR}.class_embed.bias")[0] - 1,
        "pixel_decoder": "transformer_encoder" if encoder_layers else "fpn",
        "pixel_decoder_enc_layers": encoder_layers,
        "conv_dim": _shape(state, f"{_DECODER}.layer_4.weight")[0],
        "mask_dim": _shape(state, f"{_DECODER}.mask_features.weight")[0],
        "num_queries": query[0],
        "hidden_dim": query[1],
        "dec_layers": _count(state, rf"{_PREDICTOR}\.transformer\.decoder\.layers\.(\d+)\."),
        "predictor_in_channels": _shape(state, proj)[1] if proj in state else query[1],
    })
    return signature


def _mask2former_signature(state: Mapping[str, Any]) -> dict[str, Any]:
    """The heads of a Mask2Former checkpoint (original names)."""
    encoder = f"{_DECODER}.transformer.encoder.layers"
    encoder_layers = _count(state, rf"{re.escape(encoder)}\.(\d+)\.")
    # [heads * levels * points * 2, C]: the original fixes 3 levels and 4 points.
    offsets = (_shape(state, f"{encoder}.0.self_attn.sampling_offsets.weight")[0]
               if encoder_layers else 0)
    query = _shape(state, f"{_PREDICTOR}.query_feat.weight")  # [Q, hidden]
    proj = f"{_PREDICTOR}.input_proj.0.weight"
    return {
        "architecture": "mask2former",
        "num_classes": _shape(state, f"{_PREDICTOR}.class_embed.bias")[0] - 1,
        "pixel_decoder": "msdeform",
        "pixel_decoder_enc_layers": encoder_layers,
        "pixel_decoder_num_heads": offsets // (_LEVELS * _POINTS * 2),
        "pixel_decoder_dim_feedforward": (_shape(state, f"{encoder}.0.linear1.weight")[0]
                                          if encoder_layers else 0),
        "conv_dim": _shape(state, f"{_DECODER}.mask_features.weight")[1],
        "mask_dim": _shape(state, f"{_DECODER}.mask_features.weight")[0],
        "num_queries": query[0],
        "hidden_dim": query[1],
        "dim_feedforward": _shape(state,
                                  f"{_PREDICTOR}.transformer_ffn_layers.0.linear1.weight")[0],
        "dec_layers": _count(state, rf"{_PREDICTOR}\.transformer_ffn_layers\.(\d+)\."),
        # With ENFORCE_INPUT_PROJ the projections exist though conv_dim = hidden_dim.
        "predictor_input_proj": proj in state,
        "predictor_in_channels": _shape(state, proj)[1] if proj in state else query[1],
    }


def _mask2former_config_signature(model: ModelConfig) -> dict[str, Any]:
    projected = model.conv_dim != model.hidden_dim or model.enforce_input_proj
    layers = model.pixel_decoder_enc_layers
    return {
        "architecture": "mask2former",
        "num_classes": model.num_classes,
        "pixel_decoder": model.pixel_decoder,
        "pixel_decoder_enc_layers": layers,
        "pixel_decoder_num_heads": model.pixel_decoder_num_heads if layers else 0,
        "pixel_decoder_dim_feedforward": model.pixel_decoder_dim_feedforward if layers else 0,
        "conv_dim": model.conv_dim,
        "mask_dim": model.mask_dim,
        "num_queries": model.num_queries,
        "hidden_dim": model.hidden_dim,
        "dim_feedforward": model.dim_feedforward,
        "dec_layers": model.dec_layers,
        "predictor_input_proj": projected,
        "predictor_in_channels": model.conv_dim if projected else model.hidden_dim,
    }


def config_signature(model: ModelConfig) -> dict[str, Any]:
    """What `checkpoint_signature` reads from a checkpoint of this model configuration."""
    bb = model.backbone
    signature: dict[str, Any] = {}
    if bb.type == "swin":
        swin = bb.swin
        signature["backbone"] = {
            "type": "swin", "embed_dim": swin.embed_dim, "patch_size": swin.patch_size,
            "depths": list(swin.depths), "num_heads": list(swin.num_heads),
            "window_size": swin.window_size}
        res_channels = swin.stage_channels()
    else:
        res_channels = [out for _, out in bb.stage_widths()]
        signature["backbone"] = {"type": "resnet", "stem_type": bb.stem_type,
                                 "stem_channels": bb.stem_channels, "blocks": bb.blocks(),
                                 "channels": res_channels}
    if model.architecture == "mask2former":
        signature.update(_mask2former_config_signature(model))
        return signature
    source = model.predictor_input()
    in_channels = (model.conv_dim if source == "transformer_encoder"
                   else res_channels[int(source[-1]) - 2])
    projected = in_channels != model.hidden_dim or model.enforce_input_proj
    encoder = model.pixel_decoder == "transformer_encoder"
    signature.update({
        "architecture": "maskformer",
        "num_classes": model.num_classes,
        "pixel_decoder": model.pixel_decoder,
        "pixel_decoder_enc_layers": model.pixel_decoder_enc_layers if encoder else 0,
        "conv_dim": model.conv_dim,
        "mask_dim": model.mask_dim,
        "num_queries": model.num_queries,
        "hidden_dim": model.hidden_dim,
        "dec_layers": model.dec_layers,
        "predictor_in_channels": in_channels if projected else model.hidden_dim,
    })
    return signature


def _differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    keys = sorted(set(a) | set(b))
    return [key for key in keys if a.get(key) != b.get(key)]


def matching_experiments(signature: dict[str, Any],
                         names: list[str] | None = None) -> tuple[list[str], dict[str, list[str]]]:
    """The experiments whose model has `signature`, and for the others what differs."""
    from maskformer.experiments import get_experiment, list_experiments

    matches, differences = [], {}
    for name in names if names is not None else list_experiments():
        different = _differences(config_signature(get_experiment(name).model), signature)
        if different:
            differences[name] = different
        else:
            matches.append(name)
    return matches, differences


def describe_signature(signature: dict[str, Any]) -> str:
    bb = signature["backbone"]
    if bb["type"] == "swin":
        backbone = (f"Swin (embed_dim {bb['embed_dim']}, depths {bb['depths']}, "
                    f"window {bb['window_size']})")
    else:
        backbone = f"ResNet ({bb['stem_type']} stem, blocks {bb['blocks']})"
    architecture = "Mask2Former" if signature.get("architecture") == "mask2former" else "MaskFormer"
    return (f"{architecture}, {backbone}, {signature['pixel_decoder']} pixel decoder, "
            f"{signature['num_classes']} classes, {signature['num_queries']} queries")


def infer_experiment(signature: dict[str, Any], source: str = "checkpoint",
                     names: list[str] | None = None) -> str:
    """The one registered experiment with this architecture.

    Raises:
        CheckpointError: naming the candidates when several fit, or the closest experiments
            and what differs when none does.
    """
    matches, differences = matching_experiments(signature, names)
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise CheckpointError(f"{source}: several experiments fit this checkpoint "
                              f"({describe_signature(signature)}): {', '.join(matches)}; "
                              "choose one with --experiment")
    closest = sorted(differences.items(), key=lambda item: len(item[1]))[:3]
    hints = "; ".join(f"{name} differs in {', '.join(diff)}" for name, diff in closest)
    raise CheckpointError(f"{source}: no registered experiment fits this checkpoint "
                          f"({describe_signature(signature)}); closest: {hints}; give "
                          "--experiment and --set the differing model.* keys")
