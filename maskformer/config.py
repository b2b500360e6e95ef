"""Typed configuration for MaskFormer experiments.

Every part of an experiment is a dataclass; an experiment is one `ExperimentConfig`. Configs are
overridden from YAML files (nested mappings) and from ``key=value`` strings with dotted keys
(``model.num_queries=50``). An unknown key or a value of the wrong type raises `ConfigError`
naming the key.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from maskformer.errors import ConfigError

# The semantic ground-truth value of void and padding pixels in the input pipeline's
# `semantic_map` (maskformer.data.pipeline), which the semantic metrics skip.
IGNORE_LABEL = 255
# The kinds of records (`data.dataset`, and dataset.json's "dataset"): panoptic and instance
# records make one target per non-crowd segment; semantic records one per class present.
DATASETS = ("coco_panoptic", "coco_instance", "semantic", "ade20k_semantic")
SEMANTIC_DATASETS = ("semantic", "ade20k_semantic")
# Training augmentations (maskformer.data.augment): DETR's COCO panoptic one, the ADE20K
# semantic one (also Cityscapes' and Vistas'), Mask2Former's COCO large-scale jitter, none.
AUGMENTATIONS = ("coco_panoptic", "ade20k", "lsj", "none")


class ConfigWarning(UserWarning):
    """A combination of settings that runs but silently trains or evaluates worse."""


def _warn(message: str) -> None:
    # The default warnings filter shows a given message once per run, however often the
    # experiment is validated.
    warnings.warn(message, ConfigWarning, stacklevel=3)


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, choices))}")


def _check_min(key: str, value: float, minimum: float) -> None:
    if value < minimum:
        raise ConfigError(f"{key}: {value} is below the minimum {minimum}")


def _check_range(key: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ConfigError(f"{key}: {value} is not in [{low}, {high}]")


def _check_size(key: str, value: list[int], allow_empty: bool) -> None:
    """A [height, width] of positive ints (or [] where that means "not fixed")."""
    if not value and allow_empty:
        return
    if len(value) != 2 or min(value) < 1:
        raise ConfigError(f"{key}: expected [height, width] of positive integers"
                          f"{' or []' if allow_empty else ''}, got {value}")


def _check_sizes(key: str, value: list[int]) -> None:
    """A non-empty list of positive ints."""
    if not value or min(value) < 1:
        raise ConfigError(f"{key}: expected a non-empty list of positive integers, got {value}")


@dataclass
class SwinConfig:
    """Swin Transformer backbone (the original's `D2SwinTransformer`; `MODEL.SWIN.*`).

    Swin-T: embed_dim 96, depths [2, 2, 6, 2], num_heads [3, 6, 12, 24], window 7; Swin-S: depths
    [2, 2, 18, 2]; Swin-B: 128, [2, 2, 18, 2], [4, 8, 16, 32], window 12; Swin-L: 192, heads
    [6, 12, 24, 48], window 12. Stage s has embed_dim * 2**s channels.
    """

    embed_dim: int = 96
    depths: list[int] = field(default_factory=lambda: [2, 2, 6, 2])
    num_heads: list[int] = field(default_factory=lambda: [3, 6, 12, 24])
    window_size: int = 7
    patch_size: int = 4
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_path_rate: float = 0.3  # stochastic depth, rising linearly over the blocks

    def stage_channels(self) -> list[int]:
        return [self.embed_dim * 2**s for s in range(len(self.depths))]

    def validate(self) -> None:
        if len(self.depths) != 4 or len(self.num_heads) != 4:
            raise ConfigError("model.backbone.swin: depths and num_heads need 4 entries each "
                              f"(res2..res5), got {self.depths} and {self.num_heads}")
        for s, (channels, heads) in enumerate(zip(self.stage_channels(), self.num_heads,
                                                  strict=True)):
            if heads < 1 or channels % heads:
                raise ConfigError(f"model.backbone.swin.num_heads: {heads} heads do not divide "
                                  f"the {channels} channels of stage {s}")
        for key in ("embed_dim", "window_size", "patch_size"):
            _check_min(f"model.backbone.swin.{key}", getattr(self, key), 1)
        _check_sizes("model.backbone.swin.depths", self.depths)
        _check_range("model.backbone.swin.drop_path_rate", self.drop_path_rate, 0.0, 1.0)


BACKBONES = ("resnet", "swin")
RESNET_STEMS = ("basic", "deeplab")


@dataclass
class BackboneConfig:
    """The backbone: a ResNet (detectron2 layout: stride in the 3x3 conv, frozen batch norm) or
    a Swin Transformer (`type: swin`, settings in `swin`).

    `stage_blocks` overrides the depth's standard block counts (used by tiny test models).
    `norm` is detectron2's `MODEL.RESNETS.NORM`: "frozen_bn" (most published models, which
    start from ImageNet weights), "sync_bn" ("SyncBN": batch norm trained on the global batch,
    as Mask2Former's Cityscapes ResNets and its ADE20K semantic R101) or "gn" (GroupNorm with
    `norm_groups` groups, trainable: for a backbone trained from scratch, such as the demo's). `stem_type` is detectron2's
    `MODEL.RESNETS.STEM_TYPE`: "basic" (one 7x7 conv) or "deeplab" (three 3x3 convs, the
    stem of the zoo's R101c models, with `stem_channels` outputs and half as many inside).
    """

    type: str = "resnet"  # "resnet" | "swin"
    swin: SwinConfig = field(default_factory=SwinConfig)
    stem_type: str = "basic"  # "basic" | "deeplab"
    depth: int = 50
    stage_blocks: list[int] | None = None
    stem_channels: int = 64
    width_per_group: int = 64  # bottleneck width of res2; doubles per stage
    res2_out_channels: int = 256  # output channels of res2; doubles per stage
    norm_eps: float = 1e-5
    norm: str = "frozen_bn"  # "frozen_bn" | "sync_bn" | "gn"
    norm_groups: int = 32
    res5_dilation: int = 1  # 2: res5 at stride 16 (detectron2's RES5_DILATION)
    # Dilation of each res5 block, times res5_dilation (DeepLab's RES5_MULTI_GRID; R101c: 1, 2, 4).
    res5_multi_grid: list[int] = field(default_factory=lambda: [1, 1, 1])

    def stage_widths(self) -> list[tuple[int, int]]:
        """(bottleneck width, output channels) of res2..res5: both double at every stage."""
        return [(self.width_per_group * 2**s, self.res2_out_channels * 2**s)
                for s in range(len(self.blocks()))]

    def channels(self) -> list[int]:
        """Every channel count a backbone norm sees: the stem, then each stage's widths."""
        stem = [self.stem_channels // 2] if self.stem_type == "deeplab" else []
        return stem + [self.stem_channels] + [c for stage in self.stage_widths() for c in stage]

    def res5_dilations(self) -> list[int]:
        """The dilation of each res5 block's 3x3 conv."""
        num_blocks = self.blocks()[3]
        grid = self.res5_multi_grid if any(g != 1 for g in self.res5_multi_grid) else [1] * num_blocks
        return [self.res5_dilation * g for g in grid]

    def validate(self) -> None:
        _check_choice("model.backbone.type", self.type, BACKBONES)
        if self.type == "swin":
            self.swin.validate()
            return
        _check_choice("model.backbone.stem_type", self.stem_type, RESNET_STEMS)
        blocks = self.blocks()
        if self.res5_dilation not in (1, 2):
            raise ConfigError(f"model.backbone.res5_dilation: {self.res5_dilation} is not 1 or 2")
        _check_sizes("model.backbone.res5_multi_grid", self.res5_multi_grid)
        if any(g != 1 for g in self.res5_multi_grid) and len(self.res5_multi_grid) != blocks[3]:
            raise ConfigError(f"model.backbone.res5_multi_grid: {self.res5_multi_grid} needs one "
                              f"entry per res5 block ({blocks[3]})")
        if self.stem_type == "deeplab" and self.stem_channels % 2:
            raise ConfigError(f"model.backbone.stem_channels: {self.stem_channels} is odd; the "
                              "deeplab stem's first two convs have half as many")
        _check_choice("model.backbone.norm", self.norm, ("frozen_bn", "sync_bn", "gn"))
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


ARCHITECTURES = ("maskformer", "mask2former")
PIXEL_DECODERS = ("fpn", "transformer_encoder", "msdeform")
# What the transformer predictor can attend to (`ModelConfig.transformer_in_feature`).
PREDICTOR_INPUTS = ("res2", "res3", "res4", "res5", "transformer_encoder")


@dataclass
class ModelConfig:
    """The model: backbone, pixel decoder, transformer decoder and heads.

    `architecture` "maskformer" is MaskFormer (pixel decoder "fpn" or "transformer_encoder",
    the transformer predictor on one feature); "mask2former" is Mask2Former (pixel decoder
    "msdeform": deformable-attention encoder over res3-res5; the masked-attention decoder over
    its three levels in turn). For Mask2Former `dec_layers` counts the transformer layers: the
    original's MASK_FORMER.DEC_LAYERS minus one (9 in the released models), since its first
    prediction comes from the learned queries alone; `pixel_decoder_*` set the deformable
    encoder (released: 6 layers, 8 heads, FFN 1024).
    """

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    architecture: str = "maskformer"  # "maskformer" | "mask2former"
    num_classes: int = 133
    pixel_decoder: str = "transformer_encoder"  # "fpn" | "transformer_encoder" | "msdeform"
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
        _check_choice("model.architecture", self.architecture, ARCHITECTURES)
        _check_choice("model.pixel_decoder", self.pixel_decoder, PIXEL_DECODERS)
        if (self.architecture == "mask2former") != (self.pixel_decoder == "msdeform"):
            raise ConfigError(f"model.pixel_decoder: {self.pixel_decoder!r} with model."
                              f"architecture {self.architecture!r}; Mask2Former's decoder needs "
                              "the multi-scale 'msdeform' pixel decoder, and only it")
        if self.architecture == "mask2former":
            self._validate_mask2former()
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
        for key in ("num_classes", "num_queries", "hidden_dim", "num_heads", "dim_feedforward",
                    "mask_dim"):
            _check_min(f"model.{key}", getattr(self, key), 1)
        _check_min("model.size_divisibility", self.size_divisibility, 0)
        _check_range("model.dropout", self.dropout, 0.0, 1.0)
        for key in ("pixel_mean", "pixel_std"):
            if len(getattr(self, key)) != 3:
                raise ConfigError(f"model.{key}: expected 3 values (R, G, B), got "
                                  f"{getattr(self, key)}")
        if min(self.pixel_std) <= 0:
            raise ConfigError(f"model.pixel_std: {self.pixel_std} has a value <= 0")
        self.backbone.validate()

    def _validate_mask2former(self) -> None:
        if self.transformer_in_feature or self.enc_layers:
            raise ConfigError("model.transformer_in_feature, model.enc_layers: MaskFormer's "
                              "predictor settings; Mask2Former's decoder reads the pixel "
                              "decoder's three levels and has no encoder (leave them '' and 0)")
        if self.hidden_dim % 2:
            raise ConfigError(f"model.hidden_dim: {self.hidden_dim} is odd (the sine encoding "
                              "gives half the channels to each axis)")
        if self.conv_dim % self.pixel_decoder_num_heads:
            raise ConfigError(f"model.pixel_decoder_num_heads: {self.pixel_decoder_num_heads} "
                              f"does not divide conv_dim {self.conv_dim}")


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
    # Point-sampled mask costs and losses (Mask2Former): 0 = every pixel; P > 0 = P points
    # (12544 in Mask2Former), the loss's chosen by importance sampling.
    num_points: int = 0
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    mask_loss: str = "focal"  # "focal" (MaskFormer) | "bce" (sigmoid cross-entropy, Mask2Former)

    def validate(self) -> None:
        for key in ("class_weight", "mask_weight", "dice_weight", "focal_gamma"):
            _check_min(f"loss.{key}", getattr(self, key), 0.0)
        if self.class_weight + self.mask_weight + self.dice_weight == 0:
            raise ConfigError("loss.class_weight, loss.mask_weight, loss.dice_weight: all 0, "
                              "nothing would be learnt")
        _check_range("loss.no_object_weight", self.no_object_weight, 0.0, 1.0)
        if self.focal_alpha > 1:  # a negative alpha turns the class weighting off
            raise ConfigError(f"loss.focal_alpha: {self.focal_alpha} is above 1 (use a value "
                              "in [0, 1], or < 0 for no weighting)")
        _check_choice("loss.matcher", self.matcher, ("hungarian", "scipy"))
        _check_choice("loss.mask_loss", self.mask_loss, ("focal", "bce"))
        _check_min("loss.num_points", self.num_points, 0)
        _check_min("loss.oversample_ratio", self.oversample_ratio, 1.0)
        _check_range("loss.importance_sample_ratio", self.importance_sample_ratio, 0.0, 1.0)
        if self.num_points > 0 and self.ignore_padding:
            raise ConfigError("loss.ignore_padding: not supported with loss.num_points > 0 "
                              "(point sampling reads padding as background, as Mask2Former does)")


@dataclass
class DataConfig:
    """Where the data is and how it is fed (docs/datasets.md).

    `output_size` [H, W] pads (and, for training, cuts) every image to a fixed size so that all
    shapes are static; an empty list pads each batch to its largest image rounded up to
    `size_divisibility` instead. Evaluation pads to `eval_output_size` (default `output_size`)
    and never cuts.
    """

    # "coco_panoptic" | "coco_instance" (targets: every non-crowd segment) | "semantic" |
    # "ade20k_semantic" (the same: one target per class present)
    dataset: str = "coco_panoptic"
    train_files: str = ""
    val_files: str = ""
    dataset_info: str = ""  # dataset.json written by the converters
    record_format: str = "maskformer"  # "maskformer" | "model_garden" (needs dataset_info)
    augmentation: str = "coco_panoptic"  # one of AUGMENTATIONS
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
    # Large-scale jitter ("lsj"): the image fits a crop_size box times s ~ U[min, max], then is
    # cropped, or padded with crop_pad_value, to crop_size (INPUT.MIN_SCALE, INPUT.MAX_SCALE).
    scale_range: list[float] = field(default_factory=lambda: [0.1, 2.0])
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

    def validate(self) -> None:
        _check_choice("data.dataset", self.dataset, DATASETS)
        _check_choice("data.record_format", self.record_format, ("maskformer", "model_garden"))
        if self.record_format == "model_garden" and not self.dataset_info:
            raise ConfigError("data.dataset_info: data.record_format=model_garden needs the "
                              "category table (a dataset.json or COCO panoptic annotation file)")
        _check_choice("data.augmentation", self.augmentation, AUGMENTATIONS)
        _check_choice("data.mask_dtype", self.mask_dtype, ("uint8", "float32"))
        _check_size("data.output_size", self.output_size, allow_empty=True)
        _check_size("data.eval_output_size", self.eval_output_size, allow_empty=True)
        _check_size("data.eval_map_size", self.eval_map_size, allow_empty=True)
        _check_size("data.crop_size", self.crop_size, allow_empty=False)
        _check_min("data.size_divisibility", self.size_divisibility, 0)
        _check_sizes("data.min_scale_sizes", self.min_scale_sizes)
        _check_sizes("data.crop_short_edges", self.crop_short_edges)
        for key in ("max_size", "eval_short_edge", "eval_max_size", "max_instances"):
            _check_min(f"data.{key}", getattr(self, key), 1)
        _check_min("data.shuffle_buffer", self.shuffle_buffer, 0)
        if len(self.crop_range) != 2 or not 0 < self.crop_range[0] <= self.crop_range[1]:
            raise ConfigError(f"data.crop_range: expected [min, max] with 0 < min <= max, got "
                              f"{self.crop_range}")
        _check_range("data.crop_pad_value", self.crop_pad_value, 0.0, 255.0)
        if len(self.scale_range) != 2 or not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ConfigError(f"data.scale_range: expected [min, max] with 0 < min <= max, got "
                              f"{self.scale_range}")
        if self.eval_output_size:
            # The smallest resized evaluation image is a square of the short edge.
            short = min(self.eval_short_edge, self.eval_max_size)
            if short > max(self.eval_output_size):
                raise ConfigError(f"data.eval_output_size: {self.eval_output_size} cannot hold "
                                  f"any image resized to a short edge of {short} "
                                  "(data.eval_short_edge, data.eval_max_size); enlarge it")
        if (self.augmentation in ("ade20k", "lsj") and self.output_size
                and any(c > o for c, o in zip(self.crop_size, self.output_size, strict=True))):
            _warn(f"data.crop_size {self.crop_size} is larger than data.output_size "
                  f"{self.output_size}: every training crop is cut at the bottom/right")

    def num_categories(self) -> int | None:
        """The number of categories in `dataset_info`, if it names a readable small file."""
        return _count_categories(self.dataset_info) if self.dataset_info else None


# What `train.init_checkpoint_modules` can name.
INIT_CHECKPOINT_MODULES = ("all", "backbone", "pixel_decoder", "predictor")


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
    # Weights to start from (the Model Garden's convention): a model directory, a detectron2 /
    # torchvision / Hugging Face checkpoint file. Which parts: "backbone", "all", or a list of
    # parts ("backbone", "pixel_decoder", "predictor"). A resumed run ignores it.
    init_checkpoint: str = ""
    init_checkpoint_modules: str | list[str] = "backbone"

    def validate(self) -> None:
        modules = self.init_checkpoint_modules
        modules = [modules] if isinstance(modules, str) else list(modules)
        for part in modules:
            _check_choice("train.init_checkpoint_modules", part, INIT_CHECKPOINT_MODULES)
        if "all" in modules and len(modules) > 1:
            raise ConfigError("train.init_checkpoint_modules: 'all' cannot be combined with "
                              f"other parts, got {modules}")
        if self.mixed_precision not in ("float32", "bfloat16", "float16"):
            raise ConfigError(f"train.mixed_precision: {self.mixed_precision!r} is not "
                              "'float32', 'bfloat16' or 'float16'")
        if self.schedule not in ("step", "poly", "constant"):
            raise ConfigError(f"train.schedule: {self.schedule!r} is not 'step', 'poly' or "
                              "'constant'")
        for key in ("global_batch_size", "checkpoint_every", "keep_checkpoints", "log_every"):
            _check_min(f"train.{key}", getattr(self, key), 1)
        for key in ("steps", "warmup_steps", "eval_every", "weight_decay", "clip_norm",
                    "backbone_multiplier", "poly_power"):
            _check_min(f"train.{key}", getattr(self, key), 0)
        if self.learning_rate <= 0:
            raise ConfigError(f"train.learning_rate: {self.learning_rate} is not positive")
        if self.schedule == "step":
            if sorted(set(self.step_boundaries)) != self.step_boundaries:
                raise ConfigError(f"train.step_boundaries: {self.step_boundaries} is not "
                                  "strictly increasing")
            if self.step_boundaries and self.step_boundaries[0] < 1:
                raise ConfigError(f"train.step_boundaries: {self.step_boundaries} has a "
                                  "boundary below step 1")
            late = [b for b in self.step_boundaries if b >= self.steps]
            if late:
                _warn(f"train.step_boundaries {late} are not before train.steps "
                      f"{self.steps}: the learning rate never drops there")
        if self.steps and self.warmup_steps >= self.steps:
            _warn(f"train.warmup_steps {self.warmup_steps} is not below train.steps "
                  f"{self.steps}: training ends during the warm-up")


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
    ignore_label: int = IGNORE_LABEL  # semantic ground truth label that is not evaluated

    def validate(self) -> None:
        _check_range("eval.object_mask_threshold", self.object_mask_threshold, 0.0, 1.0)
        _check_range("eval.overlap_threshold", self.overlap_threshold, 0.0, 1.0)
        _check_min("eval.batch_size", self.batch_size, 1)
        _check_min("eval.instance_top_k", self.instance_top_k, 1)
        if self.ignore_label != IGNORE_LABEL:
            # The input pipeline writes void and padding as IGNORE_LABEL; any other value would
            # evaluate void pixels as a class, or skip a real class.
            raise ConfigError(f"eval.ignore_label: {self.ignore_label} is not supported; the "
                              f"input pipeline marks void pixels with {IGNORE_LABEL}")
        if not (self.panoptic or self.semantic or self.instance):
            _warn("eval.panoptic, eval.semantic and eval.instance are all false: evaluation "
                  "computes no metric")


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
        """Checks every section and the combinations of sections.

        Raises:
          ConfigError: a value or combination that cannot work, naming the key.

        Warns (`ConfigWarning`, once per run): combinations that run but train or evaluate
        worse than the user likely meant.
        """
        self.model.validate()
        self.loss.validate()
        self.data.validate()
        self.train.validate()
        self.eval.validate()
        self._check_combinations()
        return self

    def check_input_pipeline(self) -> None:
        """What training and evaluation on the input pipeline's records need beyond `validate`
        (a converted model of more classes still predicts)."""
        if self.model.num_classes > IGNORE_LABEL:
            raise ConfigError(f"model.num_classes: {self.model.num_classes} classes include the "
                              f"id {IGNORE_LABEL}, which the input pipeline uses for void "
                              "pixels: such a model predicts, but cannot be trained or evaluated "
                              "on records yet")

    def _check_combinations(self) -> None:
        model, data = self.model, self.data
        if data.max_instances > model.num_queries:
            _warn(f"data.max_instances {data.max_instances} is more than model.num_queries "
                  f"{model.num_queries}: in an image with more than {model.num_queries} target "
                  "segments, the extra targets match no query and get no loss")
        known = data.num_categories()
        if known is not None and known != model.num_classes:
            raise ConfigError(f"model.num_classes: {model.num_classes}, but data.dataset_info "
                              f"({data.dataset_info}) lists {known} categories: set "
                              f"model.num_classes={known} (a new class head when fine-tuning)")


# dataset.json is small; a COCO panoptic annotation file (a possible data.dataset_info with
# Model Garden records) can be hundreds of MB and is not read just to count its categories.
_MAX_INFO_BYTES = 16 * 2**20
_category_counts: dict[tuple[str, float], int | None] = {}


def _count_categories(path: str) -> int | None:
    """Number of entries of the "categories" list of a JSON file; None if it cannot be read."""
    file = Path(path)
    try:
        stat = file.stat()
    except OSError:
        return None
    key = (str(file.resolve()), stat.st_mtime)
    if key not in _category_counts:
        count = None
        if stat.st_size <= _MAX_INFO_BYTES:
            try:
                data = json.loads(file.read_text())
                if isinstance(data, dict) and isinstance(data.get("categories"), list):
                    count = len(data["categories"])
            except (OSError, ValueError):
                count = None
        _category_counts[key] = count
    return _category_counts[key]


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
