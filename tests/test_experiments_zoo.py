"""The experiments of the original MaskFormer's released models (`experiments.ZOO`).

The model list, Hugging Face ids and Swin settings are read from the reference's MODEL_ZOO.md
(beside the reference vectors of MASKFORMER_REFERENCE_DATA, or ../shared from the repository);
the settings of a few models per family are the numbers of the original's config files, typed
here. Configs only: no model is built.
"""

import itertools
import os
import re
from pathlib import Path

import pytest

from maskformer import experiments
from maskformer.config import ConfigError
from maskformer.conversion import infer
from maskformer.data.categories import builtin_categories, builtin_for_dataset
from maskformer.experiments import ZOO, describe, get_experiment, list_experiments
from tests.conftest import REFERENCE_ENV

ROOT = Path(__file__).parents[1]
NOT_RELEASED = {"maskformer_smoke", "maskformer_smoke_fpn", "maskformer_demo", "mask2former_smoke",
                "mask2former_demo"}


def _model_zoo_md() -> Path:
    candidates = [ROOT.parent / "shared" / "MODEL_ZOO.md"]
    if os.environ.get(REFERENCE_ENV):
        # MASKFORMER_REFERENCE_DATA is shared/testdata/official.
        candidates.insert(0, Path(os.environ[REFERENCE_ENV]).parents[1] / "MODEL_ZOO.md")
    for path in candidates:
        if path.is_file():
            return path
    pytest.skip(f"{REFERENCE_ENV} is not set and ../shared has no MODEL_ZOO.md: the list of "
                "released models is not available")


def _cells(line: str) -> list[str]:
    return [c.strip().strip("`") for c in line.strip().strip("|").split("|")]


@pytest.fixture(scope="module")
def released():
    """MODEL_ZOO.md's table: config path -> (dataset, file, backbone, decoder, published)."""
    rows = {}
    for line in _model_zoo_md().read_text().splitlines():
        cells = _cells(line)
        if line.startswith("|") and len(cells) == 6 and cells[2].startswith("model_final_"):
            dataset, config, file, backbone, decoder, published = cells
            rows[config] = (dataset, file, backbone, decoder, published)
    assert len(rows) == 24, f"expected the 24 released models in MODEL_ZOO.md, read {len(rows)}"
    return rows


@pytest.fixture(scope="module")
def hf_ids():
    """The 16 Hugging Face ids of MODEL_ZOO.md, braces expanded."""
    text = _model_zoo_md().read_text().split("## Hugging Face copies", 1)[1]
    ids = set()
    for pattern in re.findall(r"`(maskformer-[^`]+)`", text):
        parts = [p.split(",") for p in re.split(r"\{([^}]*)\}", pattern)]
        ids.update("facebook/" + "".join(choice) for choice in itertools.product(*parts))
    assert len(ids) == 16, sorted(ids)
    return ids


@pytest.fixture(scope="module")
def swin_table():
    """MODEL_ZOO.md's Swin settings: name -> (embed_dim, depths, heads, window, weights)."""
    table = {}
    for line in _model_zoo_md().read_text().splitlines():
        cells = _cells(line)
        if line.startswith("|") and cells[0].startswith("Swin-") and len(cells) == 6:
            ints = [[int(v) for v in c.split(",")] for c in cells[1:5]]
            table[cells[0].split()[0]] = (ints[0][0], ints[1], ints[2], ints[3][0], cells[5])
    assert sorted(table) == ["Swin-B", "Swin-L", "Swin-S", "Swin-T"]
    return table


def zoo_config(name):
    return get_experiment(name)


# ---------------------------------------------------------------------------------------------
# One experiment per released model
# ---------------------------------------------------------------------------------------------


def test_every_released_model_has_exactly_one_experiment(released):
    by_config = {entry.config: name for name, entry in ZOO.items()}
    assert len(by_config) == len(ZOO) == 24
    assert sorted(by_config) == sorted(released)
    for config, (_, file, *_) in released.items():
        assert ZOO[by_config[config]].file == file, config
    assert len({entry.file for entry in ZOO.values()}) == 24


def test_the_registry_holds_the_zoo_and_the_small_experiments_only():
    assert set(list_experiments()) == set(ZOO) | NOT_RELEASED


def test_hugging_face_ids(hf_ids):
    assert {entry.hf_id for entry in ZOO.values() if entry.hf_id} == hf_ids
    assert sum(entry.hf_id is not None for entry in ZOO.values()) == 16
    # Every model has a copy but the R101c ones and the panoptic ResNets ("+6 Enc").
    for name, entry in ZOO.items():
        resnet_panoptic = "panoptic" in name and entry.backbone.startswith("R")
        assert (entry.hf_id is None) == (entry.backbone == "R101c" or resnet_panoptic), name


@pytest.mark.parametrize("name", sorted(ZOO))
def test_the_published_metric_and_the_model(released, name):
    entry = ZOO[name]
    dataset, _, backbone, decoder, published = released[entry.config]
    numbers = re.findall(r"\d+\.\d+", published)
    kind = "PQ" if "panoptic" in dataset else "mIoU"
    assert re.findall(r"\d+\.\d+", entry.metric) == numbers
    assert entry.metric.startswith(f"{kind} ")
    first_line = describe(name) or (getattr(experiments, name).__doc__ or "").splitlines()[0]
    assert f"({kind} {numbers[0]} published)" in first_line
    assert re.search(rf"\b{re.escape(entry.backbone)}\b", first_line), first_line

    config = zoo_config(name)
    assert re.split(r"[ ,]", backbone)[0] == entry.backbone
    assert config.model.num_classes == int(re.search(r"\((\d+)\)", dataset)[1])
    model = config.model
    if decoder.startswith("transformer encoder"):
        assert model.pixel_decoder == "transformer_encoder"
        assert model.pixel_decoder_enc_layers == int(re.search(r"\((\d+)\)", decoder)[1])
        assert model.predictor_input() == "transformer_encoder"
    else:
        assert decoder.startswith("FPN")
        assert (model.pixel_decoder, model.predictor_input()) == ("fpn", "res5")
    panoptic = "panoptic" in dataset
    assert (config.eval.panoptic, config.eval.semantic) == (panoptic, True)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_registered_zoo_experiment_validates(name):
    config = get_experiment(name)
    assert config.name == name and config.validate() is config


@pytest.mark.parametrize("name", sorted(n for n in ZOO if "ade20k_full" in n))
def test_ade20k_full_converts_and_predicts_but_is_not_trained_on_records(name):
    """ADE20K-Full's 847 classes include the void label 255 of the input pipeline: the model
    validates (it converts and predicts), training and evaluation on records refuse it."""
    config = get_experiment(name)
    assert config.model.num_classes == 847
    with pytest.raises(ConfigError, match="model.num_classes: 847 .* cannot be trained"):
        config.check_input_pipeline()


# ---------------------------------------------------------------------------------------------
# Class names, architecture, weights
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(ZOO))
def test_class_names_resolve_from_the_built_in_list(name):
    config = zoo_config(name)
    expected = builtin_categories(ZOO[name].categories)
    assert len(expected) == config.model.num_classes
    assert builtin_for_dataset(config.data.dataset, config.model.num_classes) == expected


@pytest.mark.parametrize("name", sorted(ZOO))
def test_backbone_and_initial_weights(name, swin_table):
    entry = ZOO[name]
    bb = zoo_config(name).model.backbone
    if entry.backbone.startswith("Swin-"):
        embed_dim, depths, heads, window, weights = swin_table[entry.backbone]
        assert bb.type == "swin"
        assert (bb.swin.embed_dim, bb.swin.depths, bb.swin.num_heads, bb.swin.window_size) == (
            embed_dim, depths, heads, window)
        assert (bb.swin.patch_size, bb.swin.drop_path_rate) == (4, 0.3)
        assert entry.init_weights == weights
        return
    assert bb.type == "resnet"
    assert bb.depth == int(entry.backbone[1:].rstrip("c"))
    assert bb.res5_dilation == 1
    if entry.backbone == "R101c":
        assert (bb.stem_type, bb.stem_channels, bb.res5_multi_grid) == ("deeplab", 128, [1, 2, 4])
        assert entry.init_weights == "detectron2://DeepLab/R-103.pkl"
    else:
        assert (bb.stem_type, bb.stem_channels, bb.res5_dilations()) == ("basic", 64, [1, 1, 1])
        assert entry.init_weights == {
            "R50": "detectron2://ImageNetPretrained/torchvision/R-50.pkl",
            "R101": "R-101.pkl"}[entry.backbone]


def test_every_zoo_checkpoint_finds_its_own_experiment():
    """`convert` without --experiment: each released model's architecture (as its tensors
    show it) is one registered experiment's, and the pending ones differ from all of them."""
    signatures = {}
    for name in sorted(ZOO):
        signature = infer.config_signature(zoo_config(name).model)
        signatures[name] = signature
        assert infer.infer_experiment(signature) == name
    as_text = [repr(sorted(s.items())) for s in signatures.values()]
    assert len(set(as_text)) == len(as_text)


# ---------------------------------------------------------------------------------------------
# Spot checks against the original's config files
# ---------------------------------------------------------------------------------------------

# The original's settings for a few models per family, from their config files (after _BASE_):
# INPUT.CROP.SIZE, MIN_SIZE_TRAIN (first, last, count), MAX_SIZE_TRAIN, MIN/MAX_SIZE_TEST,
# SOLVER.*, MASK_FORMER.SIZE_DIVISIBILITY, the TEST thresholds.
ADE_R50 = {
    "data.crop_size": [512, 512], "data.output_size": [512, 512],
    "min_sizes": (256, 1024, 16), "data.max_size": 2048,
    "data.eval_short_edge": 512, "data.eval_max_size": 2048,
    "model.size_divisibility": 32, "data.size_divisibility": 32,
    "train.global_batch_size": 16, "train.steps": 160_000, "train.schedule": "poly",
    "train.poly_power": 0.9, "train.learning_rate": 1e-4, "train.weight_decay": 1e-4,
    "train.backbone_multiplier": 0.1, "train.clip_norm": 0.01, "train.warmup_steps": 0,
    "eval.object_mask_threshold": 0.0, "eval.overlap_threshold": 0.0,
    "model.pixel_mean": [123.675, 116.28, 103.53], "model.pixel_std": [58.395, 57.12, 57.375],
    "model.num_queries": 100, "model.dec_layers": 6, "model.dropout": 0.1,
    "model.enforce_input_proj": False,
}
SWIN_SOLVER = {"train.learning_rate": 6e-5, "train.weight_decay": 0.01,
               "train.backbone_multiplier": 1.0, "train.warmup_steps": 1500}
RES640 = {"data.crop_size": [640, 640], "data.output_size": [640, 640],
          "min_sizes": (320, 1280, 16), "data.max_size": 2560,
          "data.eval_short_edge": 640, "data.eval_max_size": 2560}
COCO_R50 = {
    "data.output_size": [640, 640], "min_sizes": (480, 800, 11), "data.max_size": 1333,
    "data.crop_short_edges": [400, 500, 600], "data.crop_range": [384, 600],
    "data.eval_short_edge": 800, "data.eval_max_size": 1333, "model.size_divisibility": 0,
    "train.global_batch_size": 64, "train.steps": 554_400, "train.schedule": "step",
    "train.step_boundaries": [369_600], "train.step_factor": 0.1, "train.learning_rate": 1e-4,
    "train.backbone_multiplier": 0.1, "train.warmup_steps": 0,
    "eval.object_mask_threshold": 0.8, "eval.overlap_threshold": 0.8,
    "model.pixel_decoder_enc_layers": 6, "model.enforce_input_proj": False,
}
EXPECTED = {
    "maskformer_ade20k_semantic_r50": ADE_R50,
    "maskformer_ade20k_semantic_swin_tiny": {**ADE_R50, **SWIN_SOLVER},
    "maskformer_ade20k_semantic_swin_base": {**ADE_R50, **SWIN_SOLVER, **RES640},
    "maskformer_ade20k_semantic_swin_large": {**ADE_R50, **SWIN_SOLVER, **RES640},
    "maskformer_coco_stuff_semantic_r101c": {
        **ADE_R50, "data.crop_size": [640, 640], "data.output_size": [640, 640],
        "min_sizes": (320, 960, 11), "data.max_size": 2560, "data.eval_short_edge": 640,
        "data.eval_max_size": 2560, "train.global_batch_size": 32, "train.steps": 60_000},
    "maskformer_ade20k_full_semantic_r101": {**ADE_R50, "train.steps": 200_000},
    "maskformer_cityscapes_semantic_r101": {
        **ADE_R50, "data.crop_size": [512, 1024], "data.output_size": [512, 1024],
        "min_sizes": (512, 2048, 16), "data.max_size": 4096, "data.eval_short_edge": 1024,
        "data.eval_max_size": 2048, "train.steps": 90_000},
    "maskformer_vistas_semantic_r50": {
        **ADE_R50, "data.crop_size": [1280, 1280], "data.output_size": [1280, 1280],
        "min_sizes": (1024, 4096, 16), "data.max_size": 8192, "data.eval_short_edge": 2048,
        "data.eval_max_size": 2048, "train.steps": 300_000},
    "maskformer_coco_panoptic_r50": COCO_R50,
    "maskformer_coco_panoptic_swin_tiny": {**COCO_R50, **SWIN_SOLVER,
                                           "model.enforce_input_proj": True},
    "maskformer_coco_panoptic_swin_large": {**COCO_R50, **SWIN_SOLVER, "data.max_size": 1000,
                                            "model.enforce_input_proj": True},
    "maskformer_ade20k_panoptic_r101": {
        **ADE_R50, **RES640, "train.steps": 720_000, "model.pixel_decoder_enc_layers": 6,
        "eval.object_mask_threshold": 0.7, "eval.overlap_threshold": 0.8},
}


def _get(config, dotted):
    for part in dotted.split("."):
        config = getattr(config, part)
    return config


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_settings_are_the_original_configs(name):
    config = zoo_config(name)
    for key, value in EXPECTED[name].items():
        if key == "min_sizes":
            sizes = config.data.min_scale_sizes
            assert (sizes[0], sizes[-1], len(sizes)) == value, (name, key)
        else:
            assert _get(config, key) == value, (name, key)


def test_the_ade20k_scales_are_the_configs_arithmetic():
    """[int(x * 0.1 * 512) for x in range(5, 21)] steps by 51.2, rounded down."""
    sizes = get_experiment("maskformer_ade20k_semantic_r50").data.min_scale_sizes
    assert sizes[:4] == [256, 307, 358, 409] and sizes[-2:] == [972, 1024]


def test_the_model_zoo_page_lists_every_model():
    text = (ROOT / "docs" / "model_zoo.md").read_text()
    for name, entry in ZOO.items():
        assert f"`{name}`" in text, name
        assert entry.file in text, name
        assert f"--experiment {name} --out models/{name}" in text, name
        if entry.hf_id:
            assert entry.hf_id in text, name
