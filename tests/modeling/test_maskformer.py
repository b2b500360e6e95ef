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


def test_backbone_group_norm_for_training_from_scratch():
    """backbone.norm=gn: every backbone norm is a trainable GroupNorm (PyTorch's grouping of
    consecutive channels, eps 1e-5), where the published models have frozen batch norm."""
    from maskformer.modeling.layers import FrozenBatchNorm
    from maskformer.modeling.normalization import GroupNorm

    config = get_experiment("maskformer_smoke").model
    config.backbone.norm, config.backbone.norm_groups = "gn", 8
    model = build_model(config)
    backbone = model.backbone
    norms = [layer for layer in backbone._flatten_layers() if layer.name == "norm"]
    assert len(norms) == 1 + 5 * 3 + 4  # stem, 3 in each of 5 blocks, 4 projection shortcuts
    assert not any(isinstance(n, FrozenBatchNorm) for n in norms)
    assert all(isinstance(n, GroupNorm) and n.groups == 8 for n in norms)
    assert all(v.trainable for n in norms for v in n.weights)

    # The stem: conv -> GroupNorm -> ReLU, against NumPy with random affine parameters.
    stem = backbone.stem
    rng = np.random.default_rng(0)
    stem.norm.gamma.assign(rng.normal(1, 0.3, stem.norm.gamma.shape).astype("float32"))
    stem.norm.beta.assign(rng.normal(0, 0.3, stem.norm.beta.shape).astype("float32"))
    x = rng.normal(0, 1, (2, 20, 24, 3)).astype(np.float32)
    conv = np.asarray(stem.conv(np.pad(x, [[0, 0], [3, 3], [3, 3], [0, 0]])))
    b, h, w, c = conv.shape
    grouped = conv.reshape(b, h, w, 8, c // 8)
    mean = grouped.mean(axis=(1, 2, 4), keepdims=True)
    var = grouped.var(axis=(1, 2, 4), keepdims=True)
    normed = ((grouped - mean) / np.sqrt(var + 1e-5)).reshape(b, h, w, c)
    expected = np.maximum(normed * np.asarray(stem.norm.gamma) + np.asarray(stem.norm.beta), 0)
    np.testing.assert_allclose(np.asarray(stem(x)), expected, atol=1e-4)


def test_backbone_sync_batch_norm_trains_like_torch_and_infers_like_frozen():
    """backbone.norm=sync_bn (detectron2's SyncBN): every backbone norm a trainable batch norm;
    in training the stem's output and its statistics' update are torch.nn.BatchNorm2d's
    (momentum 0.1; the moving variance from the biased batch variance), in inference it is
    the frozen batch norm of those statistics."""
    torch = pytest.importorskip("torch")
    from maskformer.modeling.layers import FrozenBatchNorm

    config = get_experiment("maskformer_smoke").model
    config.backbone.norm = "sync_bn"
    config.validate()
    backbone = build_model(config).backbone
    norms = [layer for layer in backbone._flatten_layers() if layer.name == "norm"]
    assert len(norms) == 1 + 5 * 3 + 4
    assert all(isinstance(n, keras.layers.BatchNormalization) for n in norms)
    assert all(n.synchronized == (keras.backend.backend() == "tensorflow") for n in norms)
    assert all(n.gamma.trainable and n.beta.trainable for n in norms)

    stem = backbone.stem
    rng = np.random.default_rng(1)
    gamma = rng.normal(1, 0.3, stem.norm.gamma.shape).astype("float32")
    beta = rng.normal(0, 0.3, stem.norm.beta.shape).astype("float32")
    stem.norm.gamma.assign(gamma)
    stem.norm.beta.assign(beta)
    x = rng.normal(0, 1, (2, 20, 24, 3)).astype(np.float32)
    conv = np.asarray(stem.conv(np.pad(x, [[0, 0], [3, 3], [3, 3], [0, 0]])))
    reference = torch.nn.BatchNorm2d(conv.shape[-1], eps=1e-5, momentum=0.1).train()
    with torch.no_grad():
        reference.weight.copy_(torch.from_numpy(gamma))
        reference.bias.copy_(torch.from_numpy(beta))
        expected = reference(torch.from_numpy(np.ascontiguousarray(conv.transpose(0, 3, 1, 2))))
    expected = np.maximum(expected.numpy().transpose(0, 2, 3, 1), 0)
    np.testing.assert_allclose(np.asarray(stem(x, training=True)), expected, atol=1e-4)
    n = conv.shape[0] * conv.shape[1] * conv.shape[2]
    np.testing.assert_allclose(np.asarray(stem.norm.moving_mean),
                               reference.running_mean.numpy(), atol=1e-5)
    biased = 0.9 + (reference.running_var.numpy() - 0.9) * (n - 1) / n
    np.testing.assert_allclose(np.asarray(stem.norm.moving_variance), biased, rtol=1e-5)

    frozen = FrozenBatchNorm(epsilon=1e-5)
    frozen.build(conv.shape)
    for name in ("gamma", "beta", "moving_mean", "moving_variance"):
        getattr(frozen, name).assign(getattr(stem.norm, name))
    np.testing.assert_allclose(np.asarray(stem(x, training=False)),
                               np.maximum(np.asarray(frozen(conv)), 0), atol=1e-5)


def test_backbone_norm_is_checked():
    from maskformer.config import ConfigError

    config = get_experiment("maskformer_smoke").model
    config.backbone.norm = "gn"  # 32 groups cannot split the tiny model's 16 stem channels
    with pytest.raises(ConfigError, match=r"model.backbone.norm_groups: 32 .*\[8, 16\]"):
        config.validate()
    config.backbone.norm = "batch"
    with pytest.raises(ConfigError, match="model.backbone.norm"):
        config.validate()


def test_backbone_res5_dilation_keeps_stride_16():
    """res5_dilation=2 (detectron2's RES5_DILATION): res5 has no stride, its 3x3 convs are
    dilated, and every weight keeps its shape (a checkpoint loads either way)."""
    from maskformer.config import ConfigError
    from maskformer.modeling.backbone import ResNet

    config = get_experiment("maskformer_smoke").model.backbone
    x = np.random.default_rng(0).normal(size=(1, 64, 96, 3)).astype(np.float32)
    plain = ResNet(config)
    plain_features = plain(x)
    config.res5_dilation = 2
    dilated = ResNet(config)
    features = dilated(x)
    assert tuple(features["res5"].shape) == (1, 4, 6, config.res2_out_channels * 8)
    assert tuple(plain_features["res5"].shape) == (1, 2, 3, config.res2_out_channels * 8)
    assert [tuple(v.shape) for v in dilated.weights] == [tuple(v.shape) for v in plain.weights]
    assert [b.conv2.dilation for b in dilated.stages[3]] == [2] * len(dilated.stages[3])
    assert [b.conv2.dilation for b in dilated.stages[2]] == [1] * len(dilated.stages[2])
    # Same weights: res2..res4 agree; res5 differs (it sees a finer grid).
    dilated.set_weights(plain.get_weights())
    features = dilated(x)
    for name in ("res2", "res3", "res4"):
        np.testing.assert_allclose(np.asarray(features[name]), np.asarray(plain_features[name]),
                                   rtol=1e-5, atol=1e-5)
    config.res5_dilation = 4
    with pytest.raises(ConfigError, match="model.backbone.res5_dilation"):
        config.validate()


@pytest.mark.parametrize("pixel_decoder,feature", [("transformer_encoder", "res3"),
                                                   ("fpn", "res4"), ("fpn", "")])
def test_transformer_in_feature_is_the_predictor_memory(pixel_decoder, feature):
    """The predictor attends to the configured feature (the original's TRANSFORMER_IN_FEATURE);
    empty means res5 for the FPN decoder."""
    config = get_experiment("maskformer_smoke").model
    config.pixel_decoder = pixel_decoder
    config.transformer_in_feature = feature
    model = build_model(config)
    x = np.random.default_rng(0).uniform(0, 255, size=(2, 64, 64, 3)).astype(np.float32)
    features = model.backbone(model.normalize(ops.convert_to_tensor(x)))
    states = model.predictor(features[feature or "res5"])
    expected = model.predictor.class_embed(states[-1])
    np.testing.assert_allclose(np.asarray(model(x)["pred_logits"]), np.asarray(expected),
                               rtol=1e-5, atol=1e-5)


def test_transformer_in_feature_is_checked():
    from maskformer.config import ConfigError

    config = get_experiment("maskformer_smoke").model
    assert config.predictor_input() == "transformer_encoder"
    config.transformer_in_feature = "res6"
    with pytest.raises(ConfigError, match="model.transformer_in_feature: 'res6'"):
        config.validate()
    config.pixel_decoder, config.transformer_in_feature = "fpn", "transformer_encoder"
    with pytest.raises(ConfigError, match="needs model.pixel_decoder 'transformer_encoder'"):
        config.validate()
