"""Building blocks shared by the backbone, the pixel decoders and the heads.

PyTorch semantics are reproduced where Keras' defaults differ (REFERENCE.md section 12):
explicit symmetric padding instead of 'same', eps 1e-5 norms (resizes: `maskformer.resize`).
"""

from __future__ import annotations

import keras
from keras import ops

from maskformer.modeling.normalization import GroupNorm


class FrozenBatchNorm(keras.layers.Layer):
    """Batch norm with fixed statistics and affine parameters (detectron2's FrozenBatchNorm2d).

    y = (x - moving_mean) / sqrt(moving_variance + eps) * gamma + beta. Nothing here is trainable.
    """

    def __init__(self, epsilon: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape):
        channels = input_shape[-1]
        self.gamma = self.add_weight(name="gamma", shape=(channels,), initializer="ones",
                                     trainable=False)
        self.beta = self.add_weight(name="beta", shape=(channels,), initializer="zeros",
                                    trainable=False)
        self.moving_mean = self.add_weight(name="moving_mean", shape=(channels,),
                                           initializer="zeros", trainable=False)
        self.moving_variance = self.add_weight(name="moving_variance", shape=(channels,),
                                               initializer="ones", trainable=False)

    def call(self, x):
        scale = self.gamma * ops.rsqrt(self.moving_variance + self.epsilon)
        shift = self.beta - self.moving_mean * scale
        return x * ops.cast(scale, x.dtype) + ops.cast(shift, x.dtype)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


def sync_batch_norm(epsilon: float = 1e-5, **kwargs) -> keras.layers.BatchNormalization:
    """Trainable batch norm over the global batch (detectron2's "SyncBN",
    `torch.nn.SyncBatchNorm` with its defaults: momentum 0.1 of the new statistics, eps).

    On TensorFlow the batch statistics are all-reduced across the replicas of a tf.distribute
    strategy (`synchronized=True`); on JAX a step is one program over the global batch, whose
    mean is global already. In inference it is `FrozenBatchNorm` with the moving statistics
    (the same variable names: gamma, beta, moving_mean, moving_variance). One difference from
    PyTorch: the moving variance takes the batch's biased variance, PyTorch's the unbiased one
    (a factor n / (n - 1), n the pixels of the global batch).
    """
    return keras.layers.BatchNormalization(
        momentum=0.9, epsilon=epsilon, synchronized=keras.backend.backend() == "tensorflow",
        **kwargs)


class Conv2d(keras.layers.Layer):
    """Conv with PyTorch's symmetric zero padding (k // 2), optional norm and ReLU.

    Mirrors detectron2's `Conv2d(..., norm=..., activation=...)`: conv -> norm -> activation.
    'same' padding is not used because for stride 2 TF pads only bottom/right.

    Args:
        filters: output channels.
        kernel_size: square kernel size.
        strides: stride.
        use_bias: conv bias (detectron2 convs followed by a norm have none).
        norm: None, "frozen_bn", "sync_bn" (`sync_batch_norm`) or "gn" (`GroupNorm`,
            PyTorch's exactness).
        activation: None or "relu".
        norm_groups: GroupNorm's groups (32 in the original).
        dilation: dilation of the kernel (padding grows with it: dilation * (k // 2)).
    """

    def __init__(self, filters: int, kernel_size: int, strides: int = 1, use_bias: bool = False,
                 norm: str | None = None, activation: str | None = None, norm_eps: float = 1e-5,
                 norm_groups: int = 32, dilation: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.use_bias = use_bias
        self.norm_type = norm
        self.activation = activation
        self.norm_eps = norm_eps
        self.norm_groups = norm_groups
        self.dilation = dilation
        self.conv = keras.layers.Conv2D(filters, kernel_size, strides=strides, padding="valid",
                                        dilation_rate=dilation, use_bias=use_bias, name="conv",
                                        kernel_initializer=keras.initializers.HeNormal())
        if norm == "frozen_bn":
            self.norm = FrozenBatchNorm(epsilon=norm_eps, name="norm")
        elif norm == "sync_bn":
            self.norm = sync_batch_norm(epsilon=norm_eps, name="norm")
        elif norm == "gn":
            # not keras.layers.GroupNormalization: its float32 statistics drift on large
            # groups (see normalization.py)
            self.norm = GroupNorm(groups=norm_groups, epsilon=norm_eps, name="norm")
        elif norm is None:
            self.norm = None
        else:
            raise ValueError(f"unknown norm {norm!r}")

    def build(self, input_shape):
        pad = self.dilation * (self.kernel_size // 2)
        padded = (input_shape[0], None, None, input_shape[-1])
        self.conv.build(padded if pad else input_shape)
        if self.norm is not None:
            self.norm.build(input_shape[:-1] + (self.filters,))

    def call(self, x):
        pad = self.dilation * (self.kernel_size // 2)
        if pad:
            x = ops.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation == "relu":
            x = ops.relu(x)
        return x

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "use_bias": self.use_bias, "norm": self.norm_type,
                "activation": self.activation, "norm_eps": self.norm_eps,
                "norm_groups": self.norm_groups, "dilation": self.dilation}


class MLP(keras.layers.Layer):
    """Dense layers with ReLU between them and none after the last (`mask_embed`)."""

    def __init__(self, hidden: int, out: int, num_layers: int, **kwargs):
        super().__init__(**kwargs)
        self.hidden, self.out, self.num_layers = hidden, out, num_layers
        self.dense = [keras.layers.Dense(hidden if i < num_layers - 1 else out, name=f"layer_{i}")
                      for i in range(num_layers)]

    def call(self, x):
        for i, layer in enumerate(self.dense):
            x = layer(x)
            if i < self.num_layers - 1:
                x = ops.relu(x)
        return x

    def get_config(self):
        return {**super().get_config(), "hidden": self.hidden, "out": self.out,
                "num_layers": self.num_layers}
