import numpy as np
import pytest

from maskformer.modeling.layers import Conv2d, nearest_indices, resize_nearest


@pytest.mark.parametrize("src,dst", [(4, 7), (7, 13), (13, 25), (76, 151), (5, 10), (3, 3)])
def test_nearest_matches_pytorch(src, dst):
    torch = pytest.importorskip("torch")
    x = torch.arange(src, dtype=torch.float32).reshape(1, 1, src, 1)
    ref = torch.nn.functional.interpolate(x, size=(dst, 1), mode="nearest")[0, 0, :, 0].numpy()
    np.testing.assert_array_equal(np.asarray(nearest_indices(src, dst)), ref.astype(int))


def test_resize_nearest_2d():
    x = np.arange(4 * 5, dtype=np.float32).reshape(1, 4, 5, 1)
    out = np.asarray(resize_nearest(x, (7, 9)))
    rows, cols = [0, 0, 1, 1, 2, 2, 3], [0, 0, 1, 1, 2, 2, 3, 3, 4]
    np.testing.assert_array_equal(out[0, :, :, 0], x[0][np.ix_(rows, cols)][..., 0])


@pytest.mark.parametrize("size", [66, 67])
def test_stride2_conv_pads_symmetrically_like_pytorch(size):
    """For even sizes TF's 'same' pads only bottom/right; PyTorch pads both sides."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, size, size, 3)).astype(np.float32)
    w = rng.normal(size=(4, 3, 7, 7)).astype(np.float32)
    layer = Conv2d(4, 7, strides=2)
    layer(x)
    layer.conv.kernel.assign(w.transpose(2, 3, 1, 0))
    ref = torch.nn.functional.conv2d(torch.from_numpy(x.transpose(0, 3, 1, 2)),
                                     torch.from_numpy(w), stride=2, padding=3).numpy()
    np.testing.assert_allclose(np.asarray(layer(x)).transpose(0, 3, 1, 2), ref, atol=1e-4)


@pytest.mark.parametrize("size", [12, 13])
def test_dilated_conv_matches_pytorch(size):
    """A dilated 3x3 conv (detectron2's res5 with RES5_DILATION=2) pads dilation * 1 per side."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, size, size, 5)).astype(np.float32)
    w = rng.normal(size=(6, 5, 3, 3)).astype(np.float32)
    layer = Conv2d(6, 3, dilation=2)
    layer(x)
    layer.conv.kernel.assign(w.transpose(2, 3, 1, 0))
    ref = torch.nn.functional.conv2d(torch.from_numpy(x.transpose(0, 3, 1, 2)),
                                     torch.from_numpy(w), padding=2, dilation=2).numpy()
    out = np.asarray(layer(x)).transpose(0, 3, 1, 2)
    assert out.shape == ref.shape == (2, 6, size, size)
    np.testing.assert_allclose(out, ref, atol=1e-4)
