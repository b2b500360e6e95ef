"""Resizing with PyTorch's `F.interpolate` rules, in `keras.ops`, for the model, the objective
and post-processing alike (REFERENCE.md section 12).

* Nearest (`nearest_indices`, `nearest_resize`): PyTorch's legacy "nearest" rule, source index
  floor(dst * (in / out)) with the scale computed in float32. TensorFlow's and JAX's nearest
  resizes use half-pixel centres instead and pick other pixels for non-integer ratios.
* Bilinear with align_corners=False, no antialiasing, also when shrinking:
  - `bilinear_resize`: PyTorch's taps, bit for bit, applied as two matrix products (static
    sizes). The objective resizes predicted masks with it.
  - `upsample_bilinear`: `keras.ops.image.resize`, one size for the whole batch (sizes may be
    unknown until run time). It places its taps by a different float32 evaluation of the same
    source coordinate, so it agrees with PyTorch to float32 rounding of the coordinate: measured
    at most 3e-7 of the maximum for the integer ratios post-processing uses (stride-4 masks to
    the padded input), 1.1e-6 for a non-integer one (25x33 to 97x131), where `bilinear_resize`
    stays at 1e-7 (tests/test_resize.py).
  - `crop_and_resize`: a different valid region and output size per image of a batch, each
    PyTorch's rule (post-processing back to the original sizes).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from keras import ops

# ---------------------------------------------------------------------------------------------
# Nearest
# ---------------------------------------------------------------------------------------------


def nearest_indices(in_size, out_size):
    """Source indices of PyTorch's nearest interpolation along one axis: [out_size] int32.

    NumPy constants for Python ints (shapes known when tracing), a tensor otherwise (sizes
    known only at run time); both compute floor(dst * scale) with the scale in float32.
    """
    if isinstance(in_size, int | np.integer) and isinstance(out_size, int | np.integer):
        dst = np.arange(out_size)
        if out_size == in_size:
            return dst.astype(np.int32)
        scale = np.float32(in_size) / np.float32(out_size)
        src = np.floor(dst.astype(np.float32) * scale).astype(np.int64)
        return np.minimum(src, in_size - 1).astype(np.int32)
    scale = ops.cast(in_size, "float32") / ops.cast(out_size, "float32")
    idx = ops.floor(ops.cast(ops.arange(out_size), "float32") * scale)
    return ops.minimum(ops.cast(idx, "int32"), ops.cast(in_size, "int32") - 1)


def nearest_resize(x, size: Sequence, axes: tuple[int, int] = (-2, -1)):
    """Resizes the two `axes` of `x` to `size` (height, width) with PyTorch's nearest rule.

    Args:
        x: a tensor, e.g. masks [B, N, H, W] (axes -2, -1) or features [B, H, W, C] (1, 2).
        size: (height, width), ints or scalar tensors.
    """
    for axis, out in zip(axes, size, strict=True):
        static = x.shape[axis]
        in_size = static if static is not None else ops.shape(x)[axis]
        if isinstance(in_size, int) and isinstance(out, int) and in_size == out:
            continue
        x = ops.take(x, nearest_indices(in_size, out), axis=axis)
    return x


# ---------------------------------------------------------------------------------------------
# Bilinear
# ---------------------------------------------------------------------------------------------


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


def bilinear_weights_tensor(in_size, out_size):
    """`bilinear_weights` for sizes known only when the graph runs (tensors), in `keras.ops`.

    The same float32 scale and float64 source coordinate, so the taps are bit-identical to
    `bilinear_weights`'s (tests/test_resize.py). Needs float64: the TensorFlow backend (JAX
    always has static sizes, and takes `bilinear_weights`).
    """
    in_size = ops.cast(in_size, "int32")
    scale = ops.cast(ops.cast(in_size, "float32") / ops.cast(out_size, "float32"), "float64")
    dst = ops.cast(ops.arange(out_size, dtype="int32"), "float64")
    src = ops.maximum(ops.cast(scale * (dst + 0.5) - 0.5, "float32"), 0.0)
    index0 = ops.cast(src, "int32")  # truncation: src >= 0
    weight1 = ops.clip(src - ops.cast(index0, "float32"), 0.0, 1.0)
    index1 = index0 + ops.cast(index0 < in_size - 1, "int32")
    return index0, index1, 1.0 - weight1, weight1


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
    criterion's sizes, and the form accelerators prefer. With a size known only at run time
    (TensorFlow graphs traced for any input size) the same taps are applied as gathers.
    """
    in_h, in_w = x.shape[-2], x.shape[-1]
    out_h, out_w = size
    if not _all_ints(in_h, in_w, out_h, out_w):
        return _bilinear_resize_dynamic(x, size)
    if in_w != out_w:
        x = ops.matmul(x, ops.convert_to_tensor(bilinear_matrix(in_w, out_w).T, dtype=x.dtype))
    if in_h != out_h:
        x = ops.matmul(ops.convert_to_tensor(bilinear_matrix(in_h, out_h), dtype=x.dtype), x)
    return x


def _all_ints(*values) -> bool:
    return all(isinstance(v, int | np.integer) for v in values)


def bilinear_resize_nhwc(x, size: tuple):
    """`bilinear_resize` of channels-last maps [B, h, w, C] to [B, *size, C], without moving the
    channels (matrix products over the spatial axes; gathers for sizes known at run time)."""
    in_h, in_w = x.shape[1], x.shape[2]
    out_h, out_w = size
    if not _all_ints(in_h, in_w, out_h, out_w):
        return _bilinear_resize_dynamic(x, size, axes=(1, 2))
    if in_w != out_w:
        matrix = ops.convert_to_tensor(bilinear_matrix(in_w, out_w), dtype=x.dtype)
        x = ops.einsum("vw,bhwc->bhvc", matrix, x)
    if in_h != out_h:
        matrix = ops.convert_to_tensor(bilinear_matrix(in_h, out_h), dtype=x.dtype)
        x = ops.einsum("uh,bhwc->buwc", matrix, x)
    return x


def _bilinear_resize_dynamic(x, size, axes: tuple[int, int] = (-2, -1)):
    """`bilinear_resize` for sizes known only when the graph runs (TensorFlow): the same taps
    (`bilinear_weights_tensor`), applied as gathers along each of the (height, width) `axes`,
    width first."""
    rank = len(x.shape)
    for axis, out in ((axes[1], size[1]), (axes[0], size[0])):
        in_size = x.shape[axis] if x.shape[axis] is not None else ops.shape(x)[axis]
        index0, index1, weight0, weight1 = bilinear_weights_tensor(in_size, out)
        trailing = rank - 1 - (axis % rank)  # axes after this one: broadcast the weights
        weight0 = ops.reshape(weight0, (-1,) + (1,) * trailing)
        weight1 = ops.reshape(weight1, (-1,) + (1,) * trailing)
        x = (ops.take(x, index0, axis=axis) * ops.cast(weight0, x.dtype)
             + ops.take(x, index1, axis=axis) * ops.cast(weight1, x.dtype))
    return x


def upsample_bilinear(x, size: Sequence[int]):
    """Bilinear resize of [B, C, h, w] to [B, C, *size] (align_corners=False, no antialiasing).

    One size for the whole batch, so the backend's resize kernel does it; sizes may be tensors.
    See the module docstring for how close it is to PyTorch's.
    """
    return ops.image.resize(
        ops.cast(x, "float32"), tuple(int(v) for v in size), interpolation="bilinear",
        antialias=False, data_format="channels_first",
    )


def _source_taps(in_sizes, out_sizes, out_len: int):
    """Bilinear taps along one axis, per image, following PyTorch's align_corners=False rule.

    Args:
        in_sizes: [B] int, number of valid input samples of each image along the axis.
        out_sizes: [B] int, number of output samples of each image (<= `out_len`).
        out_len: static length of the output canvas along the axis.

    Returns:
        i0, i1: [B, out_len] int32 source indices; w0, w1: [B, out_len] float32 weights
        (zero beyond each image's `out_sizes`, so the canvas outside the image is 0).
    """
    in_f = ops.cast(in_sizes, "float32")[:, None]  # [B, 1]
    out_f = ops.cast(out_sizes, "float32")[:, None]
    dst = ops.cast(ops.arange(out_len), "float32")[None, :]  # [1, L]
    # src = (dst + 0.5) * in / out - 0.5, clamped below at 0 (PyTorch's
    # area_pixel_compute_source_index for linear modes).
    scale = in_f / ops.maximum(out_f, 1.0)
    src = ops.maximum(scale * (dst + 0.5) - 0.5, 0.0)
    last = ops.cast(in_sizes, "int32")[:, None] - 1
    i0 = ops.minimum(ops.cast(ops.floor(src), "int32"), last)
    i1 = ops.minimum(i0 + 1, last)
    w1 = ops.clip(src - ops.cast(i0, "float32"), 0.0, 1.0)
    w0 = 1.0 - w1
    inside = ops.cast(dst < out_f, "float32")
    return i0, i1, w0 * inside, w1 * inside


def _interpolate_axis(x, i0, i1, w0, w1, axis: int):
    """Linear interpolation of `x` [B, C, A1, A2] along `axis` (2 or 3) with per-image taps."""
    shape = list(ops.shape(x))
    length = ops.shape(i0)[1]
    if axis == 2:
        index_shape = (shape[0], 1, length, 1)
        target = (shape[0], shape[1], length, shape[3])
    else:
        index_shape = (shape[0], 1, 1, length)
        target = (shape[0], shape[1], shape[2], length)

    def gather(idx):
        idx = ops.broadcast_to(ops.reshape(idx, index_shape), target)
        return ops.take_along_axis(x, idx, axis=axis)

    w0 = ops.reshape(w0, index_shape)
    w1 = ops.reshape(w1, index_shape)
    return w0 * gather(i0) + w1 * gather(i1)


def crop_and_resize(x, valid_sizes, output_sizes, output_shape: Sequence[int]):
    """Crops each image's valid region and resizes it bilinearly to its output size.

    Equivalent, per image b, to ``F.interpolate(x[b, :, :vh, :vw], size=(oh, ow), mode="bilinear",
    align_corners=False)`` (no antialiasing), written at the top-left of a zero canvas.

    Args:
        x: [B, C, H, W] float maps (mask logits or class scores) at the padded input size.
        valid_sizes: [B, 2] int (height, width) of each image's valid region in `x`.
        output_sizes: [B, 2] int (height, width) to resize each valid region to.
        output_shape: static (Ho, Wo) of the canvas, at least every `output_sizes`.

    Returns:
        [B, C, Ho, Wo] float32; zero outside each image's `output_sizes`.
    """
    x = ops.cast(x, "float32")
    valid_sizes = ops.convert_to_tensor(valid_sizes, "int32")
    output_sizes = ops.convert_to_tensor(output_sizes, "int32")
    out_h, out_w = int(output_shape[0]), int(output_shape[1])
    taps_y = _source_taps(valid_sizes[:, 0], output_sizes[:, 0], out_h)
    x = _interpolate_axis(x, *taps_y, axis=2)  # [B, C, Ho, W]
    taps_x = _source_taps(valid_sizes[:, 1], output_sizes[:, 1], out_w)
    return _interpolate_axis(x, *taps_x, axis=3)  # [B, C, Ho, Wo]
