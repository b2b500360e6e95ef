"""R101c: detectron2's DeepLab stem and res5 multi-grid, against a PyTorch ResNet in detectron2's
layout and names (the zoo's R101c checkpoints name their backbone this way).

The PyTorch reference follows detectron2's `DeepLabStem` (3x3 stride-2 conv to half the stem
channels, 3x3, 3x3 to the stem channels; norm and ReLU after each; 3x3 stride-2 max pool with
padding 1) and `BottleneckBlock` (stride in the 3x3 conv, its dilation per block: res5's
multi-grid), with frozen batch norm.
"""

import numpy as np
import pytest

from maskformer.config import ConfigError
from maskformer.conversion.detectron2 import weight_map
from maskformer.experiments import get_experiment
from maskformer.modeling.maskformer import build_model
from tests.conversion.torch_utils import randomize_

torch = pytest.importorskip("torch")
nn = torch.nn


class FrozenBN(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        for name in ("weight", "bias", "running_mean", "running_var"):
            self.register_buffer(name, torch.zeros(channels))

    def forward(self, x):
        scale = self.weight * torch.rsqrt(self.running_var + 1e-5)
        shift = self.bias - self.running_mean * scale
        return x * scale[None, :, None, None] + shift[None, :, None, None]


class ConvNorm(nn.Conv2d):
    """detectron2's Conv2d with a norm: `<name>.weight` and `<name>.norm.*`."""

    def __init__(self, cin, cout, kernel, stride=1, dilation=1):
        super().__init__(cin, cout, kernel, stride=stride, padding=dilation * (kernel // 2),
                         dilation=dilation, bias=False)
        self.norm = FrozenBN(cout)

    def forward(self, x):
        return self.norm(super().forward(x))


class Bottleneck(nn.Module):
    def __init__(self, cin, width, cout, stride, dilation):
        super().__init__()
        self.shortcut = ConvNorm(cin, cout, 1, stride) if cin != cout else None
        self.conv1 = ConvNorm(cin, width, 1)
        self.conv2 = ConvNorm(width, width, 3, stride, dilation)
        self.conv3 = ConvNorm(width, cout, 1)

    def forward(self, x):
        y = torch.relu(self.conv1(x))
        y = torch.relu(self.conv2(y))
        y = self.conv3(y)
        return torch.relu(y + (self.shortcut(x) if self.shortcut is not None else x))


class DeepLabResNet(nn.Module):
    def __init__(self, stem, blocks, width, out, multi_grid):
        super().__init__()
        self.stem = nn.Module()
        self.stem.conv1 = ConvNorm(3, stem // 2, 3, 2)
        self.stem.conv2 = ConvNorm(stem // 2, stem // 2, 3)
        self.stem.conv3 = ConvNorm(stem // 2, stem, 3)
        cin = stem
        for s, n in enumerate(blocks):
            stage = nn.Sequential(*[
                Bottleneck(cin if b == 0 else out * 2**s, width * 2**s, out * 2**s,
                           2 if (b == 0 and s > 0) else 1, multi_grid[b] if s == 3 else 1)
                for b in range(n)])
            setattr(self, f"res{s + 2}", stage)
            cin = out * 2**s

    def forward(self, x):
        for name in ("conv1", "conv2", "conv3"):
            x = torch.relu(getattr(self.stem, name)(x))
        x = nn.functional.max_pool2d(x, kernel_size=3, stride=2, padding=1)
        features = {}
        for s in range(4):
            x = getattr(self, f"res{s + 2}")(x)
            features[f"res{s + 2}"] = x
        return features


def r101c_tiny():
    """maskformer_smoke_fpn with the R101c backbone settings at toy widths."""
    config = get_experiment("maskformer_smoke_fpn")
    backbone = config.model.backbone
    backbone.stem_type = "deeplab"
    backbone.stem_channels = 16
    backbone.stage_blocks = [1, 1, 2, 3]
    backbone.res5_multi_grid = [1, 2, 4]
    return config.validate()


@pytest.mark.parametrize("size", [(75, 99), (64, 64)])
def test_deeplab_stem_and_multi_grid_match_detectron2_layout(size):
    config = r101c_tiny()
    bb = config.model.backbone
    reference = DeepLabResNet(bb.stem_channels, bb.blocks(), bb.width_per_group,
                              bb.res2_out_channels, bb.res5_multi_grid).eval()
    randomize_(reference, seed=7)
    state = {f"backbone.{k}": v.numpy() for k, v in reference.state_dict().items()}

    model = build_model(config.model)
    model(np.zeros((1, 64, 64, 3), np.float32))
    targets = [t for t in weight_map(model) if t.sources[0].startswith("backbone.")]
    # The names our map asks for are exactly the reference's state dict: nothing left over.
    assert {s for t in targets for s in t.sources} == set(state)
    assert any(t.sources[0] == "backbone.stem.conv3.norm.running_var" for t in targets)
    for t in targets:
        t.variable.assign(t.transform(*(state[s] for s in t.sources)))
    assert [b.conv2.dilation for b in model.backbone.stages[3]] == [1, 2, 4]

    x = np.random.default_rng(3).normal(size=(2, *size, 3)).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x.transpose(0, 3, 1, 2)))
    ours = model.backbone(x)
    for name, ref in expected.items():
        ref = ref.numpy().transpose(0, 2, 3, 1)
        got = np.asarray(ours[name])
        assert got.shape == ref.shape, name
        assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max(), name


def test_multi_grid_is_checked_against_the_res5_blocks():
    config = r101c_tiny()
    config.model.backbone.res5_multi_grid = [1, 2]
    with pytest.raises(ConfigError, match="model.backbone.res5_multi_grid"):
        config.validate()
    config.model.backbone.res5_multi_grid = [1, 2, 4]
    config.model.backbone.stem_type = "deep"
    with pytest.raises(ConfigError, match="model.backbone.stem_type"):
        config.validate()
