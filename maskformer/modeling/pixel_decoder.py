"""Pixel decoders (REFERENCE.md section 4): the FPN and the transformer-encoder FPN.

Both return `mask_features` [B, h, w, mask_dim] at stride 4; the transformer-encoder variant
also returns `transformer_encoder_features` [B, h5, w5, conv_dim], the predictor's memory.
"""

from __future__ import annotations

import keras
from keras import ops

from maskformer.modeling.layers import Conv2d
from maskformer.modeling.position_encoding import sine_position_encoding
from maskformer.modeling.transformer import EncoderLayer
from maskformer.resize import nearest_resize


def flatten_hw(x):
    """[B, h, w, C] -> [B, h * w, C], row-major (index = y * w + x) as PyTorch's flatten(2)."""
    return ops.reshape(x, (ops.shape(x)[0], -1, ops.shape(x)[-1]))


class FPNDecoder(keras.layers.Layer):
    """detectron2-style FPN on res2..res5 ("BasePixelDecoder").

    layer_4 on res5; then for res4, res3, res2: lateral 1x1 conv + GN (`adapter_i`), add the
    nearest-upsampled coarser map, 3x3 conv + GN + ReLU (`layer_i`); finally a 3x3 conv with bias
    (`mask_features`).
    """

    def __init__(self, conv_dim: int, mask_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.conv_dim = conv_dim
        self.mask_dim = mask_dim
        # Index i = 1, 2, 3 for res2, res3, res4, as in the original's parameter names.
        self.adapters = [Conv2d(conv_dim, 1, norm="gn", name=f"adapter_{i}") for i in (1, 2, 3)]
        self.layers_ = [Conv2d(conv_dim, 3, norm="gn", activation="relu", name=f"layer_{i}")
                        for i in (1, 2, 3)]
        self.layer_4 = Conv2d(conv_dim, 3, norm="gn", activation="relu", name="layer_4")
        self.mask_features = Conv2d(mask_dim, 3, use_bias=True, name="mask_features")

    def top_down(self, y, features):
        """The shared top-down path from a stride-32 map y through res4, res3, res2."""
        y = self.layer_4(y)
        for i in (2, 1, 0):  # res4, res3, res2
            lateral = self.adapters[i](features[f"res{i + 2}"])
            size = (ops.shape(lateral)[1], ops.shape(lateral)[2])
            y = self.layers_[i](lateral + nearest_resize(y, size, axes=(1, 2)))
        return self.mask_features(y)

    def call(self, features, training=None):
        return {"mask_features": self.top_down(features["res5"], features)}

    def get_config(self):
        return {**super().get_config(), "conv_dim": self.conv_dim, "mask_dim": self.mask_dim}


class TransformerEncoderDecoder(FPNDecoder):
    """FPN whose res5 input first passes a 1x1 projection and a transformer encoder
    ("TransformerEncoderPixelDecoder"). The encoder has no final LayerNorm (post-norm)."""

    def __init__(self, conv_dim: int, mask_dim: int, num_layers: int, num_heads: int,
                 dim_feedforward: int, dropout: float = 0.1, **kwargs):
        super().__init__(conv_dim, mask_dim, **kwargs)
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.dim_feedforward = dim_feedforward
        self.dropout = dropout
        self.input_proj = Conv2d(conv_dim, 1, use_bias=True, name="input_proj")
        self.encoder_layers = [
            EncoderLayer(conv_dim, num_heads, dim_feedforward, dropout, name=f"encoder_{i}")
            for i in range(num_layers)
        ]

    def call(self, features, training=None):
        x = self.input_proj(features["res5"])  # [B, h5, w5, C]
        height, width = ops.shape(x)[1], ops.shape(x)[2]
        pos = sine_position_encoding(height, width, self.conv_dim // 2)
        src = flatten_hw(x)  # [B, h5 * w5, C]
        pos = ops.reshape(pos, (1, -1, self.conv_dim))
        for layer in self.encoder_layers:
            src = layer(src, pos, training=training)
        encoded = ops.reshape(src, (ops.shape(x)[0], height, width, self.conv_dim))
        return {"mask_features": self.top_down(encoded, features),
                "transformer_encoder_features": encoded}

    def get_config(self):
        return {**super().get_config(), "num_layers": self.num_layers,
                "num_heads": self.num_heads, "dim_feedforward": self.dim_feedforward,
                "dropout": self.dropout}
