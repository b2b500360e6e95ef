"""GroupNorm: float32 error of PyTorch's order against a float64 reference, at the pixel
decoder's real group sizes ([1, 120, 160, 256], 32 groups: 153,600 values per group) and at
offsets where a one-pass variance cancels; equal to torch.nn.GroupNorm; jit and mixed precision.
"""

import keras
import numpy as np
import pytest

from maskformer.modeling.normalization import GroupNorm

GROUPS = 32
SHAPE = (1, 120, 160, 256)  # the 480x640 pixel decoder's stride-4 maps
# (mean, std) of the input: centred, offsets where E[x^2] - E[x]^2 cancels, a large scale
OFFSETS = [(0.0, 1.0), (10.0, 1.0), (100.0, 1.0), (0.0, 100.0), (1000.0, 10.0)]
# A few float32 ulps of an O(1) output: the floor under a bound taken from PyTorch's error.
TINY = 2e-7


def reference(x, gamma, beta, groups=GROUPS):
    """GroupNorm in float64: x [B, H, W, C] -> [B, H, W, C]."""
    b, h, w, c = x.shape
    grouped = x.astype(np.float64).reshape(b, h, w, groups, c // groups)
    mean = grouped.mean(axis=(1, 2, 4), keepdims=True)
    var = ((grouped - mean) ** 2).mean(axis=(1, 2, 4), keepdims=True)
    normed = ((grouped - mean) / np.sqrt(var + 1e-5)).reshape(b, h, w, c)
    return normed * gamma.astype(np.float64) + beta.astype(np.float64)


def affine(channels, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.uniform(0.5, 1.5, channels).astype(np.float32),
            rng.normal(0, 0.2, channels).astype(np.float32))


def ours(gamma, beta, groups=GROUPS, **kwargs):
    layer = GroupNorm(groups=groups, **kwargs)
    layer.build((None, None, None, gamma.shape[0]))
    layer.gamma.assign(gamma)
    layer.beta.assign(beta)
    return layer


def torch_group_norm(x, gamma, beta, groups=GROUPS, dtype="float32"):
    """torch.nn.GroupNorm on x [B, H, W, C] (NCHW contiguous inside) -> [B, H, W, C]."""
    torch = pytest.importorskip("torch")
    dtype = getattr(torch, dtype)
    norm = torch.nn.GroupNorm(groups, x.shape[-1], eps=1e-5).to(dtype)
    with torch.no_grad():
        norm.weight.copy_(torch.from_numpy(gamma))
        norm.bias.copy_(torch.from_numpy(beta))
        nchw = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(dtype)
        return norm(nchw).numpy().transpose(0, 2, 3, 1)


def image(mean, std, shape=SHAPE, seed=1):
    return (np.random.default_rng(seed).normal(size=shape) * std + mean).astype(np.float32)


def jit(fn):
    """fn compiled by the backend's compiler (XLA), with unknown H and W on TensorFlow."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True,
                           input_signature=[tf.TensorSpec((None, None, None, SHAPE[-1]))])
    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(fn)
    pytest.skip(f"no jit test for backend {keras.backend.backend()}")


@pytest.mark.parametrize("mean,std", OFFSETS)
def test_error_is_of_pytorch_float32_order(mean, std):
    """max |ours - float64| <= 3x max |torch float32 - float64| (+ a few ulps)."""
    gamma, beta = affine(SHAPE[-1])
    x = image(mean, std)
    truth = reference(x, gamma, beta)
    torch_error = np.abs(torch_group_norm(x, gamma, beta) - truth).max()
    error = np.abs(np.asarray(ours(gamma, beta)(x)) - truth).max()
    assert error <= 3 * torch_error + TINY, (error, torch_error)


def test_error_bound_rejects_keras_group_normalization():
    """The bound above is not vacuous: Keras' one-pass GroupNormalization, on TensorFlow, misses
    it by an order of magnitude at mean 100 (also centred: 1e-4 against 1e-6)."""
    if keras.backend.backend() != "tensorflow":
        pytest.skip("JAX's reductions hide most of Keras' error")
    gamma, beta = affine(SHAPE[-1])
    x = image(100.0, 1.0)
    truth = reference(x, gamma, beta)
    torch_error = np.abs(torch_group_norm(x, gamma, beta) - truth).max()
    keras_norm = keras.layers.GroupNormalization(groups=GROUPS, epsilon=1e-5)
    keras_norm.build(x.shape)
    keras_norm.gamma.assign(gamma)
    keras_norm.beta.assign(beta)
    error = np.abs(np.asarray(keras_norm(x)) - truth).max()
    assert error > 10 * (3 * torch_error + TINY), (error, torch_error)


@pytest.mark.parametrize("mean,std", [(0.0, 1.0), (100.0, 1.0)])
def test_error_bound_holds_under_jit_with_unknown_size(mean, std):
    gamma, beta = affine(SHAPE[-1])
    layer = ours(gamma, beta)
    x = image(mean, std)
    truth = reference(x, gamma, beta)
    torch_error = np.abs(torch_group_norm(x, gamma, beta) - truth).max()
    out = np.asarray(jit(layer)(x))
    assert out.shape == x.shape
    assert np.abs(out - truth).max() <= 3 * torch_error + TINY
    # another size through the same compiled function
    y = image(mean, std, shape=(2, 40, 56, SHAPE[-1]), seed=2)
    assert np.abs(np.asarray(jit(layer)(y)) - reference(y, gamma, beta)).max() <= 5e-6


@pytest.mark.parametrize("groups,shape", [(32, (2, 25, 38, 256)), (8, (3, 9, 7, 64)),
                                          (1, (1, 5, 6, 12)), (12, (1, 5, 6, 12))])
def test_equals_torch_group_norm(groups, shape):
    """Same gamma and beta -> torch.nn.GroupNorm's output: consecutive channels form a group,
    the variance is the biased one, eps is 1e-5 (a std of 0.01 makes eps show). Against
    PyTorch float64 too: at mean 3, std 0.01 PyTorch float32 itself is off by 5e-5 (its
    x * scale + shift cancels), ours by 1e-6."""
    gamma, beta = affine(shape[-1], seed=groups)
    layer = ours(gamma, beta, groups=groups)
    x = image(0.0, 1.0, shape=shape, seed=groups)
    np.testing.assert_allclose(np.asarray(layer(x)), torch_group_norm(x, gamma, beta, groups),
                               rtol=0, atol=3e-6)
    for mean, std in [(0.0, 1.0), (3.0, 0.01)]:
        x = image(mean, std, shape=shape, seed=groups)
        expected = torch_group_norm(x, gamma, beta, groups, dtype="float64")
        np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=0, atol=2e-6)


def test_mixed_precision_statistics_in_float32():
    """Under mixed_bfloat16: float32 gamma/beta, bfloat16 output, float32 statistics (a
    bfloat16 mean of values near 100 would be off by up to 0.25, i.e. 0.25 standard deviations)."""
    gamma, beta = affine(64)
    x = image(100.0, 1.0, shape=(1, 24, 32, 64))
    try:
        keras.config.set_dtype_policy("mixed_bfloat16")
        layer = ours(gamma, beta, groups=8)
        out = layer(keras.ops.cast(x, "bfloat16"))
    finally:
        keras.config.set_dtype_policy("float32")
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    assert all(keras.backend.standardize_dtype(w.dtype) == "float32" for w in layer.weights)
    x16 = np.asarray(keras.ops.cast(keras.ops.cast(x, "bfloat16"), "float32"))
    expected = reference(x16, gamma, beta, groups=8)
    out32 = np.asarray(keras.ops.cast(out, "float32"))
    # bfloat16 rounding of the output only: 2^-8 relative
    np.testing.assert_allclose(out32, expected, rtol=2**-8, atol=2**-8)


def test_weights_config_and_errors():
    layer = GroupNorm(groups=4, epsilon=1e-3, name="norm")
    layer.build((None, None, None, 16))
    assert [(w.path.rsplit("/", 1)[-1], tuple(w.shape), w.trainable) for w in layer.weights] == [
        ("gamma", (16,), True), ("beta", (16,), True)]
    clone = GroupNorm.from_config(layer.get_config())
    assert (clone.groups, clone.epsilon, clone.name) == (4, 1e-3, "norm")
    x = image(0.0, 1.0, shape=(1, 6, 7, 16))
    gamma, beta = affine(16)
    a, b = ours(gamma, beta, groups=4, epsilon=1e-3), ours(gamma, beta, groups=4)
    assert np.abs(np.asarray(a(x)) - np.asarray(b(x))).max() > 1e-5  # epsilon is used
    with pytest.raises(ValueError, match="do not divide"):
        GroupNorm(groups=5).build((None, None, None, 16))
    with pytest.raises(ValueError, match="expects"):
        GroupNorm(groups=4).build((None, 16))
