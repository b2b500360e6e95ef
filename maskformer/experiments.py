"""Registry of named experiments.

Each experiment is a function returning a complete `ExperimentConfig`; `get_experiment(name)`
builds a fresh copy that the caller may override (`config.apply_overrides`).
"""

from __future__ import annotations

from collections.abc import Callable

from maskformer.config import (
    BackboneConfig,
    ConfigError,
    DataConfig,
    EvalConfig,
    ExperimentConfig,
    ModelConfig,
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


def _coco_panoptic(depth: int) -> ExperimentConfig:
    return ExperimentConfig(
        model=ModelConfig(
            backbone=BackboneConfig(depth=depth),
            num_classes=133,
            pixel_decoder="transformer_encoder",
            size_divisibility=0,
        ),
        data=DataConfig(dataset="coco_panoptic", augmentation="coco_panoptic",
                        output_size=[640, 640]),
        train=TrainConfig(global_batch_size=64, steps=554_400, schedule="step",
                          step_boundaries=[369_600]),
        eval=EvalConfig(object_mask_threshold=0.8, overlap_threshold=0.8),
    )


@register
def maskformer_coco_panoptic_r50() -> ExperimentConfig:
    """COCO panoptic, R50 + transformer-encoder pixel decoder (PQ 46.5 published)."""
    return _coco_panoptic(50)


@register
def maskformer_coco_panoptic_r101() -> ExperimentConfig:
    """COCO panoptic, R101 + transformer-encoder pixel decoder (PQ 47.6 published)."""
    return _coco_panoptic(101)


def _ade20k_semantic(depth: int) -> ExperimentConfig:
    return ExperimentConfig(
        model=ModelConfig(
            backbone=BackboneConfig(depth=depth),
            num_classes=150,
            pixel_decoder="fpn",
            size_divisibility=32,
        ),
        data=DataConfig(dataset="ade20k_semantic", augmentation="ade20k", output_size=[512, 512],
                        crop_size=[512, 512], min_scale_sizes=list(range(256, 1025, 32)),
                        max_size=2048, eval_short_edge=512, eval_max_size=2048,
                        eval_output_size=[], size_divisibility=32),
        train=TrainConfig(global_batch_size=16, steps=160_000, schedule="poly", poly_power=0.9,
                          step_boundaries=[]),
        eval=EvalConfig(panoptic=False, semantic=True, object_mask_threshold=0.7),
    )


@register
def maskformer_ade20k_semantic_r50() -> ExperimentConfig:
    """ADE20K-150 semantic, R50 + FPN pixel decoder (mIoU 44.5 published)."""
    return _ade20k_semantic(50)


@register
def maskformer_ade20k_semantic_r101() -> ExperimentConfig:
    """ADE20K-150 semantic, R101 + FPN pixel decoder (mIoU 45.5 published)."""
    return _ade20k_semantic(101)


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
