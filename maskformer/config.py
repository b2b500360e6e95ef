"""Typed configuration for MaskFormer experiments.

Every part of an experiment is a dataclass; an experiment is one `ExperimentConfig`. Configs are
overridden from YAML files (nested mappings) and from ``key=value`` strings with dotted keys
(``model.num_queries=50``). An unknown key or a value of the wrong type raises `ConfigError`
naming the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from maskformer.errors import ConfigError


@dataclass
class BackboneConfig:
    """ResNet backbone (detectron2 layout: stride in the 3x3 conv, frozen batch norm).

    `stage_blocks` overrides the depth's standard block counts (used by tiny test models).
    `norm` is detectron2's `MODEL.RESNETS.NORM`: "frozen_bn" (the published models, which
    start from ImageNet weights) or "gn" (GroupNorm with `norm_groups` groups, trainable: for
    a backbone trained from scratch, such as the demo's).
    """

    depth: int = 50
    stage_blocks: list[int] | None = None
    stem_channels: int = 64
    width_per_group: int = 64  # bottleneck width of res2; doubles per stage
    res2_out_channels: int = 256  # output channels of res2; doubles per stage
    norm_eps: float = 1e-5
    norm: str = "frozen_bn"  # "frozen_bn" | "gn"
    norm_groups: int = 32
    res5_dilation: int = 1  # 2: res5 at stride 16 (detectron2's RES5_DILATION)

    def stage_widths(self) -> list[tuple[int, int]]:
        """(bottleneck width, output channels) of res2..res5: both double at every stage."""
        return [(self.width_per_group * 2**s, self.res2_out_channels * 2**s)
                for s in range(len(self.blocks()))]

    def channels(self) -> list[int]:
        """Every channel count a backbone norm sees: the stem, then each stage's widths."""
        return [self.stem_channels] + [c for stage in self.stage_widths() for c in stage]

    def validate(self) -> None:
        self.blocks()
        if self.res5_dilation not in (1, 2):
            raise ConfigError(f"model.backbone.res5_dilation: {self.res5_dilation} is not 1 or 2")
        if self.norm not in ("frozen_bn", "gn"):
            raise ConfigError(f"model.backbone.norm: {self.norm!r} is not 'frozen_bn' or 'gn'")
        if self.norm == "gn":
            bad = sorted({c for c in self.channels() if c % self.norm_groups})
            if bad:
                raise ConfigError(f"model.backbone.norm_groups: {self.norm_groups} does not "
                                  f"divide the channel counts {bad}")

    def blocks(self) -> list[int]:
        if self.stage_blocks is not None:
            return list(self.stage_blocks)
        table = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}
        if self.depth not in table:
            raise ConfigError(f"model.backbone.depth: {self.depth} is not one of {sorted(table)}")
        return table[self.depth]


# What the transformer predictor can attend to (`ModelConfig.transformer_in_feature`).
PREDICTOR_INPUTS = ("res2", "res3", "res4", "res5", "transformer_encoder")


@dataclass
class ModelConfig:
    """The MaskFormer model: backbone, pixel decoder, transformer predictor and heads."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    num_classes: int = 133
    pixel_decoder: str = "transformer_encoder"  # "fpn" | "transformer_encoder"
    conv_dim: int = 256
    mask_dim: int = 256
    # Transformer encoder inside the pixel decoder (transformer_encoder variant only).
    pixel_decoder_enc_layers: int = 6
    pixel_decoder_num_heads: int = 8
    pixel_decoder_dim_feedforward: int = 2048
    # Transformer predictor.
    num_queries: int = 100
    hidden_dim: int = 256
    num_heads: int = 8
    dim_feedforward: int = 2048
    enc_layers: int = 0
    dec_layers: int = 6
    dropout: float = 0.1
    enforce_input_proj: bool = False
    # What the transformer predictor attends to (the original's TRANSFORMER_IN_FEATURE): a
    # backbone feature "res2".."res5", or "transformer_encoder" (the pixel decoder's encoder
    # output). Empty: each pixel decoder's usual one, "res5" for "fpn" and "transformer_encoder"
    # for "transformer_encoder".
    transformer_in_feature: str = ""
    deep_supervision: bool = True
    size_divisibility: int = 0
    pixel_mean: list[float] = field(default_factory=lambda: [123.675, 116.28, 103.53])
    pixel_std: list[float] = field(default_factory=lambda: [58.395, 57.12, 57.375])

    def predictor_input(self) -> str:
        """The feature the transformer predictor attends to (`transformer_in_feature` resolved)."""
        if self.transformer_in_feature:
            return self.transformer_in_feature
        return "res5" if self.pixel_decoder == "fpn" else "transformer_encoder"

    def validate(self) -> None:
        if self.pixel_decoder not in ("fpn", "transformer_encoder"):
            raise ConfigError(
                f"model.pixel_decoder: {self.pixel_decoder!r} is not 'fpn' or 'transformer_encoder'"
            )
        if self.conv_dim % 32:
            raise ConfigError(f"model.conv_dim: {self.conv_dim} is not a multiple of 32 "
                              "(GroupNorm uses 32 groups)")
        if self.hidden_dim % self.num_heads:
            raise ConfigError("model.num_heads: hidden_dim must be divisible by num_heads")
        if self.transformer_in_feature not in ("", *PREDICTOR_INPUTS):
            raise ConfigError(f"model.transformer_in_feature: {self.transformer_in_feature!r} is "
                              f"not one of {', '.join(PREDICTOR_INPUTS)}")
        if (self.transformer_in_feature == "transformer_encoder"
                and self.pixel_decoder != "transformer_encoder"):
            raise ConfigError("model.transformer_in_feature: 'transformer_encoder' needs "
                              "model.pixel_decoder 'transformer_encoder'")
        if self.dec_layers < 1:
            raise ConfigError("model.dec_layers: at least one decoder layer is needed")
        self.backbone.validate()


@dataclass
class LossConfig:
    """The set criterion and the Hungarian matcher (REFERENCE.md sections 7-8)."""

    class_weight: float = 1.0
    mask_weight: float = 20.0  # sigmoid focal
    dice_weight: float = 1.0
    no_object_weight: float = 0.1
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    matcher: str = "hungarian"  # "hungarian" (in-graph) | "scipy" (host)
    ignore_padding: bool = False


@dataclass
class DataConfig:
    """Where the data is and how it is fed (docs/datasets.md).

    `output_size` [H, W] pads (and, for training, cuts) every image to a fixed size so that all
    shapes are static; an empty list pads each batch to its largest image rounded up to
    `size_divisibility` instead. Evaluation pads to `eval_output_size` (default `output_size`)
    and never cuts.
    """

    dataset: str = "coco_panoptic"  # "coco_panoptic" | "ade20k_semantic"
    train_files: str = ""
    val_files: str = ""
    dataset_info: str = ""  # dataset.json written by the converters
    record_format: str = "maskformer"  # "maskformer" | "model_garden" (needs dataset_info)
    augmentation: str = "coco_panoptic"  # "coco_panoptic" | "ade20k" | "none"
    output_size: list[int] = field(default_factory=lambda: [640, 640])
    size_divisibility: int = 0  # with output_size = []
    # COCO panoptic augmentation (also the short edges of the ADE20K one).
    min_scale_sizes: list[int] = field(default_factory=lambda: list(range(480, 801, 32)))
    max_size: int = 1333
    crop_short_edges: list[int] = field(default_factory=lambda: [400, 500, 600])
    crop_range: list[int] = field(default_factory=lambda: [384, 600])
    # ADE20K augmentation: crop, colour jitter, and the value the original pads the crop with
    # (up to crop_size; those pixels are image to the model, ignore to the targets).
    crop_size: list[int] = field(default_factory=lambda: [512, 512])
    color_jitter: bool = True
    crop_pad_value: float = 128.0
    # Evaluation: shortest-edge resize keeping the aspect ratio.
    eval_short_edge: int = 800
    eval_max_size: int = 1333
    eval_output_size: list[int] = field(default_factory=list)
    eval_map_size: list[int] = field(default_factory=list)  # [] = maps at the resized size
    max_instances: int = 100
    mask_dtype: str = "uint8"  # "uint8" | "float32"
    shuffle_buffer: int = 256
    deterministic: bool = False
    seed: int | None = None  # None: a fresh seed per run (0 when deterministic)
    report_truncation: bool = True  # print a line when an image has > max_instances segments


@dataclass
class TrainConfig:
    """Optimisation recipe (REFERENCE.md section 10)."""

    global_batch_size: int = 64
    steps: int = 554_400
    learning_rate: float = 1e-4
    weight_decay: float = 1e-4
    backbone_multiplier: float = 0.1
    clip_norm: float = 0.01
    schedule: str = "step"  # "step" | "poly" | "constant"
    step_boundaries: list[int] = field(default_factory=lambda: [369_600])
    step_factor: float = 0.1
    poly_power: float = 0.9
    warmup_steps: int = 0
    mixed_precision: str = "float32"  # "float32" | "bfloat16" | "float16"
    checkpoint_every: int = 5000
    keep_checkpoints: int = 3
    log_every: int = 100
    eval_every: int = 0
    seed: int = 0

    def validate(self) -> None:
        if self.mixed_precision not in ("float32", "bfloat16", "float16"):
            raise ConfigError(f"train.mixed_precision: {self.mixed_precision!r} is not "
                              "'float32', 'bfloat16' or 'float16'")
        if self.schedule not in ("step", "poly", "constant"):
            raise ConfigError(f"train.schedule: {self.schedule!r} is not 'step', 'poly' or "
                              "'constant'")


@dataclass
class EvalConfig:
    """Inference and evaluation."""

    object_mask_threshold: float = 0.8  # panoptic: a query needs a top score above this
    overlap_threshold: float = 0.8  # panoptic: won area / own mask area needed to keep a segment
    batch_size: int = 8  # the test-time resize is data.eval_short_edge / data.eval_max_size
    panoptic: bool = True
    semantic: bool = True
    instance: bool = False
    instance_top_k: int = 100  # (query, class) pairs kept per image for instance output
    instance_things_only: bool = True  # panoptic-trained models: instances of thing classes only
    # Resize mask logits before the semantic combination (forced when panoptic is on, as in the
    # original); otherwise the class-score map is resized.
    sem_seg_postprocess_before_inference: bool = False
    ignore_label: int = 255  # semantic ground truth label that is not evaluated


@dataclass
class ExperimentConfig:
    """A complete experiment."""

    name: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> ExperimentConfig:
        self.model.validate()
        self.train.validate()
        return self


# ---------------------------------------------------------------------------------------------
# Overrides
# ---------------------------------------------------------------------------------------------


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Checks `value` against a field annotation; ints are accepted for floats."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is list:
        (item_type,) = typing.get_args(annotation)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, str):
            # YAML 1.1 reads "3e-4" (no dot) as a string.
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported field type {annotation!r}")


def _field_types(obj: Any) -> dict[str, Any]:
    hints = typing.get_type_hints(type(obj))
    return {f.name: hints[f.name] for f in dataclasses.fields(obj)}


def set_value(config: Any, dotted_key: str, value: Any) -> None:
    """Sets `config.<dotted_key>` to `value`, checking the key and the type."""
    parts = dotted_key.split(".")
    node = config
    for depth, part in enumerate(parts):
        prefix = ".".join(parts[: depth + 1])
        if not dataclasses.is_dataclass(node):
            raise ConfigError(f"{prefix}: unknown key ('{'.'.join(parts[:depth])}' has no fields)")
        types_ = _field_types(node)
        if part not in types_:
            known = ", ".join(sorted(types_))
            raise ConfigError(f"{prefix}: unknown key (known here: {known})")
        if depth == len(parts) - 1:
            current = getattr(node, part)
            if dataclasses.is_dataclass(current):
                if not isinstance(value, dict):
                    raise ConfigError(f"{prefix}: expected a mapping, got {value!r}")
                merge_dict(current, value, prefix)
            else:
                setattr(node, part, _coerce(value, types_[part], prefix))
        else:
            node = getattr(node, part)


def merge_dict(config: Any, values: dict[str, Any], prefix: str = "") -> Any:
    """Merges a nested mapping (as read from YAML) into a config dataclass."""
    for key, value in values.items():
        try:
            set_value(config, key, value)
        except ConfigError as e:
            # Report the full dotted key when merging into a sub-config.
            raise ConfigError(f"{prefix}.{e}" if prefix else str(e)) from None
    return config


def parse_override(text: str) -> tuple[str, Any]:
    """Parses ``a.b=value``; the value is read as YAML (``50``, ``true``, ``[1, 2]``, ``fpn``)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def apply_overrides(config: Any, overrides: list[str]) -> Any:
    """Applies ``key=value`` strings in order."""
    for text in overrides:
        key, value = parse_override(text)
        set_value(config, key, value)
    return config


def split_params_override(text: str) -> list[str]:
    """Splits TF Model Garden's ``--params_override`` syntax (``a.b=1,c=[1,2]``) into overrides.

    Commas inside brackets or quotes do not split. A YAML/JSON mapping is accepted as well.
    """
    text = text.strip()
    if not text:
        return []
    if text.startswith("{"):
        mapping = yaml.safe_load(text)
        return [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}" for k, v in
                _flatten(mapping).items()]
    parts, depth, quote, current = [], 0, None, []
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def _flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in mapping.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def load_yaml(config: Any, path: str | Path) -> Any:
    """Merges the YAML file at `path` into `config`."""
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({e})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        return merge_dict(config, values)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def to_yaml(config: Any) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def save_yaml(config: Any, path: str | Path) -> None:
    Path(path).write_text(to_yaml(config))


def from_dict(cls: type, values: dict[str, Any]) -> Any:
    """Builds a config of type `cls` from a (possibly partial) nested mapping."""
    return merge_dict(cls(), values)
