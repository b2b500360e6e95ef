"""Point sampling for the mask losses and matching costs (Mask2Former / PointRend), in `keras.ops`.

Instead of upsampling the stride-4 mask logits to the target size, both the logits and the
full-resolution targets are read at P points given in normalised (x, y) coordinates, each map in
its own frame. This reproduces detectron2's PointRend helpers as Mask2Former uses them:

* `point_sample`: bilinear interpolation with PyTorch `grid_sample` semantics
  (`align_corners=False`, zero padding) at ``grid = 2 * coords - 1``, written with gathers so that
  it compiles with XLA on TensorFlow and JAX;
* `select_uncertain_points`: PointRend's importance sampling. Of ``int(P * oversample_ratio)``
  uniform candidates keep the ``int(P * importance_sample_ratio)`` most uncertain ones
  (uncertainty -|logit|; `smallest_k`, in candidate order), then append uniform random points
  up to P;
* `uniform_points`: the matcher's points, one set per image shared by all queries and targets;
* `select_points_of_pairs`: the selection for the matched masks only, a group at a time.

Every random draw is a separate function (`uniform_points`, `draw_candidates`, from a
counter-based generator, `counter_uniform`), and the selection takes the drawn coordinates as
arguments, so tests can feed the original's points.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

__all__ = [
    "counter_uniform",
    "draw_candidates",
    "point_counts",
    "point_sample",
    "point_sample_channels_last",
    "random_key",
    "select_points_of_pairs",
    "select_uncertain_points",
    "smallest_k",
    "uniform_points",
]

FLAT_GATHER_LIMIT = 2**31  # int32 flat indices


def _bilinear_neighbours(coords, height: int, width: int):
    """The four neighbours of each point and their weights, as `grid_sample` computes them.

    Args:
        coords: [N, P, 2] float32 (x, y).

    Returns:
        (index [N, P, 4] int32 flat pixel numbers y * width + x, clipped into the map;
        weight [N, P, 4] float32, zero for a neighbour outside the map), in grid_sample's order:
        north-west, north-east, south-west, south-east.
    """
    # grid_sample's unnormalisation of grid = 2 * coords - 1, written as PyTorch computes it,
    # on (x, y) together (so that XLA computes it once per point, not once per sample).
    grid = 2.0 * coords - 1.0
    size = ops.convert_to_tensor([float(width), float(height)], "float32")
    xy = ((grid + 1.0) * size - 1.0) / 2.0  # [N, P, 2]
    x = xy[..., 0]
    y = xy[..., 1]
    x0 = ops.floor(x)
    y0 = ops.floor(y)
    x1 = x0 + 1.0
    y1 = y0 + 1.0
    index, weight = [], []
    for xi, yi, wi in ((x0, y0, (x1 - x) * (y1 - y)), (x1, y0, (x - x0) * (y1 - y)),
                       (x0, y1, (x1 - x) * (y - y0)), (x1, y1, (x - x0) * (y - y0))):
        inside = (xi >= 0.0) & (xi <= width - 1.0) & (yi >= 0.0) & (yi <= height - 1.0)
        index.append(ops.cast(ops.clip(yi, 0.0, height - 1.0), "int32") * width
                     + ops.cast(ops.clip(xi, 0.0, width - 1.0), "int32"))
        weight.append(ops.where(inside, wi, 0.0))
    return ops.stack(index, axis=-1), ops.stack(weight, axis=-1)


def point_sample_channels_last(maps, coords):
    """Bilinear samples of `maps` at normalised points, [N, P, C] float32 (see `point_sample`).

    The maps are laid out [N * H * W, C] and each point reads its four neighbours' whole
    channel vectors in one gather; the corners are then summed with their weights. Under XLA
    on a CPU this makes the matcher's cost of Q = 100 masks at 12544 points four times faster
    than a gather per value followed by the weighting, which XLA fuses into, and so repeats
    in, every consumer of the samples.

    Args:
        maps: [N, C, H, W] values (any real or bool dtype; computed in float32).
        coords: [N, P, 2] (x, y) coordinates, x along W and y along H.
    """
    if maps.dtype == "bool":
        maps = ops.cast(maps, "uint8")
    n, c, h, w = maps.shape
    num_points = coords.shape[1]
    index, weight = _bilinear_neighbours(ops.cast(coords, "float32"), h, w)
    if c == 1:
        rows = ops.reshape(maps, (n * h * w, 1))
    else:
        rows = ops.reshape(ops.transpose(ops.reshape(maps, (n, c, h * w)), (0, 2, 1)), (-1, c))
    if n * h * w < FLAT_GATHER_LIMIT:
        index = index + ops.arange(n, dtype="int32")[:, None, None] * (h * w)  # [N, P, 4]
        values = ops.take(rows, ops.reshape(index, (-1,)), axis=0)  # [N * P * 4, C]
    else:  # int32 row numbers would overflow: gather within each map
        index = ops.broadcast_to(ops.reshape(index, (n, num_points * 4, 1)),
                                 (n, num_points * 4, c))
        values = ops.take_along_axis(ops.reshape(rows, (n, h * w, c)), index, axis=1)
    values = ops.reshape(ops.cast(values, "float32"), (n, num_points, 4, c))
    return ops.sum(values * weight[..., None], axis=2)


def point_sample(maps, coords):
    """Bilinear samples of `maps` at normalised points (`grid_sample`, align_corners=False).

    A point (x, y) in [0, 1]^2 lies at pixel (x * W - 0.5, y * H - 0.5) (pixel centres at
    integers); the four neighbours outside the map count as zero, so points outside [0, 1]
    fade to 0 within half a pixel.

    Args:
        maps: [N, C, H, W] values (any real or bool dtype; computed in float32).
        coords: [N, P, 2] (x, y) coordinates, x along W and y along H.

    Returns:
        [N, C, P] float32 samples.
    """
    if maps.shape[1] == 1:  # one channel: the same gathers, and faster under XLA
        return ops.transpose(point_sample_channels_last(maps, coords), (0, 2, 1))
    if maps.dtype == "bool":
        maps = ops.cast(maps, "uint8")
    n, c, h, w = maps.shape
    num_points = coords.shape[1]
    index, weight = _bilinear_neighbours(ops.cast(coords, "float32"), h, w)
    # Gathers from the maps as one flat vector with int32 indices where they fit (its
    # gradient then costs about a fifth less memory and time than a batched gather's);
    # larger inputs gather per map.
    flat = n * c * h * w < FLAT_GATHER_LIMIT
    if flat:
        values_1d = ops.reshape(maps, (-1,))
        first = ops.reshape(ops.arange(n * c, dtype="int32") * (h * w), (n, c, 1))
    else:
        rows = ops.reshape(maps, (n, c, h * w))
    out = 0.0
    for corner in range(4):
        corner_index = index[:, :, corner]  # [N, P]
        if flat:
            values = ops.take(values_1d, ops.reshape(first + corner_index[:, None, :], (-1,)))
            values = ops.reshape(values, (n, c, num_points))
        else:
            corner_index = ops.broadcast_to(corner_index[:, None, :], (n, c, num_points))
            values = ops.take_along_axis(rows, corner_index, axis=2)
        out = out + ops.cast(values, "float32") * weight[:, None, :, corner]
    return out


def point_counts(num_points: int, oversample_ratio: float,
                 importance_sample_ratio: float) -> tuple[int, int, int]:
    """(candidates, importance points, random points) per mask; both products truncate."""
    num_candidates = int(num_points * oversample_ratio)
    num_importance = int(importance_sample_ratio * num_points)
    return num_candidates, num_importance, num_points - num_importance


# -- random numbers -----------------------------------------------------------------------------
#
# The points come from a counter-based generator written here in `keras.ops` rather than from
# `keras.random.uniform`: on TensorFlow that op compiles, under XLA on a CPU, to a generator
# about 75 times slower than a counter hash (3 s against 0.04 s for the 15 M numbers of 200
# masks' candidates), and a counter-based draw lets each mask's points be made on their own
# (`draw_candidates(slots, ...)`), only for the masks that are matched, with the same numbers on
# TensorFlow and JAX. Each number is a keyed hash of its index: two rounds of the "lowbias32"
# integer finaliser (C. Wellons, 2018), the top 24 bits scaled to [0, 1).

_GOLDEN = 0x9E3779B9
_MASK32 = 0xFFFFFFFF


def _u32(value):
    return ops.convert_to_tensor(value & _MASK32 if isinstance(value, int) else value, "uint32")


def _mix32(x):
    """The lowbias32 finaliser on uint32 (a bijection of [0, 2^32))."""
    x = ops.bitwise_xor(x, ops.right_shift(x, _u32(16)))
    x = x * _u32(0x7FEB352D)
    x = ops.bitwise_xor(x, ops.right_shift(x, _u32(15)))
    x = x * _u32(0x846CA68B)
    return ops.bitwise_xor(x, ops.right_shift(x, _u32(16)))


def random_key(seed: Any):
    """A [2] uint32 key for `counter_uniform` from an int, a [2] integer tensor or a
    `keras.random.SeedGenerator` (whose state advances by one)."""
    if isinstance(seed, keras.random.SeedGenerator):
        seed = seed.next()
    if isinstance(seed, int):
        return ops.convert_to_tensor([seed & _MASK32, (seed >> 32) & _MASK32], "uint32")
    if seed is None:
        raise ValueError("a seed is required: an int, a [2] integer tensor or a SeedGenerator")
    seed = ops.convert_to_tensor(seed)
    if tuple(seed.shape) != (2,):
        raise ValueError(f"a random key must have shape (2,), not {tuple(seed.shape)}")
    return ops.cast(seed, "uint32")  # integers wrap modulo 2^32 (TensorFlow and JAX alike)


def counter_uniform(counters, key, stream: int):
    """Uniform float32 numbers in [0, 1), one per uint32 counter, for `key` [2] and `stream`.

    Equal counters, key and stream give equal numbers; different streams of one key are
    independent draws.
    """
    key = ops.convert_to_tensor(key)
    k0 = _mix32(ops.bitwise_xor(key[0], _u32((stream * _GOLDEN) & _MASK32)))
    k1 = _mix32(key[1] + k0)
    x = _mix32(ops.bitwise_xor(_mix32(counters + k0), k1))
    return ops.cast(ops.right_shift(x, _u32(8)), "float32") * (1.0 / 2**24)


def _counters(rows, per_row: int):
    """[len(rows), per_row] uint32 counters: row r holds r * per_row + 0 .. per_row - 1."""
    rows = ops.cast(ops.cast(rows, "int32"), "uint32")
    within = ops.cast(ops.arange(per_row, dtype="int32"), "uint32")
    return rows[:, None] * _u32(per_row) + within[None, :]


def uniform_points(batch: int, num_points: int, key, stream: int = 0):
    """[batch, num_points, 2] uniform (x, y) in [0, 1): the matcher's points, one set per image."""
    counters = _counters(ops.arange(batch, dtype="int32"), num_points * 2)
    return ops.reshape(counter_uniform(counters, key, stream), (batch, num_points, 2))


def draw_candidates(slots, num_points: int, oversample_ratio: float,
                    importance_sample_ratio: float, key, stream: int = 0):
    """The two uniform draws of importance sampling for the masks numbered `slots`.

    Each mask's numbers depend only on (key, stream, slot), so the masks can be drawn for in any
    groups: the candidates come from `stream`, the extra random points from `stream + 1`.

    Args:
        slots: [S] int mask numbers (>= 0).

    Returns:
        (candidates [S, int(P * oversample_ratio), 2], random [S, P - int(P * ratio), 2]).
    """
    num_candidates, _, num_random = point_counts(num_points, oversample_ratio,
                                                 importance_sample_ratio)
    count = slots.shape[0]
    candidates = counter_uniform(_counters(slots, num_candidates * 2), key, stream)
    random_points = counter_uniform(_counters(slots, num_random * 2), key, stream + 1)
    return (ops.reshape(candidates, (count, num_candidates, 2)),
            ops.reshape(random_points, (count, num_random, 2)))


def smallest_k(values, k: int):
    """The indices of the `k` smallest of each row of non-negative `values`, in index order.

    The set `ops.top_k(-values, k)` picks (ties go to the lower index), found without sorting:
    the bit patterns of non-negative float32 numbers are ordered as the numbers, so a bisection
    over the int32 patterns finds each row's k-th smallest in 31 counting passes, and a scatter
    writes the chosen indices out in order. On a CPU under XLA, where top-k is a full sort, this
    takes a quarter of the time (20 rows of 37632, k = 9408: 11 ms against 47 ms).

    Args:
        values: [M, C] float32, >= 0 (NaN ranks above +inf).
        k: 0 < k <= C.

    Returns:
        [M, k] int32, increasing along each row.
    """
    num_rows, num_columns = values.shape
    bits = ops.view(ops.cast(values, "float32"), "int32")  # [M, C], in [0, 2^31)

    def bisect(_, bounds):
        low, high = bounds  # the k-th smallest pattern lies in [low, high]
        middle = low + (high - low) // 2
        count = ops.sum(ops.cast(bits <= middle, "int32"), axis=1, keepdims=True)
        enough = count >= k
        return ops.where(enough, low, middle + 1), ops.where(enough, middle, high)

    bounds = (ops.zeros((num_rows, 1), "int32"), ops.full((num_rows, 1), 2**31 - 1, "int32"))
    kth, _ = ops.fori_loop(0, 31, bisect, bounds)  # [M, 1]
    below = bits < kth
    tied = bits == kth
    room = k - ops.sum(ops.cast(below, "int32"), axis=1, keepdims=True)
    chosen = below | (tied & (ops.cumsum(ops.cast(tied, "int32"), axis=1) <= room))  # k per row
    # Row m's chosen columns go to m * k + 0 .. k - 1 in column order; the others to a spare slot.
    rank = ops.cumsum(ops.cast(chosen, "int32"), axis=1) - 1
    start = ops.arange(num_rows, dtype="int32")[:, None] * k
    slot = ops.where(chosen, start + rank, num_rows * k)
    column = ops.broadcast_to(ops.arange(num_columns, dtype="int32")[None, :], bits.shape)
    index = ops.scatter(ops.reshape(slot, (-1, 1)), ops.reshape(column, (-1,)),
                        (num_rows * k + 1,))
    return ops.reshape(index[:num_rows * k], (num_rows, k))


def select_uncertain_points(logits, candidates, random_points, num_importance: int):
    """PointRend's selection from given draws: the most uncertain candidates, then random points.

    Args:
        logits: [M, 1, h, w] mask logits (gradients are stopped).
        candidates: [M, C, 2] candidate coordinates.
        random_points: [M, R, 2] extra uniform coordinates (R may be 0).
        num_importance: k, how many candidates to keep (k <= C).

    Returns:
        (coords [M, k + R, 2], index [M, k] int32): the chosen candidates in candidate order
        followed by the random points, and their indices. The original takes them in top-k order
        (most uncertain first); the losses average over the points, so only the set matters.
    """
    logits = ops.stop_gradient(logits)
    candidates = ops.cast(candidates, "float32")
    num_masks = candidates.shape[0]
    if num_importance > 0:
        # Uncertainty is -|logit|: the most uncertain are the smallest |logit|.
        index = smallest_k(ops.abs(point_sample(logits, candidates)[:, 0, :]), num_importance)
        chosen = ops.take_along_axis(candidates, index[:, :, None], axis=1)  # [M, k, 2]
    else:
        index = ops.zeros((num_masks, 0), "int32")
        chosen = candidates[:, :0]
    coords = ops.concatenate([chosen, ops.cast(random_points, "float32")], axis=1)
    return ops.stop_gradient(coords), index


def select_points_of_pairs(logits, pair_valid, draw, num_points: int, num_importance: int,
                           chunk: int = 32):
    """Importance-sampled points for the valid masks only, `chunk` masks at a time.

    The valid masks are moved to the front and a loop of ceil(valid / chunk) rounds (a dynamic
    trip count, so padded target slots cost nothing) draws their candidates, samples the logits
    there and keeps the most uncertain; the selection is not differentiated.

    Args:
        logits: [M, 1, h, w] mask logits.
        pair_valid: [M] bool, the masks that need points.
        draw: ``draw(slots) -> (candidates [S, C, 2], random [S, R, 2])`` for int32 slots [S].
        num_points: P = k + R.
        num_importance: k, as for `select_uncertain_points`.

    Returns:
        [M, P, 2] coordinates; the rows of invalid masks are unspecified (finite).
    """
    logits = ops.stop_gradient(ops.cast(logits, "float32"))
    num_masks = logits.shape[0]
    # A round ranks `chunk` masks whether or not they are all valid (the top-k over the
    # candidates is most of the cost): never more rows than there are masks.
    chunk = max(1, min(chunk, num_masks))
    num_rounds = -(-num_masks // chunk)
    padded = num_rounds * chunk
    position = ops.arange(num_masks, dtype="int32")
    # Valid masks first, each group in slot order (distinct keys: no reliance on a stable sort).
    order = ops.cast(ops.argsort(ops.where(pair_valid, position, position + num_masks)), "int32")
    order = ops.concatenate([order, ops.zeros((padded - num_masks,), "int32")])
    rounds = (ops.sum(ops.cast(pair_valid, "int32")) + chunk - 1) // chunk

    def step(i, buffer):
        slots = ops.slice(order, [i * chunk], [chunk])
        candidates, random_points = draw(slots)
        coords, _ = select_uncertain_points(ops.take(logits, slots, axis=0), candidates,
                                            random_points, num_importance)
        return i + 1, ops.slice_update(buffer, [i * chunk, 0, 0], coords)

    buffer = ops.zeros((padded, num_points, 2), "float32")
    _, buffer = ops.while_loop(lambda i, _: i < rounds, step,
                               (ops.convert_to_tensor(0, "int32"), buffer))
    inverse = ops.cast(ops.argsort(order[:num_masks]), "int32")  # slot -> row of the buffer
    return ops.stop_gradient(ops.take(buffer, inverse, axis=0))
