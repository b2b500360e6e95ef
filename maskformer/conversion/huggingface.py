"""Hugging Face `transformers` MaskFormer and Mask2Former (ResNet or Swin backbone) into the
Keras model.

HF names are rewritten to the original's state-dict names (separate q/k/v projections are
stacked into the fused `in_proj`, or for Swin into `qkv`), then `detectron2.assign_weights`
sets the model strictly. The model configuration comes from HF's `config.json`.

`MaskFormerForInstanceSegmentation` names become the original MaskFormer's,
`Mask2FormerForUniversalSegmentation` names the original Mask2Former's (HF's own conversion
script, `convert_mask2former_original_pytorch_checkpoint_to_pytorch.py`, is the
correspondence); which one a state dict is follows from its names (`hf_architecture`). Files
hold the names `save_pretrained` writes; the module names of transformers >= 5 (its Swin's
`swin.` level, `q_proj`, `o_proj`, `mlp.fc1`, `relative_position_bias.*`) are read as well.

HF tensors that no output depends on are dropped, each named below (`_UNUSED`,
`_MASK2FORMER_UNUSED`); any other tensor without a place is an error naming it.

HF's Mask2Former computes what the original does wherever the two have the same settings
(tests/conversion/test_mask2former_huggingface.py compares it with ours, every weight random;
the modeling tests compare ours with the original's recorded outputs). Its config has settings
the original fixes (`pre_norm`, `activation_function`, `common_stride`, `feature_strides`):
values other than the original's are refused rather than approximated. Its Swin shrinks the
window and drops the shift on maps no larger than the window unless called with
`always_partition=True`, which SwinBackbone does in transformers 5 (the parity test's res5
maps are smaller than the window); the original always pads to whole windows and shifts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from maskformer.config import BackboneConfig, ModelConfig, SwinConfig
from maskformer.conversion.safe_pickle import CheckpointError

# ResNetBackbone, where both HF models keep it (`model.pixel_level_module.encoder`).
_RESNET_RULES = [
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
]

# HF FPN layer i runs coarse to fine: res4, res3, res2, i.e. the original's index 3 - i.
_RULES = _RESNET_RULES + [
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
    # MaskFormerSwinBackbone: `model` is the Swin, `hidden_states_norms` the per-output norms.
    (r"model\.pixel_level_module\.encoder\.model\.embeddings\.patch_embeddings\.projection"
     r"\.(.*)", r"backbone.patch_embed.proj.\1"),
    (r"model\.pixel_level_module\.encoder\.model\.embeddings\.norm\.(.*)",
     r"backbone.patch_embed.norm.\1"),
    (r"model\.pixel_level_module\.encoder\.model\.encoder\.layers\.(\d+)\.blocks\.(\d+)\.(.*)",
     lambda m: f"backbone.layers.{m[1]}.blocks.{m[2]}." + _swin_block_name(m[3])),
    (r"model\.pixel_level_module\.encoder\.model\.encoder\.layers\.(\d+)\.downsample"
     r"\.(reduction|norm)\.(.*)", r"backbone.layers.\1.downsample.\2.\3"),
    (r"model\.pixel_level_module\.encoder\.hidden_states_norms\.(\d+)\.(.*)",
     r"backbone.norm\1.\2"),
]

# HF tensors that no MaskFormer output depends on: the final LayerNorm of HF's
# MaskFormerSwinModel (the backbone returns the stage outputs through `hidden_states_norms`).
_UNUSED = [r"model\.pixel_level_module\.encoder\.model\.layernorm\.(weight|bias)"]

_SWIN_BLOCK_PARTS = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "attention.self": "attn",  # relative_position_bias_table, relative_position_index
    "attention.self.query": "attn.query",  # query / key / value are fused into qkv below
    "attention.self.key": "attn.key",
    "attention.self.value": "attn.value",
    "attention.output.dense": "attn.proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
    # transformers >= 5 module names of its Swin (SwinBackbone; files keep the names above)
    "attention.relative_position_bias": "attn",
    "attention.q_proj": "attn.query",
    "attention.k_proj": "attn.key",
    "attention.v_proj": "attn.value",
    "attention.o_proj": "attn.proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}

# Separate projections stacked (q, k, v rows) into the original's fused one.
_FUSED = [
    (r"(.*)\.([qkv])_proj\.(weight|bias)", ("q_proj", "k_proj", "v_proj"), "in_proj_{leaf}"),
    (r"(.*)\.attn\.(query|key|value)\.(weight|bias)", ("attn.query", "attn.key", "attn.value"),
     "attn.qkv.{leaf}"),
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


# --- Mask2Former (Mask2FormerForUniversalSegmentation) -------------------------------------

_M2F_SWIN = r"model\.pixel_level_module\.encoder\.(?:swin\.)?"  # transformers >= 5: `swin.`
_M2F_DECODER = r"model\.pixel_level_module\.decoder\."
_M2F_MODULE = r"model\.transformer_module\."
_PIXEL_DECODER = "sem_seg_head.pixel_decoder"
_PREDICTOR = "sem_seg_head.predictor"

# The deformable encoder layer (Mask2FormerPixelDecoderEncoderLayer -> MSDeformAttnTransformer-
# EncoderLayer): the attention's four projections keep their names.
_DEFORMABLE_LAYER_PARTS = {
    **{f"self_attn.{p}": f"self_attn.{p}"
       for p in ("sampling_offsets", "attention_weights", "value_proj", "output_proj")},
    "self_attn_layer_norm": "norm1",
    "fc1": "linear1",
    "fc2": "linear2",
    "final_layer_norm": "norm2",
}

# One HF masked-attention layer holds the i-th layer of each of the original's three lists.
_MASKED_LAYER_PARTS = {
    "cross_attn": "transformer_cross_attention_layers.{i}.multihead_attn",  # in_proj_*
    "cross_attn.out_proj": "transformer_cross_attention_layers.{i}.multihead_attn.out_proj",
    "cross_attn_layer_norm": "transformer_cross_attention_layers.{i}.norm",
    # q/k/v are fused into in_proj below
    **{f"self_attn.{p}_proj": f"transformer_self_attention_layers.{{i}}.self_attn.{p}_proj"
       for p in "qkv"},
    "self_attn.out_proj": "transformer_self_attention_layers.{i}.self_attn.out_proj",
    "self_attn.o_proj": "transformer_self_attention_layers.{i}.self_attn.out_proj",
    "self_attn_layer_norm": "transformer_self_attention_layers.{i}.norm",
    "fc1": "transformer_ffn_layers.{i}.linear1",
    "fc2": "transformer_ffn_layers.{i}.linear2",
    "mlp.fc1": "transformer_ffn_layers.{i}.linear1",
    "mlp.fc2": "transformer_ffn_layers.{i}.linear2",
    "final_layer_norm": "transformer_ffn_layers.{i}.norm",
}


def _part_name(parts: dict[str, str], rest: str, **fields) -> str:
    module, _, leaf = rest.rpartition(".")
    if module in parts:
        return f"{parts[module].format(**fields)}.{leaf}"
    return f"<unknown>{rest}"


_MASK2FORMER_RULES = _RESNET_RULES + [
    # SwinBackbone (SwinConfig, model_type "swin")
    (_M2F_SWIN + r"embeddings\.patch_embeddings\.projection\.(weight|bias)",
     r"backbone.patch_embed.proj.\1"),
    (_M2F_SWIN + r"embeddings\.norm\.(weight|bias)", r"backbone.patch_embed.norm.\1"),
    (_M2F_SWIN + r"encoder\.layers\.(\d+)\.blocks\.(\d+)\.(.*)",
     lambda m: f"backbone.layers.{m[1]}.blocks.{m[2]}." + _swin_block_name(m[3])),
    (_M2F_SWIN + r"encoder\.layers\.(\d+)\.downsample\.(reduction|norm)\.(weight|bias)",
     r"backbone.layers.\1.downsample.\2.\3"),
    # The norms of the outputs stage1..stage4: the original's norm0..norm3.
    (r"model\.pixel_level_module\.encoder\.hidden_states_norms\.stage(\d)\.(weight|bias)",
     lambda m: f"backbone.norm{int(m[1]) - 1}.{m[2]}"),
    # Pixel decoder: the encoder's input projections (conv, GroupNorm) coarsest first, as the
    # original's; HF's `adapter_i` / `layer_i` are the original's modules of the same name.
    (_M2F_DECODER + r"input_projections\.(\d+)\.([01])\.(weight|bias)",
     rf"{_PIXEL_DECODER}.input_proj.\1.\2.\3"),
    (_M2F_DECODER + r"level_embed", f"{_PIXEL_DECODER}.transformer.level_embed"),
    (_M2F_DECODER + r"encoder\.layers\.(\d+)\.(.*)",
     lambda m: f"{_PIXEL_DECODER}.transformer.encoder.layers.{m[1]}."
               + _part_name(_DEFORMABLE_LAYER_PARTS, m[2])),
    (_M2F_DECODER + r"(adapter|layer)_(\d+)\.0\.weight", rf"{_PIXEL_DECODER}.\1_\2.weight"),
    (_M2F_DECODER + r"(adapter|layer)_(\d+)\.1\.(weight|bias)",
     rf"{_PIXEL_DECODER}.\1_\2.norm.\3"),
    (_M2F_DECODER + r"mask_projection\.(weight|bias)", rf"{_PIXEL_DECODER}.mask_features.\1"),
    # Transformer decoder and heads.
    (_M2F_MODULE + r"queries_embedder\.weight", f"{_PREDICTOR}.query_embed.weight"),
    (_M2F_MODULE + r"queries_features\.weight", f"{_PREDICTOR}.query_feat.weight"),
    (_M2F_MODULE + r"level_embed\.weight", f"{_PREDICTOR}.level_embed.weight"),
    (_M2F_MODULE + r"input_projections\.(\d+)\.(weight|bias)", rf"{_PREDICTOR}.input_proj.\1.\2"),
    (_M2F_MODULE + r"decoder\.layernorm\.(weight|bias)", rf"{_PREDICTOR}.decoder_norm.\1"),
    (_M2F_MODULE + r"decoder\.layers\.(\d+)\.(.*)",
     lambda m: f"{_PREDICTOR}." + _part_name(_MASKED_LAYER_PARTS, m[2], i=m[1])),
    (_M2F_MODULE + r"decoder\.mask_predictor\.mask_embedder\.(\d)\.0\.(weight|bias)",
     rf"{_PREDICTOR}.mask_embed.layers.\1.\2"),
    (r"class_predictor\.(weight|bias)", rf"{_PREDICTOR}.class_embed.\1"),
    (r"criterion\.empty_weight", "criterion.empty_weight"),
]

# HF tensors that no Mask2Former output depends on: the final LayerNorm of the SwinModel inside
# HF's SwinBackbone, whose outputs are the stage outputs through `hidden_states_norms`
# (SwinBackbone.forward reads `reshaped_hidden_states`, never `last_hidden_state`).
_MASK2FORMER_UNUSED = [r"model\.pixel_level_module\.encoder\.(?:swin\.)?layernorm\.(weight|bias)"]

# Names only Mask2FormerForUniversalSegmentation has (MaskFormer's pixel decoder is an FPN,
# its transformer module a DETR decoder with `queries_embedder` alone).
_MASK2FORMER_SIGNS = (r"model\.transformer_module\.(queries_features|decoder\.mask_predictor)\..*",
                      r"model\.pixel_level_module\.decoder\.(input_projections|encoder)\..*")


def hf_architecture(state) -> str:
    """"mask2former" for a `Mask2FormerForUniversalSegmentation` state dict (by its names),
    else "maskformer"."""
    if any(re.fullmatch(sign, key) for key in state for sign in _MASK2FORMER_SIGNS):
        return "mask2former"
    return "maskformer"


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


def _swin_block_name(rest: str) -> str:
    module, _, leaf = rest.rpartition(".")
    if module in _SWIN_BLOCK_PARTS:
        return f"{_SWIN_BLOCK_PARTS[module]}.{leaf}"
    return f"<unknown>{rest}"


def _fusion(name: str):
    """(match, the separate projections' names, the fused name) of a q/k/v projection, or None."""
    for pattern, part_names, target in _FUSED:
        match = re.fullmatch(pattern, name)
        if match:
            return match, part_names, target
    return None


def rename_state_dict(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """HF MaskFormer or Mask2Former names (`hf_architecture` tells which) -> the original's
    names, q/k/v fused into `in_proj_*` (Swin: `qkv`).

    Raises:
        CheckpointError: naming every HF tensor that has no place in the model.
    """
    mask2former = hf_architecture(state) == "mask2former"
    rules = _MASK2FORMER_RULES if mask2former else _RULES
    unused = _MASK2FORMER_UNUSED if mask2former else _UNUSED
    renamed, unknown = {}, []
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue  # BatchNorm bookkeeping, not a weight
        if any(re.fullmatch(pattern, key) for pattern in unused):
            continue
        for pattern, repl in rules:
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
        what = "Hugging Face Mask2Former tensors" if mask2former else "Hugging Face tensors"
        raise CheckpointError(f"{len(unknown)} unexpected {what}: " + ", ".join(unknown[:50])
                              + (" ..." if len(unknown) > 50 else ""))
    fused = {}
    for name, value in renamed.items():
        fusion = _fusion(name)
        if fusion is None:
            fused[name] = value
            continue
        match, part_names, target = fusion
        prefix, leaf = match[1], match[3]
        parts = [renamed.get(f"{prefix}.{p}.{leaf}") for p in part_names]
        if any(p is None for p in parts):
            found = [p for p, v in zip(part_names, parts, strict=True) if v is not None]
            raise CheckpointError(f"{prefix}: q, k and v projections must all be present "
                                  f"(found {found})")
        fused[f"{prefix}.{target.format(leaf=leaf)}"] = np.concatenate(parts, axis=0)
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


# HF's backbone_config.model_type of a MaskFormer Swin ("swin" in older configs, which HF
# reads as "maskformer-swin").
SWIN_MODEL_TYPES = ("maskformer-swin", "swin")
_SWIN_STAGES = ["stage1", "stage2", "stage3", "stage4"]


def _require(bb: dict, key: str, supported: object, why: str = "") -> None:
    """Refuses a backbone_config value other than the one the backbones here implement (HF's
    default, which a config may leave out)."""
    value = bb.get(key, supported)
    if value != supported:
        raise CheckpointError(f"backbone_config.{key} {value!r} is not supported: only "
                              f"{supported!r}{why}")


def _resnet_backbone_from_hf(bb: dict) -> BackboneConfig:
    if bb.get("model_type") != "resnet" or bb.get("layer_type", "bottleneck") != "bottleneck":
        raise CheckpointError(
            f"backbone {bb.get('model_type')!r} is not supported: only ResNet bottleneck and "
            f"Swin ({', '.join(SWIN_MODEL_TYPES)}) backbones")
    if bb.get("downsample_in_bottleneck", False):
        raise CheckpointError("downsample_in_bottleneck=True (stride in the 1x1) is not supported")
    if bb.get("downsample_in_first_stage", False):
        raise CheckpointError("backbone_config.downsample_in_first_stage=True is not supported "
                              "(res2 has stride 1 in the original)")
    _require(bb, "hidden_act", "relu")
    depths = list(bb.get("depths", [3, 4, 6, 3]))
    hidden = list(bb.get("hidden_sizes", [256, 512, 1024, 2048]))
    if len(depths) != 4 or hidden != [hidden[0] * 2**s for s in range(4)]:
        raise CheckpointError(f"backbone_config depths {depths}, hidden_sizes {hidden}: the "
                              "backbone has four stages whose widths double")
    depth = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101}.get(tuple(depths))
    return BackboneConfig(depth=depth or 50, stage_blocks=None if depth else depths,
                          stem_channels=bb.get("embedding_size", 64),
                          width_per_group=hidden[0] // 4, res2_out_channels=hidden[0])


def _swin_backbone_from_hf(bb: dict) -> BackboneConfig:
    """`model.backbone` for an HF MaskFormerSwin config (defaults: HF's MaskFormerSwinConfig)."""
    if bb.get("use_absolute_embeddings", False):
        raise CheckpointError("backbone_config.use_absolute_embeddings=True is not supported "
                              "(the original's Swin configs have APE off)")
    _require(bb, "hidden_act", "gelu", " (exact)")
    _require(bb, "layer_norm_eps", 1e-5, " (PyTorch's default, the original's)")
    out_features = bb.get("out_features")
    if bb.get("model_type") == "maskformer-swin" and out_features not in (None, _SWIN_STAGES):
        raise CheckpointError(f"backbone_config.out_features {out_features}: MaskFormer needs "
                              f"all of {_SWIN_STAGES}")
    sizes = {}
    for key, default in (("patch_size", 4), ("window_size", 7)):
        value = bb.get(key, default)
        if isinstance(value, list | tuple):
            if len(set(value)) != 1:
                raise CheckpointError(f"backbone_config.{key} {value}: only square sizes")
            value = value[0]
        sizes[key] = int(value)
    return BackboneConfig(type="swin", swin=SwinConfig(
        embed_dim=int(bb.get("embed_dim", 96)),
        depths=list(bb.get("depths", [2, 2, 6, 2])),
        num_heads=list(bb.get("num_heads", [3, 6, 12, 24])),
        mlp_ratio=float(bb.get("mlp_ratio", 4.0)),
        qkv_bias=bool(bb.get("qkv_bias", True)),
        drop_path_rate=float(bb.get("drop_path_rate", 0.1)),
        **sizes))


def model_config_from_hf(hf_config: dict | str | Path) -> ModelConfig:
    """The ModelConfig for an HF MaskFormer or Mask2Former `config.json` (ResNet bottleneck or
    Swin backbone)."""
    hf_config = read_hf_config(hf_config)
    if hf_config.get("model_type") == "mask2former":
        return mask2former_config_from_hf(hf_config)
    if hf_config.get("model_type") != "maskformer":
        raise CheckpointError("not a MaskFormer or Mask2Former config "
                              f"(model_type={hf_config.get('model_type')!r})")
    bb = hf_config.get("backbone_config") or {}
    decoder = hf_config.get("decoder_config") or {}
    hidden_dim = decoder.get("d_model", 256)
    if bb.get("model_type") in SWIN_MODEL_TYPES:
        backbone = _swin_backbone_from_hf(bb)
        # The original's Swin configs set ENFORCE_INPUT_PROJ; HF projects res5 only where its
        # width differs from d_model, so the projection is enforced exactly there (which is
        # every released Swin model).
        enforce_input_proj = backbone.swin.stage_channels()[-1] != hidden_dim
    else:
        backbone = _resnet_backbone_from_hf(bb)
        enforce_input_proj = False
    num_labels = hf_config.get("num_labels") or len(hf_config.get("id2label", {}))
    return ModelConfig(
        backbone=backbone,
        num_classes=int(num_labels),
        pixel_decoder="fpn",
        conv_dim=hf_config.get("fpn_feature_size", 256),
        mask_dim=hf_config.get("mask_feature_size", 256),
        # HF sizes its query embedding from the decoder config, not the top-level field.
        num_queries=decoder.get("num_queries", hf_config.get("num_queries", 100)),
        hidden_dim=hidden_dim,
        num_heads=decoder.get("decoder_attention_heads", 8),
        dim_feedforward=decoder.get("decoder_ffn_dim", 2048),
        dec_layers=decoder.get("decoder_layers", 6),
        dropout=decoder.get("dropout", 0.1),
        enforce_input_proj=enforce_input_proj,
        # HF pads in its image processor, not in the model: the converted model does the same
        # arithmetic as HF's model. Experiments set size_divisibility where they need it.
        size_divisibility=0,
    )


# Mask2FormerConfig settings the original (and so the model) has only one value of.
_MASK2FORMER_FIXED = {"pre_norm": False, "activation_function": "relu", "common_stride": 4,
                      "feature_strides": [4, 8, 16, 32]}


def mask2former_config_from_hf(hf_config: dict | str | Path) -> ModelConfig:
    """The Mask2Former ModelConfig for an HF `Mask2FormerConfig` (`model_type` "mask2former").

    Defaults are HF's Mask2FormerConfig's. HF's `decoder_layers` is the original's DEC_LAYERS:
    the first prediction comes from the learned queries, so HF builds `decoder_layers - 1`
    masked-attention layers (Mask2FormerMaskedAttentionDecoder), our `dec_layers`.
    `num_attention_heads` sets the heads of both the deformable encoder and the decoder, as
    MASK_FORMER.NHEADS does in the original.

    Raises:
        CheckpointError: for settings the original does not have (pre-norm, another activation,
            stride or backbone output set).
    """
    hf_config = read_hf_config(hf_config)
    if hf_config.get("model_type") != "mask2former":
        raise CheckpointError(f"not a Mask2Former config (model_type="
                              f"{hf_config.get('model_type')!r})")
    for key, value in _MASK2FORMER_FIXED.items():
        found = hf_config.get(key, value)
        if (list(found) if isinstance(found, list | tuple) else found) != value:
            raise CheckpointError(f"{key} {found!r} is not supported: only {value!r} (the "
                                  "original's)")
    bb = hf_config.get("backbone_config") or {}
    if bb.get("model_type", "swin") == "swin":  # HF's default backbone
        backbone = _swin_backbone_from_hf({"model_type": "swin", **bb})
    else:
        backbone = _resnet_backbone_from_hf(bb)
    if bb.get("out_features", _SWIN_STAGES) != _SWIN_STAGES:
        raise CheckpointError(f"backbone_config.out_features {bb['out_features']}: Mask2Former "
                              f"needs all of {_SWIN_STAGES}")
    decoder_layers = int(hf_config.get("decoder_layers", 10))
    if decoder_layers < 2:
        raise CheckpointError(f"decoder_layers {decoder_layers}: at least 2 (the queries' own "
                              "prediction and one masked-attention layer)")
    heads = int(hf_config.get("num_attention_heads", 8))
    num_labels = hf_config.get("num_labels") or len(hf_config.get("id2label", {}))
    return ModelConfig(
        backbone=backbone,
        architecture="mask2former",
        num_classes=int(num_labels),
        pixel_decoder="msdeform",
        conv_dim=int(hf_config.get("feature_size", 256)),
        mask_dim=int(hf_config.get("mask_feature_size", 256)),
        pixel_decoder_enc_layers=int(hf_config.get("encoder_layers", 6)),
        pixel_decoder_num_heads=heads,
        pixel_decoder_dim_feedforward=int(hf_config.get("encoder_feedforward_dim", 1024)),
        num_queries=int(hf_config.get("num_queries", 100)),
        hidden_dim=int(hf_config.get("hidden_dim", 256)),
        num_heads=heads,
        dim_feedforward=int(hf_config.get("dim_feedforward", 2048)),
        enc_layers=0,
        dec_layers=decoder_layers - 1,
        dropout=float(hf_config.get("dropout", 0.0)),
        enforce_input_proj=bool(hf_config.get("enforce_input_projection", False)),
        # As for MaskFormer: HF pads in its image processor, not in the model.
        size_divisibility=0,
    )
