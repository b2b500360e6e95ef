"""Weights of the original MaskFormer (detectron2 state-dict names) into the Keras model.

The mapping is built by walking our model and naming, for every variable, the original
parameter that sets it and how its layout changes (OIHW conv -> HWIO, [out, in] linear ->
[in, out], fused attention `in_proj` -> q/k/v). Conversion is strict: every source tensor is
used and every model variable is set, or `CheckpointError` lists what is missing, unexpected
or mis-shaped.

Released checkpoints use the head's old names (no `pixel_decoder.`); `normalize_names`
rewrites them as the original's state-dict version 2 upgrade does.

A Swin backbone's `relative_position_index` buffers are not weights of ours (the index follows
from the window size): each is checked against `swin.relative_position_index` and dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from maskformer.conversion.safe_pickle import CheckpointError
from maskformer.modeling.backbone import DeepLabStem
from maskformer.modeling.layers import Conv2d
from maskformer.modeling.maskformer import MaskFormer
from maskformer.modeling.swin import SwinTransformer, relative_position_index
from maskformer.modeling.transformer import DecoderLayer, EncoderLayer, MultiHeadAttention

# Buffers of the original model that are not weights of ours; checked for shape and dropped.
IGNORED_KEYS = ("criterion.empty_weight", "pixel_mean", "pixel_std")
# The step counter of a trained batch norm (SyncBN backbones): no weight, and not needed.
BATCH_NORM_COUNTER = ".num_batches_tracked"


@dataclass
class Target:
    """One model variable and how to produce its value from the source tensors."""

    variable: object
    sources: tuple[str, ...]
    transform: Callable[..., np.ndarray]


def _conv(w):  # [out, in, kh, kw] -> [kh, kw, in, out]
    return np.transpose(w, (2, 3, 1, 0))


def _linear(w):  # [out, in] -> [in, out]
    return np.transpose(w)


def _identity(x):
    return x


def _rows(part: int, kernel: bool):
    """Selects the q (0), k (1) or v (2) block of a fused in_proj weight/bias."""

    def take(w):
        d = w.shape[0] // 3
        block = w[part * d:(part + 1) * d]
        return np.transpose(block) if kernel else block

    return take


class _Mapper:
    def __init__(self):
        self.targets: list[Target] = []

    def add(self, variable, source: str | tuple[str, ...], transform=_identity):
        sources = (source,) if isinstance(source, str) else source
        self.targets.append(Target(variable, sources, transform))

    def conv(self, layer: Conv2d, prefix: str):
        self.add(layer.conv.kernel, f"{prefix}.weight", _conv)
        if layer.use_bias:
            self.add(layer.conv.bias, f"{prefix}.bias")
        if layer.norm_type in ("frozen_bn", "sync_bn"):
            self.add(layer.norm.gamma, f"{prefix}.norm.weight")
            self.add(layer.norm.beta, f"{prefix}.norm.bias")
            self.add(layer.norm.moving_mean, f"{prefix}.norm.running_mean")
            self.add(layer.norm.moving_variance, f"{prefix}.norm.running_var")
        elif layer.norm_type == "gn":
            self.add(layer.norm.gamma, f"{prefix}.norm.weight")
            self.add(layer.norm.beta, f"{prefix}.norm.bias")

    def dense(self, layer, prefix: str):
        self.add(layer.kernel, f"{prefix}.weight", _linear)
        self.add(layer.bias, f"{prefix}.bias")

    def layer_norm(self, layer, prefix: str):
        self.add(layer.gamma, f"{prefix}.weight")
        self.add(layer.beta, f"{prefix}.bias")

    def attention(self, layer: MultiHeadAttention, prefix: str):
        for part, proj in enumerate((layer.q_proj, layer.k_proj, layer.v_proj)):
            self.add(proj.kernel, f"{prefix}.in_proj_weight", _rows(part, kernel=True))
            self.add(proj.bias, f"{prefix}.in_proj_bias", _rows(part, kernel=False))
        self.dense(layer.out_proj, f"{prefix}.out_proj")

    def encoder_layer(self, layer: EncoderLayer, prefix: str):
        self.attention(layer.self_attn, f"{prefix}.self_attn")
        self.dense(layer.ffn.linear1, f"{prefix}.linear1")
        self.dense(layer.ffn.linear2, f"{prefix}.linear2")
        self.layer_norm(layer.norm1, f"{prefix}.norm1")
        self.layer_norm(layer.norm2, f"{prefix}.norm2")

    def decoder_layer(self, layer: DecoderLayer, prefix: str):
        self.attention(layer.self_attn, f"{prefix}.self_attn")
        self.attention(layer.cross_attn, f"{prefix}.multihead_attn")
        self.dense(layer.ffn.linear1, f"{prefix}.linear1")
        self.dense(layer.ffn.linear2, f"{prefix}.linear2")
        for i, norm in enumerate((layer.norm1, layer.norm2, layer.norm3), start=1):
            self.layer_norm(norm, f"{prefix}.norm{i}")

    def swin(self, backbone: SwinTransformer, prefix: str):
        """The original's `SwinTransformer` names (`patch_embed`, `layers.{s}`, `norm{s}`)."""

        def linear(layer, name):  # `qkv` may have no bias, `reduction` never has one
            self.add(layer.kernel, f"{name}.weight", _linear)
            if layer.use_bias:
                self.add(layer.bias, f"{name}.bias")

        self.add(backbone.patch_embed.proj.kernel, f"{prefix}.patch_embed.proj.weight", _conv)
        self.add(backbone.patch_embed.proj.bias, f"{prefix}.patch_embed.proj.bias")
        self.layer_norm(backbone.patch_embed.norm, f"{prefix}.patch_embed.norm")
        for s, stage in enumerate(backbone.stages):
            for b, block in enumerate(stage.blocks):
                name = f"{prefix}.layers.{s}.blocks.{b}"
                self.layer_norm(block.norm1, f"{name}.norm1")
                self.add(block.attn.relative_position_bias_table,
                         f"{name}.attn.relative_position_bias_table")
                linear(block.attn.qkv, f"{name}.attn.qkv")
                linear(block.attn.proj, f"{name}.attn.proj")
                self.layer_norm(block.norm2, f"{name}.norm2")
                linear(block.fc1, f"{name}.mlp.fc1")
                linear(block.fc2, f"{name}.mlp.fc2")
            if s < len(backbone.merges):
                self.layer_norm(backbone.merges[s].norm, f"{prefix}.layers.{s}.downsample.norm")
                linear(backbone.merges[s].reduction, f"{prefix}.layers.{s}.downsample.reduction")
            self.layer_norm(backbone.norms[s], f"{prefix}.norm{s}")


def _resnet_targets(m: _Mapper, backbone) -> None:
    """A ResNet backbone in detectron2's names."""
    if isinstance(backbone.stem, DeepLabStem):
        for name in ("conv1", "conv2", "conv3"):
            m.conv(getattr(backbone.stem, name), f"backbone.stem.{name}")
    else:
        m.conv(backbone.stem, "backbone.stem.conv1")
    for s, blocks in enumerate(backbone.stages):
        for b, block in enumerate(blocks):
            prefix = f"backbone.res{s + 2}.{b}"
            for name in ("conv1", "conv2", "conv3"):
                m.conv(getattr(block, name), f"{prefix}.{name}")
            if block.shortcut is not None:
                m.conv(block.shortcut, f"{prefix}.shortcut")


def backbone_weight_map(backbone) -> list[Target]:
    """Every variable of a backbone (ResNet or Swin) with the original's `backbone.*` names."""
    m = _Mapper()
    if isinstance(backbone, SwinTransformer):
        m.swin(backbone, "backbone")
    else:
        _resnet_targets(m, backbone)
    return m.targets


def backbone_buffers(backbone) -> dict[str, np.ndarray]:
    """The original's buffers that a checkpoint may hold and that must equal these values:
    Swin's `relative_position_index` of every block. Checked and dropped, not loaded."""
    if not isinstance(backbone, SwinTransformer):
        return {}
    index = relative_position_index(backbone.window_size)
    return {f"backbone.layers.{s}.blocks.{b}.attn.relative_position_index": index
            for s, stage in enumerate(backbone.stages) for b in range(len(stage.blocks))}


def weight_map(model: MaskFormer) -> list[Target]:
    """Every variable of `model` with the original (new-style) names that set it."""
    m = _Mapper()
    m.targets.extend(backbone_weight_map(model.backbone))
    if model.config.architecture == "mask2former":
        m.targets.extend(mask2former_pixel_decoder_map(model.pixel_decoder))
        m.targets.extend(mask2former_predictor_map(model.predictor))
        return m.targets

    decoder, prefix = model.pixel_decoder, "sem_seg_head.pixel_decoder"
    for i in range(3):
        m.conv(decoder.adapters[i], f"{prefix}.adapter_{i + 1}")
        m.conv(decoder.layers_[i], f"{prefix}.layer_{i + 1}")
    m.conv(decoder.layer_4, f"{prefix}.layer_4")
    m.conv(decoder.mask_features, f"{prefix}.mask_features")
    if model.config.pixel_decoder == "transformer_encoder":
        m.conv(decoder.input_proj, f"{prefix}.input_proj")
        for i, layer in enumerate(decoder.encoder_layers):
            m.encoder_layer(layer, f"{prefix}.transformer.encoder.layers.{i}")

    predictor, prefix = model.predictor, "sem_seg_head.predictor"
    if predictor.input_proj is not None:
        m.conv(predictor.input_proj, f"{prefix}.input_proj")
    for i, layer in enumerate(predictor.encoder_layers):
        m.encoder_layer(layer, f"{prefix}.transformer.encoder.layers.{i}")
    for i, layer in enumerate(predictor.decoder_layers):
        m.decoder_layer(layer, f"{prefix}.transformer.decoder.layers.{i}")
    m.layer_norm(predictor.decoder_norm, f"{prefix}.transformer.decoder.norm")
    m.add(predictor.query_embed, f"{prefix}.query_embed.weight")
    m.dense(predictor.class_embed, f"{prefix}.class_embed")
    for i, dense in enumerate(predictor.mask_embed.dense):
        m.dense(dense, f"{prefix}.mask_embed.layers.{i}")
    return m.targets


def mask2former_pixel_decoder_map(decoder,
                                  prefix: str = "sem_seg_head.pixel_decoder") -> list[Target]:
    """Every variable of an `MSDeformAttnPixelDecoder` with the original Mask2Former's names."""
    m = _Mapper()
    for level, proj in enumerate(decoder.input_proj):  # nn.Sequential(conv, GroupNorm)
        m.add(proj.conv.kernel, f"{prefix}.input_proj.{level}.0.weight", _conv)
        m.add(proj.conv.bias, f"{prefix}.input_proj.{level}.0.bias")
        m.layer_norm(proj.norm, f"{prefix}.input_proj.{level}.1")
    m.add(decoder.transformer.level_embed, f"{prefix}.transformer.level_embed")
    for i, layer in enumerate(decoder.transformer.encoder_layers):
        name = f"{prefix}.transformer.encoder.layers.{i}"
        for proj in ("sampling_offsets", "attention_weights", "value_proj", "output_proj"):
            m.dense(getattr(layer.self_attn, proj), f"{name}.self_attn.{proj}")
        m.layer_norm(layer.norm1, f"{name}.norm1")
        m.dense(layer.linear1, f"{name}.linear1")
        m.dense(layer.linear2, f"{name}.linear2")
        m.layer_norm(layer.norm2, f"{name}.norm2")
    for i, (adapter, output) in enumerate(zip(decoder.adapters, decoder.fpn_layers, strict=True),
                                          start=1):
        m.conv(adapter, f"{prefix}.adapter_{i}")
        m.conv(output, f"{prefix}.layer_{i}")
    m.conv(decoder.mask_features, f"{prefix}.mask_features")
    return m.targets


def mask2former_predictor_map(decoder, prefix: str = "sem_seg_head.predictor") -> list[Target]:
    """Every variable of a `MaskedAttentionDecoder` with the original Mask2Former's names."""
    m = _Mapper()
    for i, layer in enumerate(decoder.layers):
        m.attention(layer.self_attn, f"{prefix}.transformer_self_attention_layers.{i}.self_attn")
        m.layer_norm(layer.self_norm, f"{prefix}.transformer_self_attention_layers.{i}.norm")
        m.attention(layer.cross_attn,
                    f"{prefix}.transformer_cross_attention_layers.{i}.multihead_attn")
        m.layer_norm(layer.cross_norm, f"{prefix}.transformer_cross_attention_layers.{i}.norm")
        m.dense(layer.ffn.linear1, f"{prefix}.transformer_ffn_layers.{i}.linear1")
        m.dense(layer.ffn.linear2, f"{prefix}.transformer_ffn_layers.{i}.linear2")
        m.layer_norm(layer.ffn_norm, f"{prefix}.transformer_ffn_layers.{i}.norm")
    m.layer_norm(decoder.decoder_norm, f"{prefix}.decoder_norm")
    for name in ("query_feat", "query_embed", "level_embed"):
        m.add(getattr(decoder, name), f"{prefix}.{name}.weight")
    for level, proj in enumerate(decoder.input_proj):
        if proj is not None:  # an identity (empty nn.Sequential) has no weights
            m.conv(proj, f"{prefix}.input_proj.{level}")
    m.dense(decoder.class_embed, f"{prefix}.class_embed")
    for i, dense in enumerate(decoder.mask_embed.dense):
        m.dense(dense, f"{prefix}.mask_embed.layers.{i}")
    return m.targets


def assign_weight_map(targets: list[Target], state: dict[str, np.ndarray],
                      source: str = "checkpoint") -> None:
    """Sets the variables of a weight map (such as `mask2former_predictor_map`'s) from `state`,
    strictly: every name of the map present, nothing else in `state`, every shape right."""
    _assign_strictly(targets, {}, state, source)


def normalize_names(state: dict[str, np.ndarray], naming: str = "auto") -> dict[str, np.ndarray]:
    """Rewrites the head's old (released-checkpoint) names to the new ones.

    Old `sem_seg_head.<X>` is new `sem_seg_head.pixel_decoder.<X>` for every head key that is
    not a predictor key. `naming` is "old", "new" or "auto": a plain dict carries no version
    metadata, so "auto" decides from the names and refuses a mixture.
    """
    head = [k for k in state if k.startswith("sem_seg_head.")
            and not k.startswith("sem_seg_head.predictor.")]
    new = [k for k in head if k.startswith("sem_seg_head.pixel_decoder.")]
    old = [k for k in head if not k.startswith("sem_seg_head.pixel_decoder.")]
    if naming == "auto":
        if new and old:
            raise CheckpointError(
                "the checkpoint mixes old head names (e.g. "
                f"{old[0]!r}) and new ones (e.g. {new[0]!r}); pass naming='old' or 'new'")
        naming = "old" if old else "new"
    if naming == "new":
        return dict(state)
    if naming != "old":
        raise ValueError(f"naming must be 'auto', 'old' or 'new', got {naming!r}")
    return {(k.replace("sem_seg_head.", "sem_seg_head.pixel_decoder.", 1) if k in head else k): v
            for k, v in state.items()}


def assign_weights(model: MaskFormer, state: dict[str, np.ndarray], source: str = "checkpoint"):
    """Sets every variable of `model` from `state` (original new-style names), strictly.

    Raises:
        CheckpointError: listing missing, unexpected and mis-shaped names, and buffers that
            differ from what the model computes (Swin's `relative_position_index`).
    """
    classes = state.get("sem_seg_head.predictor.class_embed.bias")
    if classes is not None and classes.shape[0] != model.config.num_classes + 1:
        raise CheckpointError(
            f"{source}: the checkpoint has {classes.shape[0] - 1} classes "
            f"(sem_seg_head.predictor.class_embed.bias), the model {model.config.num_classes} "
            "(model.num_classes): choose the experiment of the checkpoint, or "
            f"--set model.num_classes={classes.shape[0] - 1}")
    mismatched = []
    if "criterion.empty_weight" in state:
        k = state["criterion.empty_weight"].shape
        if k != (model.config.num_classes + 1,):
            mismatched.append(f"criterion.empty_weight: checkpoint {k}, model has "
                              f"{model.config.num_classes} classes")
    _assign_strictly(weight_map(model), backbone_buffers(model.backbone), state, source,
                     ignored=IGNORED_KEYS, mismatched=tuple(mismatched))
    return model


def assign_backbone_weights(backbone, state: dict[str, np.ndarray],
                            source: str = "checkpoint"):
    """Sets every variable of a backbone alone from `state` (the original's `backbone.*`
    names and nothing else), strictly, as `assign_weights` does for a whole model."""
    _assign_strictly(backbone_weight_map(backbone), backbone_buffers(backbone), state, source)
    return backbone


def _assign_strictly(targets: list[Target], buffers: dict[str, np.ndarray],
                     state: dict[str, np.ndarray], source: str, ignored: tuple[str, ...] = (),
                     mismatched: tuple[str, ...] = ()) -> None:
    """Sets every target from `state`, or raises naming every missing, unexpected, mis-shaped
    and wrong key: no variable is set unless all fit. `buffers` may be absent from `state`;
    where present they must equal the given values. `ignored` keys and batch norm step
    counters may be present. `mismatched` holds problems the caller found."""
    expected = {s for t in targets for s in t.sources}
    missing = sorted(expected - set(state))
    unexpected = sorted(k for k in state if k not in expected and k not in ignored
                        and k not in buffers and not k.endswith(BATCH_NORM_COUNTER))
    values, shapes, wrong = [], [], []
    if not missing:
        for t in targets:
            value = t.transform(*(np.asarray(state[s]) for s in t.sources))
            if tuple(value.shape) != tuple(t.variable.shape):
                shapes.append(f"{t.sources[0]}: checkpoint {tuple(state[t.sources[0]].shape)}"
                              f" gives {tuple(value.shape)}, model expects "
                              f"{tuple(t.variable.shape)} ({t.variable.path})")
            values.append(value)
    for key, value in buffers.items():
        if key not in state:
            continue
        found = np.asarray(state[key])
        if found.shape != value.shape:
            shapes.append(f"{key}: checkpoint {found.shape}, model expects {value.shape}")
        elif not np.array_equal(found, value):
            wrong.append(f"{key} (differs from the index the model computes in "
                         f"{int(np.sum(found != value))} of {value.size} places)")
    shapes += mismatched
    if missing or unexpected or shapes or wrong:
        parts = [f"{len(names)} {title}: " + ", ".join(names[:50])
                 + (" ..." if len(names) > 50 else "")
                 for title, names in (("missing", missing), ("unexpected", unexpected),
                                      ("mis-shaped", shapes), ("wrong", wrong)) if names]
        raise CheckpointError(f"{source} does not fit the model; " + "; ".join(parts))
    for t, value in zip(targets, values, strict=True):
        t.variable.assign(value.astype(t.variable.dtype))
