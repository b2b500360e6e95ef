"""COCO mask AP on small cases whose answers are known."""

import numpy as np
import pytest

pytest.importorskip("pycocotools")

from maskformer.evaluation import InstanceAP  # noqa: E402


def _box(shape, y0, y1, x0, x1):
    mask = np.zeros(shape, bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_perfect_predictions_give_ap_100():
    metric = InstanceAP(3)
    for image in range(3):
        masks = np.stack([_box((20, 20), 0, 5, 0, 5 + image), _box((20, 20), 10, 18, 8, 19)])
        metric.update(image, masks, [0, 2], masks, [0.9, 0.8], [0, 2])
    res = metric.result()
    assert res["AP"] == pytest.approx(100.0)
    assert res["AP50"] == pytest.approx(100.0) and res["AP75"] == pytest.approx(100.0)
    assert res["per_class"] == {"0": pytest.approx(100.0), "1": None, "2": pytest.approx(100.0)}
    assert res["APm"] is None  # every mask is small: no medium ground truth to score


def test_one_hit_one_false_positive_one_miss():
    # Two ground-truth masks of one class; a perfect detection (score 0.9) and a false positive
    # (score 0.8). Precision is 1 up to recall 0.5 and then nothing: 51 of COCO's 101 recall
    # points have precision 1, at every IoU threshold.
    gt = np.stack([_box((16, 16), 0, 4, 0, 4), _box((16, 16), 8, 12, 8, 12)])
    pred = np.stack([gt[0], _box((16, 16), 0, 4, 10, 16)])
    metric = InstanceAP(1)
    metric.update("img", gt, [0, 0], pred, [0.9, 0.8], [0, 0])
    assert metric.result()["AP"] == pytest.approx(100 * 51 / 101)


def test_partial_overlap_counts_at_low_thresholds_only():
    # IoU 5/8 = 0.625: a match at thresholds 0.50, 0.55, 0.60 of the ten -> AP 30, AP50 100, AP75 0.
    gt = _box((10, 10), 0, 1, 0, 8)[None]
    pred = _box((10, 10), 0, 1, 0, 5)[None]
    metric = InstanceAP(2)
    metric.update(0, gt, [1], pred, [0.5], [1])
    res = metric.result()
    assert res["AP"] == pytest.approx(30.0)
    assert res["AP50"] == pytest.approx(100.0)
    assert res["AP75"] == pytest.approx(0.0)
    assert "AP50" in metric.format_table(per_class=True)


def test_crowd_and_panoptic_ground_truth_things_only_and_merge():
    # Panoptic ground truth: a thing (cat 0), a crowd thing (cat 0) and stuff (cat 1, not
    # evaluated). A detection on the crowd region is ignored, not a false positive.
    panoptic = np.zeros((12, 12), np.int64)
    panoptic[0:4, 0:4] = 1
    panoptic[6:10, 6:10] = 2
    panoptic[0:3, 8:12] = 3
    segments = [{"id": 1, "category_id": 0, "iscrowd": 0}, {"id": 2, "category_id": 0, "iscrowd": 1},
                {"id": 3, "category_id": 1, "iscrowd": 0}]
    pred = np.stack([panoptic == 1, panoptic == 2, panoptic == 3])
    first = InstanceAP(2, evaluated=[True, False])
    first.update_from_panoptic("a", panoptic, segments, pred, [0.6, 0.9, 0.7], [0, 0, 1])
    assert len(first.gt) == 2 and len(first.dt) == 2  # stuff left out
    assert first.result()["AP"] == pytest.approx(100.0)
    second = InstanceAP(2, evaluated=[True, False])
    second.update_from_panoptic("b", panoptic, segments[:1], np.zeros((0, 12, 12), bool), [], [])
    merged = first.merge(second)
    # Image "b": its one thing is missed, so recall stops at 1/2: AP = 51/101.
    assert merged.result()["AP"] == pytest.approx(100 * 51 / 101)
    with pytest.raises(ValueError, match="in both"):
        merged.merge(second)


def test_no_detections_and_bad_input():
    metric = InstanceAP(2)
    metric.update(0, _box((5, 5), 0, 2, 0, 2)[None], [0], np.zeros((0, 5, 5), bool), [], [])
    assert metric.result()["AP"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="image 0 was added twice"):
        metric.update(0, np.zeros((0, 5, 5), bool), [], np.zeros((0, 5, 5), bool), [], [])
    with pytest.raises(ValueError, match="image 1: 1 predicted masks, 1 labels, 2 scores"):
        metric.update(1, np.zeros((0, 5, 5), bool), [], np.zeros((1, 5, 5), bool), [1, 2], [0])
