"""One inference path: an image through `predict` and through evaluation gets the same maps."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskformer.config import apply_overrides
from maskformer.data.coco_panoptic import rgb_to_id
from maskformer.experiments import get_experiment
from maskformer.inference import (
    Predictor,
    evaluate,
    pad_batch,
    padded_shape,
    resize_for_inference,
)
from maskformer.modeling.maskformer import build_model
from maskformer.predict import predict_files
from tests.training.conftest import smoke_overrides


def _config(records, *extra):
    # Thresholds at 0 so that a random model gives many segments: equal maps then say something.
    return apply_overrides(get_experiment("maskformer_smoke"), [
        *smoke_overrides(records), "eval.object_mask_threshold=0.0",
        "eval.overlap_threshold=0.0", *extra]).validate()


def _val_images(records) -> list[Path]:
    images = sorted((Path(records["info"]).parents[1] / "images" / "val").glob("*.jpg"))
    assert images, "the shapes fixture wrote no validation images"
    return images


@pytest.mark.parametrize("extra", [
    # 64 px images resized to 80 (a non-integer ratio), a fixed canvas
    ["data.eval_short_edge=80", "data.eval_output_size=[96, 96]"],
    # each batch padded to its largest image rounded up to the divisibility
    ["data.eval_short_edge=72", "data.eval_output_size=[]", "data.size_divisibility=32"],
])
def test_predict_and_evaluation_give_identical_maps(shapes_records, tmp_path, extra):
    config = _config(shapes_records, *extra)
    model = build_model(config.model)
    predictor = Predictor(model, config)
    from_evaluation = {}

    def keep(images, targets, predictions):
        for b, p in enumerate(predictions):
            from_evaluation[int(targets["image_id"][b])] = p

    results = evaluate(model, config, progress=False, on_batch=keep, predictor=predictor)
    assert results["num_images"] == len(from_evaluation) == 4

    out = tmp_path / "predictions"
    images = _val_images(shapes_records)
    predict_files(model, config, images, out, batch_size=2)
    annotations = json.loads((Path(shapes_records["info"]).parents[1] / "annotations"
                              / "panoptic_val.json").read_text())
    ids = {a["file_name"].rsplit(".", 1)[0]: a["image_id"] for a in annotations["annotations"]}
    segments = 0
    for image in images:
        ours = from_evaluation[int(ids[image.stem])]
        panoptic = rgb_to_id(np.asarray(Image.open(out / f"{image.stem}_panoptic.png")))
        semantic = np.asarray(Image.open(out / f"{image.stem}_semantic.png"))
        assert panoptic.shape == semantic.shape == Image.open(image).size[::-1]
        np.testing.assert_array_equal(panoptic, ours.panoptic_map)
        np.testing.assert_array_equal(semantic, ours.semantic_map)
        info = json.loads((out / f"{image.stem}_panoptic.json").read_text())["segments_info"]
        assert [(s["id"], s["category_id"]) for s in info] == [
            (s["id"], s["category_id"]) for s in ours.segments]
        segments += len(np.unique(panoptic)) - 1
    assert segments >= 8, "too few segments for the comparison to mean anything"


def test_ground_truth_is_at_the_original_size(shapes_records):
    """Evaluation compares at the original resolution also when the images are resized and
    `data.eval_map_size` is not set: the ground truth is the annotation PNG itself."""
    config = _config(shapes_records, "data.eval_short_edge=80", "data.eval_output_size=[96, 96]")
    root = Path(shapes_records["info"]).parents[1]
    annotations = json.loads((root / "annotations" / "panoptic_val.json").read_text())
    by_id = {a["image_id"]: a for a in annotations["annotations"]}
    from maskformer.evaluation.evaluator import ground_truth_of

    seen = 0

    def check(images, targets, predictions):
        nonlocal seen
        for b in range(len(predictions)):
            gt = ground_truth_of(targets, b)
            ann = by_id[gt["image_id"]]
            png = rgb_to_id(np.asarray(Image.open(root / "annotations" / "panoptic_val"
                                                  / ann["file_name"])))
            # The segment-index map numbers the segments in annotation order (1, 2, ...).
            index = np.zeros_like(png)
            for i, s in enumerate(ann["segments_info"], start=1):
                index[png == s["id"]] = i
            np.testing.assert_array_equal(gt["segment_map"], index)
            seen += 1

    evaluate(build_model(config.model), config, progress=False, on_batch=check)
    assert seen == 4


def test_resize_and_padding_rule():
    config = get_experiment("maskformer_smoke")
    config.data.eval_short_edge, config.data.eval_max_size = 64, 100
    image = np.random.default_rng(0).integers(0, 256, (30, 90, 3), np.uint8)
    resized = resize_for_inference(image, config.data)
    # detectron2's ResizeShortestEdge: short edge 64 would make the long one 192 > 100.
    assert resized.shape == (33, 100, 3)
    assert resized.dtype == np.float32 and np.all(resized == np.round(resized))
    config.data.eval_output_size = []
    config.data.size_divisibility = 32
    batch, sizes = pad_batch([resized, resized[:20, :40]], config.data)
    assert batch.shape == (2, 64, 128, 3) and sizes.tolist() == [[33, 100], [20, 40]]
    assert np.all(batch[1, 20:] == 0) and np.all(batch[1, :, 40:] == 0)
    config.data.eval_output_size = [32, 128]
    with pytest.raises(Exception, match="eval_output_size"):
        padded_shape([[33, 100]], config.data)
