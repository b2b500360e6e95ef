"""Registry of named experiments.

Each experiment is a function returning a complete `ExperimentConfig`; `get_experiment(name)`
builds a fresh copy that the caller may override (`config.apply_overrides`).

Every released model of the original MaskFormer has an experiment with its config's settings;
`ZOO` maps those experiments to the released checkpoint, its Hugging Face copy and its published
result (docs/model_zoo.md). `MASK2FORMER_ZOO` does the same for the released image models of the
original Mask2Former that this project can express (docs/model_zoo.md lists the others and why).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from maskformer.config import (
    BackboneConfig,
    ConfigError,
    DataConfig,
    EvalConfig,
    ExperimentConfig,
    LossConfig,
    ModelConfig,
    SwinConfig,
    TrainConfig,
)

_REGISTRY: dict[str, Callable[[], ExperimentConfig]] = {}


def register(fn: Callable[[], ExperimentConfig]) -> Callable[[], ExperimentConfig]:
    _REGISTRY[fn.__name__] = fn
    return fn


def list_experiments() -> list[str]:
    return sorted(_REGISTRY)


def describe(name: str) -> str:
    """The first line of the experiment's docstring."""
    return (_REGISTRY[name].__doc__ or "").strip().splitlines()[0] if name in _REGISTRY else ""


def get_experiment(name: str) -> ExperimentConfig:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown experiment {name!r}; known: {', '.join(list_experiments())}")
    config = _REGISTRY[name]()
    config.name = name
    return config.validate()


# ---------------------------------------------------------------------------------------------
# The released models of the original MaskFormer (docs/model_zoo.md)
# ---------------------------------------------------------------------------------------------

# The ImageNet weights each backbone's training starts from, as the configs name them
# (MODEL.WEIGHTS): detectron2's torchvision conversions and DeepLab ResNet, and the Swin
# releases converted to detectron2 pickles.
INIT_WEIGHTS = {
    "R50": "detectron2://ImageNetPretrained/torchvision/R-50.pkl",
    "R101": "R-101.pkl",
    "R101c": "detectron2://DeepLab/R-103.pkl",
    "Swin-T": "swin_tiny_patch4_window7_224.pkl",
    "Swin-S": "swin_small_patch4_window7_224.pkl",
    "Swin-B": "swin_base_patch4_window12_384_22k.pkl",
    "Swin-L": "swin_large_patch4_window12_384_22k.pkl",
}

# MODEL.SWIN of the released models: (embed_dim, depths, num_heads, window_size). The rest is
# SwinConfig's defaults, as in every config: patch 4, no absolute position embedding, patch
# norm, stochastic depth 0.3.
_SWIN = {
    "Swin-T": (96, [2, 2, 6, 2], [3, 6, 12, 24], 7),
    "Swin-S": (96, [2, 2, 18, 2], [3, 6, 12, 24], 7),
    "Swin-B": (128, [2, 2, 18, 2], [4, 8, 16, 32], 12),
    "Swin-L": (192, [2, 2, 18, 2], [6, 12, 24, 48], 12),
}


@dataclass(frozen=True)
class ZooModel:
    """A released model of the original MaskFormer (or Mask2Former) and where its experiment's
    settings come from.

    Attributes:
      config: the original's config file, under its `configs/` folder.
      file: the released detectron2 checkpoint, ``model_final_<id>.pkl``.
      hf_id: its Hugging Face copy, or None where there is none (R101c, the panoptic ResNets).
      metric: the published result ("multi-scale": with test-time augmentation).
      backbone: "R50", "R101", "R101c" (DeepLab stem, res5 multi-grid) or "Swin-T/S/B/L".
      categories: the built-in category list of its classes (`maskformer.data.categories`).
      weights: the ImageNet weights its training starts from where they are not the backbone's
        `INIT_WEIGHTS` (Mask2Former's Swin-B trained on ImageNet-1k only); "" otherwise.
    """

    config: str
    file: str
    hf_id: str | None
    metric: str
    backbone: str
    categories: str
    weights: str = ""

    @property
    def init_weights(self) -> str:
        """The ImageNet weights its training starts from (the config's MODEL.WEIGHTS)."""
        return self.weights or INIT_WEIGHTS[self.backbone]


def _zoo(config: str, file: str, hf: str | None, metric: str, backbone: str,
         categories: str) -> ZooModel:
    return ZooModel(config, f"model_final_{file}.pkl", hf and f"facebook/maskformer-{hf}",
                    metric, backbone, categories)


# Experiment name -> the released model it reproduces. Every released MaskFormer model has one.
ZOO: dict[str, ZooModel] = {
    "maskformer_ade20k_semantic_r50": _zoo(
        "ade20k-150/maskformer_R50_bs16_160k.yaml", "d8dbeb", "resnet50-ade",
        "mIoU 44.5 (multi-scale 46.7)", "R50", "ade20k_150"),
    "maskformer_ade20k_semantic_r101": _zoo(
        "ade20k-150/maskformer_R101_bs16_160k.yaml", "1aeb94", "resnet101-ade",
        "mIoU 45.5 (multi-scale 47.2)", "R101", "ade20k_150"),
    "maskformer_ade20k_semantic_r101c": _zoo(
        "ade20k-150/maskformer_R101c_bs16_160k.yaml", "b432ea", None,
        "mIoU 46.0 (multi-scale 48.1)", "R101c", "ade20k_150"),
    "maskformer_ade20k_semantic_swin_tiny": _zoo(
        "ade20k-150/swin/maskformer_swin_tiny_bs16_160k.yaml", "8657a5", "swin-tiny-ade",
        "mIoU 46.7 (multi-scale 48.8)", "Swin-T", "ade20k_150"),
    "maskformer_ade20k_semantic_swin_small": _zoo(
        "ade20k-150/swin/maskformer_swin_small_bs16_160k.yaml", "528157", "swin-small-ade",
        "mIoU 49.8 (multi-scale 51.0)", "Swin-S", "ade20k_150"),
    "maskformer_ade20k_semantic_swin_base": _zoo(
        "ade20k-150/swin/maskformer_swin_base_IN21k_384_bs16_160k_res640.yaml", "45388b",
        "swin-base-ade", "mIoU 52.7 (multi-scale 53.9)", "Swin-B", "ade20k_150"),
    "maskformer_ade20k_semantic_swin_large": _zoo(
        "ade20k-150/swin/maskformer_swin_large_IN21k_384_bs16_160k_res640.yaml", "aefa3b",
        "swin-large-ade", "mIoU 54.1 (multi-scale 55.6)", "Swin-L", "ade20k_150"),
    "maskformer_coco_stuff_semantic_r50": _zoo(
        "coco-stuff-10k-171/maskformer_R50_bs32_60k.yaml", "cb03eb", "resnet50-coco-stuff",
        "mIoU 37.1", "R50", "coco_stuff_171"),
    "maskformer_coco_stuff_semantic_r101": _zoo(
        "coco-stuff-10k-171/maskformer_R101_bs32_60k.yaml", "eb19bb", "resnet101-coco-stuff",
        "mIoU 38.1", "R101", "coco_stuff_171"),
    "maskformer_coco_stuff_semantic_r101c": _zoo(
        "coco-stuff-10k-171/maskformer_R101c_bs32_60k.yaml", "bffd25", None,
        "mIoU 38.0", "R101c", "coco_stuff_171"),
    "maskformer_ade20k_full_semantic_r50": _zoo(
        "ade20k-full-847/maskformer_R50_bs16_200k.yaml", "f4e3f6", "resnet50-ade20k-full",
        "mIoU 16.0", "R50", "ade20k_full_847"),
    "maskformer_ade20k_full_semantic_r101": _zoo(
        "ade20k-full-847/maskformer_R101_bs16_200k.yaml", "88df33", "resnet101-ade20k-full",
        "mIoU 16.8", "R101", "ade20k_full_847"),
    "maskformer_ade20k_full_semantic_r101c": _zoo(
        "ade20k-full-847/maskformer_R101c_bs16_200k.yaml", "75d34e", None,
        "mIoU 17.4", "R101c", "ade20k_full_847"),
    "maskformer_cityscapes_semantic_r101": _zoo(
        "cityscapes-19/maskformer_R101_bs16_90k.yaml", "38c00c", "resnet101-cityscapes",
        "mIoU 78.5 (multi-scale 80.3)", "R101", "cityscapes_19"),
    "maskformer_cityscapes_semantic_r101c": _zoo(
        "cityscapes-19/maskformer_R101c_bs16_90k.yaml", "4f8ff9", None,
        "mIoU 79.7 (multi-scale 81.4)", "R101c", "cityscapes_19"),
    "maskformer_vistas_semantic_r50": _zoo(
        "mapillary-vistas-65/maskformer_R50_bs16_300k.yaml", "f3fc73", "resnet50-vistas",
        "mIoU 53.1 (multi-scale 55.4)", "R50", "mapillary_vistas_65"),
    "maskformer_coco_panoptic_r50": _zoo(
        "coco-panoptic/maskformer_panoptic_R50_bs64_554k.yaml", "6f60dc", None,
        "PQ 46.5", "R50", "coco_panoptic"),
    "maskformer_coco_panoptic_r101": _zoo(
        "coco-panoptic/maskformer_panoptic_R101_bs64_554k.yaml", "57b049", None,
        "PQ 47.6", "R101", "coco_panoptic"),
    "maskformer_coco_panoptic_swin_tiny": _zoo(
        "coco-panoptic/swin/maskformer_panoptic_swin_tiny_bs64_554k.yaml", "539394",
        "swin-tiny-coco", "PQ 47.7", "Swin-T", "coco_panoptic"),
    "maskformer_coco_panoptic_swin_small": _zoo(
        "coco-panoptic/swin/maskformer_panoptic_swin_small_bs64_554k.yaml", "5bf6b1",
        "swin-small-coco", "PQ 49.7", "Swin-S", "coco_panoptic"),
    "maskformer_coco_panoptic_swin_base": _zoo(
        "coco-panoptic/swin/maskformer_panoptic_swin_base_IN21k_384_bs64_554k.yaml", "4b7f49",
        "swin-base-coco", "PQ 51.8", "Swin-B", "coco_panoptic"),
    "maskformer_coco_panoptic_swin_large": _zoo(
        "coco-panoptic/swin/maskformer_panoptic_swin_large_IN21k_384_bs64_554k.yaml", "7505c4",
        "swin-large-coco", "PQ 52.7", "Swin-L", "coco_panoptic"),
    "maskformer_ade20k_panoptic_r50": _zoo(
        "ade20k-150-panoptic/maskformer_panoptic_R50_bs16_720k.yaml", "7aa977", None,
        "PQ 34.7", "R50", "ade20k_150"),
    "maskformer_ade20k_panoptic_r101": _zoo(
        "ade20k-150-panoptic/maskformer_panoptic_R101_bs16_720k.yaml", "0b3cc8", None,
        "PQ 35.7", "R101", "ade20k_150"),
}


def _backbone(name: str) -> BackboneConfig:
    """The backbone of a zoo name ("R50", "R101", "R101c", "Swin-T".."Swin-L")."""
    if name in _SWIN:
        embed_dim, depths, num_heads, window_size = _SWIN[name]
        return BackboneConfig(type="swin", swin=SwinConfig(
            embed_dim=embed_dim, depths=list(depths), num_heads=list(num_heads),
            window_size=window_size))
    if name == "R101c":
        # detectron2's build_resnet_deeplab_backbone: three-conv stem of 128 channels, res5's
        # blocks dilated 1, 2, 4.
        return BackboneConfig(depth=101, stem_type="deeplab", stem_channels=128,
                              res5_multi_grid=[1, 2, 4])
    return BackboneConfig(depth={"R50": 50, "R101": 101}[name])


def _train(backbone: str, batch_size: int, steps: int,
           step_boundaries: list[int] | None = None) -> TrainConfig:
    """SOLVER.*: AdamW at 1e-4 with weight decay 1e-4, the backbone at 0.1x, gradient norm
    clipped at 0.01; the poly schedule (power 0.9), or steps of 0.1x at `step_boundaries`.
    The Swin models: 6e-5, weight decay 0.01, the backbone at 1x, 1500 steps of linear warm-up
    (WARMUP_FACTOR 1e-6)."""
    swin = backbone in _SWIN
    return TrainConfig(global_batch_size=batch_size, steps=steps,
                       learning_rate=6e-5 if swin else 1e-4,
                       weight_decay=0.01 if swin else 1e-4,
                       backbone_multiplier=1.0 if swin else 0.1, clip_norm=0.01,
                       schedule="step" if step_boundaries else "poly", poly_power=0.9,
                       step_boundaries=list(step_boundaries or []),
                       warmup_steps=1500 if swin else 0)


def _scales(base: int, stop: int) -> list[int]:
    """INPUT.MIN_SIZE_TRAIN of the semantic configs: short edges of 0.5x up to (stop - 1) / 10
    times `base`, in the configs' own arithmetic."""
    return [int(x * 0.1 * base) for x in range(5, stop)]


@dataclass(frozen=True)
class _Recipe:
    """A dataset's settings in the original's semantic-style configs (INPUT.*, SOLVER.*)."""

    dataset: str  # data.dataset
    num_classes: int
    crop: tuple[int, int]  # INPUT.CROP.SIZE [H, W] ("absolute")
    min_sizes: tuple[int, ...]  # INPUT.MIN_SIZE_TRAIN ("choice")
    max_size: int  # INPUT.MAX_SIZE_TRAIN
    test_size: tuple[int, int]  # INPUT.MIN_SIZE_TEST, INPUT.MAX_SIZE_TEST
    batch_size: int  # SOLVER.IMS_PER_BATCH
    steps: int  # SOLVER.MAX_ITER


# data.dataset: the pipeline reads every semantic dataset's records as "ade20k_semantic" does
# (one segment per class present). Its built-in class names are ZOO[...].categories.
_ADE20K = _Recipe("ade20k_semantic", 150, (512, 512), tuple(_scales(512, 21)), 2048,
                  (512, 2048), 16, 160_000)
# The Swin-B/L "res640" configs.
_ADE20K_640 = replace(_ADE20K, crop=(640, 640), min_sizes=tuple(_scales(640, 21)),
                      max_size=2560, test_size=(640, 2560))
_ADE20K_FULL = replace(_ADE20K, num_classes=847, steps=200_000)
_COCO_STUFF = _Recipe("ade20k_semantic", 171, (640, 640), tuple(_scales(640, 16)), 2560,
                      (640, 2560), 32, 60_000)
_CITYSCAPES = _Recipe("ade20k_semantic", 19, (512, 1024), tuple(_scales(1024, 21)), 4096,
                      (1024, 2048), 16, 90_000)
_VISTAS = _Recipe("ade20k_semantic", 65, (1280, 1280), tuple(_scales(2048, 21)), 8192,
                  (2048, 2048), 16, 300_000)
# The panoptic ADE20K configs: the ADE20K model and recipe at 640, 720k steps. Their records
# are panoptic; data.dataset "ade20k_semantic" names ADE20K-150's classes and thing split.
_ADE20K_PANOPTIC = replace(_ADE20K_640, steps=720_000)


def _recipe_data(recipe: _Recipe) -> DataConfig:
    """INPUT.* of a semantic-style config: shortest edge a choice of `min_sizes` (long edge
    capped), an "absolute" crop padded to the crop size, SSD colour jitter and flip; evaluation
    at the test size, images padded to multiples of 32."""
    crop = list(recipe.crop)
    return DataConfig(dataset=recipe.dataset, augmentation="ade20k", output_size=crop,
                      crop_size=crop, min_scale_sizes=list(recipe.min_sizes),
                      max_size=recipe.max_size, eval_short_edge=recipe.test_size[0],
                      eval_max_size=recipe.test_size[1], eval_output_size=[],
                      size_divisibility=32)


def _semantic(recipe: _Recipe, backbone: str) -> ExperimentConfig:
    """FPN pixel decoder, the predictor on res5; each training crop padded to the crop size
    (INPUT.SIZE_DIVISIBILITY), evaluation images to multiples of 32; semantic output only
    (PANOPTIC_ON off, both thresholds 0)."""
    return ExperimentConfig(
        model=ModelConfig(backbone=_backbone(backbone), num_classes=recipe.num_classes,
                          pixel_decoder="fpn", size_divisibility=32),
        data=_recipe_data(recipe),
        train=_train(backbone, recipe.batch_size, recipe.steps),
        eval=EvalConfig(panoptic=False, semantic=True, object_mask_threshold=0.0,
                        overlap_threshold=0.0),
    )


def _ade20k_panoptic(backbone: str) -> ExperimentConfig:
    """ADE20K-150 panoptic: the 640 recipe with the 6-layer transformer-encoder pixel decoder."""
    config = _semantic(_ADE20K_PANOPTIC, backbone)
    config.model.pixel_decoder = "transformer_encoder"
    config.eval = EvalConfig(panoptic=True, semantic=True, object_mask_threshold=0.7,
                             overlap_threshold=0.8)
    return config


def _coco_panoptic(backbone: str, max_size: int = 1333) -> ExperimentConfig:
    """COCO panoptic: DETR's augmentation (`max_size` is INPUT.MAX_SIZE_TRAIN), no padding to a
    size divisibility, 554k steps at batch 64 with one 0.1x drop. The ResNets use the 6-layer
    transformer-encoder pixel decoder; the Swins the FPN, the predictor on res5 through an
    input projection (ENFORCE_INPUT_PROJ)."""
    swin = backbone in _SWIN
    return ExperimentConfig(
        model=ModelConfig(
            backbone=_backbone(backbone),
            num_classes=133,
            pixel_decoder="fpn" if swin else "transformer_encoder",
            transformer_in_feature="res5" if swin else "",
            enforce_input_proj=swin,
            size_divisibility=0,
        ),
        data=DataConfig(dataset="coco_panoptic", augmentation="coco_panoptic",
                        output_size=[640, 640], max_size=max_size),
        train=_train(backbone, 64, 554_400, step_boundaries=[369_600]),
        eval=EvalConfig(object_mask_threshold=0.8, overlap_threshold=0.8),
    )


# ADE20K-150 semantic


@register
def maskformer_ade20k_semantic_r50() -> ExperimentConfig:
    """ADE20K-150 semantic, R50 + FPN pixel decoder (mIoU 44.5 published)."""
    return _semantic(_ADE20K, "R50")


@register
def maskformer_ade20k_semantic_r101() -> ExperimentConfig:
    """ADE20K-150 semantic, R101 + FPN pixel decoder (mIoU 45.5 published)."""
    return _semantic(_ADE20K, "R101")


@register
def maskformer_ade20k_semantic_r101c() -> ExperimentConfig:
    """ADE20K-150 semantic, R101c (DeepLab stem) + FPN pixel decoder (mIoU 46.0 published)."""
    return _semantic(_ADE20K, "R101c")


@register
def maskformer_ade20k_semantic_swin_tiny() -> ExperimentConfig:
    """ADE20K-150 semantic, Swin-T + FPN pixel decoder (mIoU 46.7 published)."""
    return _semantic(_ADE20K, "Swin-T")


@register
def maskformer_ade20k_semantic_swin_small() -> ExperimentConfig:
    """ADE20K-150 semantic, Swin-S + FPN pixel decoder (mIoU 49.8 published)."""
    return _semantic(_ADE20K, "Swin-S")


@register
def maskformer_ade20k_semantic_swin_base() -> ExperimentConfig:
    """ADE20K-150 semantic, Swin-B (IN-21k) + FPN pixel decoder, 640 crops (mIoU 52.7 published)."""
    return _semantic(_ADE20K_640, "Swin-B")


@register
def maskformer_ade20k_semantic_swin_large() -> ExperimentConfig:
    """ADE20K-150 semantic, Swin-L (IN-21k) + FPN pixel decoder, 640 crops (mIoU 54.1 published)."""
    return _semantic(_ADE20K_640, "Swin-L")


# COCO-Stuff-10K semantic


@register
def maskformer_coco_stuff_semantic_r50() -> ExperimentConfig:
    """COCO-Stuff-10K semantic (171 classes), R50 + FPN pixel decoder (mIoU 37.1 published)."""
    return _semantic(_COCO_STUFF, "R50")


@register
def maskformer_coco_stuff_semantic_r101() -> ExperimentConfig:
    """COCO-Stuff-10K semantic (171 classes), R101 + FPN pixel decoder (mIoU 38.1 published)."""
    return _semantic(_COCO_STUFF, "R101")


@register
def maskformer_coco_stuff_semantic_r101c() -> ExperimentConfig:
    """COCO-Stuff-10K semantic (171 classes), R101c + FPN pixel decoder (mIoU 38.0 published)."""
    return _semantic(_COCO_STUFF, "R101c")


# ADE20K-Full semantic: 847 classes.


@register
def maskformer_ade20k_full_semantic_r50() -> ExperimentConfig:
    """ADE20K-Full semantic (847 classes), R50 + FPN pixel decoder (mIoU 16.0 published)."""
    return _semantic(_ADE20K_FULL, "R50")


@register
def maskformer_ade20k_full_semantic_r101() -> ExperimentConfig:
    """ADE20K-Full semantic (847 classes), R101 + FPN pixel decoder (mIoU 16.8 published)."""
    return _semantic(_ADE20K_FULL, "R101")


@register
def maskformer_ade20k_full_semantic_r101c() -> ExperimentConfig:
    """ADE20K-Full semantic (847 classes), R101c + FPN pixel decoder (mIoU 17.4 published)."""
    return _semantic(_ADE20K_FULL, "R101c")


# Cityscapes and Mapillary Vistas semantic


@register
def maskformer_cityscapes_semantic_r101() -> ExperimentConfig:
    """Cityscapes semantic (19 classes), R101 + FPN pixel decoder (mIoU 78.5 published)."""
    return _semantic(_CITYSCAPES, "R101")


@register
def maskformer_cityscapes_semantic_r101c() -> ExperimentConfig:
    """Cityscapes semantic (19 classes), R101c + FPN pixel decoder (mIoU 79.7 published)."""
    return _semantic(_CITYSCAPES, "R101c")


@register
def maskformer_vistas_semantic_r50() -> ExperimentConfig:
    """Mapillary Vistas semantic (65 classes), R50 + FPN pixel decoder (mIoU 53.1 published)."""
    return _semantic(_VISTAS, "R50")


# COCO panoptic


@register
def maskformer_coco_panoptic_r50() -> ExperimentConfig:
    """COCO panoptic, R50 + transformer-encoder pixel decoder (PQ 46.5 published)."""
    return _coco_panoptic("R50")


@register
def maskformer_coco_panoptic_r101() -> ExperimentConfig:
    """COCO panoptic, R101 + transformer-encoder pixel decoder (PQ 47.6 published)."""
    return _coco_panoptic("R101")


@register
def maskformer_coco_panoptic_swin_tiny() -> ExperimentConfig:
    """COCO panoptic, Swin-T + FPN pixel decoder, predictor on res5 (PQ 47.7 published)."""
    return _coco_panoptic("Swin-T")


@register
def maskformer_coco_panoptic_swin_small() -> ExperimentConfig:
    """COCO panoptic, Swin-S + FPN pixel decoder, predictor on res5 (PQ 49.7 published)."""
    return _coco_panoptic("Swin-S")


@register
def maskformer_coco_panoptic_swin_base() -> ExperimentConfig:
    """COCO panoptic, Swin-B (IN-21k) + FPN pixel decoder, predictor on res5 (PQ 51.8 published)."""
    return _coco_panoptic("Swin-B")


@register
def maskformer_coco_panoptic_swin_large() -> ExperimentConfig:
    """COCO panoptic, Swin-L (IN-21k) + FPN pixel decoder, predictor on res5 (PQ 52.7 published)."""
    # The only config that lowers INPUT.MAX_SIZE_TRAIN (1333 by default).
    return _coco_panoptic("Swin-L", max_size=1000)


# ADE20K-150 panoptic


@register
def maskformer_ade20k_panoptic_r50() -> ExperimentConfig:
    """ADE20K-150 panoptic, R50 + transformer-encoder pixel decoder (PQ 34.7 published)."""
    return _ade20k_panoptic("R50")


@register
def maskformer_ade20k_panoptic_r101() -> ExperimentConfig:
    """ADE20K-150 panoptic, R101 + transformer-encoder pixel decoder (PQ 35.7 published)."""
    return _ade20k_panoptic("R101")


# ---------------------------------------------------------------------------------------------
# The released models of the original Mask2Former (docs/model_zoo.md)
# ---------------------------------------------------------------------------------------------

# Mask2Former's Swin-B comes in two: from ImageNet-1k weights (configs "swin_base_384") and from
# the ImageNet-21k ones of MaskFormer's Swin-B (configs "swin_base_IN21k_384"); the network is the
# same (window 12, PRETRAIN_IMG_SIZE 384, no absolute position embedding).
_SWIN_B_IN1K = "swin_base_patch4_window12_384.pkl"


def _zoo2(config: str, file: str, hf: str | None, metric: str, backbone: str,
          categories: str, weights: str = "") -> ZooModel:
    return ZooModel(config, f"model_final_{file}.pkl", hf and f"facebook/mask2former-{hf}",
                    metric, backbone, categories, weights)


# Experiment name -> the released Mask2Former model it reproduces: every released image model
# (not the video models, docs/model_zoo.md). Names: mask2former_<data>_<task>_<backbone>, the
# backbone as in the original's config names: "swin_base" starts from IN-1k weights,
# "swin_base_in21k" from IN-21k ones (Swin-L always from IN-21k). Hugging Face ids follow
# transformers' conversion script (mask2former-swin-<size>-<data>-<task>); it converts the Swin
# models only. Two Swin models have none: no public code was found that loads an ADE20K instance
# or a Cityscapes instance Swin-B (IN-21k) copy.
MASK2FORMER_ZOO: dict[str, ZooModel] = {
    "mask2former_coco_panoptic_r50": _zoo2(
        "coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml", "94dc52", None,
        "PQ 51.9 (AP 41.7, mIoU 61.7)", "R50", "coco_panoptic"),
    "mask2former_coco_panoptic_r101": _zoo2(
        "coco/panoptic-segmentation/maskformer2_R101_bs16_50ep.yaml", "b807bd", None,
        "PQ 52.6 (AP 42.6, mIoU 62.4)", "R101", "coco_panoptic"),
    "mask2former_coco_panoptic_swin_tiny": _zoo2(
        "coco/panoptic-segmentation/swin/maskformer2_swin_tiny_bs16_50ep.yaml", "9fd0ae",
        "swin-tiny-coco-panoptic", "PQ 53.2 (AP 43.3, mIoU 63.2)", "Swin-T", "coco_panoptic"),
    "mask2former_coco_panoptic_swin_small": _zoo2(
        "coco/panoptic-segmentation/swin/maskformer2_swin_small_bs16_50ep.yaml", "a407fd",
        "swin-small-coco-panoptic", "PQ 54.6 (AP 44.7, mIoU 64.2)", "Swin-S", "coco_panoptic"),
    "mask2former_coco_panoptic_swin_base": _zoo2(
        "coco/panoptic-segmentation/swin/maskformer2_swin_base_384_bs16_50ep.yaml", "9d7f02",
        "swin-base-coco-panoptic", "PQ 55.1 (AP 45.2, mIoU 65.1)", "Swin-B", "coco_panoptic",
        _SWIN_B_IN1K),
    "mask2former_coco_panoptic_swin_base_in21k": _zoo2(
        "coco/panoptic-segmentation/swin/maskformer2_swin_base_IN21k_384_bs16_50ep.yaml",
        "54b88a", "swin-base-IN21k-coco-panoptic", "PQ 56.4 (AP 46.3, mIoU 67.1)", "Swin-B",
        "coco_panoptic"),
    "mask2former_coco_panoptic_swin_large": _zoo2(
        "coco/panoptic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_100ep.yaml",
        "f07440", "swin-large-coco-panoptic", "PQ 57.8 (AP 48.6, mIoU 67.4)", "Swin-L",
        "coco_panoptic"),
    "mask2former_ade20k_semantic_r50": _zoo2(
        "ade20k/semantic-segmentation/maskformer2_R50_bs16_160k.yaml", "500878", None,
        "mIoU 47.2 (multi-scale 49.2)", "R50", "ade20k_150"),
    "mask2former_ade20k_semantic_r101": _zoo2(
        "ade20k/semantic-segmentation/maskformer2_R101_bs16_90k.yaml", "0d68be", None,
        "mIoU 47.8 (multi-scale 50.1)", "R101", "ade20k_150"),
    "mask2former_ade20k_semantic_swin_tiny": _zoo2(
        "ade20k/semantic-segmentation/swin/maskformer2_swin_tiny_bs16_160k.yaml", "5274a6",
        "swin-tiny-ade-semantic", "mIoU 47.7 (multi-scale 49.6)", "Swin-T", "ade20k_150"),
    "mask2former_ade20k_semantic_swin_small": _zoo2(
        "ade20k/semantic-segmentation/swin/maskformer2_swin_small_bs16_160k.yaml", "011c6d",
        "swin-small-ade-semantic", "mIoU 51.3 (multi-scale 52.4)", "Swin-S", "ade20k_150"),
    "mask2former_ade20k_semantic_swin_base": _zoo2(
        "ade20k/semantic-segmentation/swin/maskformer2_swin_base_384_bs16_160k_res640.yaml",
        "503e96", "swin-base-ade-semantic", "mIoU 52.4 (multi-scale 53.7)", "Swin-B",
        "ade20k_150", _SWIN_B_IN1K),
    "mask2former_ade20k_semantic_swin_base_in21k": _zoo2(
        "ade20k/semantic-segmentation/swin/maskformer2_swin_base_IN21k_384_bs16_160k_res640.yaml",
        "7e47bf", "swin-base-IN21k-ade-semantic", "mIoU 53.9 (multi-scale 55.1)", "Swin-B",
        "ade20k_150"),
    "mask2former_ade20k_semantic_swin_large": _zoo2(
        "ade20k/semantic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_160k_res640.yaml",
        "6b4a3a", "swin-large-ade-semantic", "mIoU 56.1 (multi-scale 57.3)", "Swin-L",
        "ade20k_150"),
    "mask2former_ade20k_panoptic_r50": _zoo2(
        "ade20k/panoptic-segmentation/maskformer2_R50_bs16_160k.yaml", "5c90d4", None,
        "PQ 39.7 (AP 26.5, mIoU 46.1)", "R50", "ade20k_150"),
    "mask2former_ade20k_panoptic_swin_large": _zoo2(
        "ade20k/panoptic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_160k.yaml",
        "e0c58e", "swin-large-ade-panoptic", "PQ 48.1 (AP 34.2, mIoU 54.5)", "Swin-L",
        "ade20k_150"),
    "mask2former_cityscapes_semantic_r50": _zoo2(
        "cityscapes/semantic-segmentation/maskformer2_R50_bs16_90k.yaml", "cc1b1f", None,
        "mIoU 79.4 (multi-scale 82.2)", "R50", "cityscapes_19"),
    "mask2former_cityscapes_semantic_r101": _zoo2(
        "cityscapes/semantic-segmentation/maskformer2_R101_bs16_90k.yaml", "257ce8", None,
        "mIoU 80.1 (multi-scale 81.9)", "R101", "cityscapes_19"),
    "mask2former_cityscapes_semantic_swin_tiny": _zoo2(
        "cityscapes/semantic-segmentation/swin/maskformer2_swin_tiny_bs16_90k.yaml", "2d58d4",
        "swin-tiny-cityscapes-semantic", "mIoU 82.1 (multi-scale 83.0)", "Swin-T",
        "cityscapes_19"),
    "mask2former_cityscapes_semantic_swin_small": _zoo2(
        "cityscapes/semantic-segmentation/swin/maskformer2_swin_small_bs16_90k.yaml", "fa26ae",
        "swin-small-cityscapes-semantic", "mIoU 82.6 (multi-scale 83.6)", "Swin-S",
        "cityscapes_19"),
    "mask2former_cityscapes_semantic_swin_base_in21k": _zoo2(
        "cityscapes/semantic-segmentation/swin/maskformer2_swin_base_IN21k_384_bs16_90k.yaml",
        "1c6b65", "swin-base-IN21k-cityscapes-semantic", "mIoU 83.3 (multi-scale 84.5)",
        "Swin-B", "cityscapes_19"),
    "mask2former_cityscapes_semantic_swin_large": _zoo2(
        "cityscapes/semantic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_90k.yaml",
        "17c1ee", "swin-large-cityscapes-semantic", "mIoU 83.3 (multi-scale 84.3)", "Swin-L",
        "cityscapes_19"),
    "mask2former_cityscapes_panoptic_r50": _zoo2(
        "cityscapes/panoptic-segmentation/maskformer2_R50_bs16_90k.yaml", "4ab90c", None,
        "PQ 62.1 (AP 37.3, mIoU 77.5)", "R50", "cityscapes_19"),
    "mask2former_cityscapes_panoptic_r101": _zoo2(
        "cityscapes/panoptic-segmentation/maskformer2_R101_bs16_90k.yaml", "04d286", None,
        "PQ 62.4 (AP 37.7, mIoU 78.6)", "R101", "cityscapes_19"),
    "mask2former_cityscapes_panoptic_swin_tiny": _zoo2(
        "cityscapes/panoptic-segmentation/swin/maskformer2_swin_tiny_bs16_90k.yaml", "ceba0f",
        "swin-tiny-cityscapes-panoptic", "PQ 63.9 (AP 39.1, mIoU 80.5)", "Swin-T",
        "cityscapes_19"),
    "mask2former_cityscapes_panoptic_swin_small": _zoo2(
        "cityscapes/panoptic-segmentation/swin/maskformer2_swin_small_bs16_90k.yaml", "23efb7",
        "swin-small-cityscapes-panoptic", "PQ 64.8 (AP 40.7, mIoU 81.8)", "Swin-S",
        "cityscapes_19"),
    "mask2former_cityscapes_panoptic_swin_base_in21k": _zoo2(
        "cityscapes/panoptic-segmentation/swin/maskformer2_swin_base_IN21k_384_bs16_90k.yaml",
        "fa840f", "swin-base-IN21k-cityscapes-panoptic", "PQ 66.1 (AP 42.8, mIoU 82.7)",
        "Swin-B", "cityscapes_19"),
    "mask2former_cityscapes_panoptic_swin_large": _zoo2(
        "cityscapes/panoptic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_90k.yaml",
        "064788", "swin-large-cityscapes-panoptic", "PQ 66.6 (AP 43.6, mIoU 82.9)", "Swin-L",
        "cityscapes_19"),
    "mask2former_coco_instance_r50": _zoo2(
        "coco/instance-segmentation/maskformer2_R50_bs16_50ep.yaml", "3c8ec9", None,
        "AP 43.7 (boundary AP 30.6)", "R50", "coco_instance_80"),
    "mask2former_coco_instance_r101": _zoo2(
        "coco/instance-segmentation/maskformer2_R101_bs16_50ep.yaml", "eba159", None,
        "AP 44.2 (boundary AP 31.1)", "R101", "coco_instance_80"),
    "mask2former_coco_instance_swin_tiny": _zoo2(
        "coco/instance-segmentation/swin/maskformer2_swin_tiny_bs16_50ep.yaml",
        "86143f", "swin-tiny-coco-instance",
        "AP 45.0 (boundary AP 31.8)", "Swin-T", "coco_instance_80"),
    "mask2former_coco_instance_swin_small": _zoo2(
        "coco/instance-segmentation/swin/maskformer2_swin_small_bs16_50ep.yaml",
        "1e7f22", "swin-small-coco-instance",
        "AP 46.3 (boundary AP 32.9)", "Swin-S", "coco_instance_80"),
    "mask2former_coco_instance_swin_base": _zoo2(
        "coco/instance-segmentation/swin/maskformer2_swin_base_384_bs16_50ep.yaml",
        "f6e0f6", "swin-base-coco-instance",
        "AP 46.7 (boundary AP 33.2)", "Swin-B", "coco_instance_80", _SWIN_B_IN1K),
    "mask2former_coco_instance_swin_base_in21k": _zoo2(
        "coco/instance-segmentation/swin/maskformer2_swin_base_IN21k_384_bs16_50ep.yaml",
        "83d103", "swin-base-IN21k-coco-instance",
        "AP 48.1 (boundary AP 34.4)", "Swin-B", "coco_instance_80"),
    "mask2former_coco_instance_swin_large": _zoo2(
        "coco/instance-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_100ep.yaml",
        "e5f453", "swin-large-coco-instance",
        "AP 50.1 (boundary AP 36.2)", "Swin-L", "coco_instance_80"),
    "mask2former_ade20k_instance_r50": _zoo2(
        "ade20k/instance-segmentation/maskformer2_R50_bs16_160k.yaml", "67e945", None,
        "AP 26.4", "R50", "ade20k_instance_100"),
    "mask2former_ade20k_instance_swin_large": _zoo2(
        "ade20k/instance-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_160k.yaml",
        "92dae9", None,
        "AP 34.9", "Swin-L", "ade20k_instance_100"),
    "mask2former_cityscapes_instance_r50": _zoo2(
        "cityscapes/instance-segmentation/maskformer2_R50_bs16_90k.yaml", "01a8ed", None,
        "AP 37.4 (AP50 61.9)", "R50", "cityscapes_instance_8"),
    "mask2former_cityscapes_instance_r101": _zoo2(
        "cityscapes/instance-segmentation/maskformer2_R101_bs16_90k.yaml", "c2b8c8", None,
        "AP 38.5 (AP50 63.9)", "R101", "cityscapes_instance_8"),
    "mask2former_cityscapes_instance_swin_tiny": _zoo2(
        "cityscapes/instance-segmentation/swin/maskformer2_swin_tiny_bs16_90k.yaml",
        "6a63f8", "swin-tiny-cityscapes-instance",
        "AP 39.7 (AP50 66.9)", "Swin-T", "cityscapes_instance_8"),
    "mask2former_cityscapes_instance_swin_small": _zoo2(
        "cityscapes/instance-segmentation/swin/maskformer2_swin_small_bs16_90k.yaml",
        "974824", "swin-small-cityscapes-instance",
        "AP 41.8 (AP50 70.4)", "Swin-S", "cityscapes_instance_8"),
    "mask2former_cityscapes_instance_swin_base_in21k": _zoo2(
        "cityscapes/instance-segmentation/swin/maskformer2_swin_base_IN21k_384_bs16_90k.yaml",
        "7a3b6d", None,
        "AP 42.0 (AP50 68.8)", "Swin-B", "cityscapes_instance_8"),
    "mask2former_cityscapes_instance_swin_large": _zoo2(
        "cityscapes/instance-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_90k.yaml",
        "dfa862", "swin-large-cityscapes-instance",
        "AP 43.7 (AP50 71.4)", "Swin-L", "cityscapes_instance_8"),
    # MODEL_ZOO.md links this one as maskformer_R50_bs16_300k.yaml, a file the repository
    # does not have; the config is maskformer2_R50_bs16_300k.yaml.
    "mask2former_vistas_semantic_r50": _zoo2(
        "mapillary-vistas/semantic-segmentation/maskformer2_R50_bs16_300k.yaml", "6c66d0", None,
        "mIoU 57.4 (multi-scale 59.0)", "R50", "mapillary_vistas_65"),
    "mask2former_vistas_semantic_swin_large": _zoo2(
        "mapillary-vistas/semantic-segmentation/swin/"
        "maskformer2_swin_large_IN21k_384_bs16_300k.yaml", "90ee2d",
        "swin-large-mapillary-vistas-semantic", "mIoU 63.2 (multi-scale 64.7)", "Swin-L",
        "mapillary_vistas_65"),
    "mask2former_vistas_panoptic_r50": _zoo2(
        "mapillary-vistas/panoptic-segmentation/maskformer_R50_bs16_300k.yaml", "4e9874", None,
        "PQ 36.3 (mIoU 50.7)", "R50", "mapillary_vistas_65"),
    "mask2former_vistas_panoptic_swin_large": _zoo2(
        "mapillary-vistas/panoptic-segmentation/swin/"
        "maskformer2_swin_large_IN21k_384_bs16_300k.yaml", "132c71",
        "swin-large-mapillary-vistas-panoptic", "PQ 45.5 (mIoU 60.8)", "Swin-L",
        "mapillary_vistas_65"),
}


def _m2f_model(backbone: str, num_classes: int, num_queries: int = 100) -> ModelConfig:
    """MODEL.SEM_SEG_HEAD / MODEL.MASK_FORMER of every released Mask2Former: the deformable
    pixel decoder over res3-res5 (6 layers, 8 heads, FFN 1024; conv and mask dim 256), 9
    masked-attention layers (DEC_LAYERS 10 counts the learned queries' prediction), 8 heads, FFN
    2048, no dropout, hidden dim 256; images padded to multiples of 32 (SIZE_DIVISIBILITY)."""
    return ModelConfig(backbone=_backbone(backbone), architecture="mask2former",
                       num_classes=num_classes, pixel_decoder="msdeform", conv_dim=256,
                       mask_dim=256, pixel_decoder_enc_layers=6, pixel_decoder_num_heads=8,
                       pixel_decoder_dim_feedforward=1024, num_queries=num_queries,
                       hidden_dim=256, num_heads=8, dim_feedforward=2048, dec_layers=9,
                       dropout=0.0, size_divisibility=32)


def _m2f_train(steps: int, step_boundaries: list[int] | None = None) -> TrainConfig:
    """SOLVER.* of every released Mask2Former, Swin or ResNet alike: batch 16, AdamW at 1e-4
    with weight decay 0.05, the backbone at 0.1x, gradient norm clipped at 0.01, no warm-up (the
    COCO configs' 10 warm-up steps have WARMUP_FACTOR 1.0, a constant rate), AMP (float16 with
    dynamic loss scaling); the poly schedule (power 0.9), or steps of 0.1x at `step_boundaries`
    (COCO's SOLVER.STEPS)."""
    return TrainConfig(global_batch_size=16, steps=steps, learning_rate=1e-4,
                       weight_decay=0.05, backbone_multiplier=0.1, clip_norm=0.01,
                       schedule="step" if step_boundaries else "poly", poly_power=0.9,
                       step_boundaries=list(step_boundaries or []), step_factor=0.1,
                       warmup_steps=0, mixed_precision="float16")


def _m2f_eval(panoptic: bool, instance: bool, object_mask_threshold: float = 0.8,
              semantic: bool = True) -> EvalConfig:
    """MODEL.MASK_FORMER.TEST: semantic output (but for the instance models), panoptic and
    instance (the top 100 query-class pairs, TEST.DETECTIONS_PER_IMAGE; thing classes only, as
    with PANOPTIC_ON) where the config turns them on; OVERLAP_THRESHOLD 0.8."""
    return EvalConfig(panoptic=panoptic, semantic=semantic, instance=instance,
                      object_mask_threshold=object_mask_threshold, overlap_threshold=0.8,
                      instance_top_k=100)


# SOLVER.MAX_ITER and SOLVER.STEPS of the COCO configs: 50 epochs, and Swin-L's 100, at batch 16.
_COCO_50EP = (368_750, [327_778, 355_092])
_COCO_100EP = (737_500, [655_556, 710_184])
# INPUT.IMAGE_SIZE of the COCO configs' large-scale jitter (MIN_SCALE 0.1, MAX_SCALE 2.0).
_LSJ_SIZE = 1024


def _m2f_coco(backbone: str, task: str, num_queries: int = 100,
              schedule: tuple[int, list[int]] = _COCO_50EP) -> ExperimentConfig:
    """COCO panoptic (133 classes; panoptic, semantic and instance output) or instance (the 80
    thing classes, instance records; instance output only); thresholds 0.8.

    Training: the original's large-scale jitter ("coco_panoptic_lsj", "coco_instance_lsj":
    flip, the image scaled to fit a 1024 square times s ~ U[0.1, 2.0], cropped or padded with
    128 to 1024 x 1024). Evaluation: detectron2's default test resize (shortest edge 800, long
    edge <= 1333), which the LSJ configs keep."""
    steps, boundaries = schedule
    panoptic = task == "panoptic"
    return ExperimentConfig(
        model=_m2f_model(backbone, 133 if panoptic else 80, num_queries),
        loss=mask2former_loss(),
        data=DataConfig(dataset="coco_panoptic" if panoptic else "coco_instance",
                        augmentation="lsj", scale_range=[0.1, 2.0],
                        output_size=[_LSJ_SIZE, _LSJ_SIZE], crop_size=[_LSJ_SIZE, _LSJ_SIZE],
                        crop_pad_value=128.0, eval_short_edge=800, eval_max_size=1333,
                        eval_output_size=[], size_divisibility=32,
                        max_instances=num_queries),
        train=_m2f_train(steps, boundaries),
        eval=_m2f_eval(panoptic=panoptic, instance=True, semantic=panoptic),
    )


# The crop recipes (INPUT.*, SOLVER.MAX_ITER): ADE20K and Cityscapes as MaskFormer's; Mapillary
# Vistas with 1024 crops (MaskFormer's: 1280). The panoptic configs read panoptic records
# (`maskformer data coco-panoptic`) as the MaskFormer ADE20K panoptic experiments do: data.dataset
# "ade20k_semantic" names the built-in class list with its thing split. The instance configs read
# instance records (`maskformer data coco-instance`) of the dataset's thing classes. Every
# experiment keeps up to one target per query (data.max_instances): the original keeps them all,
# but at most one per query can be matched.
_M2F_VISTAS = replace(_VISTAS, crop=(1024, 1024))
_M2F_RECIPES = {
    ("ade20k", "semantic"): _ADE20K, ("ade20k", "semantic", "res640"): _ADE20K_640,
    ("ade20k", "panoptic"): _ADE20K_640,
    ("ade20k", "instance"): replace(_ADE20K_640, dataset="coco_instance", num_classes=100),
    ("cityscapes", "semantic"): _CITYSCAPES, ("cityscapes", "panoptic"): _CITYSCAPES,
    ("cityscapes", "instance"): replace(_CITYSCAPES, dataset="coco_instance", num_classes=8),
    ("vistas", "semantic"): _M2F_VISTAS, ("vistas", "panoptic"): _M2F_VISTAS,
}


def _m2f_crop(recipe: _Recipe, backbone: str, task: str, num_queries: int = 100,
              object_mask_threshold: float = 0.8, instance: bool | None = None) -> ExperimentConfig:
    """A semantic-style config (resize, "absolute" crop, SSD colour jitter, flip; the poly
    schedule) with Mask2Former's model, criterion and solver. Output: semantic for the semantic
    models; panoptic, semantic and instance for the panoptic ones (unless `instance` says
    otherwise); instance only for the instance ones."""
    data = _recipe_data(recipe)
    data.max_instances = num_queries
    panoptic = task == "panoptic"
    return ExperimentConfig(
        model=_m2f_model(backbone, recipe.num_classes, num_queries),
        loss=mask2former_loss(),
        data=data,
        train=_m2f_train(recipe.steps),
        eval=_m2f_eval(panoptic, task != "semantic" if instance is None else instance,
                       object_mask_threshold, semantic=task != "instance"),
    )


# The experiments of MASK2FORMER_ZOO are built from their names, mask2former_<data>_<task>_<size>:
_M2F_DATA = {"coco": "COCO", "ade20k": "ADE20K-150", "cityscapes": "Cityscapes",
             "vistas": "Mapillary Vistas"}
_M2F_BACKBONES = {"r50": ("R50", "R50"), "r101": ("R101", "R101"),
                  "swin_tiny": ("Swin-T", "Swin-T"), "swin_small": ("Swin-S", "Swin-S"),
                  "swin_base": ("Swin-B", "Swin-B (IN-1k)"),
                  "swin_base_in21k": ("Swin-B", "Swin-B (IN-21k)"),
                  "swin_large": ("Swin-L", "Swin-L (IN-21k)")}


def _m2f_experiment(name: str) -> tuple[str, Callable[[], ExperimentConfig]]:
    """(the description, the builder) of the MASK2FORMER_ZOO experiment `name`.

    What the configs set besides the recipe of their dataset and task:
    - 200 queries: the Swin-L models but the semantic ones (Cityscapes semantic Swin-L sets
      NUM_OBJECT_QUERIES back to 100);
    - COCO: Swin-L trains 100 epochs, the others 50;
    - ADE20K semantic: Swin-B and Swin-L crop at 640 ("res640");
    - Mapillary Vistas: OBJECT_MASK_THRESHOLD 0.0, and its panoptic configs turn instance
      output off;
    - the instance models: instance output only. ADE20K instance's configs also turn semantic
      and panoptic output on, but instance records hold no stuff to evaluate them against, and
      the original evaluates those models with COCO's instance evaluator alone;
    - the ResNet configs of ADE20K semantic R101 and of Cityscapes train the backbone's batch
      norm on the global batch (RESNETS.NORM SyncBN: model.backbone.norm sync_bn; ADE20K
      semantic R101's config is named 90k but inherits MAX_ITER 160000).
    """
    data, task, size = name.removeprefix("mask2former_").split("_", 2)
    backbone, label = _M2F_BACKBONES[size]
    queries = 200 if size == "swin_large" and task != "semantic" else 100
    extra = f", {queries} queries" if queries != 100 else ""
    if data == "coco":
        schedule = _COCO_100EP if size == "swin_large" else _COCO_50EP
        extra += ", 100 epochs" if size == "swin_large" else ", 50 epochs"
        build = lambda: _m2f_coco(backbone, task, queries, schedule)  # noqa: E731
    else:
        key = (data, task)
        if key == ("ade20k", "semantic") and backbone in ("Swin-B", "Swin-L"):
            key, extra = (*key, "res640"), extra + ", 640 crops"
        threshold = 0.0 if data == "vistas" else 0.8
        instance = False if data == "vistas" else None
        build = lambda: _m2f_crop(_M2F_RECIPES[key], backbone, task, queries,  # noqa: E731
                                  threshold, instance)
    if backbone in ("R50", "R101") and (data == "cityscapes"
                                        or (data, task, backbone) == ("ade20k", "semantic",
                                                                      "R101")):
        build, extra = _with_sync_bn(build), extra + ", SyncBN"
    metric = MASK2FORMER_ZOO[name].metric.split(" (")[0]
    return f"{_M2F_DATA[data]} {task}, Mask2Former {label}{extra} ({metric} published).", build


def _with_sync_bn(build: Callable[[], ExperimentConfig]) -> Callable[[], ExperimentConfig]:
    def build_sync_bn() -> ExperimentConfig:
        config = build()
        config.model.backbone.norm = "sync_bn"
        return config

    return build_sync_bn


def _register_mask2former_zoo() -> None:
    for name in MASK2FORMER_ZOO:
        description, build = _m2f_experiment(name)

        def experiment(build=build) -> ExperimentConfig:
            return build()

        experiment.__name__ = experiment.__qualname__ = name
        experiment.__doc__ = description
        register(experiment)


_register_mask2former_zoo()


def _tiny_model(pixel_decoder: str, num_classes: int) -> ModelConfig:
    """The size of the original's reference vectors: trains and runs in seconds on a CPU."""
    return ModelConfig(
        backbone=BackboneConfig(depth=50, stage_blocks=[2, 1, 1, 1], stem_channels=16,
                                width_per_group=8, res2_out_channels=32),
        num_classes=num_classes,
        pixel_decoder=pixel_decoder,
        conv_dim=32,
        mask_dim=32,
        pixel_decoder_enc_layers=2,
        pixel_decoder_num_heads=4,
        pixel_decoder_dim_feedforward=64,
        num_queries=10,
        hidden_dim=32,
        num_heads=4,
        dim_feedforward=64,
        dec_layers=3,
    )


@register
def maskformer_smoke() -> ExperimentConfig:
    """Tiny transformer-encoder model on small images: for tests."""
    return ExperimentConfig(
        model=_tiny_model("transformer_encoder", num_classes=7),
        data=DataConfig(output_size=[64, 64], max_instances=10, min_scale_sizes=[48, 64],
                        max_size=128, crop_short_edges=[48, 64], crop_range=[40, 64],
                        eval_short_edge=64, eval_max_size=128, eval_output_size=[128, 128],
                        shuffle_buffer=16),
        train=TrainConfig(global_batch_size=2, steps=10, schedule="constant", step_boundaries=[],
                          checkpoint_every=5, log_every=1),
        eval=EvalConfig(batch_size=2),
    )


@register
def maskformer_smoke_fpn() -> ExperimentConfig:
    """Tiny FPN model on small images: for tests."""
    config = maskformer_smoke()
    config.model = _tiny_model("fpn", num_classes=7)
    return config


@register
def maskformer_demo() -> ExperimentConfig:
    """Small model for the built-in shapes dataset (3 things, 2 stuff): trains on a CPU."""
    config = ExperimentConfig(
        model=_tiny_model("transformer_encoder", num_classes=5),
        # An image holds at most 8 things plus the two stuff classes.
        data=DataConfig(output_size=[96, 96], max_instances=10,
                        min_scale_sizes=[80, 88, 96, 104, 112], max_size=192,
                        crop_short_edges=[80, 96, 112], crop_range=[64, 96],
                        eval_short_edge=96, eval_max_size=192, eval_output_size=[96, 96],
                        eval_map_size=[96, 96], shuffle_buffer=512),
        # Trained from scratch (no pretrained backbone here): group norm instead of frozen
        # batch norm, the backbone at the full learning rate rather than the recipe's 0.1x, and
        # a short warm-up before the higher rate (docs/benchmarks.md has the comparison).
        train=TrainConfig(global_batch_size=8, steps=5000, learning_rate=1e-3,
                          backbone_multiplier=1.0, schedule="step", step_boundaries=[4000],
                          warmup_steps=200, clip_norm=0.01, checkpoint_every=1000,
                          log_every=50),
        eval=EvalConfig(batch_size=16),
    )
    config.model.backbone.norm = "gn"
    config.model.backbone.norm_groups = 8
    # res5 at stride 16: a 6x6 grid rather than 3x3 for the queries to attend to at 96 px.
    config.model.backbone.res5_dilation = 2
    config.model.num_queries = 20
    config.model.dropout = 0.0
    return config


# Mask2Former


def mask2former_loss(num_points: int = 12544) -> LossConfig:
    """Mask2Former's criterion: class 2, mask 5 (sigmoid cross-entropy), dice 5, no-object 0.1,
    costs and losses on `num_points` points (MODEL.MASK_FORMER.TRAIN_NUM_POINTS)."""
    return LossConfig(class_weight=2.0, mask_weight=5.0, dice_weight=5.0, no_object_weight=0.1,
                      mask_loss="bce", num_points=num_points, oversample_ratio=3.0,
                      importance_sample_ratio=0.75)


def _tiny_mask2former(num_classes: int) -> ModelConfig:
    """The size of the original Mask2Former's reference vectors (4 masked-attention layers,
    cfg DEC_LAYERS 5; a 2-layer deformable encoder)."""
    config = _tiny_model("msdeform", num_classes)
    config.architecture = "mask2former"
    config.dec_layers = 4
    config.dropout = 0.0
    return config


@register
def mask2former_smoke() -> ExperimentConfig:
    """Tiny Mask2Former on small images: for tests."""
    config = maskformer_smoke()
    config.model = _tiny_mask2former(num_classes=7)
    config.loss = mask2former_loss(num_points=256)
    return config


@register
def mask2former_demo() -> ExperimentConfig:
    """Small Mask2Former for the built-in shapes dataset (3 things, 2 stuff): trains on a CPU."""
    config = maskformer_demo()
    model = _tiny_mask2former(num_classes=5)
    model.backbone = config.model.backbone
    model.num_queries = config.model.num_queries
    config.model = model
    # 96 x 96 images give 24 x 24 = 576 mask pixels: as many points (1024 made each step 25%
    # slower and the demo no better, docs/benchmarks.md).
    config.loss = mask2former_loss(num_points=576)
    # A step costs about 1.3x MaskFormer's here: 4000 steps keep the demo within 15 minutes.
    config.train.steps = 4000
    config.train.step_boundaries = [3200]
    # After so short a training its class scores stay low: at the original's 0.8 most correct
    # things are dropped (docs/benchmarks.md: things PQ 2.3 at 0.8, 23.6 at 0.3).
    config.eval.object_mask_threshold = 0.3
    return config
