"""The in-graph Hungarian matcher against scipy.optimize.linear_sum_assignment."""

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from maskformer.objective.matcher import _scipy_match_numpy, hungarian_match, match, scipy_match
from tests.objective.helpers import compiled, to_numpy

Q = 100


def _random_costs(rng, num_cases: int, num_queries: int, max_targets: int):
    """Cost matrices [C, Q, N] of varied kinds, padded targets (scattered, garbage-filled)."""
    costs = np.empty((num_cases, num_queries, max_targets), np.float32)
    valid = np.zeros((num_cases, max_targets), bool)
    kinds = []
    counts = rng.integers(0, max_targets + 1, num_cases)
    counts[:4] = [0, max_targets, 1, num_queries if num_queries <= max_targets else max_targets]
    for c in range(num_cases):
        kind = ["uniform", "normal", "small_int", "int", "constant", "cost_like"][c % 6]
        shape = (num_queries, max_targets)
        if kind == "uniform":
            m = rng.random(shape)
        elif kind == "normal":
            m = rng.normal(0.0, 5.0, shape)  # negative costs too
        elif kind == "small_int":
            m = rng.integers(0, 4, shape)  # many ties, many optimal assignments
        elif kind == "int":
            m = rng.integers(-50, 100, shape)
        elif kind == "constant":
            m = np.full(shape, 3.0)
        else:  # like the matcher's: -p + 20 * focal + dice
            m = -rng.random(shape) + 20 * rng.random(shape) * 0.2 + rng.random(shape)
        costs[c] = m
        kinds.append(kind)
        # Valid targets scattered among the padded ones; padded entries hold garbage that the
        # solver must ignore.
        valid[c, rng.permutation(max_targets)[: counts[c]]] = True
    costs[:, :, :][~np.broadcast_to(valid[:, None, :], costs.shape)] = np.nan
    return costs, valid, kinds


def _total(cost, assignment):
    rows = np.flatnonzero(assignment >= 0)
    return cost[rows, assignment[rows]].astype(np.float64).sum()


def _check_against_scipy(costs, valid, kinds, result):
    num_cases, num_queries, _ = costs.shape
    differing = 0
    for c in range(num_cases):
        targets = np.flatnonzero(valid[c])
        ours = result[c]
        # A valid assignment: every valid target exactly once, nothing else.
        assigned = ours[ours >= 0]
        assert sorted(assigned.tolist()) == targets.tolist(), f"case {c} ({kinds[c]})"
        sub = costs[c][:, targets].astype(np.float64)
        rows, cols = linear_sum_assignment(sub)
        best = sub[rows, cols].sum()
        ours_total = _total(costs[c].astype(np.float64), ours)
        assert ours_total == pytest.approx(best, rel=1e-5, abs=1e-5), f"case {c} ({kinds[c]})"
        expected = np.full(num_queries, -1)
        expected[rows] = targets[cols]
        if not np.array_equal(ours, expected):
            # Allowed only where the optimum is not unique: some pair of scipy's optimum can be
            # forbidden at (almost) no extra cost.
            differing += 1
            gaps = []
            for r, col in zip(rows, cols, strict=True):
                forbidden = sub.copy()
                forbidden[r, col] = 1e9
                r2, c2 = linear_sum_assignment(forbidden)
                gaps.append(forbidden[r2, c2].sum() - best)
            assert min(gaps) <= 1e-5 * max(1.0, abs(best)), (
                f"case {c} ({kinds[c]}): the optimum is unique (gap {min(gaps):.3g}) "
                "but the assignment differs from scipy's"
            )
    return differing


def test_optimal_on_500_random_matrices():
    """500 cases (Q = 100, N = 0..100, ties, integer costs) through one compiled call."""
    rng = np.random.default_rng(0)
    costs, valid, kinds = _random_costs(rng, 500, Q, 100)
    result, num_bad = to_numpy(compiled(hungarian_match)(costs, valid))
    assert result.shape == (500, Q) and result.dtype == np.int32
    np.testing.assert_array_equal(num_bad, 0)  # NaN only in padded targets: not counted
    differing = _check_against_scipy(costs, valid, kinds, result)
    # Continuous costs have a unique optimum: those must all be identical to scipy's.
    assert differing <= sum(k in ("small_int", "int", "constant") for k in kinds)


def test_eager_small_and_rectangular():
    """Uncompiled, with N static = 0, a few targets and more valid targets than queries."""
    rng = np.random.default_rng(1)
    costs, valid, kinds = _random_costs(rng, 12, 7, 5)
    result, _ = to_numpy(hungarian_match(costs, valid))
    _check_against_scipy(costs, valid, kinds, result)

    result, num_bad = to_numpy(hungarian_match(np.zeros((2, 7, 0), np.float32),
                                               np.zeros((2, 0), bool)))
    np.testing.assert_array_equal(result, -1)
    np.testing.assert_array_equal(num_bad, 0)

    # More valid targets (6) than queries (4): four are matched, nothing crashes.
    result, _ = to_numpy(hungarian_match(rng.random((1, 4, 6)).astype(np.float32),
                                         np.ones((1, 6), bool)))
    assert sorted(result[0].tolist()) == sorted(set(result[0].tolist())) and (result >= 0).all()


def test_non_finite_costs_are_replaced_and_counted():
    rng = np.random.default_rng(2)
    num_queries, num_targets = 12, 6
    costs = rng.random((4, num_queries, num_targets)).astype(np.float32)
    valid = np.ones((4, num_targets), bool)
    valid[3, 4:] = False
    costs[0, 3, :] = np.nan  # one diverged query: avoided
    costs[1, :, 2] = np.inf  # one target with infinite cost everywhere: still matched
    costs[1, 5, 4] = -np.inf
    costs[2] = np.nan  # everything diverged
    costs[3, :, 4:] = np.nan  # padded targets: not counted
    result, num_bad = to_numpy(compiled(hungarian_match)(costs, valid))
    np.testing.assert_array_equal(num_bad, [num_targets, num_queries + 1, num_queries * num_targets, 0])
    for b in range(4):
        assert sorted(result[b][result[b] >= 0].tolist()) == np.flatnonzero(valid[b]).tolist()
    assert result[0, 3] == -1
    # The same replacement as the host solver, hence the same optimum.
    reference, reference_bad = _scipy_match_numpy(costs, valid)
    np.testing.assert_array_equal(num_bad, reference_bad)
    np.testing.assert_array_equal(result[[0, 3]], reference[[0, 3]])


def test_scipy_option_matches_in_graph_solver():
    """The host option (numpy_function / pure_callback) gives the same assignments."""
    import keras

    rng = np.random.default_rng(3)
    costs, valid, _ = _random_costs(rng, 6, 10, 8)
    ours = to_numpy(match(costs, valid, "hungarian")[0])
    if keras.backend.backend() == "jax":
        import jax

        host = jax.jit(scipy_match)
    else:
        import tensorflow as tf

        host = tf.function(scipy_match)  # not jit_compile: a host call cannot be compiled
    reference, num_bad = to_numpy(host(costs, valid))
    np.testing.assert_array_equal(num_bad, 0)
    for c in range(6):  # ties in the integer kinds may pick another optimum: compare totals
        assert _total(np.nan_to_num(costs[c]), ours[c]) == pytest.approx(
            _total(np.nan_to_num(costs[c]), reference[c]), rel=1e-6)
    with pytest.raises(ValueError, match="loss.matcher"):
        match(costs, valid, "auction")
