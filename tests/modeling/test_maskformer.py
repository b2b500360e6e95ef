"""The assembled model: output structure, any input size, graph and XLA compilation."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from maskformer.experiments import get_experiment
from maskformer.modeling.maskformer import MaskFormer, build_model
from tests.conftest import backend


@pytest.fixture(scope="module")
def smoke_model():
    return build_model(get_experiment("maskformer_smoke").model)


@pytest.mark.parametrize("size", [(64, 64), (97, 131), (50, 33)])
def test_output_shapes_follow_the_strides(smoke_model, size):
    out = smoke_model(np.zeros((2, *size, 3), np.float32))
    # Each stride-2 layer maps n to ceil(n / 2); two of them give stride 4.
    h, w = (math.ceil(math.ceil(n / 2) / 2) for n in size)
    assert tuple(out["pred_logits"].shape) == (2, 10, 8)
    assert tuple(out["pred_masks"].shape) == (2, 10, h, w)
    assert len(out["aux_outputs"]) == 2
    for aux in out["aux_outputs"]:
        assert tuple(aux["pred_masks"].shape) == (2, 10, h, w)


def test_size_divisibility_pads_inside_the_model():
    config = get_experiment("maskformer_smoke_fpn").model
    config.size_divisibility = 32
    model = build_model(config)
    out = model(np.zeros((1, 70, 90, 3), np.float32))
    assert tuple(out["pred_masks"].shape) == (1, 10, 24, 24)  # padded to 96 x 96


def test_deep_supervision_off():
    config = get_experiment("maskformer_smoke").model
    config.deep_supervision = False
    out = build_model(config)(np.zeros((1, 32, 32, 3), np.float32))
    assert "aux_outputs" not in out


def test_dropout_only_in_training(smoke_model):
    x = np.random.default_rng(0).uniform(0, 255, (1, 48, 48, 3)).astype(np.float32)
    a = np.asarray(smoke_model(x, training=False)["pred_logits"])
    b = np.asarray(smoke_model(x, training=False)["pred_logits"])
    c = np.asarray(smoke_model(x, training=True)["pred_logits"])
    np.testing.assert_array_equal(a, b)
    assert np.max(np.abs(a - c)) > 1e-4


def test_config_round_trip(smoke_model):
    clone = MaskFormer.from_config(smoke_model.get_config())
    assert clone.config == smoke_model.config


@pytest.mark.skipif(backend() != "tensorflow", reason="tf.function is TensorFlow's")
@pytest.mark.parametrize("jit_compile", [False, True])
def test_tf_function_with_unknown_size(smoke_model, jit_compile):
    import tensorflow as tf

    fn = tf.function(lambda x: smoke_model(x, training=False), jit_compile=jit_compile,
                     input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    rng = np.random.default_rng(0)
    for size in [(64, 48), (97, 131)]:
        x = rng.uniform(0, 255, (2, *size, 3)).astype(np.float32)
        eager = smoke_model(x, training=False)
        graph = fn(x)
        np.testing.assert_allclose(graph["pred_masks"], eager["pred_masks"], atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(graph["pred_logits"], eager["pred_logits"], atol=1e-4,
                                   rtol=1e-4)


@pytest.mark.skipif(backend() != "jax", reason="jax.jit is JAX's")
def test_jax_jit(smoke_model):
    import jax

    params = [v.value for v in smoke_model.trainable_variables]
    frozen = [v.value for v in smoke_model.non_trainable_variables]

    @jax.jit
    def forward(params, frozen, x):
        out, _ = smoke_model.stateless_call(params, frozen, x, training=False)
        return out

    x = np.random.default_rng(0).uniform(0, 255, (2, 97, 131, 3)).astype(np.float32)
    out = forward(params, frozen, x)
    np.testing.assert_allclose(out["pred_masks"], smoke_model(x)["pred_masks"], atol=1e-4,
                               rtol=1e-4)


def test_mixed_precision_bfloat16():
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = build_model(get_experiment("maskformer_smoke").model)
        out = model(np.zeros((1, 32, 32, 3), np.float32))
        assert all(np.isfinite(np.asarray(ops.cast(out["pred_masks"], "float32"))).ravel())
    finally:
        keras.config.set_dtype_policy("float32")
