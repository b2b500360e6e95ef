"""Swin Transformer backbone, as the original MaskFormer's `SwinTransformer` (`D2SwinTransformer`).

Behaviour pinned by the original's reference vectors (testdata README, section E) and by
Hugging Face's `MaskFormerSwinBackbone`:

- patch embedding: zero padding on the right and bottom only, to a multiple of the patch size,
  then a patch_size x patch_size conv with stride patch_size and a LayerNorm;
- every block pads *after* norm1 (right / bottom, to a multiple of the window) and does not
  mask the padded tokens; odd blocks roll the padded map by -window // 2 and mask attention
  across the regions the roll brings together (-100), built from the padded size at run time,
  even where the padded map is a single window;
- patch merging runs on the un-normalised output of a stage, pads odd sizes by one row / column
  and concatenates [x(even row, even col), x(odd, even), x(even, odd), x(odd, odd)];
- each output res2..res5 has its own LayerNorm; every LayerNorm has PyTorch's eps 1e-5 and the
  MLP uses the exact (erf) GELU.

Every spatial size is read with `ops.shape` at run time, so the backbone runs on unknown
heights and widths in a tf.function, under XLA and under jax.jit.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from maskformer.config import SwinConfig

# The logit added between tokens of different regions of a shifted window (the original's value).
SHIFT_MASK_VALUE = -100.0


def _layer_norm(name: str) -> keras.layers.LayerNormalization:
    # PyTorch's eps; Keras' default is 1e-3.
    return keras.layers.LayerNormalization(epsilon=1e-5, name=name)


def _init():
    # The original's init is timm's trunc_normal_(std=0.02), whose cut-off is at +-2 in
    # absolute value (100 standard deviations): a plain normal distribution.
    return keras.initializers.RandomNormal(stddev=0.02)


def _dense(units: int, name: str, use_bias: bool = True) -> keras.layers.Dense:
    # Zero biases, as the original's.
    return keras.layers.Dense(units, use_bias=use_bias, name=name, kernel_initializer=_init())


def relative_position_index(window_size: int) -> np.ndarray:
    """The row of the relative-position bias table for every (query, key) pair of a window.

    Tokens are numbered row-major inside the window (a = r * w + c), and
    index[a, b] = (r_a - r_b + w - 1) * (2w - 1) + (c_a - c_b + w - 1).

    Returns:
        int64 [w * w, w * w], equal to the original's `relative_position_index` buffer.
    """
    w = window_size
    rows, cols = np.divmod(np.arange(w * w), w)
    dr = rows[:, None] - rows[None, :] + w - 1
    dc = cols[:, None] - cols[None, :] + w - 1
    return (dr * (2 * w - 1) + dc).astype(np.int64)


def pad_bottom_right(x, multiple: int):
    """Zero-pads [B, H, W, C] at the bottom and right up to multiples of `multiple`."""
    height, width = ops.shape(x)[1], ops.shape(x)[2]
    pad_h = (multiple - height % multiple) % multiple
    pad_w = (multiple - width % multiple) % multiple
    return ops.pad(x, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])


def window_partition(x, window_size: int):
    """[B, Hp, Wp, C] -> [B, (Hp / w) * (Wp / w), w * w, C]: windows row-major, tokens row-major."""
    batch, height, width = ops.shape(x)[0], ops.shape(x)[1], ops.shape(x)[2]
    channels = x.shape[-1]
    w = window_size
    x = ops.reshape(x, (batch, height // w, w, width // w, w, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))  # [B, Hp / w, Wp / w, w, w, C]
    return ops.reshape(x, (batch, -1, w * w, channels))


def window_merge(windows, window_size: int, height, width):
    """The inverse of `window_partition`: [B, nW, w * w, C] -> [B, height, width, C]."""
    batch = ops.shape(windows)[0]
    channels = windows.shape[-1]
    w = window_size
    x = ops.reshape(windows, (batch, height // w, width // w, w, w, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))  # [B, Hp / w, w, Wp / w, w, C]
    return ops.reshape(x, (batch, height, width, channels))


def shifted_window_mask(height, width, window_size: int, shift: int, dtype="float32"):
    """The attention mask of a shifted block on a padded, rolled `height` x `width` map.

    Rows fall in band 0 (row < H - w), 1 (H - w <= row < H - shift) or 2 (the last `shift`
    rows), columns alike; a token's region is 3 * row band + column band. Tokens of different
    regions were not neighbours before the roll and do not attend to each other.

    Returns:
        [nW, w * w, w * w]: 0 within a region, SHIFT_MASK_VALUE across regions.
    """

    def bands(size):
        i = ops.arange(size, dtype="int32")
        return (ops.cast(i >= size - window_size, "int32")
                + ops.cast(i >= size - shift, "int32"))

    region = bands(height)[:, None] * 3 + bands(width)[None, :]  # [H, W]
    region = window_partition(region[None, :, :, None], window_size)[0, :, :, 0]  # [nW, w * w]
    across = ops.not_equal(region[:, :, None], region[:, None, :])  # [nW, query, key]
    return ops.cast(ops.where(across, SHIFT_MASK_VALUE, 0.0), dtype)


class DropPath(keras.layers.Layer):
    """Stochastic depth: in training, zeroes a whole sample's residual branch with probability
    `rate` and scales the kept ones by 1 / (1 - rate); the identity otherwise."""

    def __init__(self, rate: float = 0.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.rate = rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x, training=None):
        if not training or self.rate == 0.0:
            return x
        if self.rate >= 1.0:
            return ops.zeros_like(x)
        keep = 1.0 - self.rate
        shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
        kept = ops.floor(keep + keras.random.uniform(shape, dtype=x.dtype,
                                                     seed=self.seed_generator))
        return x / keep * kept

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


class WindowAttention(keras.layers.Layer):
    """Multi-head self-attention inside each window, with a learned relative-position bias.

    `qkv` is one projection (rows: q, k, v; head h owns channels h * d:(h + 1) * d of each),
    q is scaled by d ** -0.5 before the product, the bias and the shift mask are added to the
    logits, softmax over the keys, heads concatenated in order, then `proj`.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, qkv_bias: bool = True,
                 **kwargs):
        super().__init__(**kwargs)
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.window_size = window_size
        self.qkv_bias = qkv_bias
        self.head_dim = dim // num_heads
        self.qkv = _dense(3 * dim, "qkv", use_bias=qkv_bias)
        self.proj = _dense(dim, "proj")
        self.index = relative_position_index(window_size).reshape(-1)

    def build(self, input_shape):
        self.relative_position_bias_table = self.add_weight(
            name="relative_position_bias_table",
            shape=((2 * self.window_size - 1) ** 2, self.num_heads),
            initializer=_init())
        self.qkv.build((None, None, None, self.dim))
        self.proj.build((None, None, None, self.dim))

    def relative_position_bias(self, dtype):
        """[heads, w * w, w * w]: the table's row for each (query, key) pair."""
        n = self.window_size**2
        bias = ops.take(self.relative_position_bias_table, self.index, axis=0)  # [n * n, heads]
        bias = ops.transpose(ops.reshape(bias, (n, n, self.num_heads)), (2, 0, 1))
        return ops.cast(bias, dtype)

    def call(self, windows, shift_mask=None):
        """Args: windows [B, nW, N, C]; shift_mask None or [nW, N, N]. Returns [B, nW, N, C]."""
        batch, num_windows = ops.shape(windows)[0], ops.shape(windows)[1]
        n = self.window_size**2
        heads = (batch, num_windows, n, self.num_heads, self.head_dim)
        q, k, v = (ops.reshape(t, heads) for t in ops.split(self.qkv(windows), 3, axis=-1))
        q = q * ops.cast(self.head_dim**-0.5, q.dtype)
        logits = ops.einsum("bwqhd,bwkhd->bwhqk", q, k)  # [B, nW, heads, N, N]
        logits = logits + self.relative_position_bias(logits.dtype)[None, None]
        if shift_mask is not None:
            logits = logits + ops.cast(shift_mask, logits.dtype)[None, :, None]
        weights = ops.softmax(logits, axis=-1)
        out = ops.einsum("bwhqk,bwkhd->bwqhd", weights, v)  # [B, nW, N, heads, d]
        return self.proj(ops.reshape(out, (batch, num_windows, n, self.dim)))

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "num_heads": self.num_heads,
                "window_size": self.window_size, "qkv_bias": self.qkv_bias}


class SwinBlock(keras.layers.Layer):
    """x + DropPath(window attention(LN1(x))), then x + DropPath(MLP(LN2(x))).

    `shift` 0 is a plain window block, window_size // 2 a shifted one.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, shift: int = 0,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_path: float = 0.0,
                 **kwargs):
        super().__init__(**kwargs)
        if not 0 <= shift < window_size:
            raise ValueError(f"shift {shift} is not in [0, window_size {window_size})")
        self.dim = dim
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift = shift
        self.mlp_ratio = mlp_ratio
        self.qkv_bias = qkv_bias
        self.drop_path_rate = drop_path
        self.hidden = int(dim * mlp_ratio)
        self.norm1 = _layer_norm("norm1")
        self.attn = WindowAttention(dim, num_heads, window_size, qkv_bias, name="attn")
        self.norm2 = _layer_norm("norm2")
        self.fc1 = _dense(self.hidden, "fc1")
        self.fc2 = _dense(dim, "fc2")
        self.drop_path = DropPath(drop_path, name="drop_path")

    def build(self, input_shape):
        features = (None, None, None, self.dim)
        self.norm1.build(features)
        self.attn.build(features)
        self.norm2.build(features)
        self.fc1.build(features)
        self.fc2.build((None, None, None, self.hidden))

    def attention(self, x):
        """The window-attention branch on LN1(x), [B, H, W, C] -> [B, H, W, C]."""
        batch, height, width = ops.shape(x)[0], ops.shape(x)[1], ops.shape(x)[2]
        w, s = self.window_size, self.shift
        # Padding follows norm1: padded tokens are zeros (their q, k, v are the biases), and
        # they are attended to like any other token.
        y = pad_bottom_right(self.norm1(x), w)
        padded_h, padded_w = ops.shape(y)[1], ops.shape(y)[2]
        shift_mask = None
        if s:
            y = ops.roll(y, shift=(-s, -s), axis=(1, 2))  # new[i] = old[(i + s) mod Hp]
            shift_mask = shifted_window_mask(padded_h, padded_w, w, s, y.dtype)
        y = self.attn(window_partition(y, w), shift_mask)
        y = window_merge(y, w, padded_h, padded_w)
        if s:
            y = ops.roll(y, shift=(s, s), axis=(1, 2))
        return ops.slice(y, (0, 0, 0, 0), (batch, height, width, self.dim))

    def call(self, x, training=None):
        x = x + self.drop_path(self.attention(x), training=training)
        mlp = self.fc2(ops.gelu(self.fc1(self.norm2(x)), approximate=False))
        return x + self.drop_path(mlp, training=training)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "num_heads": self.num_heads,
                "window_size": self.window_size, "shift": self.shift,
                "mlp_ratio": self.mlp_ratio, "qkv_bias": self.qkv_bias,
                "drop_path": self.drop_path_rate}


class PatchMerging(keras.layers.Layer):
    """2x2 neighbourhoods to channels, LayerNorm, linear 4C -> 2C: [B, H, W, C] ->
    [B, ceil(H / 2), ceil(W / 2), 2C]."""

    def __init__(self, dim: int, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim
        self.norm = _layer_norm("norm")
        self.reduction = _dense(2 * dim, "reduction", use_bias=False)

    def build(self, input_shape):
        self.norm.build((None, None, None, 4 * self.dim))
        self.reduction.build((None, None, None, 4 * self.dim))

    def call(self, x):
        batch = ops.shape(x)[0]
        x = pad_bottom_right(x, 2)
        height, width = ops.shape(x)[1] // 2, ops.shape(x)[2] // 2
        x = ops.reshape(x, (batch, height, 2, width, 2, self.dim))  # [.., row off, .., col off, C]
        # Channel blocks in the original's order, the row offset changing first:
        # (0, 0), (1, 0), (0, 1), (1, 1) as (row, col).
        x = ops.transpose(x, (0, 1, 3, 4, 2, 5))  # [B, H / 2, W / 2, col off, row off, C]
        x = ops.reshape(x, (batch, height, width, 4 * self.dim))
        return self.reduction(self.norm(x))

    def get_config(self):
        return {**super().get_config(), "dim": self.dim}


class PatchEmbedding(keras.layers.Layer):
    """Non-overlapping patch_size x patch_size patches to embed_dim channels, then LayerNorm."""

    def __init__(self, embed_dim: int, patch_size: int, **kwargs):
        super().__init__(**kwargs)
        self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.proj = keras.layers.Conv2D(embed_dim, patch_size, strides=patch_size,
                                        padding="valid", name="proj")
        self.norm = _layer_norm("norm")

    def build(self, input_shape):
        self.proj.build((None, None, None, input_shape[-1]))
        self.norm.build((None, None, None, self.embed_dim))

    def call(self, images):
        # Not padding="same": TF would split the padding between both sides.
        return self.norm(self.proj(pad_bottom_right(images, self.patch_size)))

    def get_config(self):
        return {**super().get_config(), "embed_dim": self.embed_dim,
                "patch_size": self.patch_size}


class SwinStage(keras.layers.Layer):
    """The blocks of one resolution, alternating plain and shifted windows."""

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_path: list[float] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim
        self.depth = depth
        self.num_heads = num_heads
        self.window_size = window_size
        self.mlp_ratio = mlp_ratio
        self.qkv_bias = qkv_bias
        self.drop_path = list(drop_path) if drop_path is not None else [0.0] * depth
        if len(self.drop_path) != depth:
            raise ValueError(f"{len(self.drop_path)} drop-path rates for {depth} blocks")
        self.blocks = [
            SwinBlock(dim, num_heads, window_size, shift=0 if b % 2 == 0 else window_size // 2,
                      mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_path=self.drop_path[b],
                      name=f"block{b}")
            for b in range(depth)
        ]

    def build(self, input_shape):
        for block in self.blocks:
            block.build((None, None, None, self.dim))

    def call(self, x, training=None):
        for block in self.blocks:
            x = block(x, training=training)
        return x

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "depth": self.depth,
                "num_heads": self.num_heads, "window_size": self.window_size,
                "mlp_ratio": self.mlp_ratio, "qkv_bias": self.qkv_bias,
                "drop_path": self.drop_path}


class SwinTransformer(keras.layers.Layer):
    """Swin backbone returning {"res2": ..., "res5": ...}, NHWC at strides 4, 8, 16, 32.

    Call with normalised images [B, H, W, 3] of any size; res_k has ceil(H / stride_k) rows.
    Stage s has embed_dim * 2**s channels. Stochastic depth rises linearly from 0 at the first
    block to `drop_path_rate` at the last and acts only with training=True.
    """

    def __init__(self, embed_dim: int = 96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24),
                 window_size: int = 7, patch_size: int = 4, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop_path_rate: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if len(depths) != len(num_heads):
            raise ValueError(f"depths {list(depths)} and num_heads {list(num_heads)} differ in "
                             "length")
        self.embed_dim = embed_dim
        self.depths = list(depths)
        self.num_heads = list(num_heads)
        self.window_size = window_size
        self.patch_size = patch_size
        self.mlp_ratio = mlp_ratio
        self.qkv_bias = qkv_bias
        self.drop_path_rate = drop_path_rate
        rates = np.linspace(0.0, drop_path_rate, sum(self.depths)).tolist()
        self.patch_embed = PatchEmbedding(embed_dim, patch_size, name="patch_embed")
        self.stages, self.merges, self.norms = [], [], []
        first = 0
        for s, (depth, heads) in enumerate(zip(self.depths, self.num_heads, strict=True)):
            dim = embed_dim * 2**s
            self.stages.append(SwinStage(dim, depth, heads, window_size, mlp_ratio, qkv_bias,
                                         rates[first:first + depth], name=f"stage{s}"))
            first += depth
            if s < len(self.depths) - 1:
                self.merges.append(PatchMerging(dim, name=f"merge{s}"))
            self.norms.append(_layer_norm(f"norm{s}"))

    @property
    def out_channels(self) -> dict[str, int]:
        return {f"res{s + 2}": self.embed_dim * 2**s for s in range(len(self.depths))}

    def build(self, input_shape):
        self.patch_embed.build(input_shape)
        for s, stage in enumerate(self.stages):
            dim = self.embed_dim * 2**s
            stage.build((None, None, None, dim))
            self.norms[s].build((None, None, None, dim))
            if s < len(self.merges):
                self.merges[s].build((None, None, None, dim))

    def call(self, images, training=None):
        x = self.patch_embed(images)  # [B, ceil(H / 4), ceil(W / 4), C0]
        features = {}
        for s, stage in enumerate(self.stages):
            x = stage(x, training=training)
            features[f"res{s + 2}"] = self.norms[s](x)
            if s < len(self.merges):
                x = self.merges[s](x)  # merges the un-normalised stage output
        return features

    def get_config(self):
        return {**super().get_config(), "embed_dim": self.embed_dim, "depths": self.depths,
                "num_heads": self.num_heads, "window_size": self.window_size,
                "patch_size": self.patch_size, "mlp_ratio": self.mlp_ratio,
                "qkv_bias": self.qkv_bias, "drop_path_rate": self.drop_path_rate}


def build_swin(config: SwinConfig, name: str = "backbone") -> SwinTransformer:
    """The Swin backbone of `model.backbone.swin`."""
    return SwinTransformer(embed_dim=config.embed_dim, depths=config.depths,
                           num_heads=config.num_heads, window_size=config.window_size,
                           patch_size=config.patch_size, mlp_ratio=config.mlp_ratio,
                           qkv_bias=config.qkv_bias, drop_path_rate=config.drop_path_rate,
                           name=name)
