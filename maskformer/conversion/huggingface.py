"""Hugging Face `transformers` MaskFormer (ResNet backbone) into the Keras model.

HF names are rewritten to the original's state-dict names (separate q/k/v projections are
stacked into the fused `in_proj`), then `detectron2.assign_weights` sets the model strictly.
The model configuration comes from HF's `config.json`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from maskformer.config import BackboneConfig, ModelConfig
from maskformer.conversion.safe_pickle import CheckpointError

# HF FPN layer i runs coarse to fine: res4, res3, res2, i.e. the original's index 3 - i.
_RULES = [
    (r"model\.pixel_level_module\.encoder\.embedder\.embedder\.convolution\.(.*)",
     r"backbone.stem.conv1.\1"),
    (r"model\.pixel_level_module\.encoder\.embedder\.embedder\.normalization\.(.*)",
     r"backbone.stem.conv1.norm.\1"),
    (r"model\.pixel_level_module\.encoder\.encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut"
     r"\.convolution\.(.*)", lambda m: f"backbone.res{int(m[1]) + 2}.{m[2]}.shortcut.{m[3]}"),
    (r"model\.pixel_level_module\.encoder\.encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut"
     r"\.normalization\.(.*)", lambda m: f"backbone.res{int(m[1]) + 2}.{m[2]}.shortcut.norm.{m[3]}"),
    (r"model\.pixel_level_module\.encoder\.encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.(\d)"
     r"\.convolution\.(.*)",
     lambda m: f"backbone.res{int(m[1]) + 2}.{m[2]}.conv{int(m[3]) + 1}.{m[4]}"),
    (r"model\.pixel_level_module\.encoder\.encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.(\d)"
     r"\.normalization\.(.*)",
     lambda m: f"backbone.res{int(m[1]) + 2}.{m[2]}.conv{int(m[3]) + 1}.norm.{m[4]}"),
    (r"model\.pixel_level_module\.decoder\.fpn\.stem\.0\.(.*)",
     r"sem_seg_head.pixel_decoder.layer_4.\1"),
    (r"model\.pixel_level_module\.decoder\.fpn\.stem\.1\.(.*)",
     r"sem_seg_head.pixel_decoder.layer_4.norm.\1"),
    (r"model\.pixel_level_module\.decoder\.fpn\.layers\.(\d)\.proj\.0\.(.*)",
     lambda m: f"sem_seg_head.pixel_decoder.adapter_{3 - int(m[1])}.{m[2]}"),
    (r"model\.pixel_level_module\.decoder\.fpn\.layers\.(\d)\.proj\.1\.(.*)",
     lambda m: f"sem_seg_head.pixel_decoder.adapter_{3 - int(m[1])}.norm.{m[2]}"),
    (r"model\.pixel_level_module\.decoder\.fpn\.layers\.(\d)\.block\.0\.(.*)",
     lambda m: f"sem_seg_head.pixel_decoder.layer_{3 - int(m[1])}.{m[2]}"),
    (r"model\.pixel_level_module\.decoder\.fpn\.layers\.(\d)\.block\.1\.(.*)",
     lambda m: f"sem_seg_head.pixel_decoder.layer_{3 - int(m[1])}.norm.{m[2]}"),
    (r"model\.pixel_level_module\.decoder\.mask_projection\.(.*)",
     r"sem_seg_head.pixel_decoder.mask_features.\1"),
    (r"model\.transformer_module\.queries_embedder\.(.*)", r"sem_seg_head.predictor.query_embed.\1"),
    (r"model\.transformer_module\.input_projection\.(.*)", r"sem_seg_head.predictor.input_proj.\1"),
    (r"model\.transformer_module\.decoder\.layernorm\.(.*)",
     r"sem_seg_head.predictor.transformer.decoder.norm.\1"),
    (r"model\.transformer_module\.decoder\.layers\.(\d+)\.(.*)",
     lambda m: f"sem_seg_head.predictor.transformer.decoder.layers.{m[1]}."
               + _decoder_layer_name(m[2])),
    (r"class_predictor\.(.*)", r"sem_seg_head.predictor.class_embed.\1"),
    (r"mask_embedder\.(\d)\.0\.(.*)", r"sem_seg_head.predictor.mask_embed.layers.\1.\2"),
    (r"criterion\.empty_weight", "criterion.empty_weight"),
]

_DECODER_PARTS = {
    "self_attn.o_proj": "self_attn.out_proj",
    "self_attn.out_proj": "self_attn.out_proj",
    "encoder_attn.o_proj": "multihead_attn.out_proj",
    "encoder_attn.out_proj": "multihead_attn.out_proj",
    "self_attn_layer_norm": "norm1",
    "encoder_attn_layer_norm": "norm2",
    "final_layer_norm": "norm3",
    "mlp.fc1": "linear1",
    "mlp.fc2": "linear2",
    "fc1": "linear1",
    "fc2": "linear2",
}


def _decoder_layer_name(rest: str) -> str:
    module, _, leaf = rest.rpartition(".")
    if module in _DECODER_PARTS:
        return f"{_DECODER_PARTS[module]}.{leaf}"
    # q/k/v projections are fused below; keep a recognisable intermediate name.
    match = re.fullmatch(r"(self_attn|encoder_attn)\.([qkv])_proj", module)
    if match:
        attn = "self_attn" if match[1] == "self_attn" else "multihead_attn"
        return f"{attn}.{match[2]}_proj.{leaf}"
    return f"<unknown>{rest}"


def rename_state_dict(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """HF MaskFormer names -> the original's names, q/k/v fused into `in_proj_*`.

    Raises:
        CheckpointError: naming every HF tensor that has no place in MaskFormer.
    """
    renamed, unknown = {}, []
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue  # BatchNorm bookkeeping, not a weight
        for pattern, repl in _RULES:
            match = re.fullmatch(pattern, key)
            if match:
                name = repl(match) if callable(repl) else match.expand(repl)
                break
        else:
            name = None
        if name is None or "<unknown>" in name:
            unknown.append(key)
        else:
            renamed[name] = value
    if unknown:
        raise CheckpointError(f"{len(unknown)} unexpected Hugging Face tensors: "
                              + ", ".join(unknown[:50]))
    fused = {}
    for name, value in renamed.items():
        match = re.fullmatch(r"(.*)\.([qkv])_proj\.(weight|bias)", name)
        if not match:
            fused[name] = value
            continue
        prefix, leaf = match[1], match[3]
        parts = [renamed.get(f"{prefix}.{p}_proj.{leaf}") for p in "qkv"]
        if any(p is None for p in parts):
            raise CheckpointError(f"{prefix}: q, k and v projections must all be present "
                                  f"(found {[p for p, v in zip('qkv', parts, strict=True) if v is not None]})")
        fused[f"{prefix}.in_proj_{leaf}"] = np.concatenate(parts, axis=0)
    return fused


def read_hf_config(hf_config: dict | str | Path) -> dict:
    if isinstance(hf_config, dict):
        return hf_config
    path = Path(hf_config)
    try:
        return json.loads(path.read_text())
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read the Hugging Face config "
                              f"({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: cannot read the Hugging Face config ({e})") from None


def _short_name(name: str) -> str:
    return name.split(",")[0].strip().lower().replace("_", " ").replace("-", " ")


def categories_from_hf(hf_config: dict | str | Path, config=None):
    """The categories of an HF config's `id2label`, or None when it has only placeholder names
    (LABEL_0, ...).

    HF configs carry names only. The thing/stuff split, the colours and the dataset's original
    ids come from a built-in dataset list with as many classes whose names match (the first
    comma-separated name, case and -/_ ignored, for at least 90% of them): the one of the
    experiment's `data.dataset` first. Without a match every class is stuff (panoptic output
    then has one segment per class).

    Returns:
        (categories, where they come from) or None.
    """
    from maskformer.data.categories import builtin_categories, builtin_names

    raw = read_hf_config(hf_config)
    try:
        id2label = {int(k): str(v) for k, v in (raw.get("id2label") or {}).items()}
    except (TypeError, ValueError):
        raise CheckpointError(f"{hf_config}: id2label keys must be class indices") from None
    if not id2label:
        return None
    if sorted(id2label) != list(range(len(id2label))):
        raise CheckpointError(f"{hf_config}: id2label must number the classes 0..K-1")
    names = [id2label[i] for i in range(len(id2label))]
    if all(re.fullmatch(r"LABEL_\d+", n) for n in names):
        return None
    candidates = builtin_names()
    if config is not None and config.data.dataset in candidates:
        candidates = [config.data.dataset] + [c for c in candidates if c != config.data.dataset]
    for dataset in candidates:
        builtin = builtin_categories(dataset)
        if len(builtin) != len(names):
            continue
        same = sum(_short_name(a) == _short_name(b["name"]) for a, b in zip(names, builtin,
                                                                           strict=True))
        if same >= 0.9 * len(names):
            return ([{**b, "name": n} for n, b in zip(names, builtin, strict=True)],
                    f"id2label of {hf_config}, thing/stuff split of built-in {dataset}")
    return ([{"id": i, "name": n, "isthing": 0} for i, n in enumerate(names)],
            f"id2label of {hf_config} (thing/stuff split unknown: all stuff)")


def model_config_from_hf(hf_config: dict | str | Path) -> ModelConfig:
    """The ModelConfig for an HF MaskFormer `config.json` (ResNet backbones only)."""
    hf_config = read_hf_config(hf_config)
    if hf_config.get("model_type") != "maskformer":
        raise CheckpointError(f"not a MaskFormer config (model_type={hf_config.get('model_type')!r})")
    bb = hf_config.get("backbone_config") or {}
    if bb.get("model_type") != "resnet" or bb.get("layer_type", "bottleneck") != "bottleneck":
        raise CheckpointError(
            f"backbone {bb.get('model_type')!r} is not supported: only ResNet bottleneck backbones")
    if bb.get("downsample_in_bottleneck", False):
        raise CheckpointError("downsample_in_bottleneck=True (stride in the 1x1) is not supported")
    decoder = hf_config.get("decoder_config") or {}
    depths = list(bb.get("depths", [3, 4, 6, 3]))
    hidden = list(bb.get("hidden_sizes", [256, 512, 1024, 2048]))
    num_labels = hf_config.get("num_labels") or len(hf_config.get("id2label", {}))
    depth = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101}.get(tuple(depths))
    return ModelConfig(
        backbone=BackboneConfig(depth=depth or 50, stage_blocks=None if depth else depths,
                                stem_channels=bb.get("embedding_size", 64),
                                width_per_group=hidden[0] // 4, res2_out_channels=hidden[0]),
        num_classes=int(num_labels),
        pixel_decoder="fpn",
        conv_dim=hf_config.get("fpn_feature_size", 256),
        mask_dim=hf_config.get("mask_feature_size", 256),
        # HF sizes its query embedding from the decoder config, not the top-level field.
        num_queries=decoder.get("num_queries", hf_config.get("num_queries", 100)),
        hidden_dim=decoder.get("d_model", 256),
        num_heads=decoder.get("decoder_attention_heads", 8),
        dim_feedforward=decoder.get("decoder_ffn_dim", 2048),
        dec_layers=decoder.get("decoder_layers", 6),
        dropout=decoder.get("dropout", 0.1),
        # HF pads in its image processor, not in the model: the converted model does the same
        # arithmetic as HF's model. Experiments set size_divisibility where they need it.
        size_divisibility=0,
    )
