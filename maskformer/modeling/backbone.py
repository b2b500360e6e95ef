"""ResNet backbone in detectron2's layout (REFERENCE.md section 2).

The stride-2 of a stage sits in the 3x3 conv, every norm is a frozen batch norm (or, for a
backbone trained from scratch, a GroupNorm), padding is explicit and symmetric. Returns
res2..res5 at strides 4, 8, 16, 32 (res5 at 16 with `res5_dilation` 2: its stride-2 becomes a
dilation of 2, as detectron2's RES5_DILATION).

The stem is detectron2's `BasicStem` (one 7x7 stride-2 conv) or, for the zoo's R101c models,
its DeepLab project's `DeepLabStem` (3x3 stride 2 to half the stem channels, 3x3, 3x3 to the
stem channels, each with norm and ReLU); either is followed by a 3x3 stride-2 max pool. The
R101c models also dilate res5's blocks by a multi-grid (1, 2, 4).
"""

from __future__ import annotations

import keras
from keras import ops

from maskformer.config import BackboneConfig
from maskformer.modeling.layers import Conv2d


class Bottleneck(keras.layers.Layer):
    """1x1 -> 3x3 (stride, dilation) -> 1x1, each with a norm; projection shortcut when channels
    change."""

    def __init__(self, width: int, out_channels: int, strides: int, projection: bool,
                 norm_eps: float = 1e-5, norm: str = "frozen_bn", norm_groups: int = 32,
                 dilation: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.out_channels = out_channels
        self.strides = strides
        self.projection = projection
        self.norm_eps = norm_eps
        self.norm_type = norm
        self.norm_groups = norm_groups
        self.dilation = dilation
        norm = {"norm": norm, "norm_eps": norm_eps, "norm_groups": norm_groups}
        self.conv1 = Conv2d(width, 1, activation="relu", name="conv1", **norm)
        self.conv2 = Conv2d(width, 3, strides=strides, activation="relu", dilation=dilation,
                            name="conv2", **norm)
        self.conv3 = Conv2d(out_channels, 1, name="conv3", **norm)
        self.shortcut = (Conv2d(out_channels, 1, strides=strides, name="shortcut", **norm)
                         if projection else None)

    def call(self, x):
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        y = self.conv3(self.conv2(self.conv1(x)))
        return ops.relu(y + shortcut)

    def get_config(self):
        return {**super().get_config(), "width": self.width, "out_channels": self.out_channels,
                "strides": self.strides, "projection": self.projection,
                "norm_eps": self.norm_eps, "norm": self.norm_type, "norm_groups": self.norm_groups,
                "dilation": self.dilation}


class DeepLabStem(keras.layers.Layer):
    """Three 3x3 convs (the first with stride 2), each followed by its norm and ReLU."""

    def __init__(self, channels: int, norm_eps: float = 1e-5, norm: str = "frozen_bn",
                 norm_groups: int = 32, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.norm_eps = norm_eps
        self.norm_type = norm
        self.norm_groups = norm_groups
        norm = {"norm": norm, "norm_eps": norm_eps, "norm_groups": norm_groups}
        self.conv1 = Conv2d(channels // 2, 3, strides=2, activation="relu", name="conv1", **norm)
        self.conv2 = Conv2d(channels // 2, 3, activation="relu", name="conv2", **norm)
        self.conv3 = Conv2d(channels, 3, activation="relu", name="conv3", **norm)

    def call(self, x):
        return self.conv3(self.conv2(self.conv1(x)))

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "norm_eps": self.norm_eps,
                "norm": self.norm_type, "norm_groups": self.norm_groups}


class ResNet(keras.layers.Layer):
    """ResNet-50/101 (or a custom depth per stage) returning {"res2": ..., "res5": ...}, NHWC."""

    def __init__(self, config: BackboneConfig, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        norm = {"norm": config.norm, "norm_eps": config.norm_eps,
                "norm_groups": config.norm_groups}
        if config.stem_type == "deeplab":
            self.stem = DeepLabStem(config.stem_channels, name="stem", **norm)
        else:
            self.stem = Conv2d(config.stem_channels, 7, strides=2, activation="relu",
                               name="stem", **norm)
        self.stages = []
        in_channels = config.stem_channels
        for s, (num_blocks, (width, out_channels)) in enumerate(
                zip(config.blocks(), config.stage_widths(), strict=True)):
            blocks = []
            # detectron2's RES5_DILATION: a dilated res5 keeps stride 16 instead of 32; the
            # multi-grid dilates res5's blocks further, one factor per block.
            dilations = config.res5_dilations() if s == 3 else [1] * num_blocks
            for b in range(num_blocks):
                strides = 2 if (b == 0 and s > 0 and not (s == 3 and config.res5_dilation > 1)) else 1
                blocks.append(Bottleneck(width, out_channels, strides,
                                         projection=(in_channels != out_channels),
                                         dilation=dilations[b], name=f"res{s + 2}_{b}", **norm))
                in_channels = out_channels
            self.stages.append(blocks)

    @property
    def out_channels(self) -> dict[str, int]:
        return {f"res{s + 2}": out for s, (_, out) in enumerate(self.config.stage_widths())}

    def call(self, images):
        x = self.stem(images)
        # 3x3 max pool, stride 2, padding 1. The input is post-ReLU (>= 0), so zero padding
        # never wins the max and equals PyTorch's -inf padding.
        x = ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
        x = ops.max_pool(x, pool_size=3, strides=2, padding="valid")
        features = {}
        for s, blocks in enumerate(self.stages):
            for block in blocks:
                x = block(x)
            features[f"res{s + 2}"] = x
        return features
