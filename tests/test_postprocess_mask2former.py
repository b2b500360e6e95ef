"""Mask2Former's inference (semantic, panoptic with its painting rule, instance) against the
original code's outputs on 20 cases (mask2former_inference_cases.npz, README "Inference")."""

import json

import numpy as np
import pytest
from keras import ops

from maskformer import postprocess
from tests.conftest import backend

FILE = "mask2former_inference_cases.npz"


def _np(x):
    return np.asarray(ops.convert_to_numpy(x))


def compiled(fn):
    """`fn` jit-compiled on JAX (eager JAX compiles every op for every new shape); as is on
    TensorFlow, so the eager path is tested there."""
    if backend() == "jax":
        import jax

        return jax.jit(fn)
    return fn


@pytest.fixture(scope="module")
def reference():
    """(npz, config, isthing [K], groups): cases grouped by image size, so each group runs as
    one batch."""
    from tests.conftest import reference_file

    data = np.load(reference_file(FILE))
    config = json.loads(str(data["config"]))
    assert len(config["cases"]) == 20
    kwargs = config["MaskFormer_kwargs"]
    config["thresholds"] = (kwargs["object_mask_threshold"], kwargs["overlap_threshold"])
    isthing = np.zeros(config["num_classes"], bool)
    isthing[config["thing_contiguous_ids"]] = True
    groups: dict[tuple[int, int], list[int]] = {}
    for i, case in enumerate(config["cases"]):
        groups.setdefault((case["H"], case["W"]), []).append(i)
    return data, config, isthing, list(groups.values())


def _batch(data, cases):
    return (np.stack([data[f"case{i}/mask_cls"] for i in cases]),
            np.stack([data[f"case{i}/mask_pred"] for i in cases]))


def _panoptic(config, isthing, rule):
    return compiled(lambda c, m: postprocess.panoptic_inference(
        c, m, isthing, *config["thresholds"], rule=rule))


def _expected_segments(data, i):
    rows = data[f"case{i}/segments_info"].reshape(-1, 3)
    expected = [{"id": int(s), "isthing": bool(t), "category_id": int(c)} for s, t, c in rows]
    assert expected == json.loads(str(data[f"case{i}/segments_info_json"]))
    return expected


def _check_panoptic(data, config, result, cases):
    for b, i in enumerate(cases):
        kind = f"case {i}: {config['cases'][i]['kind']}"
        np.testing.assert_array_equal(_np(result["panoptic_seg"])[b],
                                      data[f"case{i}/panoptic_seg"], err_msg=kind)
        assert postprocess.panoptic_segments_info(result, b) == _expected_segments(data, i), kind


def _check_instances(data, result, b, key, num_classes):
    """Compares one image's instances with the original's as sets keyed by the flat index
    query * K + label (the original's top-k is unsorted)."""
    valid = _np(result["valid"])[b]
    flat = (_np(result["query"])[b] * num_classes + _np(result["labels"])[b])[valid]
    got = {int(f): n for n, f in enumerate(flat)}
    expected = {int(f): n for n, f in enumerate(data[key + "flat_index"])}
    assert got.keys() == expected.keys(), key
    order = [got[f] for f in expected]
    np.testing.assert_allclose(_np(result["scores"])[b][valid][order], data[key + "scores"],
                               atol=1e-5, rtol=0, err_msg=key)
    np.testing.assert_array_equal(_np(result["labels"])[b][valid][order],
                                  data[key + "pred_classes"], err_msg=key)
    np.testing.assert_array_equal(_np(result["masks"])[b][valid][order],
                                  data[key + "pred_masks"].astype(bool), err_msg=key)


def test_semantic_matches_original(reference):
    data, _, _, groups = reference
    run = compiled(postprocess.semantic_inference)
    for cases in groups:
        sem = _np(run(*_batch(data, cases)))
        for b, i in enumerate(cases):
            np.testing.assert_allclose(sem[b], data[f"case{i}/sem_seg"], atol=1e-5, rtol=0,
                                       err_msg=f"case {i}")


def test_panoptic_matches_original(reference):
    data, config, isthing, groups = reference
    run = _panoptic(config, isthing, "mask2former")
    for cases in groups:
        _check_panoptic(data, config, run(*_batch(data, cases)), cases)
    # The README's counts of void pixels, as a check that the stored maps are read as meant.
    for i, case in enumerate(config["cases"]):
        assert (data[f"case{i}/panoptic_seg"] == 0).sum() == case["n_void_pixels"]


@pytest.mark.parametrize("key,things_only", [("instance/", True),
                                             ("instance_unfiltered/", False)])
def test_instance_matches_original(reference, key, things_only):
    data, config, isthing, groups = reference
    run = compiled(lambda c, m: postprocess.instance_inference(
        c, m, isthing if things_only else None, config["test_topk_per_image"]))
    for cases in groups:
        result = run(*_batch(data, cases))
        for b, i in enumerate(cases):
            _check_instances(data, result, b, f"case{i}/{key}", config["num_classes"])
    # Vacuity guard: the filter drops something somewhere and keeps something somewhere.
    sizes = [len(data[f"case{i}/{key}flat_index"]) for i in range(20)]
    assert max(sizes) > 0 and (min(sizes) == 0) == things_only


@pytest.mark.parametrize("band_values", [postprocess.BAND_VALUES, 1])  # one band; a row each
def test_postprocessor_matches_original(reference, band_values):
    """The band-wise path with input size == output size, so the resize is the identity and
    `mask_pred` (already at output size) goes through unchanged."""
    data, config, isthing, groups = reference
    processor = postprocess.PostProcessor(
        isthing, *config["thresholds"], instance=True,
        instance_top_k=config["test_topk_per_image"], band_values=band_values,
        panoptic_rule="mask2former")
    for cases in groups:
        logits, masks = _batch(data, cases)
        sizes = np.tile([masks.shape[2:]], (len(cases), 1))
        result = compiled(lambda o, s=sizes: processor(o, s[0], s, s))(
            {"pred_logits": logits, "pred_masks": masks})
        _check_panoptic(data, config, result["panoptic"], cases)
        for b, i in enumerate(cases):
            np.testing.assert_allclose(_np(result["sem_seg"])[b], data[f"case{i}/sem_seg"],
                                       atol=1e-5, rtol=0, err_msg=f"case {i}")
            _check_instances(data, result["instance"], b, f"case{i}/instance/",
                             config["num_classes"])


def test_maskformer_rule_differs(reference):
    """MaskFormer's painting rule gives other maps on the cases built for the difference; the
    README counts 12 of the 20 cases changed."""
    data, config, isthing, groups = reference
    maskformer = _panoptic(config, isthing, "maskformer")
    changed = set()
    for cases in groups:
        result = maskformer(*_batch(data, cases))
        for b, i in enumerate(cases):
            same = (np.array_equal(_np(result["panoptic_seg"])[b], data[f"case{i}/panoptic_seg"])
                    and postprocess.panoptic_segments_info(result, b)
                    == _expected_segments(data, i))
            if not same:
                changed.add(i)
    assert {3, 8} <= changed  # won pixels below 0.5: void with Mask2Former, painted otherwise
    assert len(changed) == 12


@pytest.mark.parametrize("rule", ["detr", "Mask2Former", None])
def test_unknown_rule_raises(rule):
    with pytest.raises(ValueError, match="panoptic rule"):
        postprocess.panoptic_inference(np.zeros((1, 2, 4), np.float32),
                                       np.zeros((1, 2, 3, 3), np.float32), [True, False, False],
                                       rule=rule)
    with pytest.raises(ValueError, match="panoptic rule"):
        postprocess.PostProcessor([True, False, False], panoptic_rule=rule)


def test_query_with_empty_intersection_is_skipped():
    """A query that wins pixels only outside its own mask (sigmoid >= 0.5 elsewhere) passes
    MaskFormer's area test but paints nothing with Mask2Former's rule, so it opens no segment.
    No reference case has such a query: here query 1 wins pixels 2-3 (area 2) and owns 0-1."""
    sigmoid = np.array([[[[0.9, 0.9, 0.1, 0.1]], [[0.6, 0.6, 0.4, 0.4]]]], np.float32)
    masks = np.log(sigmoid / (1 - sigmoid))  # [1, Q=2, 1, 4] logits
    logits = np.array([[[5.0, -5.0, -5.0], [5.0, -5.0, -5.0]]], np.float32)  # both kept
    expected = {"maskformer": ([1, 1, 2, 2], 2), "mask2former": ([1, 1, 0, 0], 1)}
    for rule, (panoptic_map, num_segments) in expected.items():
        results = [
            postprocess.panoptic_inference(logits, masks, [True, True], rule=rule),
            postprocess.PostProcessor([True, True], panoptic_rule=rule)(
                {"pred_logits": logits, "pred_masks": masks}, (1, 4), [[1, 4]], [[1, 4]]
            )["panoptic"],
        ]
        for result in results:
            np.testing.assert_array_equal(_np(result["panoptic_seg"]), [[panoptic_map]])
            assert len(postprocess.panoptic_segments_info(result, 0)) == num_segments, rule
