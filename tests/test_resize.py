"""PyTorch's F.interpolate rules (nearest legacy, bilinear half-pixel) on both backends: the
resizes of model, objective and post-processing."""

import keras
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from keras import ops

from maskformer.resize import bilinear_resize, nearest_indices, nearest_resize, upsample_bilinear
from tests.objective.helpers import to_numpy

SIZES = [(24, 96), (25, 97), (18, 70), (22, 85), (76, 151), (7, 13), (13, 25), (16, 32),
         (97, 25), (70, 18), (128, 512), (33, 33), (100, 30), (70, 30)]


@pytest.mark.parametrize("out_size,in_size", SIZES)
def test_nearest_indices_equal_pytorch(out_size, in_size):
    x = torch.arange(in_size, dtype=torch.float32)[None, None, :, None]
    ref = F.interpolate(x, size=(out_size, 1), mode="nearest")[0, 0, :, 0].long().numpy()
    np.testing.assert_array_equal(nearest_indices(in_size, out_size), ref)


def test_nearest_resize_of_masks_equals_pytorch():
    rng = np.random.default_rng(0)
    masks = (rng.random((2, 3, 97, 131)) > 0.5).astype(np.float32)
    ref = F.interpolate(torch.from_numpy(masks), size=(25, 33), mode="nearest").numpy()
    np.testing.assert_array_equal(to_numpy(nearest_resize(masks, (25, 33))), ref)


@pytest.mark.parametrize("in_hw,out_hw", [
    ((24, 32), (96, 128)),   # 4x up
    ((25, 33), (97, 131)),   # odd, not a multiple
    ((18, 22), (70, 85)),
    ((40, 36), (17, 25)),    # downsampling: no antialiasing in PyTorch
    ((64, 64), (20, 9)),     # strong downsampling
    ((30, 10), (12, 47)),    # down in one axis, up in the other
])
def test_bilinear_resize_equals_pytorch(in_hw, out_hw):
    rng = np.random.default_rng(1)
    x = rng.normal(0, 3, (2, 3) + in_hw).astype(np.float32)
    ref = F.interpolate(torch.from_numpy(x), size=out_hw, mode="bilinear",
                        align_corners=False).numpy()
    np.testing.assert_allclose(to_numpy(bilinear_resize(x, out_hw)), ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("in_size", [4, 25, 97, 133, 199])
@pytest.mark.parametrize("out_size", [1, 15, 100, 397, 800])
def test_bilinear_taps_equal_pytorch_exactly(in_size, out_size):
    """The interpolation matrix PyTorch applies (read off from an identity input), bit for bit."""
    from maskformer.resize import bilinear_weights

    eye = torch.eye(in_size, dtype=torch.float32)[None, :, :, None]
    ref = F.interpolate(eye, size=(out_size, 1), mode="bilinear", align_corners=False)[0, :, :, 0]
    index0, index1, weight0, weight1 = bilinear_weights(in_size, out_size)
    ours = np.zeros((in_size, out_size), np.float32)
    np.add.at(ours, (index0, np.arange(out_size)), weight0)
    np.add.at(ours, (index1, np.arange(out_size)), weight1)
    np.testing.assert_array_equal(ours, ref.numpy())


@pytest.mark.parametrize("src,dst", [(4, 7), (7, 13), (13, 25), (76, 151), (5, 10), (3, 3)])
def test_dynamic_nearest_indices_equal_pytorch(src, dst):
    x = torch.arange(src, dtype=torch.float32).reshape(1, 1, src, 1)
    ref = torch.nn.functional.interpolate(x, size=(dst, 1), mode="nearest")[0, 0, :, 0].numpy()
    np.testing.assert_array_equal(to_numpy(nearest_indices(ops.convert_to_tensor(src), ops.convert_to_tensor(dst))), ref.astype(int))


def test_nearest_resize_of_channels_last_features():
    x = np.arange(4 * 5, dtype=np.float32).reshape(1, 4, 5, 1)
    out = to_numpy(nearest_resize(x, (7, 9), axes=(1, 2)))
    rows, cols = [0, 0, 1, 1, 2, 2, 3], [0, 0, 1, 1, 2, 2, 3, 3, 4]
    np.testing.assert_array_equal(out[0, :, :, 0], x[0][np.ix_(rows, cols)][..., 0])


@pytest.mark.parametrize("in_hw,out_hw,bound", [
    ((25, 33), (100, 132), 5e-7),     # the integer ratios of post-processing's upsample
    ((30, 40), (640, 640), 5e-7),
    ((200, 304), (800, 1216), 5e-7),
    ((25, 33), (97, 131), 3e-6),      # a non-integer ratio
])
def test_upsample_bilinear_is_within_coordinate_rounding_of_pytorch(in_hw, out_hw, bound):
    """What the module docstring states: ops.image.resize places its taps by another float32
    evaluation of the source coordinate; the exact taps of bilinear_resize stay at 1e-7."""
    x = np.random.default_rng(0).normal(0, 3, (1, 2) + in_hw).astype(np.float32)
    ref = F.interpolate(torch.from_numpy(x), size=out_hw, mode="bilinear",
                        align_corners=False).numpy()
    scale = np.abs(ref).max()
    assert np.abs(to_numpy(upsample_bilinear(x, out_hw)) - ref).max() / scale < bound
    assert np.abs(to_numpy(bilinear_resize(x, out_hw)) - ref).max() / scale < 3e-7


def test_tensor_taps_are_the_host_taps():
    """`bilinear_weights_tensor` (sizes known at run time) is bit-identical to the NumPy taps,
    at the stride-4 ratios post-processing uses and at odd ones."""
    from maskformer.resize import bilinear_weights, bilinear_weights_tensor

    if keras.backend.backend() != "tensorflow":
        pytest.skip("needs float64 tensors: the TensorFlow backend's path")
    for in_size, out_size in [(9, 35), (13, 50), (1, 4), (200, 800), (17, 68), (304, 1216),
                              (7, 5), (333, 1000)]:
        for got, want in zip(bilinear_weights_tensor(in_size, out_size),
                             bilinear_weights(in_size, out_size), strict=True):
            np.testing.assert_array_equal(to_numpy(got), want, err_msg=f"{in_size}->{out_size}")
