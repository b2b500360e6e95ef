"""Mask2Former's transformer decoder with masked attention (`MultiScaleMaskedTransformerDecoder`).

Learned queries attend, one level per layer (coarsest first, round robin), to the multi-scale
features of the pixel decoder. Each cross-attention is restricted to the foreground of the
previous prediction's masks, resized to that level: a position is blocked where
sigmoid(mask logit) < 0.5, and a query whose mask blocks every position attends everywhere
instead (otherwise its softmax would be over nothing). Every layer is post-norm and runs
cross-attention, then self-attention, then the FFN; there is no dropout (the original fixes it
at 0).

The prediction head (decoder_norm, class_embed, mask_embed) runs on the learned queries before
the first layer and after every layer. With `num_layers` = L (the original's constructor
`dec_layers`, one less than the config's DEC_LAYERS) there are L + 1 predictions: the last is the
output, the first L are `aux_outputs`, so `aux_outputs[0]` comes from the queries alone.

Sequences are batch-major [B, L, C] and feature maps channels-last [B, h, w, C]; the original
runs [L, B, C] and NCHW, with the same arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

from maskformer.modeling.deformable_attention import map_shape
from maskformer.modeling.layers import MLP, Conv2d
from maskformer.modeling.pixel_decoder import flatten_hw
from maskformer.modeling.position_encoding import sine_position_encoding
from maskformer.modeling.transformer import FeedForward, MultiHeadAttention
from maskformer.resize import bilinear_resize


def _layer_norm(name: str) -> keras.layers.LayerNormalization:
    # PyTorch's eps; Keras' default is 1e-3.
    return keras.layers.LayerNormalization(epsilon=1e-5, name=name)


class MaskedMultiHeadAttention(MultiHeadAttention):
    """`MultiHeadAttention` that also takes a boolean mask of blocked positions.

    The parent has no mask argument; this adds one with torch.nn.MultiheadAttention's boolean
    `attn_mask` meaning (True = blocked, the logit becomes -inf before the softmax). The weights
    and their names are the parent's.
    """

    def call(self, query, key, value, blocked=None, training=None):
        """Args:
            query: [B, Lq, C]; key, value: [B, Lk, C].
            blocked: optional bool [B, Lq, Lk] (the same for every head) or [B, heads, Lq, Lk].
                Every row must leave at least one key open.

        Returns:
            [B, Lq, C].
        """
        q = self._split_heads(self.q_proj(query)) * ops.cast(self.head_dim**-0.5, query.dtype)
        k = self._split_heads(self.k_proj(key))
        v = self._split_heads(self.v_proj(value))
        logits = ops.einsum("bhqd,bhkd->bhqk", q, k)  # [B, h, Lq, Lk]
        if blocked is not None:
            if len(blocked.shape) == 3:
                blocked = blocked[:, None]  # [B, 1, Lq, Lk]
            logits = ops.where(blocked, ops.cast(float("-inf"), logits.dtype), logits)
        weights = ops.softmax(logits, axis=-1)
        weights = self.attn_dropout(weights, training=training)
        out = ops.einsum("bhqk,bhkd->bhqd", weights, v)
        out = ops.reshape(ops.transpose(out, (0, 2, 1, 3)), (ops.shape(query)[0], -1, self.dim))
        return self.out_proj(out)


def attention_mask(mask_logits, size: tuple[int, int]):
    """The blocked positions of a cross-attention from the previous prediction's masks.

    The logits are resized bilinearly (align_corners=False, no antialiasing) to the level's
    size; a position is blocked where sigmoid < 0.5, tested on the sigmoid in the input dtype as
    the original does (within ~3e-8 of 0 float32 rounds the sigmoid to 0.5, which stays open,
    where `x < 0` would block). A row that blocks every position is cleared.

    Args:
        mask_logits: [B, Q, H, W] mask logits.
        size: (h, w) of the level (ints, or scalar tensors on TensorFlow).

    Returns:
        bool [B, Q, h * w], True = blocked, row-major as the flattened level.
    """
    resized = bilinear_resize(ops.stop_gradient(mask_logits), size)  # [B, Q, h, w]
    blocked = ops.sigmoid(resized) < 0.5
    blocked = ops.reshape(blocked, (ops.shape(blocked)[0], ops.shape(blocked)[1], -1))
    full = ops.all(blocked, axis=-1, keepdims=True)  # [B, Q, 1]
    return ops.logical_and(blocked, ops.logical_not(full))


class MaskedDecoderLayer(keras.layers.Layer):
    """One decoder layer, post-norm: masked cross-attention, self-attention, FFN; each + LN.

    The original keeps these as three separate module lists (transformer_cross_attention_layers,
    transformer_self_attention_layers, transformer_ffn_layers); here one layer holds the i-th
    of each.
    """

    def __init__(self, dim: int, num_heads: int, dim_feedforward: int, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.num_heads, self.dim_feedforward = dim, num_heads, dim_feedforward
        self.cross_attn = MaskedMultiHeadAttention(dim, num_heads, name="cross_attn")
        self.self_attn = MultiHeadAttention(dim, num_heads, name="self_attn")
        self.ffn = FeedForward(dim, dim_feedforward, name="ffn")
        self.cross_norm = _layer_norm("cross_norm")
        self.self_norm = _layer_norm("self_norm")
        self.ffn_norm = _layer_norm("ffn_norm")

    def build(self, *shapes):
        for layer in (self.cross_attn, self.self_attn, self.ffn, self.cross_norm,
                      self.self_norm, self.ffn_norm):
            layer.build((None, None, self.dim))

    def call(self, tgt, memory, pos, query_pos, blocked, training=None):
        """Args:
            tgt, query_pos: [B, Q, C]; memory, pos: [B, L, C] (pos broadcastable);
            blocked: bool [B, Q, L].

        Returns:
            the query states after cross-attention, self-attention and the FFN, each [B, Q, C].
        """
        attn = self.cross_attn(tgt + query_pos, memory + pos, memory, blocked=blocked,
                               training=training)
        after_cross = self.cross_norm(tgt + attn)
        q = after_cross + query_pos
        after_self = self.self_norm(after_cross + self.self_attn(q, q, after_cross,
                                                                 training=training))
        after_ffn = self.ffn_norm(after_self + self.ffn(after_self, training=training))
        return after_cross, after_self, after_ffn

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "num_heads": self.num_heads,
                "dim_feedforward": self.dim_feedforward}


class MaskedAttentionDecoder(keras.layers.Layer):
    """Mask2Former's masked-attention transformer decoder with its class and mask heads.

    Args:
        in_channels: channels of the multi-scale features.
        num_classes: K; the class head has K + 1 outputs, the last is "no object".
        hidden_dim: width of the queries and the attention.
        num_queries: Q.
        num_heads: attention heads.
        dim_feedforward: FFN width.
        num_layers: transformer layers (the original's constructor `dec_layers`, which its
            config reader sets to DEC_LAYERS - 1: 9 for the released models).
        mask_dim: channels of `mask_features` and of the mask embedding.
        num_levels: number of multi-scale features (3 in the original).
        enforce_input_proj: a 1x1 conv on each level even when in_channels == hidden_dim.
    """

    def __init__(self, in_channels: int, num_classes: int, hidden_dim: int = 256,
                 num_queries: int = 100, num_heads: int = 8, dim_feedforward: int = 2048,
                 num_layers: int = 9, mask_dim: int = 256, num_levels: int = 3,
                 enforce_input_proj: bool = False, **kwargs):
        super().__init__(**kwargs)
        if hidden_dim % 2:
            raise ValueError(f"hidden_dim {hidden_dim} must be even for the sine encoding")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.hidden_dim = hidden_dim
        self.num_queries = num_queries
        self.num_heads = num_heads
        self.dim_feedforward = dim_feedforward
        self.num_layers = num_layers
        self.mask_dim = mask_dim
        self.num_levels = num_levels
        self.enforce_input_proj = enforce_input_proj
        project = in_channels != hidden_dim or enforce_input_proj
        self.input_proj = [
            Conv2d(hidden_dim, 1, use_bias=True, name=f"input_proj_{level}") if project else None
            for level in range(num_levels)
        ]
        self.layers = [
            MaskedDecoderLayer(hidden_dim, num_heads, dim_feedforward, name=f"layer_{i}")
            for i in range(num_layers)
        ]
        self.decoder_norm = _layer_norm("decoder_norm")
        self.class_embed = keras.layers.Dense(num_classes + 1, name="class_embed")
        self.mask_embed = MLP(hidden_dim, mask_dim, 3, name="mask_embed")

    def build(self, features_shape, mask_features_shape=None):
        d = self.hidden_dim
        embedding = keras.initializers.RandomNormal(stddev=1.0)  # nn.Embedding's N(0, 1)
        # The query content ("tgt") the decoder starts from, and the queries' position.
        self.query_feat = self.add_weight(name="query_feat", shape=(self.num_queries, d),
                                          initializer=embedding)
        self.query_embed = self.add_weight(name="query_embed", shape=(self.num_queries, d),
                                           initializer=embedding)
        self.level_embed = self.add_weight(name="level_embed", shape=(self.num_levels, d),
                                           initializer=embedding)
        for proj in self.input_proj:
            if proj is not None:
                proj.build((None, None, None, self.in_channels))
        for layer in self.layers:
            layer.build()
        self.decoder_norm.build((None, None, d))
        self.class_embed.build((None, None, d))
        # MLP has no build of its own: build its Dense layers so the weights exist up front.
        for i, dense in enumerate(self.mask_embed.dense):
            dense.build((None, None, d if i == 0 else self.mask_embed.hidden))

    def predict_heads(self, tgt, mask_features):
        """Class logits and mask logits from query states.

        Args:
            tgt: [B, Q, hidden] un-normalised query states.
            mask_features: [B, H, W, mask_dim].

        Returns:
            {"pred_logits": [B, Q, K + 1], "pred_masks": [B, Q, H, W]}.
        """
        hs = self.decoder_norm(tgt)
        logits = self.class_embed(hs)  # [B, Q, K + 1]
        embed = self.mask_embed(hs)  # [B, Q, mask_dim]
        masks = ops.einsum("bqc,bhwc->bqhw", embed, mask_features)  # [B, Q, H, W]
        return {"pred_logits": logits, "pred_masks": masks}

    def call(self, features: Sequence, mask_features, training=None,
             return_intermediates: bool = False):
        """Args:
            features: `num_levels` maps [B, h_l, w_l, in_channels], coarsest first (as the
                pixel decoder returns its multi-scale features).
            mask_features: [B, H, W, mask_dim].
            return_intermediates: also return, per layer, the blocked positions its
                cross-attention received and the query states after each sub-layer.

        Returns:
            dict with "pred_logits" [B, Q, K + 1], "pred_masks" [B, Q, H, W] and "aux_outputs",
            `num_layers` such dicts: aux_outputs[0] is the prediction from the learned queries
            alone, aux_outputs[i] the one after layer i - 1. With `return_intermediates`, also
            "attention_masks" (bool [B, Q, h_l * w_l] per layer, True = blocked) and
            "states" (per layer a dict of [B, Q, hidden]: after_cross_attn, after_self_attn,
            after_ffn).
        """
        if len(features) != self.num_levels:
            raise ValueError(f"expected {self.num_levels} feature levels, got {len(features)}")
        dtype = mask_features.dtype
        batch = ops.shape(mask_features)[0]
        sizes, memories, positions = [], [], []
        for level, (x, proj) in enumerate(zip(features, self.input_proj, strict=True)):
            height, width = map_shape(x)
            sizes.append((height, width))
            pos = sine_position_encoding(height, width, self.hidden_dim // 2)
            positions.append(ops.cast(ops.reshape(pos, (1, -1, self.hidden_dim)), dtype))
            x = proj(x) if proj is not None else x
            # The level embedding belongs to the memory: it enters the keys and the values.
            level_embed = ops.cast(self.level_embed[level], dtype)
            memories.append(flatten_hw(x) + level_embed[None, None, :])  # [B, h * w, C]

        shape = (batch, self.num_queries, self.hidden_dim)
        query_pos = ops.broadcast_to(ops.cast(self.query_embed, dtype)[None], shape)
        tgt = ops.broadcast_to(ops.cast(self.query_feat, dtype)[None], shape)

        predictions = [self.predict_heads(tgt, mask_features)]
        attention_masks, states = [], []
        for i, layer in enumerate(self.layers):
            level = i % self.num_levels
            blocked = attention_mask(predictions[-1]["pred_masks"], sizes[level])
            after_cross, after_self, tgt = layer(tgt, memories[level], positions[level],
                                                 query_pos, blocked, training=training)
            predictions.append(self.predict_heads(tgt, mask_features))
            attention_masks.append(blocked)
            states.append({"after_cross_attn": after_cross, "after_self_attn": after_self,
                           "after_ffn": tgt})

        outputs = dict(predictions[-1])
        outputs["aux_outputs"] = predictions[:-1]
        if return_intermediates:
            outputs["attention_masks"] = attention_masks
            outputs["states"] = states
        return outputs

    def get_config(self):
        return {**super().get_config(), "in_channels": self.in_channels,
                "num_classes": self.num_classes, "hidden_dim": self.hidden_dim,
                "num_queries": self.num_queries, "num_heads": self.num_heads,
                "dim_feedforward": self.dim_feedforward, "num_layers": self.num_layers,
                "mask_dim": self.mask_dim, "num_levels": self.num_levels,
                "enforce_input_proj": self.enforce_input_proj}
