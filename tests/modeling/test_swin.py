"""The Swin backbone: the original's reference vectors, compilation, stochastic depth, config.

The reference file (shared/testdata/official/swin_backbone_tiny.npz, README section E) holds the
original `SwinTransformer` (embed_dim 32, depths [2, 2, 2, 2], window 7) with every parameter
randomised, run on an 83x117 input (patch and window padding) and a 224x224 one (no padding,
res5 a single window). Its parameters load through the detectron2 converter, strictly.
"""

import json
import weakref

import keras
import numpy as np
import pytest
from keras import ops

from maskformer.config import (
    BackboneConfig,
    ConfigError,
    ExperimentConfig,
    ModelConfig,
    SwinConfig,
    apply_overrides,
)
from maskformer.conversion.detectron2 import assign_backbone_weights, weight_map
from maskformer.modeling.maskformer import build_model
from maskformer.modeling.swin import (
    DropPath,
    SwinBlock,
    SwinStage,
    SwinTransformer,
    WindowAttention,
    build_swin,
    relative_position_index,
)
from tests.conftest import backend, reference_file

STAGES = ["res2", "res3", "res4", "res5"]


def tiny_swin(window_size=7, drop_path_rate=0.0, seed=0, **kwargs):
    """embed_dim 8, two blocks (a plain and a shifted one) per stage, random weights."""
    config = SwinConfig(embed_dim=8, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4],
                        window_size=window_size, drop_path_rate=drop_path_rate, **kwargs)
    backbone = build_swin(config)
    backbone.build((None, None, None, 3))
    randomize(backbone, seed)
    return backbone


def randomize(layer, seed):
    """Every weight random (norm scales around 1), so that no mapping hides behind identities."""
    rng = np.random.default_rng(seed)
    for v in layer.weights:
        if "seed_generator" in v.path:
            continue
        if v.path.endswith("gamma"):
            value = rng.uniform(0.5, 1.5, v.shape)
        elif len(v.shape) >= 2:
            value = rng.normal(0, 1 / np.sqrt(np.prod(v.shape[:-1])), v.shape)
        else:
            value = rng.normal(0, 0.1, v.shape)
        v.assign(value.astype("float32"))


def numpy(tree):
    if isinstance(tree, dict):
        return {k: numpy(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return [numpy(v) for v in tree]
    return np.asarray(ops.convert_to_numpy(tree))


_jitted = weakref.WeakKeyDictionary()


def run(layer, x, training=False):
    """layer(x) as numpy: eagerly on TensorFlow, under jax.jit on JAX (where eager dispatch
    compiles every op anew for each shape, minutes for these tests). Random states (drop path)
    advance as in an eager call."""
    if backend() != "jax":
        return numpy(layer(x, training=training))
    import jax

    fns = _jitted.setdefault(layer, {})
    if training not in fns:
        fns[training] = jax.jit(lambda params, state, x: layer.stateless_call(
            params, state, x, training=training))
    out, state = fns[training]([v.value for v in layer.trainable_variables],
                               [v.value for v in layer.non_trainable_variables], x)
    for variable, value in zip(layer.non_trainable_variables, state, strict=True):
        variable.assign(value)
    return numpy(out)


# --- the original's reference vectors ------------------------------------------------------


@pytest.fixture(scope="module")
def reference():
    z = np.load(reference_file("swin_backbone_tiny.npz"))
    config = json.loads(str(z["config"]))
    kw = config["kwargs"]
    assert not kw["ape"] and kw["patch_norm"] and kw["qk_scale"] is None
    swin = SwinConfig(embed_dim=kw["embed_dim"], depths=kw["depths"], num_heads=kw["num_heads"],
                      window_size=kw["window_size"], patch_size=kw["patch_size"],
                      mlp_ratio=kw["mlp_ratio"], qkv_bias=kw["qkv_bias"],
                      drop_path_rate=kw["drop_path_rate"])
    params = {k[len("param/"):]: z[k] for k in z.files if k.startswith("param/")}
    assert len(params) == len(z["state_dict_keys"]) == 133
    backbone = build_swin(swin)
    backbone.build((None, None, None, 3))
    assign_backbone_weights(backbone, params, source="swin_backbone_tiny.npz")
    return z, config, params, backbone


@pytest.mark.parametrize("index", [0, 1])
def test_matches_original_swin(reference, index):
    """83x117 (patch padding to 84x120, window padding in every stage) and 224x224 (no padding,
    res5 exactly one window, still shifted and masked): every output stage within 1e-5 of the
    largest reference value."""
    z, config, _, backbone = reference
    images = np.transpose(z[f"input/images_norm_{index}"], (0, 2, 3, 1))  # NCHW -> NHWC
    out = run(backbone, images)
    assert sorted(out) == STAGES
    for name in STAGES:
        ref = np.transpose(z[f"output/{index}/{name}"], (0, 2, 3, 1))
        assert out[name].shape == ref.shape, name
        err = np.max(np.abs(out[name] - ref))
        assert err <= 1e-5 * np.max(np.abs(ref)), (
            f"input {index} {name}: max |ours - ref| = {err:.3g}, "
            f"{err / np.max(np.abs(ref)):.3g} of max |ref|")


def test_reference_layout(reference):
    """Channels and strides as the original reports them; the index buffers are the formula."""
    z, config, params, backbone = reference
    assert list(backbone.out_channels.values()) == config["num_features"]
    assert list(backbone.out_channels) == STAGES
    w = config["kwargs"]["window_size"]
    buffers = [k for k in params if k.endswith("relative_position_index")]
    assert len(buffers) == sum(config["kwargs"]["depths"])
    for key in buffers:
        np.testing.assert_array_equal(params[key], relative_position_index(w), err_msg=key)


# --- shapes, compilation --------------------------------------------------------------------

SIZES = [(75, 101), (30, 200)]  # neither a multiple of 32 nor of the window


@pytest.fixture(scope="module")
def tiny():
    return tiny_swin()


@pytest.mark.parametrize("size", SIZES + [(7, 9)])
def test_output_shapes_follow_the_strides(tiny, size):
    out = run(tiny, np.zeros((1, *size, 3), np.float32))
    for s, name in enumerate(STAGES):
        stride = 4 * 2**s
        expected = (1, -(-size[0] // stride), -(-size[1] // stride), 8 * 2**s)
        assert out[name].shape == expected, name
    assert tiny.out_channels == {"res2": 8, "res3": 16, "res4": 32, "res5": 64}


@pytest.mark.skipif(backend() != "tensorflow", reason="tf.function is TensorFlow's")
@pytest.mark.parametrize("jit_compile", [False, True])
def test_tf_function_with_unknown_size(tiny, jit_compile):
    """One trace for every size: padding, shift mask and merges come from the run-time shape."""
    import tensorflow as tf

    fn = tf.function(lambda x: tiny(x, training=False), jit_compile=jit_compile,
                     input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    rng = np.random.default_rng(1)
    for size in SIZES:
        x = rng.normal(size=(2, *size, 3)).astype(np.float32)
        eager, graph = numpy(tiny(x)), numpy(fn(x))
        for name in STAGES:
            np.testing.assert_allclose(graph[name], eager[name], rtol=1e-5, atol=1e-5,
                                       err_msg=f"{size} {name}")
    assert fn.experimental_get_tracing_count() == 1


@pytest.mark.skipif(backend() != "jax", reason="jax.jit is JAX's")
def test_jax_jit_matches_eager(tiny):
    x = np.random.default_rng(1).normal(size=(2, *SIZES[0], 3)).astype(np.float32)
    compiled, eager = run(tiny, x), numpy(tiny(x))
    for name in STAGES:
        np.testing.assert_allclose(compiled[name], eager[name], rtol=1e-5, atol=1e-5,
                                   err_msg=name)


def test_mixed_precision_bfloat16():
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        backbone = build_swin(SwinConfig(embed_dim=8, depths=[2, 2, 2, 2],
                                         num_heads=[1, 2, 2, 4]))
        backbone.build((None, None, None, 3))
        x = np.random.default_rng(0).normal(size=(1, *SIZES[0], 3)).astype("float32")
        out = run(backbone, x)
        for name in STAGES:
            assert np.all(np.isfinite(out[name].astype("float32"))), name
    finally:
        keras.config.set_dtype_policy("float32")


# --- stochastic depth -----------------------------------------------------------------------


def test_drop_path_layer():
    layer = DropPath(0.5, seed=3)
    x = np.ones((256, 3, 4, 2), np.float32)
    np.testing.assert_array_equal(np.asarray(layer(x)), x)
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    y = np.asarray(layer(x, training=True))
    # Whole samples are dropped (0) or kept and scaled by 1 / (1 - rate).
    per_sample = y.reshape(256, -1)
    assert set(np.unique(per_sample)) <= {0.0, 2.0}
    assert np.all(per_sample.min(axis=1) == per_sample.max(axis=1))
    kept = np.mean(per_sample[:, 0] == 2.0)
    assert 0.35 < kept < 0.65
    assert not np.array_equal(y, np.asarray(layer(x, training=True)))  # a new draw per call
    np.testing.assert_array_equal(np.asarray(DropPath(1.0)(x, training=True)), 0 * x)


def test_drop_path_rates_rise_linearly_over_all_blocks():
    backbone = build_swin(SwinConfig(embed_dim=8, depths=[2, 1, 3, 2], num_heads=[1, 2, 2, 4],
                                     drop_path_rate=0.3))
    rates = [block.drop_path.rate for stage in backbone.stages for block in stage.blocks]
    np.testing.assert_allclose(rates, np.linspace(0.0, 0.3, 8))
    shifts = [[block.shift for block in stage.blocks] for stage in backbone.stages]
    assert shifts == [[0, 3], [0], [0, 3, 0], [0, 3]]


def test_drop_path_only_in_training(tiny):
    """Inference ignores drop_path_rate (same outputs as without it); training is stochastic."""
    x = np.random.default_rng(0).normal(size=(4, *SIZES[0], 3)).astype(np.float32)
    dropping = tiny_swin(drop_path_rate=0.5)
    dropping.set_weights(tiny.get_weights())
    reference = run(tiny, x)
    out = run(dropping, x)
    for name in STAGES:
        np.testing.assert_array_equal(out[name], reference[name])
    first, second = run(dropping, x, training=True), run(dropping, x, training=True)
    assert np.max(np.abs(first["res5"] - reference["res5"])) > 1e-3
    assert np.max(np.abs(first["res5"] - second["res5"])) > 1e-3
    # Without drop path, training changes nothing (the backbone has no dropout).
    np.testing.assert_allclose(run(tiny, x, training=True)["res5"], reference["res5"],
                               rtol=1e-6, atol=1e-6)


# --- the assembled model ---------------------------------------------------------------------


def swin_model_config(**swin) -> ModelConfig:
    return ModelConfig(
        backbone=BackboneConfig(type="swin", swin=SwinConfig(
            embed_dim=8, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4], **swin)),
        num_classes=5, pixel_decoder="fpn", conv_dim=32, mask_dim=32, num_queries=6,
        hidden_dim=32, num_heads=4, dim_feedforward=64, dec_layers=2, dropout=0.0,
        enforce_input_proj=True)


@pytest.fixture(scope="module")
def swin_model():
    return build_model(swin_model_config(drop_path_rate=0.5), image_size=(32, 32))


def test_swin_maskformer_weights_by_name(swin_model):
    """model.backbone.type=swin builds the Swin backbone, the FPN reads its channels; every
    weight of the model has its original name."""
    model = swin_model
    assert isinstance(model.backbone, SwinTransformer)
    targets = weight_map(model)
    mapped = [id(t.variable) for t in targets]
    assert len(mapped) == len(set(mapped))
    weights = [v for v in model.weights if "seed_generator" not in v.path]
    assert {id(v) for v in weights} == set(mapped)
    names = [s for t in targets for s in t.sources if s.startswith("backbone.")]
    assert len(names) == len(set(names))  # one backbone tensor per variable (no fused ones)
    assert {"backbone.layers.3.blocks.1.attn.qkv.weight", "backbone.norm3.bias",
            "backbone.layers.2.downsample.reduction.weight"} <= set(names)


def test_drop_path_acts_through_the_model(swin_model):
    """MaskFormer(training=True) reaches the backbone's stochastic depth, also through
    stateless_call (JAX's training step). Every dropout is 0: drop path is the only randomness."""
    model = swin_model
    x = np.random.default_rng(0).uniform(0, 255, (2, *SIZES[0], 3)).astype(np.float32)
    a = run(model, x)
    assert a["pred_masks"].shape == (2, 6, 19, 26)
    assert a["pred_logits"].shape == (2, 6, 6)
    np.testing.assert_array_equal(a["pred_masks"], run(model, x)["pred_masks"])
    b, c = run(model, x, training=True), run(model, x, training=True)
    assert np.max(np.abs(a["pred_masks"] - b["pred_masks"])) > 1e-4
    assert np.max(np.abs(b["pred_masks"] - c["pred_masks"])) > 1e-4


# --- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize("override,key", [
    ("model.backbone.type=vit", "model.backbone.type"),
    ("model.backbone.swin.num_heads=[3,6,12,25]", "model.backbone.swin.num_heads"),
    ("model.backbone.swin.depths=[2,2,6]", "model.backbone.swin"),
    ("model.backbone.swin.depths=[2,0,6,2]", "model.backbone.swin.depths"),
    ("model.backbone.swin.window_size=0", "model.backbone.swin.window_size"),
    ("model.backbone.swin.patch_size=0", "model.backbone.swin.patch_size"),
    ("model.backbone.swin.drop_path_rate=1.5", "model.backbone.swin.drop_path_rate"),
])
def test_bad_swin_config_names_the_key(override, key):
    config = ExperimentConfig(model=swin_model_config())
    config.model.validate()
    apply_overrides(config, [override])
    with pytest.raises(ConfigError, match=f"^{key}[:.]"):
        config.model.validate()


def test_swin_config_from_overrides():
    config = ExperimentConfig()
    apply_overrides(config, ["model.backbone.type=swin", "model.backbone.swin.embed_dim=128",
                             "model.backbone.swin.num_heads=[4,8,16,32]",
                             "model.backbone.swin.window_size=12"])
    config.model.validate()
    backbone = build_swin(config.model.backbone.swin)
    assert backbone.out_channels == {"res2": 128, "res3": 256, "res4": 512, "res5": 1024}
    assert backbone.window_size == 12 and backbone.num_heads == [4, 8, 16, 32]


def test_config_round_trip(tiny):
    """from_config(get_config()) rebuilds each layer; the rebuilt backbone computes the same."""
    clone = SwinTransformer.from_config(tiny.get_config())
    assert clone.get_config() == tiny.get_config()
    clone.build((None, None, None, 3))
    clone.set_weights(tiny.get_weights())
    x = np.random.default_rng(0).normal(size=(1, *SIZES[0], 3)).astype(np.float32)
    expected = run(tiny, x)
    for name, value in run(clone, x).items():
        np.testing.assert_array_equal(value, expected[name])
    block = tiny.stages[0].blocks[1]
    for layer in (block, block.attn, block.drop_path, tiny.merges[1], tiny.stages[2],
                  tiny.patch_embed):
        assert type(layer).from_config(layer.get_config()).get_config() == layer.get_config()
    assert block.get_config()["shift"] == 3 and block.get_config()["window_size"] == 7


def test_layers_refuse_impossible_settings():
    with pytest.raises(ValueError, match="not divisible"):
        WindowAttention(30, 4, 7)
    with pytest.raises(ValueError, match="shift 7"):
        SwinBlock(8, 1, 7, shift=7)
    with pytest.raises(ValueError, match="3 drop-path rates for 2 blocks"):
        SwinStage(8, 2, 1, 7, drop_path=[0.1, 0.2, 0.3])
