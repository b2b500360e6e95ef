"""Multi-head attention and the post-norm transformer encoder and decoder layers.

Sequences are batch-major [B, L, C]. The original runs [L, B, C]; the arithmetic is the same.
Dropout sits where the original has it: on the attention weights, after attention, on the FFN
activation and after the FFN (REFERENCE.md section 5).
"""

from __future__ import annotations

import keras
from keras import ops


def _layer_norm(name: str) -> keras.layers.LayerNormalization:
    # PyTorch's eps; Keras' default is 1e-3.
    return keras.layers.LayerNormalization(epsilon=1e-5, name=name)


class MultiHeadAttention(keras.layers.Layer):
    """Standard multi-head attention with separate q/k/v projections and an output projection.

    Equal to torch.nn.MultiheadAttention: heads are contiguous channel chunks, q is scaled by
    1/sqrt(head_dim) before the product, softmax over keys, dropout on the weights.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.head_dim = dim // num_heads
        self.q_proj = keras.layers.Dense(dim, name="q_proj")
        self.k_proj = keras.layers.Dense(dim, name="k_proj")
        self.v_proj = keras.layers.Dense(dim, name="v_proj")
        self.out_proj = keras.layers.Dense(dim, name="out_proj")
        self.attn_dropout = keras.layers.Dropout(dropout)

    def build(self, query_shape, key_shape=None, value_shape=None):
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            proj.build((None, None, self.dim))

    def _split_heads(self, x):  # [B, L, C] -> [B, heads, L, head_dim]
        x = ops.reshape(x, (ops.shape(x)[0], -1, self.num_heads, self.head_dim))
        return ops.transpose(x, (0, 2, 1, 3))

    def call(self, query, key, value, training=None):
        q = self._split_heads(self.q_proj(query)) * ops.cast(self.head_dim**-0.5, query.dtype)
        k = self._split_heads(self.k_proj(key))
        v = self._split_heads(self.v_proj(value))
        weights = ops.softmax(ops.einsum("bhqd,bhkd->bhqk", q, k), axis=-1)  # [B, h, Lq, Lk]
        weights = self.attn_dropout(weights, training=training)
        out = ops.einsum("bhqk,bhkd->bhqd", weights, v)
        out = ops.reshape(ops.transpose(out, (0, 2, 1, 3)), (ops.shape(query)[0], -1, self.dim))
        return self.out_proj(out)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "num_heads": self.num_heads,
                "dropout": self.dropout}


class FeedForward(keras.layers.Layer):
    """linear1 -> ReLU -> dropout -> linear2."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.hidden, self.dropout = dim, hidden, dropout
        self.linear1 = keras.layers.Dense(hidden, name="linear1")
        self.linear2 = keras.layers.Dense(dim, name="linear2")
        self.drop = keras.layers.Dropout(dropout)

    def build(self, input_shape):
        self.linear1.build((None, None, self.dim))
        self.linear2.build((None, None, self.hidden))

    def call(self, x, training=None):
        return self.linear2(self.drop(ops.relu(self.linear1(x)), training=training))

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "hidden": self.hidden,
                "dropout": self.dropout}


class EncoderLayer(keras.layers.Layer):
    """Post-norm encoder layer: src = LN1(src + SA(src + pos, src + pos, src)); LN2(src + FFN)."""

    def __init__(self, dim: int, num_heads: int, dim_feedforward: int, dropout: float = 0.1,
                 **kwargs):
        super().__init__(**kwargs)
        self.dim, self.num_heads = dim, num_heads
        self.dim_feedforward, self.dropout = dim_feedforward, dropout
        self.self_attn = MultiHeadAttention(dim, num_heads, dropout, name="self_attn")
        self.ffn = FeedForward(dim, dim_feedforward, dropout, name="ffn")
        self.norm1 = _layer_norm("norm1")
        self.norm2 = _layer_norm("norm2")
        self.dropout1 = keras.layers.Dropout(dropout)
        self.dropout2 = keras.layers.Dropout(dropout)

    def build(self, src_shape, pos_shape=None):
        self.self_attn.build((None, None, self.dim))
        self.ffn.build((None, None, self.dim))
        self.norm1.build((None, None, self.dim))
        self.norm2.build((None, None, self.dim))

    def call(self, src, pos, training=None):
        qk = src + pos
        attn = self.self_attn(qk, qk, src, training=training)
        src = self.norm1(src + self.dropout1(attn, training=training))
        ffn = self.ffn(src, training=training)
        return self.norm2(src + self.dropout2(ffn, training=training))

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "num_heads": self.num_heads,
                "dim_feedforward": self.dim_feedforward, "dropout": self.dropout}


class DecoderLayer(keras.layers.Layer):
    """Post-norm decoder layer: self-attention, cross-attention to memory, FFN; each + LN."""

    def __init__(self, dim: int, num_heads: int, dim_feedforward: int, dropout: float = 0.1,
                 **kwargs):
        super().__init__(**kwargs)
        self.dim, self.num_heads = dim, num_heads
        self.dim_feedforward, self.dropout = dim_feedforward, dropout
        self.self_attn = MultiHeadAttention(dim, num_heads, dropout, name="self_attn")
        self.cross_attn = MultiHeadAttention(dim, num_heads, dropout, name="cross_attn")
        self.ffn = FeedForward(dim, dim_feedforward, dropout, name="ffn")
        self.norm1 = _layer_norm("norm1")
        self.norm2 = _layer_norm("norm2")
        self.norm3 = _layer_norm("norm3")
        self.dropout1 = keras.layers.Dropout(dropout)
        self.dropout2 = keras.layers.Dropout(dropout)
        self.dropout3 = keras.layers.Dropout(dropout)

    def build(self, *shapes):
        for layer in (self.self_attn, self.cross_attn, self.ffn, self.norm1, self.norm2,
                      self.norm3):
            layer.build((None, None, self.dim))

    def call(self, tgt, memory, pos, query_pos, training=None):
        q = tgt + query_pos
        attn = self.self_attn(q, q, tgt, training=training)
        tgt = self.norm1(tgt + self.dropout1(attn, training=training))
        attn = self.cross_attn(tgt + query_pos, memory + pos, memory, training=training)
        tgt = self.norm2(tgt + self.dropout2(attn, training=training))
        ffn = self.ffn(tgt, training=training)
        return self.norm3(tgt + self.dropout3(ffn, training=training))

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "num_heads": self.num_heads,
                "dim_feedforward": self.dim_feedforward, "dropout": self.dropout}
