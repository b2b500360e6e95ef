"""Mask2Former's deformable-attention pixel decoder against the original PyTorch code's own outputs.

mask2former_pixel_decoder_tiny.npz (README in the reference folder) holds the original
MSDeformAttnPixelDecoder (conv_dim 32, 4 heads, 2 encoder layers) on random res2..res5 maps of a
97x131 image, with every encoder layer's sampling locations, attention weights and sampled
values, and one standalone call of the sampling core with many points outside [0, 1];
mask2former_c64_tiny.npz the same decoder at conv_dim 64, where GroupNorm has two channels per
group.
"""

import json

import keras
import numpy as np
import pytest
from keras import ops

from maskformer.conversion.detectron2 import assign_weight_map, mask2former_pixel_decoder_map
from maskformer.modeling.deformable_attention import (
    MSDeformAttn,
    MSDeformEncoderLayer,
    level_start_index,
    ms_deform_attn_core,
    reference_points,
)
from maskformer.modeling.msdeform_pixel_decoder import MSDeformAttnPixelDecoder
from maskformer.modeling.position_encoding import sine_position_encoding
from tests.conftest import reference_file
from tests.modeling.mask2former_reference import close, nhwc
from tests.objective.helpers import compiled, to_numpy

PREFIX = "sem_seg_head.pixel_decoder."


def shapes_of(z, key):
    return [(int(h), int(w)) for h, w in z[key]]


def assign_original(decoder: MSDeformAttnPixelDecoder, state: dict) -> None:
    """Loads the original's state dict (full names) through the converter's weight map, which
    refuses missing, unexpected and mis-shaped names; the map must cover every weight."""
    targets = mask2former_pixel_decoder_map(decoder)
    assign_weight_map(targets, state, "reference")
    assert {v.path for v in decoder.weights} == {t.variable.path for t in targets}


def load(name):
    """(decoder with the original's weights, input features, npz) for one reference file."""
    z = np.load(reference_file(name))
    ref = json.loads(str(z["config"]))["MSDeformAttnPixelDecoder"]
    inputs = ref["input_shape"]
    names = sorted(inputs, key=lambda f: inputs[f]["stride"])
    decoder = MSDeformAttnPixelDecoder(
        conv_dim=ref["conv_dim"], mask_dim=ref["mask_dim"], num_heads=ref["transformer_nheads"],
        dim_feedforward=ref["transformer_dim_feedforward"],
        num_layers=ref["transformer_enc_layers"], dropout=ref["transformer_dropout"],
        in_features=names, feature_strides=[inputs[f]["stride"] for f in names],
        transformer_in_features=ref["transformer_in_features"],
        common_stride=ref["common_stride"])
    features = {f: nhwc(z[f"input/{f}"]) for f in names}
    decoder.build({f: x.shape for f, x in features.items()})
    params = {k[len("param/"):]: z[k] for k in z.files if k.startswith("param/" + PREFIX)}
    assert len(params) == len(z["pixel_decoder_state_dict_keys"])
    assign_original(decoder, params)
    return decoder, features, z


@pytest.fixture(scope="module")
def tiny():
    return load("mask2former_pixel_decoder_tiny.npz")


_jitted = {}


def run(decoder, features):
    """The decoder's outputs with intermediates, as numpy: eagerly on TensorFlow, under
    `jax.jit` on JAX (where eager dispatch compiles every op anew)."""
    if keras.backend.backend() != "jax":
        return to_numpy(decoder(features, return_intermediates=True))
    import jax

    if id(decoder) not in _jitted:
        def fn(trainable, non_trainable, feats):
            out, _ = decoder.stateless_call(trainable, non_trainable, feats,
                                            return_intermediates=True)
            return out

        _jitted[id(decoder)] = (decoder, jax.jit(fn))
    trainable = [v.value for v in decoder.trainable_variables]
    non_trainable = [v.value for v in decoder.non_trainable_variables]
    return to_numpy(_jitted[id(decoder)][1](trainable, non_trainable, features))


def check_outputs(out, z):
    close(out["mask_features"], nhwc(z["output/mask_features"]), "mask_features")
    close(out["transformer_encoder_features"], nhwc(z["output/transformer_encoder_features"]),
          "transformer_encoder_features")
    assert len(out["multi_scale_features"]) == 3
    for level, x in enumerate(out["multi_scale_features"]):
        close(x, nhwc(z[f"output/multi_scale_features_{level}"]), f"multi_scale_features_{level}")


# ---------------------------------------------------------------------------------------------
# The sampling core
# ---------------------------------------------------------------------------------------------


def numpy_core(value, shapes, locations, weights):
    """Float64 loop transcription of the README's sampling rule: pixel = loc * size - 0.5,
    four neighbours weighted (1 - |dx|)(1 - |dy|), zero outside the map."""
    n, _, heads, depth = value.shape
    num_queries, _, levels, points, _ = locations.shape[1:]
    starts = level_start_index(shapes)
    out = np.zeros((n, num_queries, heads, depth))
    for b in range(n):
        for q in range(num_queries):
            for m in range(heads):
                for level in range(levels):
                    h, w = shapes[level]
                    grid = value[b, starts[level]:starts[level] + h * w, m].reshape(h, w, depth)
                    for p in range(points):
                        x = locations[b, q, m, level, p, 0] * w - 0.5
                        y = locations[b, q, m, level, p, 1] * h - 0.5
                        x0, y0 = int(np.floor(x)), int(np.floor(y))
                        sample = np.zeros(depth)
                        for xi in (x0, x0 + 1):
                            for yi in (y0, y0 + 1):
                                if 0 <= xi < w and 0 <= yi < h:
                                    tap = (1 - abs(x - xi)) * (1 - abs(y - yi))
                                    sample += tap * grid[yi, xi]
                        out[b, q, m] += weights[b, q, m, level, p] * sample
    return out.reshape(n, num_queries, heads * depth)


def test_core_matches_original_standalone_call(tiny):
    """Many points outside [0, 1], the map edges exactly, pixel centres; compiled with XLA."""
    _, _, z = tiny
    shapes = shapes_of(z, "msda/spatial_shapes")
    assert level_start_index(shapes) == list(z["msda/level_start_index"])
    locations = z["msda/sampling_locations"]
    assert np.mean((locations < 0) | (locations > 1)) > 0.3  # the file exercises the padding
    fn = compiled(lambda v, loc, w: ms_deform_attn_core(v, shapes, loc, w))
    out = to_numpy(fn(z["msda/value"], locations, z["msda/attention_weights"]))
    close(out, z["msda/output"], "msda/output")


def test_core_matches_encoder_calls(tiny):
    _, _, z = tiny
    shapes = shapes_of(z, "debug/spatial_shapes")
    fn = compiled(lambda v, loc, w: ms_deform_attn_core(v, shapes, loc, w))
    for i in range(2):
        prefix = f"debug/encoder_layer_{i}/"
        out = to_numpy(fn(z[prefix + "value"], z[prefix + "sampling_locations"],
                          z[prefix + "attention_weights"]))
        close(out, z[prefix + "core_output"], prefix + "core_output")


def test_core_matches_numpy_transcription():
    rng = np.random.default_rng(7)
    shapes = [(3, 5), (2, 2), (1, 3)]
    n, num_queries, heads, depth, points = 2, 4, 3, 2, 3
    value = rng.normal(size=(n, sum(h * w for h, w in shapes), heads, depth)).astype(np.float32)
    locations = rng.uniform(-0.4, 1.4, size=(n, num_queries, heads, 3, points, 2))
    locations[0, 0, 0, :, 0] = 0.0  # half the edge pixel, a quarter at the corner
    locations[0, 0, 0, :, 1] = 1.0
    locations = locations.astype(np.float32)
    weights = rng.uniform(size=(n, num_queries, heads, 3, points)).astype(np.float32)
    expected = numpy_core(value.astype(np.float64), shapes, locations.astype(np.float64),
                          weights.astype(np.float64))
    out = to_numpy(compiled(lambda v, loc, w: ms_deform_attn_core(v, shapes, loc, w))(
        value, locations, weights))
    np.testing.assert_allclose(out, expected, atol=1e-5)
    # a corner at exactly (0, 0): a quarter of the corner pixel
    first = value[:1, :15, :1]  # level 0 (3 x 5) of batch 0, head 0
    corner = ms_deform_attn_core(first, shapes[:1], np.zeros((1, 1, 1, 1, 1, 2), np.float32),
                                 np.ones((1, 1, 1, 1, 1), np.float32))
    np.testing.assert_allclose(to_numpy(corner)[0, 0], 0.25 * value[0, 0, 0], atol=1e-6)


# ---------------------------------------------------------------------------------------------
# One encoder layer on the recorded inputs
# ---------------------------------------------------------------------------------------------


def test_reference_points_match_original(tiny):
    _, _, z = tiny
    points = reference_points(shapes_of(z, "debug/spatial_shapes"))  # [S, 2]
    expected = z["debug/reference_points"]  # [B, S, L, 2]
    np.testing.assert_array_equal(np.broadcast_to(points[None, :, None], expected.shape), expected)


def test_encoder_layers_match_original(tiny):
    """Each layer on the original's recorded input: its attention's internals and its output."""
    decoder, _, z = tiny
    shapes = shapes_of(z, "debug/spatial_shapes")
    pos = z["debug/encoder_pos_flat"]
    ref = z["debug/reference_points"]
    src = z["debug/encoder_input_flat"]
    for i, layer in enumerate(decoder.transformer.encoder_layers):
        if keras.backend.backend() == "jax":
            # a compiled stateful call would capture the weights as tracers; use stateless_call
            import jax

            def stateless(trainable, s, p, r, layer=layer):
                out, _ = layer.stateless_call(trainable, [], s, p, r, spatial_shapes=shapes,
                                              return_intermediates=True)
                return out

            out = to_numpy(jax.jit(stateless)(
                [v.value for v in layer.trainable_variables], src, pos, ref))
        else:
            out = to_numpy(compiled(lambda s, p, r, layer=layer: layer(
                s, p, r, spatial_shapes=shapes, return_intermediates=True))(src, pos, ref))
        output, intermediates = out
        prefix = f"debug/encoder_layer_{i}/"
        for key in ("value", "sampling_locations", "attention_weights", "core_output"):
            close(intermediates[key], z[prefix + key], prefix + key)
        close(output, z[prefix + "output"], prefix + "output")
        src = z[prefix + "output"]


# ---------------------------------------------------------------------------------------------
# The whole pixel decoder
# ---------------------------------------------------------------------------------------------


def test_position_encoding_matches_original(tiny):
    _, _, z = tiny
    for level in range(3):
        expected = z[f"debug/pos_embed_{level}"]
        c, h, w = expected.shape[1:]
        encoding = compiled(lambda c=c, h=h, w=w: sine_position_encoding(h, w, c // 2))
        pos = np.transpose(to_numpy(encoding()), (2, 0, 1))
        close(np.broadcast_to(pos, expected.shape), expected, f"pos_embed_{level}")


def test_pixel_decoder_matches_original(tiny):
    decoder, features, z = tiny
    out = run(decoder, features)
    check_outputs(out, z)
    encoder = out["encoder"]
    assert encoder["spatial_shapes"] == shapes_of(z, "debug/spatial_shapes")
    close(encoder["memory"], z["output/encoder_memory"], "encoder_memory")
    close(np.broadcast_to(encoder["pos"], z["debug/encoder_pos_flat"].shape),
          z["debug/encoder_pos_flat"], "encoder_pos_flat")
    for i, layer in enumerate(encoder["layers"]):
        for key in ("sampling_locations", "attention_weights", "core_output", "output"):
            close(layer[key], z[f"debug/encoder_layer_{i}/{key}"], f"encoder_layer_{i}/{key}")
    assert len(out["fpn"]) == 1
    close(out["fpn"][0], nhwc(z["debug/fpn_out_res2"]), "fpn_out_res2")


def test_input_projections_match_original(tiny):
    decoder, features, z = tiny
    for level, (proj, name) in enumerate(zip(decoder.input_proj, decoder.encoder_features,
                                             strict=True)):
        close(to_numpy(proj(features[name])), nhwc(z[f"debug/input_proj_out_{level}"]),
              f"input_proj_out_{level}")


def test_pixel_decoder_c64_matches_original():
    """conv_dim 64: two channels per GroupNorm group, so a wrong grouping would show."""
    decoder, features, z = load("mask2former_c64_tiny.npz")
    check_outputs(run(decoder, features), z)


def test_compiled_pixel_decoder_matches_original(tiny):
    decoder, features, z = tiny
    if keras.backend.backend() == "jax":
        out = run(decoder, features)  # already under jax.jit
    elif keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        fn = tf.function(lambda f: decoder(f), jit_compile=True)
        out = to_numpy(fn({k: tf.constant(v) for k, v in features.items()}))
    else:
        pytest.skip(f"no compiled test for backend {keras.backend.backend()}")
    check_outputs(out, z)


# ---------------------------------------------------------------------------------------------
# Construction
# ---------------------------------------------------------------------------------------------


def test_initial_offsets_follow_original_grid():
    """Head m starts pointing along angle 2 pi m / M (the larger coordinate 1), point p at
    p + 1 times that, the same on every level; the attention starts uniform."""
    attn = MSDeformAttn(dim=16, num_levels=2, num_heads=4, num_points=3)
    attn.build((None, None, 16))
    bias = np.asarray(attn.sampling_offsets.bias).reshape(4, 2, 3, 2)
    directions = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], np.float32)
    expected = directions[:, None, None, :] * np.arange(1, 4)[None, None, :, None]
    np.testing.assert_allclose(bias, np.broadcast_to(expected, bias.shape), atol=1e-6)
    assert not np.any(np.asarray(attn.sampling_offsets.kernel))
    assert not np.any(np.asarray(attn.attention_weights.kernel))
    assert not np.any(np.asarray(attn.attention_weights.bias))


def test_config_round_trip():
    decoder = MSDeformAttnPixelDecoder(conv_dim=32, mask_dim=16, num_heads=4,
                                       dim_feedforward=64, num_layers=1)
    clone = MSDeformAttnPixelDecoder.from_config(decoder.get_config())
    assert clone.get_config() == decoder.get_config()
    assert clone.encoder_features == ["res5", "res4", "res3"]
    assert clone.fpn_features == ["res2"]
    layer = MSDeformEncoderLayer(dim=8, dim_feedforward=16, num_levels=2, num_heads=2)
    assert MSDeformEncoderLayer.from_config(layer.get_config()).get_config() == layer.get_config()


def test_gradients_reach_the_offsets():
    """The sampling locations are differentiable: the offsets' weights get gradient."""
    rng = np.random.default_rng(1)
    shapes = [(3, 4), (2, 2)]
    layer = MSDeformEncoderLayer(dim=8, dim_feedforward=16, dropout=0.0, num_levels=2,
                                 num_heads=2, num_points=2)
    src = rng.normal(size=(1, 16, 8)).astype(np.float32)
    ref = reference_points(shapes)[None, :, None].repeat(2, axis=2)
    layer.build(src.shape)
    if keras.backend.backend() == "jax":
        import jax

        def loss(trainable):
            out, _ = layer.stateless_call(trainable, [], src, src, ref, spatial_shapes=shapes)
            return ops.sum(ops.square(out[..., 0]))

        grads = jax.jit(jax.grad(loss))([v.value for v in layer.trainable_variables])
    elif keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = ops.sum(ops.square(layer(src, src, ref, spatial_shapes=shapes)[..., 0]))
        grads = tape.gradient(loss, layer.trainable_variables)
    else:
        pytest.skip(f"no gradient test for backend {keras.backend.backend()}")
    names = [v.path for v in layer.trainable_variables]
    grads = dict(zip(names, to_numpy(list(grads)), strict=True))
    kernel = grads[layer.self_attn.sampling_offsets.kernel.path]
    assert np.all(np.isfinite(kernel)) and np.any(kernel != 0)
