"""Point sampling for the mask losses and matching costs (Mask2Former / PointRend), in `keras.ops`.

Instead of upsampling the stride-4 mask logits to the target size, both the logits and the
full-resolution targets are read at P points given in normalised (x, y) coordinates, each map in
its own frame. This reproduces detectron2's PointRend helpers as Mask2Former uses them:

* `point_sample`: bilinear interpolation with PyTorch `grid_sample` semantics
  (`align_corners=False`, zero padding) at ``grid = 2 * coords - 1``, written with gathers so that
  it compiles with XLA on TensorFlow and JAX;
* `select_uncertain_points`: PointRend's importance sampling. Of ``int(P * oversample_ratio)``
  uniform candidates keep the ``int(P * importance_sample_ratio)`` most uncertain ones
  (uncertainty -|logit|, top-k order), then append uniform random points up to P;
* `uniform_points`: the matcher's points, one set per image shared by all queries and targets.

Every random draw is a separate function (`uniform_points`, `draw_candidates`), and the
selection takes the drawn coordinates as arguments, so tests can feed the original's points.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

__all__ = [
    "draw_candidates",
    "point_counts",
    "point_sample",
    "select_uncertain_points",
    "uncertain_point_coords",
    "uniform_points",
]


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
    if maps.dtype == "bool":
        maps = ops.cast(maps, "uint8")
    n, c, h, w = maps.shape
    num_points = coords.shape[1]
    coords = ops.cast(coords, "float32")
    # grid_sample's unnormalisation of grid = 2 * coords - 1, written as PyTorch computes it.
    grid = 2.0 * coords - 1.0
    x = ((grid[..., 0] + 1.0) * w - 1.0) / 2.0  # [N, P]
    y = ((grid[..., 1] + 1.0) * h - 1.0) / 2.0
    x0 = ops.floor(x)
    y0 = ops.floor(y)
    x1 = x0 + 1.0
    y1 = y0 + 1.0
    flat = ops.reshape(maps, (n, c, h * w))  # [N, C, HW]

    def corner(xi, yi, weight):
        inside = (xi >= 0.0) & (xi <= w - 1.0) & (yi >= 0.0) & (yi <= h - 1.0)
        index = (ops.cast(ops.clip(yi, 0.0, h - 1.0), "int32") * w
                 + ops.cast(ops.clip(xi, 0.0, w - 1.0), "int32"))  # [N, P]
        index = ops.broadcast_to(index[:, None, :], (n, c, num_points))
        values = ops.cast(ops.take_along_axis(flat, index, axis=2), "float32")  # [N, C, P]
        return values * ops.where(inside, weight, 0.0)[:, None, :]

    # The four neighbours in grid_sample's order: north-west, north-east, south-west, south-east.
    out = corner(x0, y0, (x1 - x) * (y1 - y))
    out = out + corner(x1, y0, (x - x0) * (y1 - y))
    out = out + corner(x0, y1, (x1 - x) * (y - y0))
    out = out + corner(x1, y1, (x - x0) * (y - y0))
    return out


def point_counts(num_points: int, oversample_ratio: float,
                 importance_sample_ratio: float) -> tuple[int, int, int]:
    """(candidates, importance points, random points) per mask; both products truncate."""
    num_candidates = int(num_points * oversample_ratio)
    num_importance = int(importance_sample_ratio * num_points)
    return num_candidates, num_importance, num_points - num_importance


def uniform_points(batch: int, num_points: int, seed: Any = None):
    """[batch, num_points, 2] uniform (x, y) in [0, 1): the matcher's points, one set per image.

    `seed`: an int or a `keras.random.SeedGenerator` (as `keras.random.uniform` takes it).
    """
    return keras.random.uniform((batch, num_points, 2), seed=seed)


def draw_candidates(num_masks: int, num_points: int, oversample_ratio: float,
                    importance_sample_ratio: float, seed: Any = None):
    """The two uniform draws of importance sampling, in the original's order.

    `seed`: a `keras.random.SeedGenerator`, or an int (the second draw then uses `seed + 1`).

    Returns:
        (candidates [M, int(P * oversample_ratio), 2], random [M, P - int(P * ratio), 2]).
    """
    num_candidates, _, num_random = point_counts(num_points, oversample_ratio,
                                                 importance_sample_ratio)
    candidates = keras.random.uniform((num_masks, num_candidates, 2), seed=seed)
    # An int seed would give both draws the same numbers; a SeedGenerator advances by itself.
    second = seed + 1 if isinstance(seed, int) else seed
    random_points = keras.random.uniform((num_masks, num_random, 2), seed=second)
    return candidates, random_points


def select_uncertain_points(logits, candidates, random_points, num_importance: int):
    """PointRend's selection from given draws: the most uncertain candidates, then random points.

    Args:
        logits: [M, 1, h, w] mask logits (gradients are stopped).
        candidates: [M, C, 2] candidate coordinates.
        random_points: [M, R, 2] extra uniform coordinates (R may be 0).
        num_importance: k, how many candidates to keep (k <= C).

    Returns:
        (coords [M, k + R, 2], index [M, k] int32): the chosen candidates in top-k order (most
        uncertain, i.e. smallest |logit|, first) followed by the random points, and their indices.
    """
    logits = ops.stop_gradient(logits)
    candidates = ops.cast(candidates, "float32")
    num_masks = candidates.shape[0]
    if num_importance > 0:
        uncertainty = -ops.abs(point_sample(logits, candidates)[:, 0, :])  # [M, C]
        _, index = ops.top_k(uncertainty, num_importance, sorted=True)
        index = ops.cast(index, "int32")  # [M, k]
        chosen = ops.take_along_axis(candidates, index[:, :, None], axis=1)  # [M, k, 2]
    else:
        index = ops.zeros((num_masks, 0), "int32")
        chosen = candidates[:, :0]
    coords = ops.concatenate([chosen, ops.cast(random_points, "float32")], axis=1)
    return ops.stop_gradient(coords), index


def uncertain_point_coords(logits, num_points: int, oversample_ratio: float,
                           importance_sample_ratio: float, seed: Any = None):
    """`draw_candidates` then `select_uncertain_points`: [M, num_points, 2] coordinates."""
    candidates, random_points = draw_candidates(
        logits.shape[0], num_points, oversample_ratio, importance_sample_ratio, seed)
    _, num_importance, _ = point_counts(num_points, oversample_ratio, importance_sample_ratio)
    coords, _ = select_uncertain_points(logits, candidates, random_points, num_importance)
    return coords
