"""Resizing with PyTorch's `F.interpolate` semantics, which the original's objective uses.

* `nearest_resize`: mode "nearest" (the legacy rule), source index = floor(dst * (in / out))
  computed in float32 as PyTorch does. TF's and JAX's nearest use half-pixel centres instead.
* `bilinear_resize`: mode "bilinear", align_corners=False (half-pixel centres, source coordinate
  clamped at 0), without antialiasing also when downsampling.
"""

from __future__ import annotations

import numpy as np
from keras import ops

__all__ = ["bilinear_resize", "nearest_indices", "nearest_resize"]


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


def bilinear_resize(x, size: tuple[int, int]):
    """Resizes [B, C, h, w] to [B, C, H, W] like `F.interpolate(bilinear, align_corners=False)`.

    `keras.ops.image.resize` with antialias off computes exactly this on both backends (checked
    against PyTorch, up- and downsampling, in tests/objective/test_resize.py).
    """
    batch, channels, in_h, in_w = x.shape
    out_h, out_w = size
    if (in_h, in_w) == (out_h, out_w):
        return x
    images = ops.reshape(x, (-1, in_h, in_w, 1))  # channels-last, one channel per map
    images = ops.image.resize(
        images, (out_h, out_w), interpolation="bilinear", antialias=False,
        data_format="channels_last",
    )
    return ops.reshape(images, (batch, channels, out_h, out_w))
