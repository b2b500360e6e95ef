"""Sine position encoding (REFERENCE.md section 3), normalised, as in DETR and MaskFormer."""

from __future__ import annotations

import math

from keras import ops


def sine_position_encoding(height, width, num_pos_feats: int, temperature: float = 10000.0,
                           scale: float = 2 * math.pi, eps: float = 1e-6):
    """Position encoding of an `height` x `width` grid.

    Coordinates count from 1 and are normalised by the last one (no padding mask is used):
    y_i = (i + 1) / (H + eps) * scale. Channels [0, F) encode y and [F, 2F) encode x; within
    each half channel k is sin (k even) or cos (k odd) of coord / temperature^(2 (k // 2) / F).

    Args:
        height, width: grid size (Python ints or scalar tensors).
        num_pos_feats: F, the features per axis (half the output channels).

    Returns:
        float32 [height, width, 2 * F].
    """
    y = ops.cast(ops.arange(1, height + 1), "float32")
    x = ops.cast(ops.arange(1, width + 1), "float32")
    y = y / (y[-1] + eps) * scale  # [H]
    x = x / (x[-1] + eps) * scale  # [W]
    k = ops.arange(num_pos_feats)
    dim_t = ops.power(ops.cast(temperature, "float32"),
                      ops.cast(2 * (k // 2), "float32") / num_pos_feats)  # [F]
    even = ops.equal(k % 2, 0)

    def encode(coord):  # [N] -> [N, F]
        angle = coord[:, None] / dim_t[None, :]
        return ops.where(even[None, :], ops.sin(angle), ops.cos(angle))

    pos_y = ops.broadcast_to(encode(y)[:, None, :], (height, width, num_pos_feats))
    pos_x = ops.broadcast_to(encode(x)[None, :, :], (height, width, num_pos_feats))
    return ops.concatenate([pos_y, pos_x], axis=-1)
