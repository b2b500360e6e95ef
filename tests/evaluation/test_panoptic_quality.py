"""Panoptic quality: hand-made cases with known answers, and random cases against panopticapi."""

import copy
import json

import numpy as np
import pytest

from maskformer.evaluation import PanopticQuality, format_table, write_results_json

ISTHING = [True, True, False]

# Image 1 (1 x 10): a thing (cat 0) matched at IoU 4/5; a stuff segment (cat 2) whose predicted
# segment also covers a void pixel, which the union leaves out: IoU 3 / (5 + 3 - 3 - 1) = 0.75.
GT1 = np.array([[1, 1, 1, 1, 1, 2, 2, 2, 0, 0]])
GT1_SEGS = [{"id": 1, "category_id": 0}, {"id": 2, "category_id": 2}]
PRED1 = np.array([[5, 5, 5, 5, 7, 7, 7, 7, 7, 0]])
PRED1_SEGS = [{"id": 5, "category_id": 0}, {"id": 7, "category_id": 2}]
# Image 2 (1 x 8): a crowd region of cat 1 and a thing of cat 0. The cat-0 prediction has IoU
# exactly 0.5 (not a match: fn + fp); the cat-1 prediction lies on the cat-1 crowd region and the
# cat-2 prediction on void, so neither is a false positive.
GT2 = np.array([[3, 3, 3, 3, 4, 4, 0, 0]])
GT2_SEGS = [{"id": 3, "category_id": 1, "iscrowd": 1}, {"id": 4, "category_id": 0, "iscrowd": 0}]
PRED2 = np.array([[1, 1, 2, 2, 2, 2, 3, 3]])
PRED2_SEGS = [{"id": 1, "category_id": 1}, {"id": 2, "category_id": 0},
              {"id": 3, "category_id": 2}]


def test_hand_made_case():
    pq = PanopticQuality(ISTHING, class_names=["a", "b", "c"])
    pq.update(GT1, GT1_SEGS, PRED1, PRED1_SEGS, image_id=1)
    pq.update(GT2, GT2_SEGS, PRED2, PRED2_SEGS, image_id=2)
    np.testing.assert_array_equal(pq.tp, [1, 0, 1])
    np.testing.assert_array_equal(pq.fp, [1, 0, 0])
    np.testing.assert_array_equal(pq.fn, [1, 0, 0])
    np.testing.assert_allclose(pq.iou_sum, [0.8, 0.0, 0.75])
    res = pq.result()
    # cat 0: PQ = 0.8 / (1 + 0.5 + 0.5) = 0.4, SQ 0.8, RQ 0.5; cat 2: PQ = SQ = 0.75, RQ 1;
    # cat 1 has no tp/fp/fn and is left out of the averages.
    assert res["per_class"]["a"] == pytest.approx(
        {"PQ": 40.0, "SQ": 80.0, "RQ": 50.0, "isthing": True, "tp": 1, "fp": 1, "fn": 1})
    assert res["per_class"]["c"]["PQ"] == pytest.approx(75.0)
    assert res["All"] == pytest.approx({"PQ": 57.5, "SQ": 77.5, "RQ": 75.0, "n": 2})
    assert res["Things"] == pytest.approx({"PQ": 40.0, "SQ": 80.0, "RQ": 50.0, "n": 1})
    assert res["Stuff"] == pytest.approx({"PQ": 75.0, "SQ": 75.0, "RQ": 100.0, "n": 1})
    table = pq.format_table(per_class=True)
    assert "57.50" in table and "Things" in table and "stuff" in table


def test_crowd_of_another_category_does_not_excuse_a_false_positive():
    pq = PanopticQuality(ISTHING)
    gt = np.array([[3, 3, 3, 3]])
    pred = np.array([[1, 1, 1, 1]])
    pq.update(gt, [{"id": 3, "category_id": 1, "iscrowd": 1}], pred, [{"id": 1, "category_id": 0}])
    np.testing.assert_array_equal(pq.fp, [1, 0, 0])
    assert not pq.fn.any() and not pq.tp.any()


def test_merge_and_state_equal_single_accumulator():
    whole = PanopticQuality(ISTHING)
    whole.update(GT1, GT1_SEGS, PRED1, PRED1_SEGS)
    whole.update(GT2, GT2_SEGS, PRED2, PRED2_SEGS)
    first, second = PanopticQuality(ISTHING), PanopticQuality(ISTHING)
    first.update(GT1, GT1_SEGS, PRED1, PRED1_SEGS)
    second.update(GT2, GT2_SEGS, PRED2, PRED2_SEGS)
    merged = PanopticQuality(ISTHING).merge(first).merge(second)
    assert merged.result() == whole.result()
    reduced = PanopticQuality(ISTHING)
    reduced.add_state(first.state() + second.state(), num_images=2)  # as an all-reduce would
    assert reduced.result() == whole.result()


def test_bad_input_is_named():
    pq = PanopticQuality(ISTHING)
    with pytest.raises(KeyError, match="image 9: predicted segment ids \\[7\\] are in the map"):
        pq.update(GT1, GT1_SEGS, PRED1, PRED1_SEGS[:1], image_id=9)
    with pytest.raises(KeyError, match="image 9: predicted segment ids \\[8\\] are listed"):
        pq.update(GT1, GT1_SEGS, PRED1, [*PRED1_SEGS, {"id": 8, "category_id": 1}], image_id=9)
    with pytest.raises(ValueError, match="category_id 5"):
        pq.update(GT1, GT1_SEGS, PRED1, [{"id": 5, "category_id": 5}, PRED1_SEGS[1]], image_id=9)
    with pytest.raises(ValueError, match="differ in size"):
        pq.update(GT1, GT1_SEGS, PRED2, PRED2_SEGS, image_id=9)


def test_results_written_as_json(tmp_path):
    pq = PanopticQuality(ISTHING)
    pq.update(GT1, GT1_SEGS, PRED1, PRED1_SEGS)
    path = tmp_path / "out" / "results.json"
    write_results_json(path, {"panoptic": pq.result(), "nan": float("nan")})
    loaded = json.loads(path.read_text())
    assert loaded["panoptic"]["All"]["PQ"] == pytest.approx(pq.result()["All"]["PQ"])
    assert loaded["nan"] is None
    assert "== panoptic ==" in format_table({"panoptic": pq})


# ---------------------------------------------------------------------------------------------
# Random cases against panopticapi (the COCO reference implementation)
# ---------------------------------------------------------------------------------------------


def _random_image(rng, num_classes, height=24, width=32):
    """A ground-truth map with rectangles, void and crowd regions, and a perturbed prediction."""
    gt = np.zeros((height, width), np.int64)
    segs = []
    crowd_used = set()
    for seg_id in range(1, rng.integers(3, 9)):
        y, x = rng.integers(0, height - 3), rng.integers(0, width - 3)
        h, w = rng.integers(3, height // 2), rng.integers(3, width // 2)
        gt[y: y + h, x: x + w] = seg_id
        category = int(rng.integers(num_classes))
        crowd = int(rng.random() < 0.2 and category not in crowd_used)
        crowd_used.add(category) if crowd else None
        segs.append({"id": seg_id, "category_id": category, "iscrowd": crowd})
    gt[rng.random((height, width)) < 0.03] = 0  # scattered void pixels
    present = set(np.unique(gt).tolist())
    gt_segs = [s for s in segs if s["id"] in present]

    # Prediction: the ground truth shifted and partly repainted, with new ids and some wrong or
    # merged categories, plus a few random segments.
    dy, dx = rng.integers(-2, 3, 2)
    shifted = np.roll(gt, (dy, dx), axis=(0, 1))
    pred = np.zeros_like(shifted)
    pred_segs = []
    next_id = 1
    for s in gt_segs:
        region = shifted == s["id"]
        if rng.random() < 0.15:
            continue
        category = s["category_id"] if rng.random() < 0.8 else int(rng.integers(num_classes))
        pred[region] = next_id
        pred_segs.append({"id": next_id, "category_id": category})
        next_id += 1
    for _ in range(rng.integers(0, 4)):
        y, x = rng.integers(0, height - 2), rng.integers(0, width - 2)
        pred[y: y + rng.integers(2, 10), x: x + rng.integers(2, 12)] = next_id
        pred_segs.append({"id": next_id, "category_id": int(rng.integers(num_classes))})
        next_id += 1
    present = set(np.unique(pred).tolist())
    pred_segs = [s for s in pred_segs if s["id"] in present]
    return gt, gt_segs, pred, pred_segs


def test_random_cases_match_panopticapi(tmp_path):
    evaluation = pytest.importorskip("panopticapi.evaluation")
    from panopticapi.utils import id2rgb
    from PIL import Image

    rng = np.random.default_rng(2024)
    num_classes = 6
    isthing = [True, True, True, False, False, False]
    categories = {k: {"id": k, "isthing": int(isthing[k])} for k in range(num_classes)}
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    ours = PanopticQuality(isthing)
    pairs = []
    for i in range(60):
        gt, gt_segs, pred, pred_segs = _random_image(rng, num_classes)
        ours.update(gt, gt_segs, pred, pred_segs, image_id=i)
        name = f"{i}.png"
        Image.fromarray(id2rgb(gt)).save(tmp_path / "gt" / name)
        Image.fromarray(id2rgb(pred)).save(tmp_path / "pred" / name)
        # panopticapi reads ground-truth areas from the JSON (COCO stores the pixel count).
        gt_info = [dict(s, area=int((gt == s["id"]).sum())) for s in gt_segs]
        pairs.append(({"image_id": i, "file_name": name, "segments_info": gt_info},
                      {"image_id": i, "file_name": name, "segments_info": copy.deepcopy(pred_segs)}))
    stat = evaluation.pq_compute_single_core(0, pairs, str(tmp_path / "gt"),
                                             str(tmp_path / "pred"), categories)
    for k in range(num_classes):
        assert (ours.tp[k], ours.fp[k], ours.fn[k]) == (stat[k].tp, stat[k].fp, stat[k].fn), k
        assert ours.iou_sum[k] == pytest.approx(stat[k].iou, abs=1e-9)
    assert ours.tp.sum() > 30 and ours.fp.sum() > 10 and ours.fn.sum() > 10  # a varied test
    res = ours.result()
    for group, flag in (("All", None), ("Things", True), ("Stuff", False)):
        ref, _ = stat.pq_average(categories, isthing=flag)
        for key in ("pq", "sq", "rq"):
            assert res[group][key.upper()] / 100 == pytest.approx(ref[key], abs=1e-6), (group, key)
        assert res[group]["n"] == ref["n"]
    _, ref_per_class = stat.pq_average(categories, isthing=None)
    for k in range(num_classes):
        for key in ("pq", "sq", "rq"):
            assert res["per_class"][str(k)][key.upper()] / 100 == pytest.approx(
                ref_per_class[k][key], abs=1e-6)
