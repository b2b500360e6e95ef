import numpy as np
import pytest

from maskformer.modeling.layers import Conv2d


@pytest.mark.parametrize("kernel,strides,dilation,size", [
    (7, 2, 1, 66), (7, 2, 1, 67),   # stem: TF's 'same' pads even sizes only bottom/right
    (3, 1, 2, 12), (3, 1, 2, 13),   # res5 with RES5_DILATION=2: pads dilation * 1 per side
])
def test_conv_pads_symmetrically_like_pytorch(kernel, strides, dilation, size):
    """Conv2d pads dilation * (kernel - 1) / 2 on every side, as PyTorch's padding does."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(size)
    x = rng.normal(size=(2, size, size, 3)).astype(np.float32)
    w = rng.normal(size=(4, 3, kernel, kernel)).astype(np.float32)
    layer = Conv2d(4, kernel, strides=strides, dilation=dilation)
    layer(x)
    layer.conv.kernel.assign(w.transpose(2, 3, 1, 0))
    ref = torch.nn.functional.conv2d(torch.from_numpy(x.transpose(0, 3, 1, 2)),
                                     torch.from_numpy(w), stride=strides,
                                     padding=dilation * (kernel // 2), dilation=dilation).numpy()
    out = np.asarray(layer(x)).transpose(0, 3, 1, 2)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, atol=1e-4)


def test_conv_group_norm_round_trips_config():
    """Conv2d(norm="gn") holds a GroupNorm whose gamma/beta (the converters' `norm.weight` /
    `norm.bias`) and output survive from_config(get_config())."""
    from maskformer.modeling.normalization import GroupNorm

    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, (1, 10, 12, 8)).astype(np.float32)
    layer = Conv2d(32, 3, norm="gn", activation="relu", norm_groups=4, name="adapter_1")
    layer(x)
    assert isinstance(layer.norm, GroupNorm) and layer.norm.groups == 4
    assert layer.norm.epsilon == 1e-5
    assert [w.path for w in layer.norm.weights] == ["adapter_1/norm/gamma", "adapter_1/norm/beta"]
    layer.norm.gamma.assign(rng.uniform(0.5, 1.5, 32).astype(np.float32))
    layer.norm.beta.assign(rng.normal(0, 1, 32).astype(np.float32))
    clone = Conv2d.from_config(layer.get_config())
    clone(x)
    for a, b in zip(layer.weights, clone.weights, strict=True):
        assert a.path == b.path and a.shape == b.shape
        b.assign(a)
    np.testing.assert_array_equal(np.asarray(clone(x)), np.asarray(layer(x)))
