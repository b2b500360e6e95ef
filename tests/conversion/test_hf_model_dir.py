"""From a Hugging Face `save_pretrained` folder to segmented photos: `convert` takes the folder,
the model directory keeps `id2label`'s names (and a built-in dataset's thing/stuff split where
the names match), and `predict` runs on it with no dataset on disk."""

import json

import numpy as np
import pytest
from PIL import Image

from maskformer.cli import main
from maskformer.conversion.huggingface import categories_from_hf
from maskformer.data.categories import builtin_categories
from maskformer.model_dir import CATEGORIES_NAME

pytest.importorskip("torch")
pytest.importorskip("transformers")

NAMES = ["cat", "dog", "grass", "sky", "road", "tree", "person"]


def _hf_folder(tmp_path, **kwargs):
    from tests.conversion.test_huggingface import hf_model

    model = hf_model(num_labels=len(NAMES), num_queries=8, depths=(1, 1, 1, 1))
    model.config.id2label = dict(enumerate(NAMES))
    model.config.label2id = {n: i for i, n in enumerate(NAMES)}
    folder = tmp_path / "hf-maskformer"
    model.save_pretrained(folder, **kwargs)
    return folder


def test_convert_folder_then_predict(tmp_path, capsys):
    folder = _hf_folder(tmp_path)
    out = tmp_path / "model"
    assert main(["convert", "--from", "hf", str(folder), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "7 classes from id2label" in said
    categories = json.loads((out / CATEGORIES_NAME).read_text())["categories"]
    assert [c["name"] for c in categories] == NAMES

    photo = tmp_path / "photos" / "street.jpg"
    photo.parent.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (45, 61, 3), dtype=np.uint8)).save(photo)
    predictions = tmp_path / "predictions"
    assert main(["predict", str(photo.parent), "--model-dir", str(out), "--out",
                 str(predictions), "--set", "data.eval_short_edge=64", "data.eval_max_size=96",
                 "eval.object_mask_threshold=0.0", "eval.overlap_threshold=0.0"]) == 0
    info = json.loads(next(predictions.glob("street*_panoptic.json")).read_text())
    assert info["segments_info"]
    assert {s["category_name"] for s in info["segments_info"]} <= set(NAMES)


def test_folder_without_weights_and_bad_configs_are_one_line_errors(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["convert", "--from", "hf", str(empty), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no model.safetensors or pytorch_model.bin in this folder" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err

    folder = _hf_folder(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["id2label"] = {str(i): n for i, n in enumerate(NAMES[:5])}
    (folder / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    # HF takes the class count from id2label: the weights (7 classes) no longer fit.
    assert main(["convert", "--from", "hf", str(folder), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "the checkpoint has 7 classes (sem_seg_head.predictor.class_embed.bias), the model 5" \
        in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_id2label_takes_the_split_of_the_built_in_list_it_matches():
    coco = builtin_categories("coco_panoptic")
    hf = {"id2label": {str(i): c["name"] for i, c in enumerate(coco)}}
    categories, where = categories_from_hf(hf)
    assert "coco_panoptic" in where
    assert [c["isthing"] for c in categories] == [c["isthing"] for c in coco]
    assert [c["original_id"] for c in categories] == [c["original_id"] for c in coco]
    # ADE20K's short names ("wall", "building") match the list's "wall", "building, edifice".
    ade = builtin_categories("ade20k_150")
    hf = {"id2label": {str(i): c["name"].split(",")[0] for i, c in enumerate(ade)}}
    assert "ade20k" in categories_from_hf(hf)[1]
    # Names of no known dataset: all stuff; placeholder names: none.
    categories, where = categories_from_hf({"id2label": {"0": "a", "1": "b"}})
    assert [c["isthing"] for c in categories] == [0, 0] and "all stuff" in where
    assert categories_from_hf({"id2label": {"0": "LABEL_0", "1": "LABEL_1"}}) is None


def test_a_model_that_several_experiments_fit_asks_for_one(tmp_path, capsys, monkeypatch):
    """As for detectron2 files: the weights cannot tell apart experiments that share a network
    (one dataset's semantic and panoptic models, say), so the user chooses."""
    import copy

    from maskformer import experiments
    from maskformer.config import ExperimentConfig
    from maskformer.conversion.huggingface import model_config_from_hf

    folder = _hf_folder(tmp_path)
    model = model_config_from_hf(folder / "config.json")
    registry = dict(experiments._REGISTRY)
    for name in ("hf_twin_semantic", "hf_twin_panoptic"):
        def experiment(model=model) -> ExperimentConfig:
            return ExperimentConfig(model=copy.deepcopy(model))
        experiment.__name__ = name
        registry[name] = experiment
    monkeypatch.setattr(experiments, "_REGISTRY", registry)
    capsys.readouterr()
    assert main(["convert", "--from", "hf", str(folder), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "several experiments fit this checkpoint" in err
    assert "hf_twin_panoptic, hf_twin_semantic; choose one with --experiment" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert main(["convert", "--from", "hf", str(folder), "--out", str(tmp_path / "o"),
                 "--experiment", "hf_twin_panoptic"]) == 0
