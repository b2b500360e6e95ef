"""The evaluate and predict commands on a model directory, and training's NaN guard."""

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

from maskformer.cli import main
from maskformer.config import apply_overrides
from maskformer.data.coco_panoptic import rgb_to_id
from maskformer.experiments import get_experiment
from maskformer.model_dir import save_model
from maskformer.modeling.maskformer import build_model
from maskformer.training.trainer import StopOnNonFinite
from tests.training.conftest import smoke_overrides


def _model_dir(tmp_path, records):
    config = apply_overrides(get_experiment("maskformer_smoke"), [
        *smoke_overrides(records), "eval.object_mask_threshold=0.0",
        "eval.overlap_threshold=0.0", "data.eval_output_size=[64, 64]"])
    directory = tmp_path / "model"
    save_model(build_model(config.model), config, directory)
    return directory


def test_evaluate_and_predict_commands(tmp_path, shapes_records, capsys):
    directory = _model_dir(tmp_path, shapes_records)
    assert main(["evaluate", "--model-dir", str(directory)]) == 0
    metrics = json.loads((directory / "metrics.json").read_text())
    assert metrics["num_images"] == 4
    assert 0 <= metrics["panoptic"]["All"]["PQ"] <= 100
    assert "PQ" in capsys.readouterr().out

    # Instance output: mask AP over the thing classes of the whole split.
    assert main(["evaluate", "--model-dir", str(directory), "--set", "eval.instance=true",
                 "--out", str(tmp_path / "instance.json")]) == 0
    instance = json.loads((tmp_path / "instance.json").read_text())["instance"]
    assert instance["num_images"] == 4
    assert sorted(instance["per_class"]) == ["circle", "square", "triangle"]
    assert all(0 <= instance[k] <= 100 for k in ("AP", "AP50", "AP75"))
    assert "AP50" in capsys.readouterr().out

    images = sorted((Path(shapes_records["info"]).parents[1] / "images" / "val").glob("*.jpg"))
    assert images, "the shapes fixture wrote no validation images"
    out = tmp_path / "predictions"
    assert main(["predict", *map(str, images), "--model-dir", str(directory),
                 "--out", str(out), "--batch-size", "2", "--set", "eval.instance=true"]) == 0
    for image in images:
        panoptic = rgb_to_id(np.asarray(Image.open(out / f"{image.stem}_panoptic.png")))
        info = json.loads((out / f"{image.stem}_panoptic.json").read_text())
        assert panoptic.shape == Image.open(image).size[::-1]
        ids = {s["id"] for s in info["segments_info"]}
        assert set(np.unique(panoptic)) - {0} == ids
        assert all(s["category_name"] for s in info["segments_info"])
        semantic = np.asarray(Image.open(out / f"{image.stem}_semantic.png"))
        assert semantic.shape == panoptic.shape and semantic.max() < 5
        assert (out / f"{image.stem}_overlay.png").is_file()
        instances = json.loads((out / f"{image.stem}_instances.json").read_text())
        # Thing classes only (original ids 1, 2, 4), RLE masks of the image's size.
        assert instances and {e["category_id"] for e in instances} <= {1, 2, 4}
        assert all(e["segmentation"]["size"] == list(panoptic.shape) for e in instances)


def test_predict_reports_a_missing_input(tmp_path, shapes_records, capsys):
    directory = _model_dir(tmp_path, shapes_records)
    code = main(["predict", str(tmp_path / "nope.jpg"), "--model-dir", str(directory),
                 "--out", str(tmp_path / "o")])
    assert code == 2
    assert "nope.jpg: no such image or folder" in capsys.readouterr().err


def test_non_finite_loss_stops_training():
    class Model:
        stop_training = False

    callback = StopOnNonFinite()
    callback.set_model(Model())
    callback.on_train_batch_end(0, {"loss": 1.5})
    assert not callback.model.stop_training
    callback.on_train_batch_end(1, {"loss": math.nan})
    assert callback.model.stop_training and callback.model.stop_training_nan
