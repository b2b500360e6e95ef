"""Mask2Former's masked-attention decoder against the original PyTorch code's own outputs.

mask2former_decoder_tiny.npz (README in the reference folder) holds the original
MultiScaleMaskedTransformerDecoder (4 layers, hidden 32, 8 queries, 7 classes) run on the
outputs of its pixel decoder, with every prediction, every attention mask and the query states
after each sub-layer; mask2former_c64_tiny.npz the same with in_channels 64 != hidden 32, so the
per-level input projections exist.
"""

import json

import keras
import numpy as np
import pytest
from keras import ops

from maskformer.conversion.detectron2 import assign_weight_map, mask2former_predictor_map
from maskformer.modeling.masked_attention_decoder import MaskedAttentionDecoder, attention_mask
from maskformer.modeling.position_encoding import sine_position_encoding
from tests.conftest import reference_file
from tests.modeling.mask2former_reference import close, nhwc
from tests.objective.helpers import to_numpy

PREFIX = "sem_seg_head.predictor."


def assign_original(decoder: MaskedAttentionDecoder, state: dict) -> None:
    """Loads the original's state dict (full names) through the converter's weight map, which
    refuses missing, unexpected and mis-shaped names; the map must cover every weight."""
    targets = mask2former_predictor_map(decoder)
    assign_weight_map(targets, state, "reference")
    assert {v.path for v in decoder.weights} == {t.variable.path for t in targets}


def load(official, name, chained_from_pixel_decoder=False):
    """(decoder with the original's weights, inputs, npz) for one reference file."""
    z = official(name)
    ref = json.loads(str(z["config"]))["MultiScaleMaskedTransformerDecoder"]
    assert ref["mask_classification"] and not ref["pre_norm"]
    decoder = MaskedAttentionDecoder(
        in_channels=ref["in_channels"], num_classes=ref["num_classes"],
        hidden_dim=ref["hidden_dim"], num_queries=ref["num_queries"], num_heads=ref["nheads"],
        dim_feedforward=ref["dim_feedforward"], num_layers=ref["dec_layers"],
        mask_dim=ref["mask_dim"], enforce_input_proj=ref["enforce_input_project"])
    source = "output" if chained_from_pixel_decoder else "input"
    features = [nhwc(z[f"{source}/multi_scale_features_{level}"]) for level in range(3)]
    mask_features = nhwc(z[f"{source}/mask_features"])
    decoder.build([f.shape for f in features], mask_features.shape)
    params = {k[len("param/"):]: z[k] for k in z.files if k.startswith("param/" + PREFIX)}
    assert len(params) == len(z["decoder_state_dict_keys"])
    assign_original(decoder, params)
    return decoder, features, mask_features, z


def check_outputs(out, z, num_layers):
    """The final prediction and every aux output; aux_0 is the one from the queries alone."""
    close(out["pred_logits"], z["output/pred_logits"], "pred_logits")
    close(out["pred_masks"], z["output/pred_masks"], "pred_masks")
    assert len(out["aux_outputs"]) == num_layers
    assert f"output/aux_{num_layers}/pred_logits" not in z.files
    for i, aux in enumerate(out["aux_outputs"]):
        for key in ("pred_logits", "pred_masks"):
            close(aux[key], z[f"output/aux_{i}/{key}"], f"aux_{i}/{key}")


@pytest.fixture(scope="module")
def tiny():
    z = np.load(reference_file("mask2former_decoder_tiny.npz"))
    return load(lambda _: z, "mask2former_decoder_tiny.npz")


def run(decoder, features, mask_features, eager=False):
    """The decoder's outputs with intermediates, as numpy.

    Eagerly, except on JAX, where eager dispatch compiles every op anew (seconds): there
    under `jax.jit` unless `eager`.
    """
    if eager or keras.backend.backend() != "jax":
        return to_numpy(decoder(features, mask_features, return_intermediates=True))
    return to_numpy(jit_call(decoder)(*variables(decoder), features, mask_features))


def variables(layer):
    return ([v.value for v in layer.trainable_variables],
            [v.value for v in layer.non_trainable_variables])


_jitted = {}


def jit_call(decoder):
    """`jax.jit` of the decoder's stateless call with intermediates (cached per decoder)."""
    import jax

    if id(decoder) not in _jitted:
        def fn(trainable, non_trainable, feats, masks):
            out, _ = decoder.stateless_call(trainable, non_trainable, feats, masks,
                                            return_intermediates=True)
            return out

        _jitted[id(decoder)] = (decoder, jax.jit(fn))
    return _jitted[id(decoder)][1]


def test_outputs_match_original(tiny):
    decoder, features, mask_features, z = tiny
    out = run(decoder, features, mask_features)
    check_outputs(out, z, decoder.num_layers)


def test_attention_masks_match_original_exactly(tiny):
    decoder, features, mask_features, z = tiny
    out = run(decoder, features, mask_features)
    assert len(out["attention_masks"]) == decoder.num_layers == 4
    cleared = 0
    for i, blocked in enumerate(out["attention_masks"]):
        level = int(z[f"attn_mask/layer_{i}/level"])
        assert level == i % 3
        used = z[f"attn_mask/layer_{i}/used"].astype(bool)  # [B, Q, h, w]
        np.testing.assert_array_equal(blocked, used.reshape(used.shape[0], used.shape[1], -1),
                                      err_msg=f"layer {i}")
        raw = z[f"attn_mask/layer_{i}/raw"].astype(bool)
        cleared += int(np.sum(raw.reshape(raw.shape[0], raw.shape[1], -1).all(-1)))
    # The file was chosen to exercise the fully-blocked-row rule (2, 1, 1, 2 rows).
    assert cleared == 6


def test_attention_mask_rule_on_recorded_logits(tiny):
    """The resize and threshold alone: the previous prediction's masks -> layer i's mask."""
    _, _, _, z = tiny
    for i in range(4):
        previous = z[f"output/aux_{i}/pred_masks"]
        used = z[f"attn_mask/layer_{i}/used"].astype(bool)
        size = used.shape[2:]
        blocked = to_numpy(attention_mask(ops.convert_to_tensor(previous), size))
        np.testing.assert_array_equal(blocked, used.reshape(*used.shape[:2], -1))


def test_query_states_match_original(tiny):
    decoder, features, mask_features, z = tiny
    out = run(decoder, features, mask_features)
    for i, states in enumerate(out["states"]):
        for key in ("after_cross_attn", "after_self_attn", "after_ffn"):
            close(states[key], z[f"debug/layer_{i}/{key}"], f"layer {i} {key}")


def test_position_encoding_and_memory_match_original(tiny):
    decoder, features, _, z = tiny
    for level, x in enumerate(features):
        h, w = x.shape[1:3]
        pos = np.transpose(np.asarray(sine_position_encoding(h, w, decoder.hidden_dim // 2)),
                           (2, 0, 1))
        close(pos, z[f"debug/decoder_pos_embed_{level}"][0], f"pos {level}")
        # Identity input projection here (in_channels == hidden_dim): memory = x + level_embed.
        memory = x.reshape(x.shape[0], -1, x.shape[-1]) + np.asarray(decoder.level_embed)[level]
        close(memory, z[f"debug/decoder_memory_{level}"], f"memory {level}")


def test_compiled_gives_the_same(tiny):
    decoder, features, mask_features, z = tiny
    eager = run(decoder, features, mask_features, eager=True)
    if keras.backend.backend() == "jax":
        out = to_numpy(jit_call(decoder)(*variables(decoder), features, mask_features))
    elif keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        fn = tf.function(lambda f, m: decoder(f, m, return_intermediates=True),
                         jit_compile=True)
        out = to_numpy(fn([tf.constant(f) for f in features], tf.constant(mask_features)))
    else:
        pytest.skip(f"no compiled test for backend {keras.backend.backend()}")
    check_outputs(out, z, decoder.num_layers)
    for i, blocked in enumerate(out["attention_masks"]):
        np.testing.assert_array_equal(blocked, eager["attention_masks"][i])
    np.testing.assert_allclose(out["pred_masks"], eager["pred_masks"], atol=1e-4)


def test_gradients_are_finite(tiny):
    """Blocked positions are -inf before the softmax; with fully blocked rows cleared, no
    gradient may become NaN (layer 0 of this file has two such rows)."""
    decoder, features, mask_features, _ = tiny
    if keras.backend.backend() == "jax":
        import jax

        def loss(trainable, non_trainable):
            out, _ = decoder.stateless_call(trainable, non_trainable, features, mask_features)
            return sum(ops.sum(o["pred_masks"]) + ops.sum(o["pred_logits"])
                       for o in [out, *out["aux_outputs"]])

        grads = jax.jit(jax.grad(loss))(*variables(decoder))
    elif keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            out = decoder(features, mask_features)
            loss = sum(ops.sum(o["pred_masks"]) + ops.sum(o["pred_logits"])
                       for o in [out, *out["aux_outputs"]])
        grads = tape.gradient(loss, decoder.trainable_variables)
    else:
        pytest.skip(f"no gradient test for backend {keras.backend.backend()}")
    grads = to_numpy(list(grads))
    assert len(grads) == len(decoder.trainable_variables)
    assert all(np.all(np.isfinite(g)) for g in grads)
    # Every layer's cross-attention receives gradient (its output feeds the next prediction).
    names = [v.path for v in decoder.trainable_variables]
    for i in range(decoder.num_layers):
        index = names.index(f"{decoder.layers[i].cross_attn.q_proj.kernel.path}")
        assert np.any(grads[index] != 0), names[index]


def test_input_projection_c64(official):
    """in_channels 64 != hidden 32: per-level 1x1 input projections, chained after the
    original's own pixel-decoder outputs (the decoder reproduces them to 5.7e-6, README)."""
    decoder, features, mask_features, z = load(official, "mask2former_c64_tiny.npz",
                                               chained_from_pixel_decoder=True)
    assert all(p is not None for p in decoder.input_proj)
    out = run(decoder, features, mask_features)
    check_outputs(out, z, decoder.num_layers)
    for i, blocked in enumerate(out["attention_masks"]):
        used = z[f"attn_mask/layer_{i}/used"].astype(bool)
        np.testing.assert_array_equal(blocked, used.reshape(*used.shape[:2], -1))
        for key in ("after_cross_attn", "after_self_attn", "after_ffn"):
            close(out["states"][i][key], z[f"debug/layer_{i}/{key}"], f"layer {i} {key}")


def test_config_round_trip():
    decoder = MaskedAttentionDecoder(in_channels=16, num_classes=3, hidden_dim=8, num_queries=4,
                                     num_heads=2, dim_feedforward=16, num_layers=2, mask_dim=8)
    clone = MaskedAttentionDecoder.from_config(decoder.get_config())
    assert clone.get_config() == decoder.get_config()
    assert [p is not None for p in clone.input_proj] == [True] * 3
    assert len(clone.layers) == 2
