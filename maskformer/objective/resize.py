"""Resizing with PyTorch's `F.interpolate` semantics, which the original's objective uses.

* `nearest_resize`: mode "nearest" (the legacy rule), source index = floor(dst * (in / out))
  computed in float32 as PyTorch does. TF's and JAX's nearest use half-pixel centres instead.
* `bilinear_resize`: mode "bilinear", align_corners=False (half-pixel centres, source coordinate
  clamped at 0), without antialiasing also when downsampling.
"""

from __future__ import annotations

import numpy as np
from keras import ops

__all__ = ["bilinear_matrix", "bilinear_resize", "bilinear_weights", "nearest_indices",
           "nearest_resize"]


def nearest_indices(in_size: int, out_size: int) -> np.ndarray:
    """Source indices of PyTorch's nearest interpolation along one axis: [out_size] int32."""
    dst = np.arange(out_size)
    if out_size == in_size:
        return dst.astype(np.int32)
    if out_size == 2 * in_size:  # PyTorch's exact shortcut
        return (dst >> 1).astype(np.int32)
    scale = np.float32(in_size) / np.float32(out_size)
    src = np.floor(dst.astype(np.float32) * scale).astype(np.int64)
    return np.minimum(src, in_size - 1).astype(np.int32)


def nearest_resize(x, size: tuple[int, int]):
    """Resizes the last two axes of `x` [..., H, W] to `size` (h, w) with PyTorch's nearest rule."""
    in_h, in_w = x.shape[-2], x.shape[-1]
    out_h, out_w = size
    if (in_h, in_w) == (out_h, out_w):
        return x
    x = ops.take(x, nearest_indices(in_h, out_h), axis=-2)
    return ops.take(x, nearest_indices(in_w, out_w), axis=-1)


def bilinear_weights(in_size: int, out_size: int) -> tuple[np.ndarray, ...]:
    """PyTorch's bilinear (align_corners=False) taps along one axis.

    Source coordinate = scale * (dst + 0.5) - 0.5 with scale = in / out in float32, clamped at 0.
    PyTorch's compiled kernel evaluates it as one fused multiply-add (a single float32 rounding),
    which float64 reproduces exactly here: the product of a float32 and dst + 0.5 is exact in
    float64. Computing it in two float32 steps (or in float64 from in / out) moves taps by an ulp
    of the coordinate, about 1e-5 relative at 200-pixel inputs.

    Returns:
        (index0, index1, weight0, weight1), each [out_size]: out = x[i0] * w0 + x[i1] * w1.
    """
    scale = np.float32(in_size) / np.float32(out_size)
    dst = np.arange(out_size, dtype=np.float64)
    src = (np.float64(scale) * (dst + 0.5) - 0.5).astype(np.float32)
    src = np.maximum(src, np.float32(0.0))
    index0 = src.astype(np.int64)
    weight1 = np.clip(src - index0.astype(np.float32), 0.0, 1.0).astype(np.float32)
    weight0 = (np.float32(1.0) - weight1).astype(np.float32)
    index1 = index0 + (index0 < in_size - 1)
    return index0.astype(np.int32), index1.astype(np.int32), weight0, weight1


def bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """PyTorch's bilinear taps along one axis as an [out_size, in_size] float32 matrix (two
    non-zero weights per row): out = matrix @ x."""
    index0, index1, weight0, weight1 = bilinear_weights(in_size, out_size)
    matrix = np.zeros((out_size, in_size), np.float32)
    rows = np.arange(out_size)
    np.add.at(matrix, (rows, index0), weight0)
    np.add.at(matrix, (rows, index1), weight1)
    return matrix


def bilinear_resize(x, size: tuple[int, int]):
    """Resizes [..., h, w] to [..., H, W] like `F.interpolate(bilinear, align_corners=False)`.

    PyTorch's taps applied as two matrix products (width first, then height, as its CPU kernel
    sums): x @ Mw^T, then Mh @ x. Products with the exact zeros of the matrices add nothing, so
    each output is PyTorch's two-tap sum, to the rounding of one fused multiply-add. Matrix
    products rather than gathers because their gradient is a matrix product too, where a
    gather's is a scatter-add: 1.7x faster forward and backward on a CPU under XLA at the
    criterion's sizes, and the form accelerators prefer. `keras.ops.image.resize` is not used:
    its source coordinates differ from PyTorch's in the last float32 bit (up to 1e-5 relative;
    tests/objective/test_resize.py shows it).
    """
    in_h, in_w = x.shape[-2], x.shape[-1]
    out_h, out_w = size
    if in_w != out_w:
        x = ops.matmul(x, ops.convert_to_tensor(bilinear_matrix(in_w, out_w).T, dtype=x.dtype))
    if in_h != out_h:
        x = ops.matmul(ops.convert_to_tensor(bilinear_matrix(in_h, out_h), dtype=x.dtype), x)
    return x
