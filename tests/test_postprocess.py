"""Post-processing against a plain NumPy transcription of REFERENCE.md section 9, against PyTorch's
bilinear resize, and against the original code's outputs (reference files D and A)."""

import collections
import json

import numpy as np
import pytest
from keras import ops

from maskformer import postprocess, resize
from tests.conftest import backend

# ---------------------------------------------------------------------------------------------
# NumPy transcription of the reference steps (float64, loops, one image at a time)
# ---------------------------------------------------------------------------------------------


def np_softmax(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def np_resize_bilinear(x, out_h, out_w):
    """PyTorch F.interpolate(bilinear, align_corners=False) of [C, H, W], written with loops."""
    c, in_h, in_w = x.shape

    def taps(in_size, out_size):
        result = []
        for dst in range(out_size):
            src = max((dst + 0.5) * in_size / out_size - 0.5, 0.0)
            i0 = min(int(np.floor(src)), in_size - 1)
            i1 = min(i0 + 1, in_size - 1)
            lam = src - i0
            result.append((i0, i1, 1.0 - lam, lam))
        return result

    out = np.zeros((c, out_h, out_w))
    ty, tx = taps(in_h, out_h), taps(in_w, out_w)
    for y, (y0, y1, wy0, wy1) in enumerate(ty):
        for x_, (x0, x1, wx0, wx1) in enumerate(tx):
            out[:, y, x_] = (wy0 * (wx0 * x[:, y0, x0] + wx1 * x[:, y0, x1])
                             + wy1 * (wx0 * x[:, y1, x0] + wx1 * x[:, y1, x1]))
    return out


def np_semantic(mask_cls, mask_pred):
    probs = np_softmax(mask_cls)[:, :-1]
    return np.einsum("qk,qhw->khw", probs, np_sigmoid(mask_pred))


def np_panoptic(mask_cls, mask_pred, isthing, object_thr=0.8, overlap_thr=0.8, events=None):
    """Section 9, panoptic, step by step; `events` (a Counter) records which branches ran."""
    num_classes = mask_cls.shape[-1] - 1
    probs = np_softmax(mask_cls)
    scores, labels = probs.max(-1), probs.argmax(-1)
    keep = (labels != num_classes) & (scores > object_thr)
    height, width = mask_pred.shape[1:]
    panoptic = np.zeros((height, width), np.int32)
    segments = []
    if not keep.any():
        return panoptic, segments
    kept = np.flatnonzero(keep)
    masks = np_sigmoid(mask_pred[kept])
    ids = (scores[kept][:, None, None] * masks).argmax(0)
    stuff_memory = {}
    current = 0
    for k, q in enumerate(kept):
        label = int(labels[q])
        thing = bool(isthing[label])
        won = ids == k
        area = int(won.sum())
        original_area = int((masks[k] >= 0.5).sum())
        if area > 0 and original_area > 0:
            if area / original_area < overlap_thr:
                if events is not None:
                    events["overlap_dropped"] += 1
                continue
            if not thing:
                if label in stuff_memory:
                    if events is not None:
                        events["stuff_reused"] += 1
                    panoptic[won] = stuff_memory[label]
                    continue
                stuff_memory[label] = current + 1
            current += 1
            panoptic[won] = current
            segments.append({"id": current, "isthing": thing, "category_id": label})
    return panoptic, segments


def np_instance(mask_cls, mask_pred, isthing, top_k):
    num_classes = mask_cls.shape[-1] - 1
    scores = np_softmax(mask_cls)[:, :-1].reshape(-1)
    order = np.argsort(-scores, kind="stable")[:top_k]
    labels, queries = order % num_classes, order // num_classes
    binary = mask_pred[queries] > 0
    mean_prob = (np_sigmoid(mask_pred[queries]) * binary).sum((1, 2)) / (binary.sum((1, 2)) + 1e-6)
    valid = np.ones(len(order), bool) if isthing is None else np.asarray(isthing)[labels]
    return scores[order] * mean_prob, labels, queries, valid, binary


# ---------------------------------------------------------------------------------------------
# Random cases with decision margins (so float32 rounding cannot flip a decision)
# ---------------------------------------------------------------------------------------------


def _margins_ok(mask_cls, mask_pred, object_thr=0.8, overlap_thr=0.8):
    probs = np_softmax(mask_cls)
    top2 = np.sort(probs, -1)[:, -2:]
    if np.any(top2[:, 1] - top2[:, 0] < 1e-4) or np.any(np.abs(top2[:, 1] - object_thr) < 1e-4):
        return False
    keep = (probs.argmax(-1) != probs.shape[-1] - 1) & (probs.max(-1) > object_thr)
    if keep.sum() == 0:
        return True
    masks = np_sigmoid(mask_pred[keep])
    if np.any(np.abs(masks - 0.5) < 1e-5):
        return False
    weighted = probs.max(-1)[keep][:, None, None] * masks
    ordered = np.sort(weighted, 0)
    if keep.sum() > 1 and np.any(ordered[-1] - ordered[-2] < 1e-5):
        return False
    ids = weighted.argmax(0)
    for k in range(keep.sum()):
        own = (masks[k] >= 0.5).sum()
        if own and abs((ids == k).sum() / own - overlap_thr) < 1e-6:
            return False
    return True


def _smooth_field(rng, q, h, w):
    """Per-query smooth logit fields: a few random Gaussian bumps plus an offset."""
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.zeros((q, h, w))
    for i in range(q):
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            s = rng.uniform(2, max(h, w) / 2)
            out[i] += rng.uniform(-6, 10) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
        out[i] += rng.normal(0, 1.5)
    return out


def random_case(rng, kind: str, shape=None, fixed_isthing=None):
    """One image: (mask_cls [Q, K+1], mask_pred [Q, H, W], isthing [K]); `shape` fixes (Q, K, H, W)."""
    while True:
        if shape is None:
            q, k = int(rng.integers(2, 9)), int(rng.integers(2, 7))
            h, w = int(rng.integers(5, 20)), int(rng.integers(5, 20))
        else:
            q, k, h, w = shape
        isthing = rng.random(k) < 0.5 if fixed_isthing is None else np.array(fixed_isthing)
        mask_cls = rng.normal(0, 1, (q, k + 1))
        # Make roughly half the queries confident about one class.
        confident = rng.random(q) < 0.8
        mask_cls[confident, rng.integers(0, k + 1, q)[confident]] += rng.uniform(4, 10)
        mode = rng.integers(3)
        if mode == 0:
            mask_pred = _smooth_field(rng, q, h, w)
        elif mode == 1:
            mask_pred = rng.normal(0, 4, (q, h, w))
        else:  # one disc per query, little overlap: most queries survive the overlap test
            yy, xx = np.mgrid[0:h, 0:w]
            cy, cx = rng.uniform(0, h, (q, 1, 1)), rng.uniform(0, w, (q, 1, 1))
            radius = rng.uniform(1.5, max(h, w) / 3, (q, 1, 1))
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 < radius**2
            mask_pred = np.where(inside, 6.0, -6.0) + rng.normal(0, 1, (q, h, w))
        if kind == "nothing":
            mask_cls[:, -1] += 12.0  # every query says "no object"
        elif kind == "stuff_repeat":
            stuff = np.flatnonzero(~isthing)
            if not len(stuff):
                isthing[0] = False
                stuff = np.array([0])
            label = int(rng.choice(stuff))
            chosen = rng.choice(q, size=min(q, 3), replace=False)
            mask_cls[chosen] = rng.normal(0, 0.3, (len(chosen), k + 1))
            mask_cls[chosen, label] += 10.0
            # Disjoint vertical bands, one per chosen query.
            bands = np.array_split(np.arange(w), len(chosen))
            for band, qi in zip(bands, chosen, strict=True):
                mask_pred[qi] = -8.0
                mask_pred[qi][:, band] = 8.0
        if _margins_ok(mask_cls, mask_pred):
            return mask_cls.astype(np.float32), mask_pred.astype(np.float32), isthing


def _np(x):
    return np.asarray(ops.convert_to_numpy(x))


def compiled(fn):
    """`fn` jit-compiled on JAX (eager JAX compiles every op for every new shape, which is slow);
    as is on TensorFlow, so the eager path is tested there."""
    if backend() == "jax":
        import jax

        return jax.jit(fn)
    return fn


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------


def test_panoptic_and_semantic_match_numpy_transcription_on_random_cases():
    rng = np.random.default_rng(1234)
    # A few shapes (Q, K, H, W), each with its own thing/stuff split; cases of one shape run as
    # one batch (and compile once on JAX).
    shapes = [(3, 2, 7, 11), (6, 4, 13, 9), (8, 6, 16, 19)]
    kinds = ["nothing"] * 12 + ["stuff_repeat"] * 24 + ["random"] * 96
    events = collections.Counter()
    for group, shape in enumerate(shapes):
        isthing = np.arange(shape[1]) % 2 == 0
        cases = [random_case(rng, kind, shape, isthing) for kind in kinds[group::len(shapes)]]
        mask_cls = np.stack([c[0] for c in cases])
        mask_pred = np.stack([c[1] for c in cases])
        result, sem = compiled(lambda c, m, t=isthing: (
            postprocess.panoptic_inference(c, m, t), postprocess.semantic_inference(c, m)
        ))(mask_cls, mask_pred)
        sem = _np(sem)
        got_maps = _np(result["panoptic_seg"])
        num_segments = _np(result["num_segments"])
        for i in range(len(cases)):
            expected_map, expected_segments = np_panoptic(mask_cls[i], mask_pred[i], isthing,
                                                          events=events)
            np.testing.assert_array_equal(got_maps[i], expected_map, err_msg=f"{shape} case {i}")
            assert postprocess.panoptic_segments_info(result, i) == expected_segments, (shape, i)
            assert int(num_segments[i]) == len(expected_segments)
            np.testing.assert_allclose(sem[i], np_semantic(mask_cls[i], mask_pred[i]), rtol=1e-5,
                                       atol=1e-6)
            events["empty"] += not expected_segments
            events["segments"] += len(expected_segments)
    # The generator really exercised the branches it claims to.
    assert events["empty"] >= 10, events
    assert events["stuff_reused"] >= 10, events
    assert events["overlap_dropped"] >= 10, events
    assert events["segments"] >= 100, events


def test_stuff_queries_of_one_class_form_one_segment():
    # Three stuff queries (class 1) on three bands, one thing query (class 0) on the fourth band.
    mask_cls = np.full((5, 3), -5.0, np.float32)
    mask_cls[[0, 2, 3], 1] = 5.0
    mask_cls[1, 0] = 5.0
    mask_cls[4, 2] = 5.0  # no object
    mask_pred = np.full((5, 4, 8), -9.0, np.float32)
    for query, band in zip([0, 1, 2, 3], range(4), strict=True):
        mask_pred[query, :, 2 * band: 2 * band + 2] = 9.0
    isthing = np.array([True, False])
    result = postprocess.panoptic_inference(mask_cls[None], mask_pred[None], isthing)
    pan = _np(result["panoptic_seg"])[0]
    assert postprocess.panoptic_segments_info(result, 0) == [
        {"id": 1, "isthing": False, "category_id": 1},
        {"id": 2, "isthing": True, "category_id": 0},
    ]
    np.testing.assert_array_equal(pan[0], [1, 1, 2, 2, 1, 1, 1, 1])
    np.testing.assert_array_equal(_np(result["query_segment_id"])[0], [1, 2, 1, 1, 0])


def test_nothing_kept_gives_all_zero_map():
    mask_cls = np.zeros((4, 4), np.float32)
    mask_cls[:, -1] = 10.0
    mask_pred = np.random.default_rng(0).normal(size=(4, 6, 7)).astype(np.float32)
    result = postprocess.panoptic_inference(mask_cls[None], mask_pred[None], [True, False, False])
    assert not _np(result["panoptic_seg"]).any()
    assert postprocess.panoptic_segments_info(result, 0) == []


def test_batched_panoptic_equals_per_image():
    rng = np.random.default_rng(7)
    isthing = np.array([True, False, True, False, False])
    cases = [random_case(rng, kind, (6, 5, 12, 15), isthing)
             for kind in ("random", "stuff_repeat", "nothing", "random")]
    logits = np.stack([c[0] for c in cases])
    preds = np.stack([c[1] for c in cases])
    result = compiled(lambda c, m: postprocess.panoptic_inference(c, m, isthing))(logits, preds)
    for b in range(len(cases)):
        expected_map, expected_segments = np_panoptic(logits[b], preds[b], isthing)
        np.testing.assert_array_equal(_np(result["panoptic_seg"])[b], expected_map)
        assert postprocess.panoptic_segments_info(result, b) == expected_segments


def test_panoptic_matches_original_code(official):
    """Reference D: the original semantic_inference / panoptic_inference on 40 cases."""
    data = official("panoptic_inference_cases.npz")
    config = json.loads(str(data["config"]))
    isthing = np.zeros(config["num_classes"], bool)
    isthing[config["thing_contiguous_ids"]] = True
    run = compiled(lambda c, m: (
        postprocess.panoptic_inference(c, m, isthing, config["object_mask_threshold"],
                                       config["overlap_threshold"]),
        postprocess.semantic_inference(c, m),
    ))
    for case in config["cases"]:
        key = case["key"] + "/"
        mask_cls, mask_pred = data[key + "mask_cls"], data[key + "mask_pred"]
        result, sem = run(mask_cls[None], mask_pred[None])
        np.testing.assert_array_equal(
            _np(result["panoptic_seg"])[0], data[key + "panoptic_seg"], err_msg=case["kind"]
        )
        assert postprocess.panoptic_segments_info(result, 0) == json.loads(
            str(data[key + "segments_info_json"])
        ), case["kind"]
        np.testing.assert_allclose(_np(sem)[0], data[key + "sem_seg"], atol=1e-5, rtol=0)


def test_postprocessor_matches_original_forward(official):
    """Reference A: eval-mode forward (upsample to the input size, semantic and panoptic)."""
    data = official("maskformer_tenc_tiny.npz")
    config = json.loads(str(data["config"]))
    num_classes = data["output/pred_logits"].shape[-1] - 1
    isthing = np.zeros(num_classes, bool)
    isthing[[0, 1, 2, 3]] = True
    height, width = data["input/images_raw"].shape[1:3]
    batch = data["input/images_raw"].shape[0]
    sizes = np.tile([[height, width]], (batch, 1))
    processor = postprocess.PostProcessor(isthing, semantic=True, panoptic=True)
    outputs = {"pred_logits": data["output/pred_logits"], "pred_masks": data["output/pred_masks"]}
    result = compiled(lambda o: processor(o, (height, width), sizes, sizes))(outputs)
    ref_sem = data["output/sem_seg"]
    np.testing.assert_allclose(_np(result["sem_seg"]), ref_sem, atol=2e-5 * np.abs(ref_sem).max())
    np.testing.assert_array_equal(_np(result["panoptic"]["panoptic_seg"]), data["output/panoptic_seg"])
    expected = json.loads(str(data["output/segments_info_json"]))
    got = [postprocess.panoptic_segments_info(result["panoptic"], b) for b in range(batch)]
    assert got == expected, config.get("panoptic_on")


@pytest.mark.parametrize("in_size,valid,out", [
    ((8, 12), (8, 12), (32, 48)),   # plain x4 upsampling
    ((25, 33), (25, 33), (97, 131)),  # non-integer ratio
    ((20, 24), (17, 21), (11, 30)),   # crop, then down in y and up in x
    ((9, 9), (9, 9), (9, 9)),         # identity
    ((16, 16), (13, 7), (1, 1)),      # to a single pixel
])
def test_crop_and_resize_matches_pytorch(in_size, valid, out):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 3, *in_size)).astype(np.float32)
    canvas = (out[0] + 2, out[1] + 3)
    got = _np(compiled(lambda v: resize.crop_and_resize(v, [valid, valid], [out, out], canvas))(x))
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(x[:, :, : valid[0], : valid[1]]), size=out, mode="bilinear",
        align_corners=False,
    ).numpy()
    # PyTorch's CPU kernel forms the source coordinate scale * (dst + 0.5) - 0.5 with a fused
    # multiply-add; ours rounds the product first, so a coordinate can differ by one float32 ulp
    # (1e-6 near 16), i.e. an interpolated value by ~1e-6 * |neighbour difference|.
    np.testing.assert_allclose(got[:, :, : out[0], : out[1]], expected, atol=1e-5, rtol=0)
    assert not got[:, :, out[0]:].any() and not got[:, :, :, out[1]:].any()
    np.testing.assert_allclose(got[0, :, : out[0], : out[1]],
                               np_resize_bilinear(x[0, :, : valid[0], : valid[1]], *out), atol=2e-5)


@pytest.mark.parametrize("in_size,out", [((25, 33), (97, 131)), ((6, 8), (24, 32)), ((20, 24), (11, 30))])
def test_upsample_bilinear_matches_pytorch(in_size, out):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(8).normal(0, 3, size=(2, 3, *in_size)).astype(np.float32)
    got = _np(compiled(lambda v: resize.upsample_bilinear(v, out))(x))
    expected = torch.nn.functional.interpolate(torch.from_numpy(x), size=out, mode="bilinear",
                                               align_corners=False).numpy()
    np.testing.assert_allclose(got, expected, atol=3e-5, rtol=0)


def test_crop_and_resize_with_different_sizes_per_image():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 2, 16, 20)).astype(np.float32)
    valid = np.array([[16, 20], [10, 14], [13, 5]])
    out = np.array([[21, 30], [7, 9], [26, 10]])
    got = _np(compiled(lambda v: resize.crop_and_resize(v, valid, out, (26, 30)))(x))
    for b in range(3):
        expected = np_resize_bilinear(x[b, :, : valid[b, 0], : valid[b, 1]], *out[b])
        np.testing.assert_allclose(got[b, :, : out[b, 0], : out[b, 1]], expected, atol=2e-5)
        assert not got[b, :, out[b, 0]:].any() and not got[b, :, :, out[b, 1]:].any()


def test_postprocessor_mixed_sizes_equals_per_image_pipeline():
    """Upsample to the padded input, crop, resize to the original size, then panoptic/semantic."""
    rng = np.random.default_rng(11)
    q, k, h, w = 5, 4, 6, 8
    isthing = np.array([True, True, False, False])
    logits = rng.normal(size=(2, q, k + 1)).astype(np.float32)
    logits[:, :, :k] += 6.0 * (rng.random((2, q, k)) < 0.3)
    masks = rng.normal(0, 4, size=(2, q, h, w)).astype(np.float32)
    valid = np.array([[24, 32], [19, 27]])
    original = np.array([[30, 41], [12, 17]])
    processor = postprocess.PostProcessor(isthing, semantic=True, panoptic=True, instance=True,
                                          instance_top_k=7)
    result = compiled(lambda o: processor(o, (4 * h, 4 * w), valid, original))(
        {"pred_logits": logits, "pred_masks": masks})
    pans = postprocess.crop_to_output(result["panoptic"]["panoptic_seg"], original)
    sems = postprocess.crop_to_output(result["sem_seg"], original)
    for b in range(2):
        up = np_resize_bilinear(masks[b], 4 * h, 4 * w)[:, : valid[b, 0], : valid[b, 1]]
        resized = np_resize_bilinear(up, *original[b]).astype(np.float32)
        expected_map, expected_segments = np_panoptic(logits[b], resized, isthing)
        assert _margins_ok(logits[b], resized) and expected_segments  # a meaningful case
        np.testing.assert_array_equal(pans[b], expected_map)
        assert postprocess.panoptic_segments_info(result["panoptic"], b) == expected_segments
        np.testing.assert_allclose(sems[b], np_semantic(logits[b], resized), atol=1e-5)
        assert not _np(result["panoptic"]["panoptic_seg"])[b, original[b, 0]:].any()
        scores, labels, queries, valid_inst, binary = np_instance(logits[b], resized, isthing, 7)
        np.testing.assert_array_equal(_np(result["instance"]["labels"])[b], labels)
        np.testing.assert_array_equal(_np(result["instance"]["query"])[b], queries)
        np.testing.assert_array_equal(_np(result["instance"]["valid"])[b], valid_inst)
        np.testing.assert_allclose(_np(result["instance"]["scores"])[b], scores, rtol=1e-5)
        inst_masks = postprocess.crop_to_output(result["instance"]["masks"], original)[b]
        np.testing.assert_array_equal(inst_masks, binary)


def test_semantic_resized_after_inference():
    """Without panoptic, the original resizes the K-class score map instead of the masks."""
    rng = np.random.default_rng(12)
    logits = rng.normal(size=(1, 3, 4)).astype(np.float32)
    masks = rng.normal(size=(1, 3, 5, 6)).astype(np.float32)
    processor = postprocess.PostProcessor([True, False, False], semantic=True, panoptic=False)
    result = compiled(lambda o: processor(o, (20, 24), [[18, 21]], [[9, 30]]))(
        {"pred_logits": logits, "pred_masks": masks})
    up = np_resize_bilinear(masks[0], 20, 24)
    expected = np_resize_bilinear(np_semantic(logits[0], up)[:, :18, :21], 9, 30)
    np.testing.assert_allclose(_np(result["sem_seg"])[0], expected, atol=1e-5)


def test_instance_inference_matches_transcription():
    rng = np.random.default_rng(5)
    for top_k in (4, 100):
        logits = rng.normal(0, 2, size=(2, 6, 5)).astype(np.float32)
        masks = rng.normal(0, 3, size=(2, 6, 7, 9)).astype(np.float32)
        isthing = np.array([True, False, True, False])
        for things in (isthing, None):
            result = compiled(lambda c, m, t=things, k=top_k: postprocess.instance_inference(
                c, m, t, top_k=k))(logits, masks)
            for b in range(2):
                scores, labels, queries, valid, binary = np_instance(logits[b], masks[b], things,
                                                                     top_k)
                assert _np(result["scores"]).shape[1] == min(top_k, 6 * 4)
                np.testing.assert_array_equal(_np(result["labels"])[b], labels)
                np.testing.assert_array_equal(_np(result["query"])[b], queries)
                np.testing.assert_array_equal(_np(result["valid"])[b], valid)
                np.testing.assert_array_equal(_np(result["masks"])[b], binary)
                np.testing.assert_allclose(_np(result["scores"])[b], scores, rtol=1e-5, atol=1e-7)


def test_panoptic_inference_compiles():
    """The panoptic step runs inside a compiled function of the active backend."""
    rng = np.random.default_rng(6)
    mask_cls, mask_pred, isthing = random_case(rng, "stuff_repeat")

    def run(logits, masks):
        result = postprocess.panoptic_inference(logits, masks, isthing)
        return result["panoptic_seg"], result["segment_category"], result["segment_valid"]

    if backend() == "jax":
        import jax

        compiled = jax.jit(run)
    elif backend() == "tensorflow":
        import tensorflow as tf

        compiled = tf.function(run)
    else:
        pytest.skip(f"no compiled path tested for backend {backend()}")
    pan, category, valid = compiled(mask_cls[None], mask_pred[None])
    expected_map, expected_segments = np_panoptic(mask_cls, mask_pred, isthing)
    np.testing.assert_array_equal(_np(pan)[0], expected_map)
    assert [int(c) for c in _np(category)[0][_np(valid)[0]]] == [
        s["category_id"] for s in expected_segments
    ]


def test_isthing_length_is_checked():
    with pytest.raises(ValueError, match="isthing has 2 entries"):
        postprocess.panoptic_inference(np.zeros((1, 2, 4), np.float32),
                                       np.zeros((1, 2, 3, 3), np.float32), [True, False])


# ---------------------------------------------------------------------------------------------
# The banded PostProcessor against the straightforward full-size computation
# ---------------------------------------------------------------------------------------------


def np_full_size(mask_pred, padded, valid, out):
    """[Q, h, w] mask logits -> [Q, *out] at output resolution, the long way (float64): upsample
    to the padded input, crop to the valid region, resize to the output size."""
    up = np_resize_bilinear(mask_pred, *padded)[:, : valid[0], : valid[1]]
    return np_resize_bilinear(up, *out)


def np_interpolation_matrix(in_size, out_size):
    """[out, in] float64 matrix of PyTorch's bilinear rule along one axis (align_corners=False)."""
    matrix = np.zeros((out_size, in_size))
    for dst in range(out_size):
        src = max((dst + 0.5) * in_size / out_size - 0.5, 0.0)
        i0 = min(int(np.floor(src)), in_size - 1)
        i1 = min(i0 + 1, in_size - 1)
        matrix[dst, i0] += 1.0 - (src - i0)
        matrix[dst, i1] += src - i0
    return matrix


def _top2_gap(x, axis):
    top = np.sort(x, axis=axis)
    return np.take(top, -1, axis=axis) - np.take(top, -2, axis=axis)


def _pipeline_case(rng, shape, isthing, padded, valid, out, kind):
    """One image's outputs whose full-size logits leave every decision a margin: panoptic
    (`_margins_ok`), the semantic argmax over classes and every instance mask (logit sign);
    with at least two panoptic segments, or for "stuff_repeat" a stuff segment that a later
    query of its class extends (its bands cover the image, so it is usually the only one)."""
    while True:
        mask_cls, mask_pred, _ = random_case(rng, kind, shape, isthing)
        full = np_full_size(mask_pred, padded, valid, out)
        semantic = np_semantic(mask_cls, full)
        if not (_margins_ok(mask_cls, full) and _top2_gap(semantic, 0).min() > 1e-5
                and np.abs(full).min() > 1e-4):
            continue
        events = collections.Counter()
        segments = np_panoptic(mask_cls, full, isthing, events=events)[1]
        if events["stuff_reused"] if kind == "stuff_repeat" else len(segments) > 1:
            return mask_cls, mask_pred, full


# Three images of one batch: padded input 35x50 from 9x13 masks (a non-integer ratio, as when the
# model pads further inside), valid regions cropped, output sizes the same, larger and smaller.
PADDED = (35, 50)
VALID = np.array([[35, 50], [30, 41], [17, 49]])
OUT = np.array([[35, 50], [45, 29], [11, 61]])
Q_K_HW = (7, 5, 9, 13)
TOP_K = 9


@pytest.mark.parametrize("rows_per_band", [1, 4, None])  # None: the default, one band here
def test_banded_postprocessor_equals_full_size_reference(rows_per_band):
    """Panoptic, semantic (before inference) and instance results of the banded path against
    the float64 full-size pipeline and the reference steps, on cases with decision margins:
    maps, segments, labels and masks identical, scores to float32 rounding."""
    rng = np.random.default_rng(21)
    isthing = np.array([True, False, True, False, False])
    cases = [_pipeline_case(rng, Q_K_HW, isthing, PADDED, VALID[b], OUT[b], kind)
             for b, kind in enumerate(("random", "stuff_repeat", "random"))]
    logits = np.stack([c[0] for c in cases])
    masks = np.stack([c[1] for c in cases])
    canvas = tuple(OUT.max(0))
    # Rows per band = band_values // (batch * width * max(Q, K, top_k)); 45 rows are 45 bands of
    # 1 row, or 12 bands of 4 (the last one mostly padding).
    band_values = (postprocess.BAND_VALUES if rows_per_band is None
                   else len(cases) * canvas[1] * max(Q_K_HW[0], Q_K_HW[1], TOP_K) * rows_per_band)
    processor = postprocess.PostProcessor(isthing, semantic=True, panoptic=True, instance=True,
                                          instance_top_k=TOP_K, band_values=band_values)
    outputs = {"pred_logits": logits, "pred_masks": masks}
    result, labels_only = compiled(lambda o: (
        processor(o, PADDED, VALID, OUT), processor(o, PADDED, VALID, OUT, semantic_scores=False)
    ))(outputs)
    assert set(labels_only) == {"sem_seg_labels", "panoptic", "instance"}
    np.testing.assert_array_equal(_np(labels_only["sem_seg_labels"]), _np(result["sem_seg_labels"]))
    assert _np(result["sem_seg"]).shape == (3, Q_K_HW[1], *canvas)

    pans = postprocess.crop_to_output(result["panoptic"]["panoptic_seg"], OUT)
    sems = postprocess.crop_to_output(result["sem_seg"], OUT)
    sem_labels = postprocess.crop_to_output(result["sem_seg_labels"], OUT)
    inst_masks = postprocess.crop_to_output(result["instance"]["masks"], OUT)
    segments = 0
    for b, (mask_cls, _, full) in enumerate(cases):
        expected_map, expected_segments = np_panoptic(mask_cls, full, isthing)
        np.testing.assert_array_equal(pans[b], expected_map, err_msg=f"image {b}")
        assert postprocess.panoptic_segments_info(result["panoptic"], b) == expected_segments
        segments += len(expected_segments)
        canvas_map = _np(result["panoptic"]["panoptic_seg"])[b]
        assert not canvas_map[OUT[b, 0]:].any() and not canvas_map[:, OUT[b, 1]:].any()

        expected_sem = np_semantic(mask_cls, full)
        np.testing.assert_allclose(sems[b], expected_sem, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(sem_labels[b], expected_sem.argmax(0))

        scores, labels, queries, valid, binary = np_instance(mask_cls, full, isthing, TOP_K)
        np.testing.assert_array_equal(_np(result["instance"]["labels"])[b], labels)
        np.testing.assert_array_equal(_np(result["instance"]["query"])[b], queries)
        np.testing.assert_array_equal(_np(result["instance"]["valid"])[b], valid)
        np.testing.assert_allclose(_np(result["instance"]["scores"])[b], scores, rtol=1e-5)
        np.testing.assert_array_equal(inst_masks[b], binary)
        assert not _np(result["instance"]["masks"])[b][:, OUT[b, 0]:].any()
    assert segments >= 5


@pytest.mark.parametrize("rows_per_band", [1, 3, None])
def test_banded_semantic_after_inference_equals_full_size_reference(rows_per_band):
    """Without panoptic output: K score maps at the padded input size, then cropped and
    resized (the original's order), against the float64 reference, several images and bands."""
    rng = np.random.default_rng(22)
    q, k, h, w = 6, 4, 8, 11
    padded, valid, out = (31, 44), np.array([[31, 44], [22, 37]]), np.array([[47, 33], [13, 52]])
    canvas = tuple(out.max(0))
    while True:
        logits = rng.normal(0, 2, size=(2, q, k + 1)).astype(np.float32)
        masks = rng.normal(0, 3, size=(2, q, h, w)).astype(np.float32)
        expected = []
        for b in range(2):
            scores = np_semantic(logits[b], np_resize_bilinear(masks[b], *padded))
            expected.append(np_resize_bilinear(scores[:, : valid[b, 0], : valid[b, 1]], *out[b]))
        if min(_top2_gap(e, 0).min() for e in expected) > 1e-5:
            break
    # 2 x rows padded-input rows of max(Q, K) maps per band, over max(W, Wo) columns.
    band_values = (postprocess.BAND_VALUES if rows_per_band is None
                   else 2 * max(padded[1], canvas[1]) * 2 * max(q, k) * rows_per_band)
    processor = postprocess.PostProcessor([True, False, True, False], semantic=True,
                                          panoptic=False, band_values=band_values)
    result = compiled(lambda o: processor(o, padded, valid, out))(
        {"pred_logits": logits, "pred_masks": masks})
    assert set(result) == {"sem_seg", "sem_seg_labels"}
    sems = postprocess.crop_to_output(result["sem_seg"], out)
    labels = postprocess.crop_to_output(result["sem_seg_labels"], out)
    for b in range(2):
        np.testing.assert_allclose(sems[b], expected[b], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(labels[b], expected[b].argmax(0))


def test_banded_postprocessor_equals_keras_full_size_path():
    """The banded path against the full-size one in float32 keras.ops (what post-processing
    computed before it worked in bands: every query's mask upsampled with
    `keras.ops.image.resize`, cropped and resized, then the full-size inferences), on random
    outputs at a larger size without margin selection.

    The two round differently (their taps are the same, the order of the products is not), so a
    decision can only differ where the full-size values nearly tie: a semantic label where the
    top two class scores are within 1e-5 of each other, a panoptic pixel where the top two
    weighted mask probabilities are, a mask pixel where the logit is within 1e-5 of 0. Every
    difference must be such a pixel; the segments must be identical, which the near-ties cannot
    change here: no won-area / own-area ratio is within (near-tie pixels / own area) of the
    overlap threshold (checked below)."""
    rng = np.random.default_rng(24)
    q, k, h, w = 16, 9, 23, 31
    padded = (90, 122)
    valid, out = np.array([[90, 122], [71, 97]]), np.array([[131, 97], [64, 200]])
    canvas = tuple(out.max(0))
    isthing = np.arange(k) < 5
    logits = rng.normal(0, 1, size=(2, q, k + 1)).astype(np.float32)
    confident = rng.random((2, q)) < 0.7
    logits[confident, rng.integers(0, k + 1, (2, q))[confident]] += 8.0
    # One blob per query on a smooth background: many survive the overlap test.
    yy, xx = np.mgrid[0:h, 0:w]
    centre_y, centre_x = rng.uniform(0, h, (2, q, 1, 1)), rng.uniform(0, w, (2, q, 1, 1))
    radius = rng.uniform(2, 8, (2, q, 1, 1))
    distance = np.sqrt((yy - centre_y) ** 2 + (xx - centre_x) ** 2)
    masks = (3.0 * (radius - distance)
             + np.stack([_smooth_field(rng, q, h, w) for _ in range(2)])).astype(np.float32)
    processor = postprocess.PostProcessor(isthing, semantic=True, panoptic=True, instance=True,
                                          instance_top_k=20, band_values=2 * 200 * 20 * 7)

    def full_size(o):
        up = resize.upsample_bilinear(o["pred_masks"], padded)
        resized = resize.crop_and_resize(up, valid, out, canvas)
        return (postprocess.semantic_inference(o["pred_logits"], resized),
                postprocess.panoptic_inference(o["pred_logits"], resized, isthing,
                                               output_sizes=out),
                postprocess.instance_inference(o["pred_logits"], resized, isthing, 20,
                                               output_sizes=out),
                resized)

    outputs = {"pred_logits": logits, "pred_masks": masks}
    got = compiled(lambda o: processor(o, padded, valid, out))(outputs)
    sem, pan, inst, resized = (compiled(full_size))(outputs)
    sem, resized = _np(sem), _np(resized)
    probs = np_softmax(logits)
    segments = 0
    for b in range(2):
        oh, ow = out[b]
        gap = _top2_gap(sem[b, :, :oh, :ow], 0) < 1e-5 * sem[b].max()
        differs = _np(got["sem_seg_labels"])[b, :oh, :ow] != sem[b].argmax(0)[:oh, :ow]
        assert not (differs & ~gap).any()
        np.testing.assert_allclose(_np(got["sem_seg"])[b], sem[b], atol=1e-5 * sem[b].max())

        keep = (probs[b].argmax(-1) != k) & (probs[b].max(-1) > 0.8)
        weighted = probs[b].max(-1)[keep, None, None] * np_sigmoid(resized[b, keep, :oh, :ow])
        # A tie is near where the top two differ by less than 1e-4 of the larger: far from
        # every mask, sigmoids of logits around -20 are tiny but their float32 rounding is
        # relative to their size.
        ranked = np.argsort(weighted, 0)  # [n, oh, ow], the last two are the top two
        near = ((_top2_gap(weighted, 0) < 1e-4 * weighted.max(0)) if keep.sum() > 1
                else np.zeros((oh, ow), bool))
        ours_map = _np(got["panoptic"]["panoptic_seg"])[b]
        theirs_map = _np(pan["panoptic_seg"])[b]
        assert not ((ours_map[:oh, :ow] != theirs_map[:oh, :ow]) & ~near).any()
        np.testing.assert_array_equal(ours_map[oh:], 0)
        expected_segments = postprocess.panoptic_segments_info(pan, b)
        assert postprocess.panoptic_segments_info(got["panoptic"], b) == expected_segments
        segments += len(expected_segments)
        ids = weighted.argmax(0) if keep.any() else None
        for i in range(int(keep.sum())):
            own = int((weighted[i] >= 0.5 * probs[b].max(-1)[keep][i]).sum())
            # Only a near tie that query i takes part in can move its won area.
            contested = near & ((ranked[-1] == i) | (ranked[-2] == i)) if keep.sum() > 1 else near
            if own:
                assert abs((ids == i).sum() / own - 0.8) > contested.sum() / own

        np.testing.assert_array_equal(_np(got["instance"]["query"])[b], _np(inst["query"])[b])
        np.testing.assert_allclose(_np(got["instance"]["scores"])[b], _np(inst["scores"])[b],
                                   rtol=1e-5)
        chosen = resized[b, _np(inst["query"])[b], :oh, :ow]
        differs = _np(got["instance"]["masks"])[b, :, :oh, :ow] != _np(inst["masks"])[b, :, :oh, :ow]
        assert not (differs & (np.abs(chosen) >= 1e-5)).any()
    assert segments >= 4, "too few segments for the comparison to mean anything"


@pytest.mark.parametrize("low,padded,valid,out", [
    (9, 35, [35, 30, 17], [35, 45, 11]),  # up, crop, then up or down
    (8, 32, [32, 32, 5], [32, 7, 40]),    # integer ratio
    (6, 6, [6, 4, 6], [6, 9, 1]),          # no upsampling; to one pixel
    (10, 7, [7, 5, 7], [7, 12, 3]),        # shrinking (four taps)
])
def test_output_taps_compose_upsampling_crop_and_resize(low, padded, valid, out):
    """The composite taps are the product of the two interpolation matrices, per image."""
    length = max(out) + 2
    index, weight = postprocess._output_taps(low, padded, np.array(valid, np.int32),
                                             np.array(out, np.int32), length)
    index, weight = _np(index), _np(weight)
    assert index.shape[-1] == (4 if padded < low else 3)
    assert index.min() >= 0 and index.max() < low
    upsample = np_interpolation_matrix(low, padded)
    for b in range(len(valid)):
        dense = np.zeros((length, low))
        for t in range(index.shape[-1]):
            np.add.at(dense, (np.arange(length), index[b, :, t]), weight[b, :, t])
        expected = np.zeros((length, low))
        expected[: out[b]] = np_interpolation_matrix(valid[b], out[b]) @ upsample[: valid[b]]
        np.testing.assert_allclose(dense, expected, atol=1e-6)


@pytest.mark.parametrize("semantic_first", [True, False])
@pytest.mark.parametrize("rows_per_band", [1, 4, None])
def test_sizes_known_only_at_run_time_give_the_static_results(semantic_first, rows_per_band):
    """The graph traced with unknown mask-grid, input and canvas sizes (what a SavedModel
    signature for images of any size runs) gives the static path's maps, segments, labels and
    masks bit for bit, and its scores to float32 rounding (the kernels chosen for unknown
    shapes may round one product differently: 1 value in 40,000 by 1 ulp)."""
    if backend() != "tensorflow":
        pytest.skip("sizes known only at run time are a TensorFlow graph's")
    import tensorflow as tf

    rng = np.random.default_rng(23)
    isthing = np.array([True, False, True, False, False])
    q, k, h, w = Q_K_HW
    logits = rng.normal(0, 2, size=(3, q, k + 1)).astype(np.float32)
    masks = rng.normal(0, 3, size=(3, q, h, w)).astype(np.float32)
    canvas = tuple(int(v) for v in OUT.max(0))
    band_values = (postprocess.BAND_VALUES if rows_per_band is None
                   else 3 * canvas[1] * max(q, k, TOP_K) * 2 * rows_per_band)
    processor = postprocess.PostProcessor(
        isthing, semantic=True, panoptic=not semantic_first, instance=not semantic_first,
        instance_top_k=TOP_K, semantic_before_inference=not semantic_first,
        band_values=band_values)
    outputs = {"pred_logits": logits, "pred_masks": masks}
    static = processor(outputs, PADDED, VALID, OUT, output_shape=canvas)

    @tf.function(input_signature=[tf.TensorSpec([None, q, k + 1]),
                                  tf.TensorSpec([None, q, None, None]),
                                  tf.TensorSpec([2], tf.int32), tf.TensorSpec([2], tf.int32)])
    def dynamic(pred_logits, pred_masks, padded, canvas_size):
        return processor({"pred_logits": pred_logits, "pred_masks": pred_masks},
                         (padded[0], padded[1]), VALID, OUT,
                         output_shape=(canvas_size[0], canvas_size[1]))

    result = dynamic(logits, masks, tf.constant(PADDED), tf.constant(canvas))
    flat, flat_static = tf.nest.flatten(result), tf.nest.flatten(static)
    assert len(flat) == len(flat_static) and len(flat) >= 2
    for got, want in zip(flat, flat_static, strict=True):
        if want.dtype.is_floating:
            np.testing.assert_allclose(_np(got), _np(want), rtol=3e-7, atol=1e-7)
        else:
            np.testing.assert_array_equal(_np(got), _np(want))


def test_unresized_semantic_path_is_the_general_one():
    """When every image fills the canvas unresized, the semantic-after-inference path computes
    each band's own rows only and slices the width: the same values, bit for bit, as the
    general crop-and-resize (whose weights are then exactly 1 and 0), at several bands."""
    rng = np.random.default_rng(24)
    q, k, h, w = 6, 4, 9, 13
    padded, size = (40, 56), np.array([[35, 50], [35, 50]])
    logits = rng.normal(0, 2, size=(2, q, k + 1)).astype(np.float32)
    masks = rng.normal(0, 3, size=(2, q, h, w)).astype(np.float32)
    assert postprocess._fill_canvas_unresized(size, size, (35, 50))
    assert not postprocess._fill_canvas_unresized(size, size + [[0, 1], [0, 0]], (35, 51))
    for rows_per_band in (1, 4, 35):
        processor = postprocess.PostProcessor(
            [True, False, True, False], semantic=True, panoptic=False,
            band_values=2 * padded[1] * 2 * max(q, k) * rows_per_band)
        fast, general = compiled(lambda lg, m, sz, p=processor: tuple(
            p._semantic_after_inference(lg, m, padded, sz, sz, (35, 50), True, unresized=u)
            for u in (True, False)))(logits, masks, size.astype(np.int32))
        for key in ("sem_seg", "sem_seg_labels"):
            np.testing.assert_array_equal(_np(fast[key]), _np(general[key]), err_msg=key)
