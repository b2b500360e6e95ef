"""Hungarian matching of queries to ground-truth segments (REFERENCE.md section 7).

Two solvers compute the same optimal assignment:

* `hungarian_match`: the shortest-augmenting-path method with dual potentials (Jonker-Volgenant,
  as in `scipy.optimize.linear_sum_assignment`), written with `keras.ops` loops over static shapes
  so that it runs inside a compiled training step (`tf.function(jit_compile=True)`, `jax.jit`)
  without a host round trip. One augmentation per target; the inner Dijkstra search is vectorised
  over the Q queries and over the images of the batch.
* `scipy_match`: scipy on the host, one image at a time, as the original does (for training
  without XLA). It goes through `tf.numpy_function` / `jax.pure_callback` and does not compile
  with XLA.

Both take a cost matrix [B, Q, N] over padded targets with a validity mask [B, N], and return, per
image and query, the index of the matched target or -1. Padded targets never take a query.
Non-finite costs (a diverged model) are replaced by a large finite cost and counted.
"""

from __future__ import annotations

import numpy as np
from keras import ops

from maskformer.objective.points import point_sample, point_sample_channels_last
from maskformer.resize import nearest_resize

__all__ = ["compute_cost_matrix", "hungarian_match", "match", "scipy_match"]


# ---------------------------------------------------------------------------------------------
# Cost matrix
# ---------------------------------------------------------------------------------------------


def _softplus(x):
    # log(1 + exp(x)), stable for large |x|; BCE-with-logits is softplus(-x) for target 1 and
    # softplus(x) for target 0.
    return ops.maximum(x, 0.0) + ops.log1p(ops.exp(-ops.abs(x)))


def compute_cost_matrix(
    pred_logits,
    pred_masks,
    target_labels,
    target_masks,
    *,
    class_weight: float = 1.0,
    mask_weight: float = 20.0,
    dice_weight: float = 1.0,
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
    pixel_valid=None,
    mask_loss: str = "focal",
    point_coords=None,
):
    """The matching cost between every query and every (padded) target of each image.

    cost = class_weight * cost_class + mask_weight * cost_mask + dice_weight * cost_dice, with
    cost_class = -softmax(logits)[target class], cost_mask the pairwise sigmoid focal cost
    (`mask_loss` "focal", MaskFormer) or binary cross-entropy ("bce", Mask2Former) averaged over
    pixels, and the pairwise dice cost. Dense (`point_coords` None): on the target masks
    downsampled to the prediction size with PyTorch's nearest rule. With `point_coords`: on the
    predicted logits and the full-size targets both sampled bilinearly at those points
    (`points.point_sample`, each map in its own frame), as Mask2Former's matcher does. No
    gradient flows through it.

    Args:
        pred_logits: [B, Q, K+1] class logits.
        pred_masks: [B, Q, h, w] mask logits.
        target_labels: [B, N] int class ids (padded entries arbitrary; they are clipped).
        target_masks: [B, N, H, W] 0/1 masks (float or bool) at the padded image size.
        pixel_valid: optional [B, H, W] mask of real (non-padding) pixels; when given, only those
            pixels enter the mask costs (the `ignore_padding` option; dense only).
        mask_loss: "focal" or "bce", the kind of cost_mask.
        point_coords: optional [B, P, 2] normalised (x, y) points, shared by all queries and
            targets of an image.

    Returns:
        [B, Q, N] float32 cost.
    """
    if mask_loss not in ("focal", "bce"):
        raise ValueError(f"loss.mask_loss: {mask_loss!r} is not 'focal' or 'bce'")
    if point_coords is not None and pixel_valid is not None:
        raise ValueError("pixel_valid (loss.ignore_padding) is not supported with point_coords")
    pred_logits = ops.stop_gradient(ops.cast(pred_logits, "float32"))
    pred_masks = ops.stop_gradient(ops.cast(pred_masks, "float32"))
    batch, num_queries, h, w = pred_masks.shape
    num_classes = pred_logits.shape[-1]
    num_targets = target_masks.shape[1]

    probs = ops.softmax(pred_logits, axis=-1)  # [B, Q, K+1]
    labels = ops.clip(ops.cast(target_labels, "int32"), 0, num_classes - 1)  # [B, N]
    label_index = ops.broadcast_to(labels[:, None, :], (batch, num_queries, num_targets))
    cost_class = -ops.take_along_axis(probs, label_index, axis=2)  # [B, Q, N]

    weight = None
    if point_coords is not None:
        point_coords = ops.stop_gradient(ops.cast(point_coords, "float32"))
        # Points along axis 1 ("bpq"): the Q masks' samples are read as rows, see
        # point_sample_channels_last.
        logits = point_sample_channels_last(pred_masks, point_coords)  # [B, P, Q]
        targets = ops.stop_gradient(point_sample(target_masks, point_coords))  # [B, N, P]
        num_pixels = float(point_coords.shape[1])
        prob = ops.sigmoid(logits)
        layout = "bpq"
    else:
        targets = nearest_resize(ops.cast(target_masks, "float32"), (h, w))  # [B, N, h, w]
        targets = ops.reshape(targets, (batch, num_targets, h * w))
        logits = ops.reshape(pred_masks, (batch, num_queries, h * w))
        prob = ops.sigmoid(logits)
        layout = "bqp"
        if pixel_valid is None:
            num_pixels = float(h * w)
        else:
            weight = nearest_resize(ops.cast(pixel_valid, "float32")[:, None], (h, w))
            weight = ops.reshape(weight, (batch, 1, h * w))  # [B, 1, hw]
            num_pixels = ops.maximum(ops.sum(weight, axis=2), 1.0)[:, :, None]  # [B, 1, 1]

    # Pairwise mask cost: every query against every target, summed over pixels, averaged.
    if mask_loss == "focal":
        cost_pos = focal_alpha * (1.0 - prob) ** focal_gamma * _softplus(-logits)  # [B, Q, hw]
        cost_neg = (1.0 - focal_alpha) * prob**focal_gamma * _softplus(logits)
    else:  # BCE with logits against target 1 and against target 0
        cost_pos = _softplus(-logits)
        cost_neg = _softplus(logits)
    pos_t, neg_t = targets, 1.0 - targets
    if weight is not None:
        pos_t, neg_t, prob = pos_t * weight, neg_t * weight, prob * weight
    pairwise = f"{layout},bnp->bqn"
    cost_mask = (
        ops.einsum(pairwise, cost_pos, pos_t) + ops.einsum(pairwise, cost_neg, neg_t)
    ) / num_pixels

    # Pairwise dice cost.
    numerator = 2.0 * ops.einsum(pairwise, prob, pos_t)
    prob_sum = ops.sum(prob, axis=layout.index("p"))  # [B, Q]
    denominator = prob_sum[:, :, None] + ops.sum(pos_t, axis=2)[:, None, :]
    cost_dice = 1.0 - (numerator + 1.0) / (denominator + 1.0)

    return mask_weight * cost_mask + class_weight * cost_class + dice_weight * cost_dice


# ---------------------------------------------------------------------------------------------
# In-graph solver
# ---------------------------------------------------------------------------------------------

_INF = float("inf")


def _sanitize(cost, valid):
    """Replaces non-finite costs of valid targets by a large finite cost and counts them.

    The replacement is (N + 1) * (2 * max|finite cost| + 1) per image: larger than any complete
    assignment made of finite costs, so such entries are used only where nothing else can be,
    yet small enough that float32 dual potentials keep the finite costs' resolution.
    """
    finite = ops.isfinite(cost)  # [B, Q, N]
    valid_entries = ops.broadcast_to(valid[:, None, :], ops.shape(cost))
    bad = ops.logical_and(ops.logical_not(finite), valid_entries)
    num_bad = ops.sum(ops.cast(bad, "int32"), axis=(1, 2))  # [B]
    magnitude = ops.where(ops.logical_and(finite, valid_entries), ops.abs(cost), 0.0)
    max_finite = ops.max(ops.reshape(magnitude, (ops.shape(cost)[0], -1)), axis=1)  # [B]
    num_targets = ops.cast(ops.shape(cost)[2], "float32")
    fill = (num_targets + 1.0) * (2.0 * max_finite + 1.0)
    cost = ops.where(finite, cost, fill[:, None, None])
    # Padded targets are never read by the solver; zero them so they cannot overflow anything.
    cost = ops.where(valid_entries, cost, 0.0)
    return cost, num_bad


def hungarian_match(cost, valid):
    """Minimum-cost assignment of targets to queries, per image, inside the graph.

    Solves min sum_n cost[b, q(n), n] over injective maps from the valid targets to the queries
    (requires at most Q valid targets per image; any beyond Q stay unmatched). Shortest
    augmenting paths with dual potentials: for each valid target a Dijkstra search over the
    queries in reduced costs finds the cheapest augmenting path, then the potentials are updated
    and the path is flipped. Exactly optimal; on ties the chosen optimum may differ from scipy's.

    Args:
        cost: [B, Q, N] float cost (rows queries, columns padded targets). Gradients are stopped.
        valid: [B, N] bool, True for real targets.

    Returns:
        (query_to_target, num_nonfinite): [B, Q] int32 index of the matched target or -1, and
        [B] int32 number of non-finite costs among valid targets that were replaced.
    """
    cost = ops.stop_gradient(ops.cast(cost, "float32"))
    valid = ops.cast(valid, "bool")
    batch, num_queries, num_targets = cost.shape
    if num_targets == 0:
        return (ops.full((batch, num_queries), -1, dtype="int32"), ops.zeros((batch,), "int32"))
    cost, num_bad = _sanitize(cost, valid)
    cost_t = ops.transpose(cost, (0, 2, 1))  # [B, N, Q]: rows are targets

    query_ids = ops.arange(num_queries, dtype="int32")[None, :]  # [1, Q]
    target_ids = ops.arange(num_targets, dtype="int32")[None, :]  # [1, N]

    def gather_rows(values, index):
        # values [B, L], index [B] -> values[b, index[b]]
        return ops.take_along_axis(values, ops.maximum(index, 0)[:, None], axis=1)[:, 0]

    def augment_row(row, state):
        """Assigns target `row` (in every image where it is valid) by one augmentation."""
        u, v, col4row, row4col = state
        num_assigned = ops.sum(ops.cast(col4row >= 0, "int32"), axis=1)
        active = ops.logical_and(ops.take(valid, row, axis=1), num_assigned < num_queries)  # [B]
        is_row = target_ids == row  # [1, N]

        # --- Dijkstra over the queries in reduced costs, from this target -------------------
        def search_cond(i, min_val, sink, shortest, path, scanned_cols, scanned_rows, done):
            return ops.logical_not(ops.all(done))

        def search_body(i, min_val, sink, shortest, path, scanned_cols, scanned_rows, done):
            live = ops.logical_not(done)[:, None]  # [B, 1]
            cost_row = ops.take_along_axis(cost_t, i[:, None, None], axis=1)[:, 0]  # [B, Q]
            reduced = min_val[:, None] + cost_row - gather_rows(u, i)[:, None] - v
            improve = ops.logical_and(
                ops.logical_and(ops.logical_not(scanned_cols), reduced < shortest), live
            )
            path = ops.where(improve, i[:, None], path)
            shortest = ops.where(improve, reduced, shortest)
            scanned_rows = ops.logical_or(
                scanned_rows, ops.logical_and(target_ids == i[:, None], live)
            )
            # The nearest unscanned query; among equals prefer a free one (it ends the search,
            # which matters for integer costs with many ties).
            candidates = ops.where(scanned_cols, _INF, shortest)
            lowest = ops.min(candidates, axis=1)  # [B]
            is_min = ops.logical_and(candidates == lowest[:, None], ops.logical_not(scanned_cols))
            free_min = ops.logical_and(is_min, row4col < 0)
            pick = ops.where(ops.any(free_min, axis=1)[:, None], free_min, is_min)
            j = ops.cast(ops.argmax(ops.cast(pick, "int32"), axis=1), "int32")  # [B]
            live1 = live[:, 0]
            min_val = ops.where(live1, lowest, min_val)
            scanned_cols = ops.logical_or(
                scanned_cols, ops.logical_and(query_ids == j[:, None], live)
            )
            owner = gather_rows(row4col, j)  # target holding query j, or -1
            reached_free = ops.logical_and(live1, owner < 0)
            sink = ops.where(reached_free, j, sink)
            i = ops.where(ops.logical_and(live1, owner >= 0), owner, i)
            done = ops.logical_or(done, reached_free)
            return i, min_val, sink, shortest, path, scanned_cols, scanned_rows, done

        init = (
            ops.full((batch,), row, dtype="int32"),
            ops.zeros((batch,), "float32"),
            ops.full((batch,), -1, dtype="int32"),
            ops.full((batch, num_queries), _INF, dtype="float32"),
            ops.full((batch, num_queries), -1, dtype="int32"),
            ops.zeros((batch, num_queries), "bool"),
            ops.zeros((batch, num_targets), "bool"),
            ops.logical_not(active),
        )
        # Each step scans one new query, so Q steps always suffice (the bound guards hangs).
        _, min_val, sink, shortest, path, scanned_cols, scanned_rows, _ = ops.while_loop(
            search_cond, search_body, init, maximum_iterations=num_queries
        )

        # --- Dual update ---------------------------------------------------------------------
        act = active[:, None]
        u = u + ops.where(ops.logical_and(is_row, act), min_val[:, None], 0.0)
        other_rows = ops.logical_and(
            ops.logical_and(scanned_rows, ops.logical_not(is_row)), act
        )
        shortest_at_col = ops.take_along_axis(shortest, ops.maximum(col4row, 0), axis=1)  # [B, N]
        u = u + ops.where(other_rows, min_val[:, None] - shortest_at_col, 0.0)
        v = v - ops.where(
            ops.logical_and(scanned_cols, act), min_val[:, None] - shortest, 0.0
        )

        # --- Flip the augmenting path back from the free query it reached -------------------
        def flip_cond(j, col4row, row4col, done):
            return ops.logical_not(ops.all(done))

        def flip_body(j, col4row, row4col, done):
            live = ops.logical_not(done)
            i = gather_rows(path, j)  # target that reached query j
            row4col = ops.where(
                ops.logical_and(query_ids == j[:, None], live[:, None]), i[:, None], row4col
            )
            previous = gather_rows(col4row, i)
            col4row = ops.where(
                ops.logical_and(target_ids == i[:, None], live[:, None]), j[:, None], col4row
            )
            j = ops.where(live, previous, j)
            done = ops.logical_or(done, i == row)
            return j, col4row, row4col, done

        _, col4row, row4col, _ = ops.while_loop(
            flip_cond,
            flip_body,
            (sink, col4row, row4col, ops.logical_not(active)),
            maximum_iterations=num_targets,
        )
        return u, v, col4row, row4col

    state = (
        ops.zeros((batch, num_targets), "float32"),
        ops.zeros((batch, num_queries), "float32"),
        ops.full((batch, num_targets), -1, dtype="int32"),
        ops.full((batch, num_queries), -1, dtype="int32"),
    )
    _, _, _, row4col = ops.fori_loop(0, num_targets, augment_row, state)
    return row4col, num_bad


# ---------------------------------------------------------------------------------------------
# Host solver (scipy), the original's way
# ---------------------------------------------------------------------------------------------


def _scipy_match_numpy(cost: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """scipy.optimize.linear_sum_assignment per image; arrays as in `scipy_match`."""
    from scipy.optimize import linear_sum_assignment

    cost = np.asarray(cost, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    batch, num_queries, _ = cost.shape
    result = np.full((batch, num_queries), -1, dtype=np.int32)
    num_bad = np.zeros((batch,), dtype=np.int32)
    for b in range(batch):
        targets = np.flatnonzero(valid[b])
        if targets.size == 0:
            continue
        c = cost[b][:, targets]
        finite = np.isfinite(c)
        num_bad[b] = int((~finite).sum())
        if num_bad[b]:
            max_finite = np.abs(c[finite]).max() if finite.any() else 0.0
            c = np.where(finite, c, (c.shape[1] + 1) * (2 * max_finite + 1))
        rows, cols = linear_sum_assignment(c)
        result[b, rows] = targets[cols]
    return result, num_bad


def scipy_match(cost, valid):
    """The same contract as `hungarian_match`, solved on the host with scipy.

    TensorFlow: through `tf.numpy_function` (works in `tf.function`, not with `jit_compile`).
    JAX: through `jax.pure_callback` (works under `jax.jit`).
    """
    import keras

    cost = ops.stop_gradient(ops.cast(cost, "float32"))
    valid = ops.cast(valid, "bool")
    batch, num_queries, _ = cost.shape
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        result, num_bad = tf.numpy_function(
            _scipy_match_numpy, [cost, valid], [tf.int32, tf.int32], stateful=False
        )
        result.set_shape((batch, num_queries))
        num_bad.set_shape((batch,))
        return result, num_bad
    if backend == "jax":
        import jax

        shapes = (
            jax.ShapeDtypeStruct((batch, num_queries), np.int32),
            jax.ShapeDtypeStruct((batch,), np.int32),
        )
        return jax.pure_callback(_scipy_match_numpy, shapes, cost, valid)
    result, num_bad = _scipy_match_numpy(ops.convert_to_numpy(cost), ops.convert_to_numpy(valid))
    return ops.convert_to_tensor(result), ops.convert_to_tensor(num_bad)


def match(cost, valid, method: str = "hungarian"):
    """Dispatches to `hungarian_match` ("hungarian") or `scipy_match` ("scipy")."""
    if method == "hungarian":
        return hungarian_match(cost, valid)
    if method == "scipy":
        return scipy_match(cost, valid)
    raise ValueError(f"loss.matcher: {method!r} is not 'hungarian' or 'scipy'")
