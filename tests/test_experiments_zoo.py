"""The experiments of the original MaskFormer's and Mask2Former's released models
(`experiments.ZOO`, `experiments.MASK2FORMER_ZOO`).

MaskFormer: the model list, Hugging Face ids and Swin settings are read from the reference's
MODEL_ZOO.md (beside the reference vectors of MASKFORMER_REFERENCE_DATA, or ../shared from the
repository). Mask2Former: its MODEL_ZOO.md's image models (config, file id, backbone, published
numbers) are typed here, as are its Swin settings. For both, the settings of a few models per
family are the numbers of the original's config files, typed here. Configs only: no model is
built.
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
from maskformer.experiments import (
    MASK2FORMER_ZOO,
    ZOO,
    describe,
    get_experiment,
    list_experiments,
    mask2former_loss,
)
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
    assert not set(ZOO) & set(MASK2FORMER_ZOO)
    assert set(list_experiments()) == set(ZOO) | set(MASK2FORMER_ZOO) | NOT_RELEASED


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


# ---------------------------------------------------------------------------------------------
# Mask2Former
# ---------------------------------------------------------------------------------------------

# The image models of Mask2Former's MODEL_ZOO.md: config (under configs/) -> (file id, backbone
# as the table writes it, the published numbers in its columns' order). The table links the
# Vistas semantic R50 model to mapillary-vistas/semantic-segmentation/maskformer_R50_bs16_300k.yaml,
# a file the repository does not have: its config is maskformer2_R50_bs16_300k.yaml. It gives the
# ADE20K instance Swin-L model the backbone "R50"; its config is Swin-L's.
M2F_RELEASED = {
    "coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml": ("94dc52", "R50", (51.9, 41.7, 61.7)),
    "coco/panoptic-segmentation/maskformer2_R101_bs16_50ep.yaml": ("b807bd", "R101", (52.6, 42.6, 62.4)),
    "coco/panoptic-segmentation/swin/maskformer2_swin_tiny_bs16_50ep.yaml": ("9fd0ae", "Swin-T", (53.2, 43.3, 63.2)),
    "coco/panoptic-segmentation/swin/maskformer2_swin_small_bs16_50ep.yaml": ("a407fd", "Swin-S", (54.6, 44.7, 64.2)),
    "coco/panoptic-segmentation/swin/maskformer2_swin_base_384_bs16_50ep.yaml": ("9d7f02", "Swin-B", (55.1, 45.2, 65.1)),
    "coco/panoptic-segmentation/swin/maskformer2_swin_base_IN21k_384_bs16_50ep.yaml": ("54b88a", "Swin-B (IN21k)", (56.4, 46.3, 67.1)),
    "coco/panoptic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_100ep.yaml": ("f07440", "Swin-L (IN21k)", (57.8, 48.6, 67.4)),
    "coco/instance-segmentation/maskformer2_R50_bs16_50ep.yaml": ("3c8ec9", "R50", (43.7, 30.6)),
    "coco/instance-segmentation/maskformer2_R101_bs16_50ep.yaml": ("eba159", "R101", (44.2, 31.1)),
    "coco/instance-segmentation/swin/maskformer2_swin_tiny_bs16_50ep.yaml": ("86143f", "Swin-T", (45.0, 31.8)),
    "coco/instance-segmentation/swin/maskformer2_swin_small_bs16_50ep.yaml": ("1e7f22", "Swin-S", (46.3, 32.9)),
    "coco/instance-segmentation/swin/maskformer2_swin_base_384_bs16_50ep.yaml": ("f6e0f6", "Swin-B", (46.7, 33.2)),
    "coco/instance-segmentation/swin/maskformer2_swin_base_IN21k_384_bs16_50ep.yaml": ("83d103", "Swin-B (IN21k)", (48.1, 34.4)),
    "coco/instance-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_100ep.yaml": ("e5f453", "Swin-L (IN21k)", (50.1, 36.2)),
    "cityscapes/panoptic-segmentation/maskformer2_R50_bs16_90k.yaml": ("4ab90c", "R50", (62.1, 37.3, 77.5)),
    "cityscapes/panoptic-segmentation/maskformer2_R101_bs16_90k.yaml": ("04d286", "R101", (62.4, 37.7, 78.6)),
    "cityscapes/panoptic-segmentation/swin/maskformer2_swin_tiny_bs16_90k.yaml": ("ceba0f", "Swin-T", (63.9, 39.1, 80.5)),
    "cityscapes/panoptic-segmentation/swin/maskformer2_swin_small_bs16_90k.yaml": ("23efb7", "Swin-S", (64.8, 40.7, 81.8)),
    "cityscapes/panoptic-segmentation/swin/maskformer2_swin_base_IN21k_384_bs16_90k.yaml": ("fa840f", "Swin-B (IN21k)", (66.1, 42.8, 82.7)),
    "cityscapes/panoptic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_90k.yaml": ("064788", "Swin-L (IN21k)", (66.6, 43.6, 82.9)),
    "cityscapes/instance-segmentation/maskformer2_R50_bs16_90k.yaml": ("01a8ed", "R50", (37.4, 61.9)),
    "cityscapes/instance-segmentation/maskformer2_R101_bs16_90k.yaml": ("c2b8c8", "R101", (38.5, 63.9)),
    "cityscapes/instance-segmentation/swin/maskformer2_swin_tiny_bs16_90k.yaml": ("6a63f8", "Swin-T", (39.7, 66.9)),
    "cityscapes/instance-segmentation/swin/maskformer2_swin_small_bs16_90k.yaml": ("974824", "Swin-S", (41.8, 70.4)),
    "cityscapes/instance-segmentation/swin/maskformer2_swin_base_IN21k_384_bs16_90k.yaml": ("7a3b6d", "Swin-B (IN21k)", (42.0, 68.8)),
    "cityscapes/instance-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_90k.yaml": ("dfa862", "Swin-L (IN21k)", (43.7, 71.4)),
    "cityscapes/semantic-segmentation/maskformer2_R50_bs16_90k.yaml": ("cc1b1f", "R50", (79.4, 82.2)),
    "cityscapes/semantic-segmentation/maskformer2_R101_bs16_90k.yaml": ("257ce8", "R101", (80.1, 81.9)),
    "cityscapes/semantic-segmentation/swin/maskformer2_swin_tiny_bs16_90k.yaml": ("2d58d4", "Swin-T", (82.1, 83.0)),
    "cityscapes/semantic-segmentation/swin/maskformer2_swin_small_bs16_90k.yaml": ("fa26ae", "Swin-S", (82.6, 83.6)),
    "cityscapes/semantic-segmentation/swin/maskformer2_swin_base_IN21k_384_bs16_90k.yaml": ("1c6b65", "Swin-B (IN21k)", (83.3, 84.5)),
    "cityscapes/semantic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_90k.yaml": ("17c1ee", "Swin-L (IN21k)", (83.3, 84.3)),
    "ade20k/panoptic-segmentation/maskformer2_R50_bs16_160k.yaml": ("5c90d4", "R50", (39.7, 26.5, 46.1)),
    "ade20k/panoptic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_160k.yaml": ("e0c58e", "Swin-L (IN21k)", (48.1, 34.2, 54.5)),
    "ade20k/instance-segmentation/maskformer2_R50_bs16_160k.yaml": ("67e945", "R50", (26.4,)),
    "ade20k/instance-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_160k.yaml": ("92dae9", "Swin-L (IN21k)", (34.9,)),
    "ade20k/semantic-segmentation/maskformer2_R50_bs16_160k.yaml": ("500878", "R50", (47.2, 49.2)),
    "ade20k/semantic-segmentation/maskformer2_R101_bs16_90k.yaml": ("0d68be", "R101", (47.8, 50.1)),
    "ade20k/semantic-segmentation/swin/maskformer2_swin_tiny_bs16_160k.yaml": ("5274a6", "Swin-T", (47.7, 49.6)),
    "ade20k/semantic-segmentation/swin/maskformer2_swin_small_bs16_160k.yaml": ("011c6d", "Swin-S", (51.3, 52.4)),
    "ade20k/semantic-segmentation/swin/maskformer2_swin_base_384_bs16_160k_res640.yaml": ("503e96", "Swin-B", (52.4, 53.7)),
    "ade20k/semantic-segmentation/swin/maskformer2_swin_base_IN21k_384_bs16_160k_res640.yaml": ("7e47bf", "Swin-B (IN21k)", (53.9, 55.1)),
    "ade20k/semantic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_160k_res640.yaml": ("6b4a3a", "Swin-L (IN21k)", (56.1, 57.3)),
    "mapillary-vistas/panoptic-segmentation/maskformer_R50_bs16_300k.yaml": ("4e9874", "R50", (36.3, 50.7)),
    "mapillary-vistas/panoptic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_300k.yaml": ("132c71", "Swin-L (IN21k)", (45.5, 60.8)),
    "mapillary-vistas/semantic-segmentation/maskformer2_R50_bs16_300k.yaml": ("6c66d0", "R50", (57.4, 59.0)),
    "mapillary-vistas/semantic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_300k.yaml": ("90ee2d", "Swin-L (IN21k)", (63.2, 64.7)),
}
# The video models (YouTubeVIS 2019 and 2021): no video pipeline here.
M2F_VIDEO_FILES = ["34112b", "a34dca", "26fffe", "4a5174", "221a8a", "c5c739",
                   "b8aae2", "6efd7a", "965185", "0dec91", "a9b925", "4da256"]
# The instance models' classes: the thing classes of their dataset's panoptic list.
M2F_INSTANCE_CATEGORIES = {"coco": ("coco_instance_80", "coco_panoptic"),
                           "ade20k": ("ade20k_instance_100", "ade20k_150"),
                           "cityscapes": ("cityscapes_instance_8", "cityscapes_19")}
M2F_CATEGORIES = {"coco": "coco_panoptic", "ade20k": "ade20k_150", "cityscapes": "cityscapes_19",
                  "mapillary-vistas": "mapillary_vistas_65"}
# MODEL.SWIN and MODEL.WEIGHTS of the Mask2Former configs: (embed_dim, depths, heads, window).
M2F_SWIN = {"Swin-T": (96, [2, 2, 6, 2], [3, 6, 12, 24], 7),
            "Swin-S": (96, [2, 2, 18, 2], [3, 6, 12, 24], 7),
            "Swin-B": (128, [2, 2, 18, 2], [4, 8, 16, 32], 12),
            "Swin-L": (192, [2, 2, 18, 2], [6, 12, 24, 48], 12)}
M2F_WEIGHTS = {"R50": "detectron2://ImageNetPretrained/torchvision/R-50.pkl", "R101": "R-101.pkl",
               "Swin-T": "swin_tiny_patch4_window7_224.pkl",
               "Swin-S": "swin_small_patch4_window7_224.pkl",
               "Swin-B": "swin_base_patch4_window12_384.pkl",
               "Swin-B (IN21k)": "swin_base_patch4_window12_384_22k.pkl",
               "Swin-L (IN21k)": "swin_large_patch4_window12_384_22k.pkl"}


def _m2f_kind(config_path):
    """(data folder, task) of a Mask2Former config path."""
    data, task = config_path.split("/")[:2]
    return data, task.split("-")[0]


def test_every_released_mask2former_image_model_has_one_experiment():
    assert len(M2F_RELEASED) == 47
    by_config = {entry.config: name for name, entry in MASK2FORMER_ZOO.items()}
    assert len(by_config) == len(MASK2FORMER_ZOO) == 47
    assert sorted(by_config) == sorted(M2F_RELEASED)
    for config, name in by_config.items():
        assert MASK2FORMER_ZOO[name].file == f"model_final_{M2F_RELEASED[config][0]}.pkl", name
    files = [entry.file for entry in [*ZOO.values(), *MASK2FORMER_ZOO.values()]]
    assert len(set(files)) == len(files)


@pytest.mark.parametrize("name", sorted(MASK2FORMER_ZOO))
def test_mask2former_name_metric_backbone_and_classes(name):
    entry = MASK2FORMER_ZOO[name]
    data, task = _m2f_kind(entry.config)
    _, backbone, numbers = M2F_RELEASED[entry.config]
    short = {"ade20k": "ade20k", "coco": "coco", "cityscapes": "cityscapes",
             "mapillary-vistas": "vistas"}[data]
    size = {"R50": "r50", "R101": "r101", "Swin-T": "swin_tiny", "Swin-S": "swin_small",
            "Swin-B": "swin_base", "Swin-B (IN21k)": "swin_base_in21k",
            "Swin-L (IN21k)": "swin_large"}[backbone]
    assert name == f"mask2former_{short}_{task}_{size}"
    assert entry.backbone == backbone.split()[0]
    assert entry.init_weights == M2F_WEIGHTS[backbone]

    kind = {"panoptic": "PQ", "semantic": "mIoU", "instance": "AP"}[task]
    assert entry.metric.startswith(f"{kind} ")
    assert tuple(float(x) for x in re.findall(r"\d+\.\d+", entry.metric)) == numbers
    first_line = describe(name)
    assert f"({kind} {numbers[0]} published)" in first_line
    assert re.search(rf"\b{re.escape(entry.backbone)}\b", first_line), first_line
    if entry.backbone == "Swin-B":
        assert ("(IN-21k)" in first_line) == ("IN21k" in entry.config), first_line

    config = zoo_config(name)
    if task == "instance":
        categories, panoptic = M2F_INSTANCE_CATEGORIES[data]
        expected = builtin_categories(categories)
        assert [c["name"] for c in expected] == [
            c["name"] for c in builtin_categories(panoptic) if c["isthing"]]
        assert config.data.dataset == "coco_instance"
    else:
        categories = M2F_CATEGORIES[data]
        expected = builtin_categories(categories)
    assert entry.categories == categories
    assert config.model.num_classes == len(expected)
    assert builtin_for_dataset(config.data.dataset, config.model.num_classes) == expected
    # SEMANTIC_ON: all but the instance configs (ADE20K instance's turns it and PANOPTIC_ON on,
    # but instance records hold no stuff: the original evaluates those models' AP only).
    assert (config.eval.panoptic, config.eval.semantic) == (task == "panoptic",
                                                            task != "instance")
    # INSTANCE_ON: the panoptic configs but Mapillary Vistas', and the instance ones.
    assert config.eval.instance == (task == "instance" or (
        task == "panoptic" and data != "mapillary-vistas"))


@pytest.mark.parametrize("name", sorted(MASK2FORMER_ZOO))
def test_mask2former_model_criterion_and_solver(name):
    """What every released Mask2Former shares (MODEL.SEM_SEG_HEAD, MODEL.MASK_FORMER, SOLVER)."""
    entry, config = MASK2FORMER_ZOO[name], zoo_config(name)
    model = config.model
    assert (model.architecture, model.pixel_decoder) == ("mask2former", "msdeform")
    assert (model.pixel_decoder_enc_layers, model.pixel_decoder_num_heads,
            model.pixel_decoder_dim_feedforward) == (6, 8, 1024)
    assert model.dec_layers == 10 - 1  # DEC_LAYERS counts the learned queries' prediction
    assert (model.hidden_dim, model.conv_dim, model.mask_dim, model.num_heads,
            model.dim_feedforward, model.dropout) == (256, 256, 256, 8, 2048, 0.0)
    assert (model.enc_layers, model.transformer_in_feature, model.enforce_input_proj) == (
        0, "", False)
    assert model.deep_supervision and model.size_divisibility == 32
    assert model.pixel_mean == [123.675, 116.28, 103.53]
    assert model.pixel_std == [58.395, 57.12, 57.375]
    # "(200 queries)" in MODEL_ZOO.md: the Swin-L models but the semantic ones.
    queries = 200 if entry.backbone == "Swin-L" and "semantic" not in name else 100
    assert model.num_queries == queries == config.data.max_instances

    assert config.loss == mask2former_loss()
    assert (config.loss.class_weight, config.loss.mask_weight, config.loss.dice_weight,
            config.loss.no_object_weight, config.loss.num_points) == (2.0, 5.0, 5.0, 0.1, 12544)

    train = config.train
    assert (train.global_batch_size, train.learning_rate, train.weight_decay,
            train.backbone_multiplier, train.clip_norm, train.warmup_steps) == (
        16, 1e-4, 0.05, 0.1, 0.01, 0)
    assert train.mixed_precision == "float16"  # SOLVER.AMP.ENABLED
    assert config.eval.instance_top_k == 100  # TEST.DETECTIONS_PER_IMAGE

    bb = model.backbone
    if entry.backbone in M2F_SWIN:
        assert bb.type == "swin"
        assert (bb.swin.embed_dim, bb.swin.depths, bb.swin.num_heads, bb.swin.window_size) == (
            M2F_SWIN[entry.backbone])
        assert (bb.swin.patch_size, bb.swin.drop_path_rate) == (4, 0.3)
    else:
        # RESNETS.NORM: "SyncBN" in the Cityscapes configs and ADE20K semantic R101's.
        sync = "cityscapes" in name or name == "mask2former_ade20k_semantic_r101"
        assert (bb.type, bb.depth, bb.stem_type, bb.norm) == (
            "resnet", int(entry.backbone[1:]), "basic", "sync_bn" if sync else "frozen_bn")


def test_mask2former_hugging_face_ids_follow_the_conversion_script():
    """transformers' convert_mask2former_original_pytorch_checkpoint_to_pytorch.py names each
    converted Swin model mask2former-swin-<tiny|small|base|base-IN21k|large>-<data>-<task>,
    <data> the config's folder with "ade20k" written "ade"; it converts no ResNet model."""
    not_found = {"mask2former_ade20k_instance_swin_large",
                 "mask2former_cityscapes_instance_swin_base_in21k"}
    for name, entry in MASK2FORMER_ZOO.items():
        if not entry.backbone.startswith("Swin-") or name in not_found:
            assert entry.hf_id is None, name
            continue
        data, task = _m2f_kind(entry.config)
        stem = Path(entry.config).stem
        size = next(s for s in ("tiny", "small", "base_IN21k", "base", "large") if s in stem)
        data = "ade" if data == "ade20k" else data
        assert entry.hf_id == f"facebook/mask2former-swin-{size.replace('_', '-')}-{data}-{task}"


# Settings of the original's config files (after _BASE_), typed: INPUT.*, SOLVER.*, TEST.
M2F_ADE_R50 = {
    "model.backbone.norm": "frozen_bn",
    "data.dataset": "ade20k_semantic", "data.augmentation": "ade20k", "data.color_jitter": True,
    "data.crop_size": [512, 512], "data.output_size": [512, 512], "min_sizes": (256, 1024, 16),
    "data.max_size": 2048, "data.eval_short_edge": 512, "data.eval_max_size": 2048,
    "data.size_divisibility": 32, "train.steps": 160_000, "train.schedule": "poly",
    "train.poly_power": 0.9, "eval.object_mask_threshold": 0.8, "eval.overlap_threshold": 0.8,
    "model.num_queries": 100,
}
M2F_RES640 = {"data.crop_size": [640, 640], "data.output_size": [640, 640],
              "min_sizes": (320, 1280, 16), "data.max_size": 2560,
              "data.eval_short_edge": 640, "data.eval_max_size": 2560}
M2F_CITYSCAPES = {**M2F_ADE_R50, "data.crop_size": [512, 1024], "data.output_size": [512, 1024],
                  "min_sizes": (512, 2048, 16), "data.max_size": 4096,
                  "data.eval_short_edge": 1024, "data.eval_max_size": 2048, "train.steps": 90_000}
M2F_VISTAS = {**M2F_ADE_R50, "data.crop_size": [1024, 1024], "data.output_size": [1024, 1024],
              "min_sizes": (1024, 4096, 16), "data.max_size": 8192, "data.eval_short_edge": 2048,
              "data.eval_max_size": 2048, "train.steps": 300_000,
              "eval.object_mask_threshold": 0.0}
# RESNETS.NORM "SyncBN": Cityscapes' ResNets and ADE20K semantic R101; the others frozen.
SYNC_BN = {"model.backbone.norm": "sync_bn"}
# Large-scale jitter: IMAGE_SIZE 1024, MIN_SCALE 0.1, MAX_SCALE 2.0.
M2F_COCO = {
    "model.backbone.norm": "frozen_bn",
    "data.dataset": "coco_panoptic", "data.augmentation": "lsj", "data.scale_range": [0.1, 2.0],
    "data.crop_size": [1024, 1024], "data.output_size": [1024, 1024],
    "data.crop_pad_value": 128.0, "data.eval_short_edge": 800, "data.eval_max_size": 1333, "data.eval_output_size": [],
    "data.size_divisibility": 32, "train.steps": 368_750, "train.schedule": "step",
    "train.step_boundaries": [327_778, 355_092], "train.step_factor": 0.1,
    "eval.object_mask_threshold": 0.8, "eval.overlap_threshold": 0.8, "model.num_queries": 100,
}
M2F_EXPECTED = {
    "mask2former_coco_panoptic_r50": M2F_COCO,
    "mask2former_coco_panoptic_swin_base": M2F_COCO,
    "mask2former_coco_panoptic_swin_large": {
        **M2F_COCO, "train.steps": 737_500, "train.step_boundaries": [655_556, 710_184],
        "model.num_queries": 200},
    "mask2former_ade20k_semantic_r50": M2F_ADE_R50,
    "mask2former_ade20k_semantic_r101": {**M2F_ADE_R50, **SYNC_BN},
    "mask2former_ade20k_semantic_swin_small": M2F_ADE_R50,
    "mask2former_ade20k_semantic_swin_base": {**M2F_ADE_R50, **M2F_RES640},
    "mask2former_ade20k_semantic_swin_large": {**M2F_ADE_R50, **M2F_RES640},
    "mask2former_ade20k_panoptic_r50": {**M2F_ADE_R50, **M2F_RES640},
    "mask2former_ade20k_panoptic_swin_large": {**M2F_ADE_R50, **M2F_RES640,
                                               "model.num_queries": 200},
    "mask2former_cityscapes_semantic_r101": {**M2F_CITYSCAPES, **SYNC_BN},
    "mask2former_cityscapes_semantic_swin_large": M2F_CITYSCAPES,
    "mask2former_cityscapes_panoptic_swin_large": {**M2F_CITYSCAPES, "model.num_queries": 200},
    "mask2former_vistas_semantic_r50": M2F_VISTAS,
    "mask2former_vistas_panoptic_swin_large": {**M2F_VISTAS, "model.num_queries": 200},
    "mask2former_coco_instance_r50": {**M2F_COCO, "data.dataset": "coco_instance"},
    "mask2former_coco_instance_swin_large": {
        **M2F_COCO, "data.dataset": "coco_instance", "train.steps": 737_500,
        "train.step_boundaries": [655_556, 710_184], "model.num_queries": 200},
    "mask2former_ade20k_instance_r50": {**M2F_ADE_R50, **M2F_RES640,
                                        "data.dataset": "coco_instance"},
    "mask2former_cityscapes_instance_r50": {**M2F_CITYSCAPES, **SYNC_BN,
                                            "data.dataset": "coco_instance"},
    "mask2former_cityscapes_instance_swin_large": {
        **M2F_CITYSCAPES, "data.dataset": "coco_instance", "model.num_queries": 200},
}


@pytest.mark.parametrize("name", sorted(M2F_EXPECTED))
def test_mask2former_settings_are_the_original_configs(name):
    config = zoo_config(name)
    for key, value in M2F_EXPECTED[name].items():
        if key == "min_sizes":
            sizes = config.data.min_scale_sizes
            assert (sizes[0], sizes[-1], len(sizes)) == value, (name, key)
        else:
            assert _get(config, key) == value, (name, key)


def test_the_model_zoo_page_lists_every_mask2former_model():
    text = (ROOT / "docs" / "model_zoo.md").read_text()
    section = text.split("## Mask2Former", 1)[1]
    rows = {line for line in section.splitlines() if line.startswith("|")}
    for name, entry in MASK2FORMER_ZOO.items():
        row = [line for line in rows if f"`{name}`" in line]
        assert len(row) == 1, name
        assert entry.file in row[0] and re.findall(r"\d+\.\d+", entry.metric)[0] in row[0], name
        assert (entry.hf_id or "| - |") in row[0], name
    for file in M2F_VIDEO_FILES:
        assert f"model_final_{file}.pkl" in section, file
