"""Point-sampled mask costs and losses (`loss.num_points` > 0), against NumPy, PyTorch's
`grid_sample` and the original Mask2Former criterion (mask2former_criterion_cases.npz, with every
random point the original drew fed back in)."""

import json

import numpy as np
import pytest
from keras import ops

from maskformer.config import ConfigError, LossConfig
from maskformer.objective.criterion import SetCriterion, build_criterion
from maskformer.objective.matcher import compute_cost_matrix
from maskformer.objective.points import (
    counter_uniform,
    draw_candidates,
    point_counts,
    point_sample,
    point_sample_channels_last,
    random_key,
    select_points_of_pairs,
    select_uncertain_points,
    smallest_k,
    uniform_points,
)
from tests.objective.helpers import compiled, compiled_value_and_grad, quick, to_numpy

FILE = "mask2former_criterion_cases.npz"
LAYERS = ["final", "aux_0", "aux_1", "aux_2", "aux_3"]


# -- NumPy transcriptions ---------------------------------------------------------------------


def np_point_sample(maps, coords):
    """grid_sample(maps, 2 * coords - 1, align_corners=False), zero padding, in float64."""
    n, c, h, w = maps.shape
    out = np.zeros((n, c, coords.shape[1]))
    for i in range(n):
        for p, (cx, cy) in enumerate(coords[i].astype(np.float64)):
            x, y = cx * w - 0.5, cy * h - 0.5
            x0, y0 = int(np.floor(x)), int(np.floor(y))
            for xi, yi in ((x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)):
                if 0 <= xi < w and 0 <= yi < h:
                    out[i, :, p] += (1 - abs(x - xi)) * (1 - abs(y - yi)) * maps[i, :, yi, xi]
    return out


def np_mask_losses(x, t, kind, alpha=0.25, gamma=2.0):
    """[M] mask loss (mean over points) and dice loss of [M, P] logits and labels."""
    x, t = x.astype(np.float64), t.astype(np.float64)
    bce = np.logaddexp(0, x) - x * t
    p = 1 / (1 + np.exp(-x))
    if kind == "focal":
        p_t = p * t + (1 - p) * (1 - t)
        bce = bce * (1 - p_t) ** gamma * (alpha * t + (1 - alpha) * (1 - t))
    dice = 1 - (2 * (p * t).sum(-1) + 1) / (p.sum(-1) + t.sum(-1) + 1)
    return bce.mean(-1), dice


def _pointwise(x, t, kind, alpha=0.25, gamma=2.0):
    """Per-point loss of logits x against a constant 0/1 label t."""
    x = x.astype(np.float64)
    bce = np.logaddexp(0, x) - x * t
    if kind == "focal":
        p = 1 / (1 + np.exp(-x))
        p_t = p * t + (1 - p) * (1 - t)
        bce = bce * (1 - p_t) ** gamma * (alpha * t + (1 - alpha) * (1 - t))
    return bce


def np_point_cost(logits, masks, classes, labels, coords, kind, weights=(1.0, 20.0, 1.0)):
    """[B, Q, N] cost of one batch, pair by pair."""
    b_, q_, n_ = logits.shape[0], logits.shape[1], masks.shape[1]
    probs = np.exp(classes - classes.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    cost = np.zeros((b_, q_, n_))
    for b in range(b_):
        x = np_point_sample(logits[b][None], coords[b][None])[0]  # [Q, P]
        t = np_point_sample(masks[b][None], coords[b][None])[0]  # [N, P]
        for q in range(q_):
            for n in range(n_):
                # Linear in the (fractional) label, as the pairwise cost is written: t * loss
                # against 1 + (1 - t) * loss against 0. The per-pair focal loss is not.
                _, dice = np_mask_losses(x[q][None], t[n][None], kind)
                mask = np.mean(t[n] * _pointwise(x[q], 1.0, kind)
                               + (1 - t[n]) * _pointwise(x[q], 0.0, kind))
                cost[b, q, n] = (weights[1] * mask - weights[0] * probs[b, q, labels[b, n]]
                                 + weights[2] * dice[0])
    return cost


# -- point_sample -----------------------------------------------------------------------------


def _maps_and_coords(seed=0):
    rng = np.random.default_rng(seed)
    maps = rng.normal(0, 1, (2, 3, 5, 7)).astype(np.float32)  # odd sizes
    coords = rng.uniform(-0.2, 1.2, (2, 40, 2)).astype(np.float32)  # some outside [0, 1]
    corners = np.array([[0, 0], [1, 1], [0, 1], [1, 0], [0.5 / 7, 0.5 / 5], [1.1, 0.5]],
                       np.float32)
    coords[:, :len(corners)] = corners
    return maps, coords


@pytest.mark.parametrize("flat", [True, False], ids=["flat-gather", "per-map-gather"])
def test_point_sample_matches_numpy_compiled(flat, monkeypatch):
    from maskformer.objective import points

    if not flat:  # the path of inputs with 2^31 values or more
        monkeypatch.setattr(points, "FLAT_GATHER_LIMIT", 0)
    maps, coords = _maps_and_coords()
    expected = np_point_sample(maps, coords)
    got = to_numpy(compiled(point_sample)(maps, coords))
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert got.shape == (2, 3, 40)
    # Channel vectors gathered whole (the matcher's predictions).
    rows = to_numpy(compiled(point_sample_channels_last)(maps, coords))
    np.testing.assert_allclose(rows, expected.transpose(0, 2, 1), atol=1e-6)
    # One channel (the losses' masks) takes that path too.
    one = to_numpy(compiled(point_sample)(maps[:, 1:2], coords))
    np.testing.assert_allclose(one, expected[:, 1:2], atol=1e-6)


def test_point_sample_matches_torch_grid_sample():
    torch = pytest.importorskip("torch")
    maps, coords = _maps_and_coords(1)
    grid = torch.from_numpy(2.0 * coords - 1.0)[:, :, None]  # [N, P, 1, 2]
    expected = torch.nn.functional.grid_sample(torch.from_numpy(maps), grid,
                                                align_corners=False)[:, :, :, 0].numpy()
    np.testing.assert_allclose(to_numpy(point_sample(maps, coords)), expected, atol=1e-6)
    # bool maps (the targets) read as 0/1
    masks = maps > 0
    expected = torch.nn.functional.grid_sample(torch.from_numpy(masks.astype(np.float32)), grid,
                                               align_corners=False)[:, :, :, 0].numpy()
    np.testing.assert_allclose(to_numpy(point_sample(masks, coords)), expected, atol=1e-6)


def _np_mix32(x):
    x = x.astype(np.uint64) & 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def np_counter_uniform(counters, key, stream):
    """A NumPy transcription of the generator (lowbias32 rounds, top 24 bits)."""
    k0 = _np_mix32(np.array(key[0] ^ ((stream * 0x9E3779B9) & 0xFFFFFFFF)))
    k1 = _np_mix32(np.array((key[1] + int(k0)) & 0xFFFFFFFF))
    x = _np_mix32(_np_mix32((counters.astype(np.uint64) + k0) & 0xFFFFFFFF) ^ k1)
    return (x >> 8).astype(np.float32) / 2**24


def test_counter_generator_matches_numpy_and_is_uniform():
    counters = np.arange(0, 200_000, dtype=np.uint32)
    key = to_numpy(random_key(2**32 + 7))
    assert key.tolist() == [7, 1]
    drawn = to_numpy(quick(lambda c, k: counter_uniform(c, k, 5))(counters, key))
    np.testing.assert_array_equal(drawn, np_counter_uniform(counters, key, 5))
    assert drawn.min() >= 0 and drawn.max() < 1
    # 20 equal bins: chi-square with 19 degrees of freedom below its 0.999 quantile (43.8).
    counts = np.histogram(drawn, bins=20, range=(0, 1))[0]
    expected = len(drawn) / 20
    assert ((counts - expected) ** 2 / expected).sum() < 43.8
    # Neighbouring numbers, other streams and other keys are uncorrelated.
    other_stream = to_numpy(counter_uniform(counters, key, 6))
    other_key = to_numpy(counter_uniform(counters, random_key(8), 5))
    for a, b in ((drawn[:-1], drawn[1:]), (drawn, other_stream), (drawn, other_key)):
        assert abs(np.corrcoef(a, b)[0, 1]) < 0.01


def test_draws_have_the_original_counts_and_depend_only_on_the_slot():
    assert point_counts(50, 3.0, 0.75) == (150, 37, 13)
    key = random_key(3)
    candidates, random_points = to_numpy(
        draw_candidates(np.arange(4, dtype=np.int32), 50, 3.0, 0.75, key))
    assert candidates.shape == (4, 150, 2) and random_points.shape == (4, 13, 2)
    assert not np.array_equal(candidates[:, :13], random_points)
    again = to_numpy(draw_candidates(np.array([3, 1], np.int32), 50, 3.0, 0.75, key))
    np.testing.assert_array_equal(again[0], candidates[[3, 1]])
    np.testing.assert_array_equal(again[1], random_points[[3, 1]])
    points = to_numpy(uniform_points(2, 64, key))
    assert points.shape == (2, 64, 2) and points.min() >= 0 and points.max() < 1
    assert not np.array_equal(points[0], points[1])


def test_seed_generator_keys_advance():
    import keras

    generator = keras.random.SeedGenerator(11)
    first, second = to_numpy(random_key(generator)), to_numpy(random_key(generator))
    assert first.tolist() == [11, 0] and second.tolist() == [11, 1]
    assert to_numpy(random_key(np.array([-1, 5], np.int32))).tolist() == [2**32 - 1, 5]


@pytest.mark.parametrize("k", [1, 7, 40, 64])
def test_smallest_k_equals_the_set_top_k_picks(k):
    rng = np.random.default_rng(k)
    values = np.abs(rng.normal(0, 2, (5, 64))).astype(np.float32)
    values[1] = np.round(values[1])  # many ties: the lower index is taken first
    values[2, :10] = 0.0
    values[3, 5] = np.inf
    values[4] = 1.5  # all equal
    got = to_numpy(compiled(lambda v: smallest_k(v, k))(values))
    expected = np.sort(np.argsort(values, axis=1, kind="stable")[:, :k], axis=1)
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == np.int32


@pytest.mark.parametrize("chunk", [2, 3, 64])
def test_selection_of_valid_pairs_equals_selection_row_by_row(chunk):
    rng = np.random.default_rng(4)
    m, k = 7, 5
    logits = rng.normal(0, 2, (m, 1, 9, 11)).astype(np.float32)
    candidates = rng.uniform(0, 1, (m, 24, 2)).astype(np.float32)
    random_points = rng.uniform(0, 1, (m, 3, 2)).astype(np.float32)
    valid = np.array([True, False, True, True, False, False, True])

    def draw(slots):
        return ops.take(candidates, slots, axis=0), ops.take(random_points, slots, axis=0)

    coords = to_numpy(quick(lambda x, v: select_points_of_pairs(x, v, draw, k + 3, k,
                                                                chunk=chunk))(logits, valid))
    expected, _ = to_numpy(select_uncertain_points(logits, candidates, random_points, k))
    assert coords.shape == (m, k + 3, 2) and np.all(np.isfinite(coords))
    np.testing.assert_array_equal(coords[valid], expected[valid])
    none = to_numpy(quick(lambda x, v: select_points_of_pairs(x, v, draw, k + 3, k,
                                                              chunk=chunk))(logits, valid & False))
    assert np.all(none == 0)  # no valid pair: the loop does not run


def test_selection_keeps_the_most_uncertain_candidates():
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 2, (3, 1, 9, 11)).astype(np.float32)
    candidates = rng.uniform(0, 1, (3, 30, 2)).astype(np.float32)
    random_points = rng.uniform(0, 1, (3, 4, 2)).astype(np.float32)
    coords, index = to_numpy(select_uncertain_points(logits, candidates, random_points, 6))
    uncertainty = -np.abs(np_point_sample(logits, candidates)[:, 0])
    # The six most uncertain, taken in candidate order.
    expected = np.sort(np.argsort(-uncertainty, axis=1, kind="stable")[:, :6], axis=1)
    np.testing.assert_array_equal(index, expected)
    np.testing.assert_array_equal(coords[:, :6], np.take_along_axis(candidates, expected[..., None],
                                                                    axis=1))
    np.testing.assert_array_equal(coords[:, 6:], random_points)


# -- costs and losses on given points ---------------------------------------------------------


def _batch(seed=0, b=2, q=5, n=4, hw=(9, 13), full=(37, 51)):
    rng = np.random.default_rng(seed)
    classes = rng.normal(0, 2, (b, q, 6)).astype(np.float32)
    logits = rng.normal(0, 3, (b, q, *hw)).astype(np.float32)
    masks = (rng.uniform(0, 1, (b, n, *full)) > 0.6).astype(np.float32)
    labels = rng.integers(0, 5, (b, n)).astype(np.int32)
    return classes, logits, masks, labels


@pytest.mark.parametrize("kind", ["focal", "bce"])
def test_point_cost_matrix_matches_numpy(kind):
    classes, logits, masks, labels = _batch()
    coords = np.random.default_rng(5).uniform(0, 1, (2, 24, 2)).astype(np.float32)
    cost = to_numpy(compute_cost_matrix(classes, logits, labels, masks, mask_loss=kind,
                                        point_coords=coords))
    expected = np_point_cost(logits, masks, classes, labels, coords, kind)
    np.testing.assert_allclose(cost, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["focal", "bce"])
def test_point_losses_match_numpy_on_given_points(kind):
    classes, logits, masks, labels = _batch(1)
    valid = np.array([[True, True, True, False], [True, False, False, False]])
    b_, n_ = 2, 4
    rng = np.random.default_rng(6)
    points = [{"match": rng.uniform(0, 1, (b_, 24, 2)).astype(np.float32),
               "coords": rng.uniform(0, 1, (b_, n_, 16, 2)).astype(np.float32)}]
    criterion = SetCriterion(5, num_points=16, mask_loss=kind)
    targets = {"masks": masks, "labels": labels, "valid": valid}
    _, terms, matches = to_numpy(quick(criterion.compute)(
        {"pred_logits": classes, "pred_masks": logits}, targets, points=points))
    mask_sum = dice_sum = 0.0
    for b in range(b_):
        for q, n in enumerate(matches[0][b]):
            if n < 0:
                continue
            assert valid[b, n]
            c = points[0]["coords"][b, n][None]
            x = np_point_sample(logits[b, q][None, None], c)[:, 0]
            t = np_point_sample(masks[b, n][None, None], c)[:, 0]
            mask, dice = np_mask_losses(x, t, kind)
            mask_sum, dice_sum = mask_sum + mask[0], dice_sum + dice[0]
    assert (matches[0] >= 0).sum() == valid.sum()
    np.testing.assert_allclose(terms["loss_mask"], mask_sum / valid.sum(), rtol=1e-5)
    np.testing.assert_allclose(terms["loss_dice"], dice_sum / valid.sum(), rtol=1e-5)


# -- the original Mask2Former criterion -------------------------------------------------------


@pytest.fixture(scope="module")
def cases():
    from tests.conftest import reference_file

    z = np.load(reference_file(FILE))
    return z, json.loads(str(z["config"]))


def _case(z, key):
    labels = z[f"{key}/target_labels"]
    b_, n_ = labels.shape
    counts = z[f"{key}/target_counts"]
    outputs = {"pred_logits": z[f"{key}/pred_logits"], "pred_masks": z[f"{key}/pred_masks"],
               "aux_outputs": [{"pred_logits": z[f"{key}/aux_{i}/pred_logits"],
                                "pred_masks": z[f"{key}/aux_{i}/pred_masks"]}
                               for i in range(len(LAYERS) - 1)]}
    targets = {"masks": z[f"{key}/target_masks"].astype(bool),
               "labels": np.maximum(labels, 0).astype(np.int32),
               "valid": np.arange(n_)[None, :] < counts[:, None]}
    return outputs, targets, counts


def _layer_output(outputs, layer):
    return outputs if layer == 0 else outputs["aux_outputs"][layer - 1]


def _pairs(z, key, name, counts):
    """The matched (image, query, target) triples in the file's row order."""
    rows = []
    for b, _ in enumerate(counts):
        src, tgt = z[f"{key}/match/{name}/b{b}/src"], z[f"{key}/match/{name}/b{b}/tgt"]
        rows += [(b, int(s), int(t)) for s, t in zip(src, tgt, strict=True)]
    return rows


def _original_points(z, key, counts, num_targets, num_points):
    """The original's draws per layer, scattered from its pair rows to (image, target) slots."""
    points = []
    for name in LAYERS:
        base = f"{key}/points/{name}"
        entry = {"match": np.stack([z[f"{base}/match/b{b}"] for b in range(len(counts))])}
        for part in ("candidates", "random"):
            stored = z[f"{base}/loss/{part}"]
            # Rows of unmatched slots are never read: any points do (shapes as for P points).
            size = 3 * num_points if part == "candidates" else num_points - num_points * 3 // 4
            slots = np.zeros((len(counts), num_targets, size, 2), np.float32)
            for row, (b, _, t) in enumerate(_pairs(z, key, name, counts)):
                slots[b, t] = stored[row]
            entry[part] = slots
        points.append(entry)
    return points


def _criterion(config):
    return SetCriterion(config["SetCriterion"]["num_classes"], class_weight=2.0, mask_weight=5.0,
                        dice_weight=5.0, no_object_weight=config["SetCriterion"]["eos_coef"],
                        num_points=config["SetCriterion"]["num_points"],
                        oversample_ratio=config["SetCriterion"]["oversample_ratio"],
                        importance_sample_ratio=config["SetCriterion"]["importance_sample_ratio"],
                        mask_loss="bce", matcher="scipy")  # the quickest to compile


@pytest.mark.parametrize("case", range(5))
def test_costs_points_and_selection_equal_the_original(cases, case):
    z, config = cases
    key = f"case{case}"
    outputs, targets, counts = _case(z, key)
    num_points = config["SetCriterion"]["num_points"]
    num_importance = config["num_importance_points"]
    cost_fn = quick(lambda logits, masks, labels, target_masks, coords: compute_cost_matrix(
        logits, masks, labels, target_masks, class_weight=2.0, mask_weight=5.0, dice_weight=5.0,
        mask_loss="bce", point_coords=coords))
    for layer, name in enumerate(LAYERS):
        out = _layer_output(outputs, layer)
        base = f"{key}/points/{name}"
        coords = np.stack([z[f"{base}/match/b{b}"] for b in range(len(counts))])
        cost = to_numpy(cost_fn(out["pred_logits"], out["pred_masks"], targets["labels"],
                                targets["masks"], coords))
        for b, count in enumerate(counts):
            np.testing.assert_allclose(cost[b, :, :count], z[f"{key}/cost/{name}/b{b}"],
                                       rtol=1e-5, atol=1e-6, err_msg=f"{key} {name} image {b}")
        pairs = _pairs(z, key, name, counts)
        if not pairs:
            assert z[f"{base}/loss/coords"].shape[0] == 0
            continue
        pred = np.stack([out["pred_masks"][b, q] for b, q, _ in pairs])[:, None]
        target = np.stack([targets["masks"][b, t] for b, _, t in pairs])[:, None]
        chosen, index = to_numpy(select_uncertain_points(
            pred, z[f"{base}/loss/candidates"], z[f"{base}/loss/random"], num_importance))
        # The original's choice in top-k order, ours in candidate order: the same points.
        order = np.argsort(z[f"{base}/loss/importance_idx"], axis=1)
        np.testing.assert_array_equal(
            index, np.take_along_axis(z[f"{base}/loss/importance_idx"], order, axis=1),
            err_msg=key)
        expected = z[f"{base}/loss/coords"].copy()
        expected[:, :num_importance] = np.take_along_axis(expected[:, :num_importance],
                                                          order[..., None], axis=1)
        np.testing.assert_array_equal(chosen, expected, err_msg=key)
        coords = z[f"{base}/loss/coords"]
        np.testing.assert_allclose(to_numpy(point_sample(pred, coords))[:, 0],
                                   z[f"{base}/loss/point_logits"], atol=1e-5, err_msg=key)
        np.testing.assert_allclose(to_numpy(point_sample(target, coords))[:, 0],
                                   z[f"{base}/loss/point_labels"], atol=1e-5, err_msg=key)
        assert num_points == chosen.shape[1]


@pytest.mark.parametrize("case", range(5))
def test_matching_and_losses_equal_the_original(cases, case):
    z, config = cases
    key = f"case{case}"
    outputs, targets, counts = _case(z, key)
    num_points = config["SetCriterion"]["num_points"]
    points = _original_points(z, key, counts, targets["labels"].shape[1], num_points)
    total, terms, matches = to_numpy(quick(_criterion(config).compute)(outputs, targets,
                                                                       points=points))
    for layer, name in enumerate(LAYERS):
        for b, _ in enumerate(counts):
            expected = np.full(matches[layer].shape[1], -1)
            expected[z[f"{key}/match/{name}/b{b}/src"]] = z[f"{key}/match/{name}/b{b}/tgt"]
            np.testing.assert_array_equal(matches[layer][b], expected,
                                          err_msg=f"{key} {name} image {b}")
    for name in config["cases"][case]["loss_keys"]:
        np.testing.assert_allclose(terms[name], z[f"{key}/loss/{name}"], rtol=1e-5, atol=1e-7,
                                   err_msg=f"{key} {name}")
    np.testing.assert_allclose(total, z[f"{key}/total_loss"], rtol=1e-5, err_msg=f"{key} total")


# -- drawn points, configuration --------------------------------------------------------------


def test_compiled_criterion_with_drawn_points_has_finite_gradients():
    classes, logits, masks, labels = _batch(3)
    valid = np.array([[True, True, False, False], [True, True, True, True]])
    outputs = {"pred_logits": classes, "pred_masks": logits,
               "aux_outputs": [{"pred_logits": classes * 0.5, "pred_masks": logits * 0.5}]}
    criterion = SetCriterion(5, num_points=32, mask_loss="bce", seed=0)
    # JAX: a key (a SeedGenerator's state is not threaded through a bare jax.jit).
    import keras

    if keras.backend.backend() == "jax":
        criterion.seed_generator = None
        original = criterion.compute
        criterion.compute = lambda o, t: original(o, t, seed=np.array([7, 3], np.int32))
    total, terms, _, grads = compiled_value_and_grad(
        criterion, outputs, {"masks": masks, "labels": labels, "valid": valid})
    assert np.isfinite(total) and terms["loss_mask"] > 0 and terms["loss_dice_0"] > 0
    for g in (grads["pred_masks"], grads["aux_outputs"][0]["pred_masks"]):
        assert np.all(np.isfinite(g)) and np.any(g != 0)
        # only the masks of the queries matched to image 0's two targets get gradients
        assert (np.abs(g[0]).sum(axis=(1, 2)) > 0).sum() == 2


def test_loss_config_validation_and_round_trip():
    for bad in ({"mask_loss": "l1"}, {"num_points": -1}, {"oversample_ratio": 0.5},
                {"importance_sample_ratio": 1.5}, {"num_points": 16, "ignore_padding": True}):
        with pytest.raises(ConfigError):
            LossConfig(**bad).validate()
    config = LossConfig(num_points=16, oversample_ratio=2.0, importance_sample_ratio=0.5,
                        mask_loss="bce")
    config.validate()
    criterion = build_criterion(config, 4)
    assert (criterion.num_points, criterion.oversample_ratio, criterion.importance_sample_ratio,
            criterion.mask_loss) == (16, 2.0, 0.5, "bce")
    again = SetCriterion.from_config(criterion.get_config())
    assert again.get_config() == criterion.get_config()
    assert build_criterion(LossConfig(), 4).seed_generator is None  # dense: no extra state
