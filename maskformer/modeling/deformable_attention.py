"""Multi-scale deformable attention and the encoder-only transformer built on it (Mask2Former's
pixel decoder, after Deformable DETR).

Every query attends to a few sampled points per head and level instead of to every position:
`sampling_offsets(query)` moves the points, in pixels of the level they sample, away from the
query's reference point, `attention_weights(query)` weighs them (one softmax over all levels
and points of a head), and the values are read bilinearly at the points.

The sampling follows the original's portable fallback (`ms_deform_attn_core_pytorch`, which
calls `grid_sample` with align_corners=False and zero padding); its CUDA kernel has the same
convention. It is written with gathers so that it compiles under XLA and exports without a
grid-sample op. Spatial shapes are Python ints where known when the graph is traced, scalar
tensors otherwise (the same arithmetic either way).

Sequences are batch-major [B, S, C]; the levels are concatenated in the order given (the pixel
decoder passes the coarsest first), row-major (y * w + x) inside a level.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

# (h_l, w_l) per level: Python ints where the sizes are known when the graph is traced, scalar
# tensors where they are known only when it runs (TensorFlow graphs for any input size).
SpatialShapes = Sequence[tuple[Any, Any]]


def _checked_shapes(spatial_shapes: SpatialShapes) -> list[tuple[Any, Any]]:
    shapes = [(h if _is_tensor(h) else int(h), w if _is_tensor(w) else int(w))
              for h, w in spatial_shapes]
    if not shapes:
        raise ValueError("at least one level is needed")
    return shapes


def _is_tensor(value) -> bool:
    return not isinstance(value, int | np.integer)


def _static(shapes) -> bool:
    return not any(_is_tensor(v) for shape in shapes for v in shape)


def _column(values, dtype: str):
    """[L, 1] of per-level values: a NumPy constant when all are ints, else a tensor."""
    if not any(_is_tensor(v) for v in values):
        return np.array(values, dtype)[:, None]
    return ops.reshape(ops.cast(ops.stack([ops.convert_to_tensor(v) for v in values]), dtype),
                       (-1, 1))


def map_shape(x) -> tuple[Any, Any]:
    """(h, w) of a [N, h, w, C] map: ints where static, scalar tensors where not."""
    return tuple(x.shape[i] if x.shape[i] is not None else ops.shape(x)[i] for i in (1, 2))


def level_start_index(spatial_shapes: SpatialShapes) -> list:
    """Offsets of the levels in the flattened sequence: [0, h0 * w0, h0 * w0 + h1 * w1, ...]."""
    starts, total = [], 0
    for h, w in _checked_shapes(spatial_shapes):
        starts.append(total)
        total = total + h * w
    return starts


def ms_deform_attn_core(value, spatial_shapes: SpatialShapes, sampling_locations,
                        attention_weights):
    """Bilinear samples of the values at the sampling locations, weighted and summed.

    A normalised point (x, y) of level l lies at pixel (x * w_l - 0.5, y * h_l - 0.5), pixel
    centres at integers (`grid_sample`, align_corners=False). Each of its four neighbours adds
    (1 - |dx|)(1 - |dy|) times its value if it lies inside the map and nothing otherwise, so a
    point at exactly 0 gets half of the edge pixel and a point more than a pixel outside gets 0.

    Args:
        value: [N, S, M, D], S = sum of h_l * w_l, the levels concatenated in order.
        spatial_shapes: (h_l, w_l) of the L levels (ints or scalar tensors).
        sampling_locations: [N, Lq, M, L, P, 2] normalised (x, y).
        attention_weights: [N, Lq, M, L, P].

    Returns:
        float32 [N, Lq, M * D]: for each head, sum over (l, p) of weight * sample; the heads
        concatenated. Computed in float32 whatever the inputs' dtype (pixel coordinates of
        large maps need it).
    """
    shapes = _checked_shapes(spatial_shapes)
    n, total, heads, depth = value.shape
    num_queries = sampling_locations.shape[1]
    num_levels, num_points = sampling_locations.shape[3], sampling_locations.shape[4]
    if num_levels != len(shapes):
        raise ValueError(f"{num_levels} levels sampled, {len(shapes)} spatial shapes given")
    levels_total = sum(h * w for h, w in shapes)
    if total is not None and _static(shapes) and total != levels_total:
        raise ValueError(f"value has {total} positions, the spatial shapes {shapes} give "
                         f"{levels_total}")
    total = levels_total
    n = n if n is not None else ops.shape(value)[0]
    num_queries = num_queries if num_queries is not None else ops.shape(sampling_locations)[1]

    # Per-level constants, broadcast against [..., L, P].
    heights = _column([h for h, _ in shapes], "float32")  # [L, 1]
    widths = _column([w for _, w in shapes], "float32")
    widths_int = _column([w for _, w in shapes], "int32")
    starts = _column(level_start_index(shapes), "int32")

    # [N, Lq, M, L, P, 2] -> [N, M, Lq, L, P]: one row of gathers per (batch, head).
    locations = ops.transpose(ops.cast(sampling_locations, "float32"), (0, 2, 1, 3, 4, 5))
    weights = ops.transpose(ops.cast(attention_weights, "float32"), (0, 2, 1, 3, 4))
    # grid_sample's unnormalisation of grid = 2 * loc - 1, evaluated as PyTorch does.
    grid = 2.0 * locations - 1.0
    x = ((grid[..., 0] + 1.0) * widths - 1.0) / 2.0  # [N, M, Lq, L, P] pixels
    y = ((grid[..., 1] + 1.0) * heights - 1.0) / 2.0
    x0 = ops.floor(x)
    y0 = ops.floor(y)

    # The values of each (batch, head) as rows of one flat [N * M * S, D] table.
    table = ops.reshape(ops.transpose(ops.cast(value, "float32"), (0, 2, 1, 3)), (-1, depth))
    base = ops.reshape(ops.arange(n * heads, dtype="int32") * total, (n, heads, 1, 1, 1))
    base = base + starts  # [N, M, 1, L, 1]

    out = None
    for dx, dy in ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0)):
        xi, yi = x0 + dx, y0 + dy
        # bilinear weight of this neighbour: 1 - |x - xi| along each axis
        corner = (1.0 - ops.abs(x - xi)) * (1.0 - ops.abs(y - yi))
        inside = (xi >= 0.0) & (xi <= widths - 1.0) & (yi >= 0.0) & (yi <= heights - 1.0)
        corner = ops.where(inside, corner * weights, 0.0)  # [N, M, Lq, L, P]
        # clipped into the level so that every index is valid; its weight is 0 there
        col = ops.cast(ops.clip(xi, 0.0, widths - 1.0), "int32")
        row = ops.cast(ops.clip(yi, 0.0, heights - 1.0), "int32")
        index = base + row * widths_int + col  # [N, M, Lq, L, P]
        index = ops.reshape(index, (n, heads, num_queries, num_levels * num_points))
        gathered = ops.take(table, index, axis=0)  # [N, M, Lq, L * P, D]
        corner = ops.reshape(corner, (n, heads, num_queries, num_levels * num_points))
        term = ops.einsum("nmqk,nmqkd->nmqd", corner, gathered)
        out = term if out is None else out + term
    out = ops.transpose(out, (0, 2, 1, 3))  # [N, Lq, M, D]
    return ops.reshape(out, (n, num_queries, heads * depth))


def reference_points(spatial_shapes: SpatialShapes) -> np.ndarray:
    """Every token's reference point: the centre of its pixel, ((x + 0.5) / w, (y + 0.5) / h).

    The original's `get_reference_points` with every valid ratio 1 (there is no padding mask):
    the same point is used on every level.

    Returns:
        float32 [S, 2] (x, y), the levels concatenated in order: a NumPy array for static
        shapes, a tensor otherwise.
    """
    shapes = _checked_shapes(spatial_shapes)
    if not _static(shapes):
        return _reference_points_tensor(shapes)
    points = []
    for h, w in shapes:
        ref_y, ref_x = np.meshgrid(np.arange(h, dtype=np.float32) + np.float32(0.5),
                                   np.arange(w, dtype=np.float32) + np.float32(0.5),
                                   indexing="ij")
        points.append(np.stack([ref_x.reshape(-1) / np.float32(w),
                                ref_y.reshape(-1) / np.float32(h)], axis=-1))
    return np.concatenate(points, axis=0).astype(np.float32)


def _reference_points_tensor(shapes):
    """`reference_points` for sizes known only at run time, with the same float32 arithmetic."""
    points = []
    for h, w in shapes:
        h_f, w_f = ops.cast(h, "float32"), ops.cast(w, "float32")
        ref_y = (ops.cast(ops.arange(h), "float32") + 0.5) / h_f  # [h]
        ref_x = (ops.cast(ops.arange(w), "float32") + 0.5) / w_f  # [w]
        ref_x = ops.broadcast_to(ref_x[None, :], (h, w))
        ref_y = ops.broadcast_to(ref_y[:, None], (h, w))
        points.append(ops.stack([ops.reshape(ref_x, (-1,)), ops.reshape(ref_y, (-1,))], axis=-1))
    return ops.concatenate(points, axis=0)


def _offset_bias_grid(num_heads: int, num_levels: int, num_points: int) -> np.ndarray:
    """The original's initial offsets: head m points along angle 2 pi m / M, scaled so that
    the larger coordinate is 1, and point p lies p + 1 times as far; the same for every level.

    Returns float32 [M * L * P * 2], index ((m * L + l) * P + p) * 2 + j, j = 0 for x.
    """
    thetas = np.arange(num_heads, dtype=np.float32) * np.float32(2.0 * math.pi / num_heads)
    grid = np.stack([np.cos(thetas), np.sin(thetas)], axis=-1)  # [M, 2]
    grid = grid / np.max(np.abs(grid), axis=-1, keepdims=True)
    grid = np.tile(grid[:, None, None, :], (1, num_levels, num_points, 1))  # [M, L, P, 2]
    grid = grid * np.arange(1, num_points + 1, dtype=np.float32)[None, None, :, None]
    return grid.reshape(-1).astype(np.float32)


class MSDeformAttn(keras.layers.Layer):
    """Multi-scale deformable attention (`MSDeformAttn` of the original).

    Weights (the original's names and initialisation): `sampling_offsets` (kernel 0, bias the
    `_offset_bias_grid`), `attention_weights` (0), `value_proj` and `output_proj` (Glorot
    uniform, bias 0). Dense output index of `sampling_offsets` = ((m * L + l) * P + p) * 2 + j,
    of `attention_weights` = (m * L + l) * P + p, as the original's views order them.

    Args:
        dim: model width C; heads are contiguous chunks of C / num_heads channels.
        num_levels: L.
        num_heads: M.
        num_points: P, sampling points per head and level.
    """

    def __init__(self, dim: int = 256, num_levels: int = 4, num_heads: int = 8,
                 num_points: int = 4, **kwargs):
        super().__init__(**kwargs)
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_levels = num_levels
        self.num_heads = num_heads
        self.num_points = num_points
        grid = _offset_bias_grid(num_heads, num_levels, num_points)
        dtype = self.dtype_policy
        self.sampling_offsets = keras.layers.Dense(
            num_heads * num_levels * num_points * 2, kernel_initializer="zeros",
            bias_initializer=keras.initializers.Constant(grid), name="sampling_offsets",
            dtype=dtype)
        self.attention_weights = keras.layers.Dense(
            num_heads * num_levels * num_points, kernel_initializer="zeros",
            bias_initializer="zeros", name="attention_weights", dtype=dtype)
        self.value_proj = keras.layers.Dense(dim, name="value_proj", dtype=dtype)
        self.output_proj = keras.layers.Dense(dim, name="output_proj", dtype=dtype)

    def build(self, query_shape, reference_points_shape=None, value_shape=None):
        for layer in (self.sampling_offsets, self.attention_weights, self.value_proj,
                      self.output_proj):
            layer.build((None, None, self.dim))

    def call(self, query, reference_points, value_input, spatial_shapes: SpatialShapes,
             return_intermediates: bool = False):
        """Args:
            query: [N, Lq, C] (the encoder passes src + pos).
            reference_points: [N or 1, Lq, L, 2] normalised (x, y).
            value_input: [N, S, C], the L levels flattened and concatenated.
            spatial_shapes: (h_l, w_l) of the levels (ints or scalar tensors).
            return_intermediates: also return a dict of `value` [N, S, M, C/M],
                `sampling_locations` [N, Lq, M, L, P, 2], `attention_weights` [N, Lq, M, L, P]
                (after the softmax) and `core_output` [N, Lq, C] (before `output_proj`).

        Returns:
            [N, Lq, C] (and the dict).
        """
        shapes = _checked_shapes(spatial_shapes)
        if len(shapes) != self.num_levels:
            raise ValueError(f"{len(shapes)} spatial shapes for {self.num_levels} levels")
        heads, levels, points = self.num_heads, self.num_levels, self.num_points
        batch, num_queries = ops.shape(query)[0], ops.shape(query)[1]
        value = self.value_proj(value_input)
        value = ops.reshape(value, (batch, -1, heads, self.dim // heads))  # [N, S, M, D]
        # locations and weights in float32 (the original turns autocast off here)
        offsets = ops.cast(self.sampling_offsets(query), "float32")
        offsets = ops.reshape(offsets, (batch, num_queries, heads, levels, points * 2))
        weights = ops.cast(self.attention_weights(query), "float32")
        # one softmax over all L * P points of a head
        weights = ops.softmax(ops.reshape(weights, (batch, num_queries, heads, levels * points)),
                              axis=-1)
        weights = ops.reshape(weights, (batch, num_queries, heads, levels, points))
        # offsets are in pixels of the sampled level: x divided by its width, y by its height
        # (x, y) repeated for every point: [..., L, P * 2] keeps the broadcast at rank 5,
        # which TensorFlow's eager kernels need
        normalizer = _column([v for h, w in shapes for v in (w, h)], "float32")
        normalizer = ops.tile(ops.reshape(normalizer, (levels, 2)), (1, points))  # [L, 2P]
        ref = ops.tile(ops.cast(reference_points, "float32"), (1, 1, 1, points))  # [N, Lq, L, 2P]
        locations = ref[:, :, None] + offsets / normalizer  # [N, Lq, M, L, P * 2]
        locations = ops.reshape(locations, (batch, num_queries, heads, levels, points, 2))
        core = ms_deform_attn_core(value, shapes, locations, weights)
        output = self.output_proj(ops.cast(core, value.dtype))
        if return_intermediates:
            return output, {"value": value, "sampling_locations": locations,
                            "attention_weights": weights, "core_output": core}
        return output

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "num_levels": self.num_levels,
                "num_heads": self.num_heads, "num_points": self.num_points}


class MSDeformEncoderLayer(keras.layers.Layer):
    """Post-norm encoder layer: src = LN1(src + MSDA(src + pos, src)); src = LN2(src + FFN(src)).

    Dropout sits where the original has it: after the attention, on the FFN activation and
    after the FFN. Weights as the original names them: self_attn, norm1, linear1, linear2, norm2.
    """

    def __init__(self, dim: int = 256, dim_feedforward: int = 1024, dropout: float = 0.1,
                 num_levels: int = 4, num_heads: int = 8, num_points: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim
        self.dim_feedforward = dim_feedforward
        self.dropout = dropout
        self.num_levels = num_levels
        self.num_heads = num_heads
        self.num_points = num_points
        dtype = self.dtype_policy
        self.self_attn = MSDeformAttn(dim, num_levels, num_heads, num_points, name="self_attn",
                                      dtype=dtype)
        self.norm1 = keras.layers.LayerNormalization(epsilon=1e-5, name="norm1", dtype=dtype)
        self.linear1 = keras.layers.Dense(dim_feedforward, name="linear1", dtype=dtype)
        self.linear2 = keras.layers.Dense(dim, name="linear2", dtype=dtype)
        self.norm2 = keras.layers.LayerNormalization(epsilon=1e-5, name="norm2", dtype=dtype)
        self.dropout1 = keras.layers.Dropout(dropout)
        self.dropout2 = keras.layers.Dropout(dropout)
        self.dropout3 = keras.layers.Dropout(dropout)

    def build(self, src_shape, pos_shape=None, reference_points_shape=None):
        self.self_attn.build((None, None, self.dim))
        self.linear1.build((None, None, self.dim))
        self.linear2.build((None, None, self.dim_feedforward))
        self.norm1.build((None, None, self.dim))
        self.norm2.build((None, None, self.dim))

    def call(self, src, pos, reference_points, spatial_shapes: SpatialShapes, training=None,
             return_intermediates: bool = False):
        """Args:
            src, pos: [N, S, C]; reference_points: [N or 1, S, L, 2].

        Returns:
            [N, S, C] (and MSDeformAttn's intermediates when `return_intermediates`).
        """
        attn = self.self_attn(src + pos, reference_points, src, spatial_shapes=spatial_shapes,
                              return_intermediates=return_intermediates)
        if return_intermediates:
            attn, intermediates = attn
        src = self.norm1(src + self.dropout1(attn, training=training))
        ffn = self.linear2(self.dropout2(ops.relu(self.linear1(src)), training=training))
        src = self.norm2(src + self.dropout3(ffn, training=training))
        return (src, intermediates) if return_intermediates else src

    def get_config(self):
        return {**super().get_config(), "dim": self.dim,
                "dim_feedforward": self.dim_feedforward, "dropout": self.dropout,
                "num_levels": self.num_levels, "num_heads": self.num_heads,
                "num_points": self.num_points}


class MSDeformEncoder(keras.layers.Layer):
    """Encoder-only deformable transformer (`MSDeformAttnTransformerEncoderOnly`).

    The levels are flattened and concatenated in the order given; each gets its learned
    `level_embed` added to its position encoding (the queries' side only: the values are the
    plain sources). There is no padding mask, so every valid ratio is 1, and no final norm.

    Args:
        dim, num_heads, num_layers, dim_feedforward, dropout: the encoder's sizes.
        num_levels: L; num_points: P per head and level.
    """

    def __init__(self, dim: int = 256, num_heads: int = 8, num_layers: int = 6,
                 dim_feedforward: int = 1024, dropout: float = 0.1, num_levels: int = 4,
                 num_points: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim
        self.num_heads = num_heads
        self.num_layers = num_layers
        self.dim_feedforward = dim_feedforward
        self.dropout = dropout
        self.num_levels = num_levels
        self.num_points = num_points
        self.encoder_layers = [
            MSDeformEncoderLayer(dim, dim_feedforward, dropout, num_levels, num_heads,
                                 num_points, name=f"layers_{i}", dtype=self.dtype_policy)
            for i in range(num_layers)
        ]

    def build(self, srcs_shape=None, pos_shape=None):
        self.level_embed = self.add_weight(
            name="level_embed", shape=(self.num_levels, self.dim),
            initializer=keras.initializers.RandomNormal(stddev=1.0))
        for layer in self.encoder_layers:
            layer.build((None, None, self.dim))

    def call(self, srcs, pos_embeds, training=None, return_intermediates: bool = False):
        """Args:
            srcs: L maps [N, h_l, w_l, C].
            pos_embeds: L position encodings [N or 1, h_l, w_l, C] (without level embedding).
            return_intermediates: also return a dict with `spatial_shapes`, `pos` [N or 1, S, C],
                `reference_points` [S, 2] and per layer the attention's intermediates.

        Returns:
            memory [N, S, C], S = sum of h_l * w_l (and the dict).
        """
        if len(srcs) != self.num_levels or len(pos_embeds) != self.num_levels:
            raise ValueError(f"{len(srcs)} sources, {len(pos_embeds)} encodings for "
                             f"{self.num_levels} levels")
        shapes = [map_shape(x) for x in srcs]
        flat_src, flat_pos = [], []
        for level, (x, pos) in enumerate(zip(srcs, pos_embeds, strict=True)):
            flat_src.append(ops.reshape(x, (ops.shape(x)[0], -1, self.dim)))  # [N, h * w, C]
            pos = ops.reshape(ops.cast(pos, x.dtype), (ops.shape(pos)[0], -1, self.dim))
            flat_pos.append(pos + ops.cast(self.level_embed[level], x.dtype))
        src = ops.concatenate(flat_src, axis=1)  # [N, S, C]
        pos = ops.concatenate(flat_pos, axis=1)
        points = reference_points(shapes)  # [S, 2]
        # the same point on every level: [1, S, L, 2]
        ref = ops.tile(ops.convert_to_tensor(points, "float32")[None, :, None, :],
                       (1, 1, len(shapes), 1))
        layers = []
        for layer in self.encoder_layers:
            src = layer(src, pos, ref, spatial_shapes=shapes, training=training,
                        return_intermediates=return_intermediates)
            if return_intermediates:
                src, intermediates = src
                layers.append({**intermediates, "output": src})
        if return_intermediates:
            return src, {"spatial_shapes": shapes, "pos": pos, "reference_points": points,
                         "layers": layers}
        return src

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "num_heads": self.num_heads,
                "num_layers": self.num_layers, "dim_feedforward": self.dim_feedforward,
                "dropout": self.dropout, "num_levels": self.num_levels,
                "num_points": self.num_points}
