"""Mask2Former's pixel decoder (`MSDeformAttnPixelDecoder`): a deformable-attention encoder
over res5, res4 and res3, then an FPN step down to the mask features' stride.

1. Each encoder level is projected, `input_proj_{l}` = 1x1 conv with bias + GroupNorm(32)
   (always GN, whatever the norm setting elsewhere); l = 0 is the coarsest (res5).
2. `MSDeformEncoder` runs on the flattened levels with the sine encoding of each level plus
   its level embedding as position; its output is split back into the levels.
3. For each finer feature down to `common_stride` (res2 for stride 4): `adapter_i` = 1x1 conv
   without bias + GN, plus the coarser map resized bilinearly with align_corners=False (the
   original's `F.interpolate` call is bilinear, though a comment there says nearest), then
   `layer_i` = 3x3 conv without bias + GN + ReLU.
4. `mask_features` = 1x1 conv with bias of the finest map.

Maps are channels-last [B, h, w, C], of sizes known when tracing or only at run time. The
original computes this module in float32 with autocast off (the model builds it with a float32
policy under mixed precision); otherwise the dtype policy of the layers applies, except for
the deformable attention's locations, weights and sampling, which are always float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
from keras import ops

from maskformer.modeling.deformable_attention import MSDeformEncoder, map_shape
from maskformer.modeling.layers import Conv2d
from maskformer.modeling.position_encoding import sine_position_encoding
from maskformer.resize import bilinear_resize_nhwc

# maps handed to the masked-attention decoder (the original's maskformer_num_feature_levels)
MULTI_SCALE_LEVELS = 3


class MSDeformAttnPixelDecoder(keras.layers.Layer):
    """Deformable-attention pixel decoder of Mask2Former.

    Args:
        conv_dim: C, the width of the encoder and the FPN (released models: 256).
        mask_dim: channels of `mask_features`.
        num_heads: the encoder's attention heads (the original takes MASK_FORMER.NHEADS).
        dim_feedforward: the encoder's FFN width (the original's config reader fixes 1024).
        num_layers: encoder layers (6 in released models).
        dropout: the encoder's dropout.
        in_features: the backbone features, finest first.
        feature_strides: their strides, in the same order.
        transformer_in_features: the features the encoder reads (res3..res5).
        common_stride: stride of `mask_features`; FPN steps run down to it.
        num_points: sampling points per head and level (fixed at 4 in the original).
        norm_groups: GroupNorm groups (32).

    Weights (the original's names): `input_proj_{l}` (conv, norm), `transformer`
    (`level_embed`, `layers_{i}`), `adapter_{i}`, `layer_{i}`, `mask_features`, with i = 1 for
    the finest FPN feature.
    """

    def __init__(self, conv_dim: int = 256, mask_dim: int = 256, num_heads: int = 8,
                 dim_feedforward: int = 1024, num_layers: int = 6, dropout: float = 0.0,
                 in_features: Sequence[str] = ("res2", "res3", "res4", "res5"),
                 feature_strides: Sequence[int] = (4, 8, 16, 32),
                 transformer_in_features: Sequence[str] = ("res3", "res4", "res5"),
                 common_stride: int = 4, num_points: int = 4, norm_groups: int = 32, **kwargs):
        super().__init__(**kwargs)
        self.conv_dim = conv_dim
        self.mask_dim = mask_dim
        self.num_heads = num_heads
        self.dim_feedforward = dim_feedforward
        self.num_layers = num_layers
        self.dropout = dropout
        self.in_features = list(in_features)
        self.feature_strides = [int(s) for s in feature_strides]
        self.transformer_in_features = list(transformer_in_features)
        self.common_stride = common_stride
        self.num_points = num_points
        self.norm_groups = norm_groups
        if len(self.in_features) != len(self.feature_strides):
            raise ValueError("in_features and feature_strides differ in length")
        strides = dict(zip(self.in_features, self.feature_strides, strict=True))
        # coarsest first, as the encoder's levels are ordered
        self.encoder_features = sorted(self.transformer_in_features, key=lambda f: -strides[f])
        finest = min(strides[f] for f in self.transformer_in_features)
        self.num_fpn_levels = int(round(math.log2(finest) - math.log2(common_stride)))
        self.fpn_features = self.in_features[:self.num_fpn_levels]  # finest first

        self.input_proj = [
            Conv2d(conv_dim, 1, use_bias=True, norm="gn", norm_groups=norm_groups,
                   name=f"input_proj_{level}")
            for level in range(len(self.encoder_features))
        ]
        self.transformer = MSDeformEncoder(
            conv_dim, num_heads, num_layers, dim_feedforward, dropout,
            num_levels=len(self.encoder_features), num_points=num_points, name="transformer")
        # i = 1 for the finest feature (the original names them in in_features order)
        self.adapters = [Conv2d(conv_dim, 1, norm="gn", norm_groups=norm_groups,
                                name=f"adapter_{i + 1}") for i in range(self.num_fpn_levels)]
        self.fpn_layers = [Conv2d(conv_dim, 3, norm="gn", activation="relu",
                                  norm_groups=norm_groups, name=f"layer_{i + 1}")
                           for i in range(self.num_fpn_levels)]
        self.mask_features = Conv2d(mask_dim, 1, use_bias=True, name="mask_features")

    def build(self, input_shape):
        for proj, name in zip(self.input_proj, self.encoder_features, strict=True):
            proj.build(tuple(input_shape[name]))
        self.transformer.build()
        for i, name in enumerate(self.fpn_features):
            shape = tuple(input_shape[name])
            self.adapters[i].build(shape)
            self.fpn_layers[i].build(shape[:-1] + (self.conv_dim,))
        finest = tuple(input_shape[self.fpn_features[0]] if self.fpn_features
                       else input_shape[self.encoder_features[-1]])
        self.mask_features.build(finest[:-1] + (self.conv_dim,))

    def call(self, features, training=None, return_intermediates: bool = False):
        """Args:
            features: {name: [B, h, w, C_name]} with at least `in_features`' encoder and FPN
                entries.
            return_intermediates: also return `encoder` (the encoder's intermediates, with
                `memory` [B, S, C]) and `fpn` (the FPN maps, coarsest first).

        Returns:
            {"mask_features": [B, h2, w2, mask_dim],
             "transformer_encoder_features": [B, h5, w5, C] (the coarsest encoder level),
             "multi_scale_features": 3 maps [B, h_l, w_l, C], coarsest first: the encoder's
                 levels (res5, res4, res3), followed by FPN maps if there are fewer}
        """
        srcs, pos = [], []
        for proj, name in zip(self.input_proj, self.encoder_features, strict=True):
            x = proj(features[name])  # [B, h, w, C]
            srcs.append(x)
            encoding = sine_position_encoding(*map_shape(x), self.conv_dim // 2)
            pos.append(encoding[None])  # [1, h, w, C]
        encoded = self.transformer(srcs, pos, training=training,
                                   return_intermediates=return_intermediates)
        if return_intermediates:
            encoded, intermediates = encoded
        batch = ops.shape(encoded)[0]
        levels, start = [], 0
        for x in srcs:
            h, w = map_shape(x)
            levels.append(ops.reshape(encoded[:, start:start + h * w], (batch, h, w, self.conv_dim)))
            start += h * w

        y = levels[-1]
        fpn = []
        for i in reversed(range(self.num_fpn_levels)):  # coarsest FPN feature first
            lateral = self.adapters[i](features[self.fpn_features[i]])
            y = lateral + ops.cast(bilinear_resize_nhwc(y, map_shape(lateral)), lateral.dtype)
            y = self.fpn_layers[i](y)
            fpn.append(y)
        outputs = {"mask_features": self.mask_features(y),
                   "transformer_encoder_features": levels[0],
                   # the original's first three maps of [encoder levels, FPN maps]
                   "multi_scale_features": (levels + fpn)[:MULTI_SCALE_LEVELS]}
        if return_intermediates:
            outputs["encoder"] = {**intermediates, "memory": encoded}
            outputs["fpn"] = fpn
        return outputs

    def get_config(self):
        return {**super().get_config(), "conv_dim": self.conv_dim, "mask_dim": self.mask_dim,
                "num_heads": self.num_heads, "dim_feedforward": self.dim_feedforward,
                "num_layers": self.num_layers, "dropout": self.dropout,
                "in_features": self.in_features, "feature_strides": self.feature_strides,
                "transformer_in_features": self.transformer_in_features,
                "common_stride": self.common_stride, "num_points": self.num_points,
                "norm_groups": self.norm_groups}
