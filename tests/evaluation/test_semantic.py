"""Semantic metrics on cases with answers worked out by hand."""

import numpy as np
import pytest

from maskformer.evaluation import SemanticSegmentationMetrics


def test_known_answer():
    # Evaluated pixels (gt, pred): (0,0) (0,1) (1,1) (1,1) (2,3); the 255 pixel is skipped.
    gt = np.array([[0, 0, 1], [1, 255, 2]])
    pred = np.array([[0, 1, 1], [1, 0, 3]])
    metric = SemanticSegmentationMetrics(4, class_names=["a", "b", "c", "d"])
    metric.update(gt, pred)
    res = metric.result()
    # IoU: a 1/(2+1-1) = 1/2, b 2/(2+3-2) = 2/3, c 0/(1+0-0) = 0; d has no ground truth.
    assert res["per_class"]["a"]["IoU"] == pytest.approx(50.0)
    assert res["per_class"]["b"]["IoU"] == pytest.approx(200 / 3)
    assert res["per_class"]["c"]["IoU"] == pytest.approx(0.0)
    assert res["per_class"]["d"] == {"IoU": None, "ACC": None}
    assert res["mIoU"] == pytest.approx(100 * (1 / 2 + 2 / 3) / 3)
    assert res["pACC"] == pytest.approx(60.0)  # 3 of 5
    assert res["mACC"] == pytest.approx(100 * (1 / 2 + 1 + 0) / 3)
    assert res["fwIoU"] == pytest.approx(100 * (2 / 5 * 1 / 2 + 2 / 5 * 2 / 3))
    assert res["num_classes_present"] == 3
    assert "mIoU" in metric.format_table(per_class=True)


def test_perfect_prediction_and_ignore_only():
    gt = np.array([[0, 1], [2, 255]])
    metric = SemanticSegmentationMetrics(3)
    metric.update(gt, np.array([[0, 1], [2, 0]]))
    assert metric.result()["mIoU"] == pytest.approx(100.0)
    empty = SemanticSegmentationMetrics(3)
    empty.update(np.full((2, 2), 255), np.zeros((2, 2), int))
    assert empty.result()["mIoU"] == 0.0 and empty.result()["num_classes_present"] == 0


def test_batches_and_merge_add_up():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 5, (4, 6, 7))
    gt[rng.random(gt.shape) < 0.1] = 255
    pred = np.where(rng.random(gt.shape) < 0.7, gt % 255, rng.integers(0, 5, gt.shape)) % 5
    whole = SemanticSegmentationMetrics(5)
    whole.update(gt, pred)
    parts = [SemanticSegmentationMetrics(5) for _ in range(2)]
    parts[0].update(gt[:1], pred[:1])
    parts[0].update(gt[1:2], pred[1:2])
    parts[1].update(gt[2:], pred[2:])
    merged = parts[0].merge(parts[1])
    np.testing.assert_array_equal(merged.confusion, whole.confusion)
    # Per-class IoU by direct counting.
    valid = gt != 255
    for k in range(5):
        inter = np.sum((gt == k) & (pred == k) & valid)
        union = np.sum(((gt == k) | (pred == k)) & valid)
        assert whole.result()["per_class"][str(k)]["IoU"] == pytest.approx(100 * inter / union)


def test_bad_labels_are_named():
    metric = SemanticSegmentationMetrics(3)
    with pytest.raises(ValueError, match="image 7: ground-truth label 5"):
        metric.update(np.array([[5]]), np.array([[0]]), image_id=7)
    with pytest.raises(ValueError, match="differ"):
        metric.update(np.zeros((2, 2), int), np.zeros((2, 3), int))
