"""Weights of the original MaskFormer (detectron2 state-dict names) into the Keras model.

The mapping is built by walking our model and naming, for every variable, the original
parameter that sets it and how its layout changes (OIHW conv -> HWIO, [out, in] linear ->
[in, out], fused attention `in_proj` -> q/k/v). Conversion is strict: every source tensor is
used and every model variable is set, or `CheckpointError` lists what is missing, unexpected
or mis-shaped.

Released checkpoints use the head's old names (no `pixel_decoder.`); `normalize_names`
rewrites them as the original's state-dict version 2 upgrade does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from maskformer.conversion.safe_pickle import CheckpointError
from maskformer.modeling.backbone import DeepLabStem
from maskformer.modeling.layers import Conv2d
from maskformer.modeling.maskformer import MaskFormer
from maskformer.modeling.transformer import DecoderLayer, EncoderLayer, MultiHeadAttention

# Buffers of the original model that are not weights of ours; checked for shape and dropped.
IGNORED_KEYS = ("criterion.empty_weight", "pixel_mean", "pixel_std")


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
        if layer.norm_type == "frozen_bn":
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


def weight_map(model: MaskFormer) -> list[Target]:
    """Every variable of `model` with the original (new-style) names that set it."""
    m = _Mapper()
    backbone = model.backbone
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
        CheckpointError: listing missing, unexpected and mis-shaped names.
    """
    targets = weight_map(model)
    expected = {s for t in targets for s in t.sources}
    missing = sorted(expected - set(state))
    unexpected = sorted(k for k in state if k not in expected and k not in IGNORED_KEYS)
    values, mismatched = [], []
    if not missing:
        for t in targets:
            value = t.transform(*(np.asarray(state[s]) for s in t.sources))
            if tuple(value.shape) != tuple(t.variable.shape):
                mismatched.append(f"{t.sources[0]}: checkpoint {tuple(state[t.sources[0]].shape)}"
                                  f" gives {tuple(value.shape)}, model expects "
                                  f"{tuple(t.variable.shape)} ({t.variable.path})")
            values.append(value)
    if "criterion.empty_weight" in state:
        k = state["criterion.empty_weight"].shape
        if k != (model.config.num_classes + 1,):
            mismatched.append(f"criterion.empty_weight: checkpoint {k}, model has "
                              f"{model.config.num_classes} classes")
    classes = state.get("sem_seg_head.predictor.class_embed.bias")
    if classes is not None and classes.shape[0] != model.config.num_classes + 1:
        raise CheckpointError(
            f"{source}: the checkpoint has {classes.shape[0] - 1} classes "
            f"(sem_seg_head.predictor.class_embed.bias), the model {model.config.num_classes} "
            "(model.num_classes): choose the experiment of the checkpoint, or "
            f"--set model.num_classes={classes.shape[0] - 1}")
    if missing or unexpected or mismatched:
        parts = [f"{len(names)} {title}: " + ", ".join(names[:50])
                 + (" ..." if len(names) > 50 else "")
                 for title, names in (("missing", missing), ("unexpected", unexpected),
                                      ("mis-shaped", mismatched)) if names]
        raise CheckpointError(f"{source} does not fit the model; " + "; ".join(parts))
    for t, value in zip(targets, values, strict=True):
        t.variable.assign(value.astype(t.variable.dtype))
    return model
