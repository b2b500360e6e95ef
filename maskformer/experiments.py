"""Registry of named experiments.

Each experiment is a function returning a complete `ExperimentConfig`; `get_experiment(name)`
builds a fresh copy that the caller may override (`config.apply_overrides`).

Every released model of the original MaskFormer has an experiment with its config's settings;
`ZOO` maps those experiments to the released checkpoint, its Hugging Face copy and its published
result (docs/model_zoo.md).
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
    """A released model of the original MaskFormer and where its experiment's settings come from.

    Attributes:
      config: the original's config file, under its `configs/` folder.
      file: the released detectron2 checkpoint, ``model_final_<id>.pkl``.
      hf_id: its Hugging Face copy, or None where there is none (R101c, the panoptic ResNets).
      metric: the published result ("multi-scale": with test-time augmentation).
      backbone: "R50", "R101", "R101c" (DeepLab stem, res5 multi-grid) or "Swin-T/S/B/L".
      categories: the built-in category list of its classes (`maskformer.data.categories`).
    """

    config: str
    file: str
    hf_id: str | None
    metric: str
    backbone: str
    categories: str

    @property
    def init_weights(self) -> str:
        """The ImageNet weights its training starts from (the config's MODEL.WEIGHTS)."""
        return INIT_WEIGHTS[self.backbone]


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


def _semantic(recipe: _Recipe, backbone: str) -> ExperimentConfig:
    """FPN pixel decoder, the predictor on res5; each training crop padded to the crop size
    (INPUT.SIZE_DIVISIBILITY), evaluation images to multiples of 32; semantic output only
    (PANOPTIC_ON off, both thresholds 0)."""
    crop = list(recipe.crop)
    return ExperimentConfig(
        model=ModelConfig(backbone=_backbone(backbone), num_classes=recipe.num_classes,
                          pixel_decoder="fpn", size_divisibility=32),
        data=DataConfig(dataset=recipe.dataset, augmentation="ade20k", output_size=crop,
                        crop_size=crop, min_scale_sizes=list(recipe.min_sizes),
                        max_size=recipe.max_size, eval_short_edge=recipe.test_size[0],
                        eval_max_size=recipe.test_size[1], eval_output_size=[],
                        size_divisibility=32),
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
    # 96 x 96 images give 24 x 24 = 576 mask pixels: the points cover them about twice.
    config.loss = mask2former_loss(num_points=1024)
    # A step costs about 1.5x MaskFormer's here: 4000 steps keep the demo within 15 minutes.
    config.train.steps = 4000
    config.train.step_boundaries = [3200]
    # After so short a training its class scores stay low: at the original's 0.8 most correct
    # things are dropped (docs/benchmarks.md: things PQ 2.3 at 0.8, 23.6 at 0.3).
    config.eval.object_mask_threshold = 0.3
    return config
