"""GroupNorm whose float32 statistics are as exact as PyTorch's `nn.GroupNorm`.

`keras.layers.GroupNormalization` computes var = E[x^2] - E[x]^2 in one reduction over all of a
group's H * W * C/G elements. Both halves hurt at the pixel decoder's sizes (a group of
[120, 160, 8] holds 153,600 values): the difference of squares cancels when the mean is large
against the spread, and TensorFlow sums a reduction over non-innermost axes sequentially, so the
rounding error grows with the group. Its output is off a float64 reference by 1e-4 (zero-mean
input) to 2e-3 (mean 100), PyTorch's by 1e-6 to 2e-5, and the difference reaches `mask_features`
and `pred_masks` of a converted model.

Here the moments are taken in two passes, each one a chain of short reductions:
- mean m: over W, then C/G, then H. Every partial sum covers at most a few hundred values, so
  its error stays a few ulps whatever the image size.
- the deviations d = x - m are exact in float32 wherever x lies within a factor 2 of m; their
  mean c (a few ulps of m: what the rounded m missed) and E[d^2] come from the same staged sums,
  and var = E[d^2] - c^2 no longer cancels.
- y = d * s + (beta - c * s) with s = gamma / sqrt(var + eps): the small correction c moves the
  centre to the exact mean without a third pass over the tensor.
The result is within an ulp or two of the float64 output, at every offset of the input.
"""

from __future__ import annotations

import keras
from keras import ops


def _group_mean(x):
    """Mean of x [B, H, W, G, C/G] over H, W and C/G as short chained reductions -> [B, 1, 1, G, 1].

    W goes first: its sum adds whole contiguous rows of C values, which vectorises on every
    backend (C/G first is as exact but 1.3x slower in TF graphs and 1.7x on JAX); the [B, H, 1,
    G, C/G] partial means are then small.
    """
    x = ops.mean(x, axis=2, keepdims=True)  # [B, H, 1, G, C/G]
    x = ops.mean(x, axis=4, keepdims=True)  # [B, H, 1, G, 1]
    return ops.mean(x, axis=1, keepdims=True)


class GroupNorm(keras.layers.Layer):
    """Group normalisation of channels-last images, PyTorch's `nn.GroupNorm` semantics.

    The C channels are split into `groups` groups of C / groups consecutive channels; each
    group of each image is normalised by its own mean and biased variance over H, W and its
    channels, then scaled and shifted per channel: y = (x - mean) / sqrt(var + eps) * gamma +
    beta. Statistics are computed in float32 also when the layer computes in (b)float16 under a
    mixed-precision policy; gamma and beta stay float32 and the output has the compute dtype.

    Args:
        groups: number of groups; must divide the channels.
        epsilon: added to the variance (PyTorch's and detectron2's 1e-5).

    Call: x [B, H, W, C] (H and W may be unknown) -> [B, H, W, C].
    Weights: gamma [C] (ones), beta [C] (zeros), the names the converters map `norm.weight` and
    `norm.bias` onto.
    """

    def __init__(self, groups: int = 32, epsilon: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        # the weights are read in float32 (no casting to a float16 compute dtype)
        self.autocast = False
        self.groups = groups
        self.epsilon = epsilon

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"GroupNorm expects [B, H, W, C], got shape {input_shape}")
        channels = input_shape[-1]
        if channels is None or channels % self.groups:
            raise ValueError(f"{self.groups} groups do not divide {channels} channels")
        self.gamma = self.add_weight(name="gamma", shape=(channels,), initializer="ones",
                                     autocast=False)
        self.beta = self.add_weight(name="beta", shape=(channels,), initializer="zeros",
                                    autocast=False)

    def call(self, x):
        channels = x.shape[-1]
        per_group = channels // self.groups
        shape = ops.shape(x)
        x = ops.cast(x, "float32")
        x = ops.reshape(x, (-1, shape[1], shape[2], self.groups, per_group))  # [B, H, W, G, C/G]
        mean = _group_mean(x)  # [B, 1, 1, G, 1]
        d = x - mean
        centre = _group_mean(d)  # what the rounded mean missed, a few ulps of it
        variance = _group_mean(ops.square(d)) - ops.square(centre)
        gamma = ops.reshape(ops.cast(self.gamma, "float32"), (self.groups, per_group))
        beta = ops.reshape(ops.cast(self.beta, "float32"), (self.groups, per_group))
        scale = gamma * ops.rsqrt(variance + self.epsilon)  # [B, 1, 1, G, C/G]
        y = d * scale + (beta - centre * scale)
        return ops.cast(ops.reshape(y, shape), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "groups": self.groups, "epsilon": self.epsilon}
