"""`predict_files` over folders as people have them: an unreadable file is reported, skipped
and counted while the others are segmented; inputs that share a name get distinct outputs; the
sub-folders of a recursive input are kept."""

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from maskformer.config import apply_overrides
from maskformer.data.coco_panoptic import rgb_to_id
from maskformer.errors import DataError
from maskformer.experiments import get_experiment
from maskformer.images import find_images, read_image
from maskformer.inference import Predictor
from maskformer.modeling.maskformer import build_model
from maskformer.predict import PredictResult, output_names, predict_files

# maskformer_smoke has 7 classes and no dataset_info: the categories are given.
CATEGORIES = [{"id": i, "name": f"class{i}", "isthing": int(i < 4)} for i in range(7)]
OUTPUTS = ("_panoptic.png", "_panoptic.json", "_semantic.png", "_semantic.json", "_overlay.png")


@pytest.fixture(scope="module")
def model_and_config():
    # Thresholds at 0 so that a random model gives segments; a fixed canvas, so that an
    # image's prediction does not depend on the other images of its batch.
    config = apply_overrides(get_experiment("maskformer_smoke"), [
        "eval.object_mask_threshold=0.0", "eval.overlap_threshold=0.0"]).validate()
    assert config.data.eval_output_size
    keras.utils.set_random_seed(0)
    model = build_model(config.model)
    # One predictor for the module: its forward pass is compiled once per batch size.
    return model, config, Predictor(model, config, CATEGORIES)


def _image(path: Path, height: int, width: int, seed: int) -> Path:
    """A random RGB image of its own size (so that results show which input they belong to)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)
    Image.fromarray(pixels).save(path, quality=95)
    return path


def _check_results(stem: Path, image_file: Path, expected) -> None:
    for suffix in OUTPUTS:
        assert Path(f"{stem}{suffix}").is_file(), f"{stem}{suffix} was not written"
    panoptic = rgb_to_id(np.asarray(Image.open(f"{stem}_panoptic.png")))
    semantic = np.asarray(Image.open(f"{stem}_semantic.png"))
    assert panoptic.shape == semantic.shape == Image.open(image_file).size[::-1]
    np.testing.assert_array_equal(panoptic, expected.panoptic_map)
    np.testing.assert_array_equal(semantic, expected.semantic_map)
    info = json.loads(Path(f"{stem}_panoptic.json").read_text())
    assert info["file_name"] == image_file.name


def test_unreadable_file_is_skipped_and_counted_and_same_stems_are_distinct(
        model_and_config, tmp_path, capsys):
    model, config, predictor = model_and_config
    folder = tmp_path / "photos"
    folder.mkdir()
    good = [_image(folder / "a.png", 40, 56, 1), _image(folder / "b.jpg", 48, 48, 2),
            _image(folder / "x.jpg", 56, 40, 3), _image(folder / "x.png", 32, 64, 4)]
    # a 16-bit grayscale PNG among them
    Image.fromarray(np.random.default_rng(5).integers(0, 65536, (44, 52), np.uint16)).save(
        folder / "c.png")
    good.append(folder / "c.png")
    (folder / "broken.jpg").write_text("not a picture")
    files = find_images([folder])
    assert len(files) == 6

    out = tmp_path / "out"
    result = predict_files(model, config, files, out, batch_size=2, roots=[folder],
                           predictor=predictor)
    assert isinstance(result, PredictResult)
    assert [s.relative_to(out).as_posix() for s in result.written] == [
        "a", "b", "c", "x.jpg", "x.png"]
    assert [(p.name, "not an image" in reason) for p, reason in result.skipped] == [
        ("broken.jpg", True)]
    err = capsys.readouterr().err
    assert f"skipped {folder / 'broken.jpg'}: cannot read the image: not an image" in err
    assert not list(out.glob("broken*"))

    segments = 0
    for stem, image_file in zip(result.written, sorted(good), strict=True):
        expected = predictor.predict_images([read_image(image_file)])[0]
        _check_results(stem, image_file, expected)
        segments += len(expected.segments)
    assert segments >= 5, "too few segments for the comparison to mean anything"
    # x.jpg and x.png: the same stem, two sets of results
    assert not (out / "x_panoptic.png").exists()


def test_recursive_inputs_keep_their_sub_folders(model_and_config, tmp_path):
    model, config, predictor = model_and_config
    root = tmp_path / "dataset"
    for i, (name, size) in enumerate([("a/x.png", (40, 56)), ("b/x.png", (56, 40)),
                                      ("b/c/y.jpg", (48, 48)), ("z.png", (32, 64))]):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        _image(root / name, *size, seed=i)
    files = find_images([root], recursive=True)
    out = tmp_path / "out"
    result = predict_files(model, config, files, out, batch_size=2, roots=[root],
                           predictor=predictor)
    assert [s.relative_to(out).as_posix() for s in result.written] == [
        "a/x", "b/c/y", "b/x", "z"]
    assert result.skipped == []
    for stem, image_file in zip(result.written, files, strict=True):
        _check_results(stem, image_file, predictor.predict_images([read_image(image_file)])[0])


def test_every_file_unreadable_is_an_error(model_and_config, tmp_path, capsys):
    model, config, predictor = model_and_config
    for name in ("a.jpg", "b.png"):
        (tmp_path / name).write_text("text")
    with pytest.raises(DataError, match=r"none of the 2 image files could be read; the first: "
                                        r".*a.jpg: cannot read the image"):
        predict_files(model, config, find_images([tmp_path]), tmp_path / "out",
                      categories=CATEGORIES)
    assert capsys.readouterr().err.count("skipped ") == 2
    assert not any((tmp_path / "out").iterdir())
    with pytest.raises(DataError, match="no image files to segment"):
        predict_files(model, config, [], tmp_path / "out", categories=CATEGORIES)
    with pytest.raises(DataError, match="batch size must be at least 1"):
        predict_files(model, config, [tmp_path / "a.jpg"], tmp_path / "out", batch_size=0,
                      categories=CATEGORIES)


# ---------------------------------------------------------------------------------------------
# The naming rule alone
# ---------------------------------------------------------------------------------------------


def _names(files, roots=()):
    return [n.as_posix() for n in output_names([Path(f) for f in files], roots)]


def test_names_are_stems_unless_they_collide():
    assert _names(["d/a.jpg", "d/b.png"]) == ["a", "b"]
    assert _names(["d/x.jpg", "d/x.png", "d/y.png"]) == ["x.jpg", "x.png", "y"]
    # a file system that ignores case would merge X_panoptic.png and x_panoptic.png
    assert _names(["d/X.jpg", "d/x.png"]) == ["X.jpg", "x.png"]
    # the same file name in two folders that are not roots: numbered in order
    assert _names(["p/x.jpg", "q/x.jpg", "r/x.jpg"]) == ["x.jpg", "x.jpg-2", "x.jpg-3"]
    # a kept suffix that meets another file's stem is numbered too
    assert _names(["d/x.jpg", "d/x.png", "e/x.jpg.png"]) == ["x.jpg", "x.png", "x.jpg-2"]


def test_names_keep_the_path_below_their_root(tmp_path):
    root, other = tmp_path / "root", tmp_path / "other"
    (root / "a").mkdir(parents=True)
    other.mkdir()
    (other / "single.png").write_bytes(b"")
    files = [root / "a" / "x.png", root / "b" / "x.png", root / "y.png", other / "single.png",
             root / "a" / "y.jpg"]
    # files among the roots are no roots; a root written differently still counts
    roots = [other / "single.png", root / "a" / ".."]
    assert _names(files, roots) == ["a/x", "b/x", "y", "single", "a/y"]
    assert _names(files) == ["x.png", "x.png-2", "y.png", "single", "y.jpg"]


def test_a_semantic_model_gets_an_overlay_of_its_classes(tmp_path):
    """Without panoptic output (the semantic models of the zoo), the overlay shows the semantic
    map: each class present is one named segment, nothing is void."""
    from maskformer.inference import ImagePrediction
    from maskformer.predict import write_prediction
    from maskformer.visualize import overlay

    image = np.random.default_rng(0).integers(0, 256, (30, 40, 3), np.uint8)
    prediction = ImagePrediction((30, 40))
    prediction.semantic_map = np.zeros((30, 40), np.int32)
    prediction.semantic_map[:, 25:] = 5
    write_prediction(prediction, image, CATEGORIES, "a.png", tmp_path / "a")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_overlay.png", "a_semantic.json",
                                                           "a_semantic.png"]
    named = json.loads((tmp_path / "a_semantic.json").read_text())
    assert named == {"file_name": "a.png", "classes": [
        {"id": 0, "name": "class0", "original_id": 0, "pixels": 30 * 25},
        {"id": 5, "name": "class5", "original_id": 5, "pixels": 30 * 15}]}
    written = np.asarray(Image.open(tmp_path / "a_overlay.png"))
    segments = [{"id": 1, "category_id": 0, "isthing": 1}, {"id": 6, "category_id": 5,
                                                            "isthing": 0}]
    expected = np.asarray(overlay(image, prediction.semantic_map + 1, segments, CATEGORIES))
    np.testing.assert_array_equal(written, expected)
    # Not darkened as void would be: the blend keeps more than the void brightness.
    void = np.asarray(overlay(image, np.zeros((30, 40), np.int64), [], CATEGORIES))
    assert np.abs(written.astype(int) - void.astype(int)).mean() > 10
