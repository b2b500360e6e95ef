"""Original (detectron2) Mask2Former checkpoints: `model_final_*.pkl` with the original's state-dict
names, written here from a model whose every weight is random.

The names and layouts come from inverting the converter's weight map
(`detectron2.weight_map`), whose Mask2Former names are the original's recorded ones
(tests/modeling/test_msdeform_pixel_decoder.py, test_masked_attention_decoder.py); the
Hugging Face parity tests check the same names against an independent implementation. A
checkpoint is recognised as Mask2Former and as its registered experiment from its tensors alone
(`infer`), converted strictly (`maskformer convert --from detectron2`), and taken by
`train.init_checkpoint`; a missing and an unexpected tensor make one error naming both.
"""

import copy
import pickle

import numpy as np
import pytest
from keras import ops

from maskformer.cli import main
from maskformer.config import BackboneConfig, SwinConfig
from maskformer.conversion import infer
from maskformer.conversion.detectron2 import assign_weights, normalize_names, weight_map
from maskformer.conversion.pretrained import (
    convert_names,
    load_init_checkpoint,
    read_model_arrays,
)
from maskformer.conversion.safe_pickle import load_state_dict
from maskformer.errors import CheckpointError
from maskformer.experiments import get_experiment
from maskformer.model_dir import load_config, variable_keys
from maskformer.modeling.maskformer import build_model
from maskformer.modeling.swin import relative_position_index

EXPERIMENT = "mask2former_smoke"


def randomize(model, seed: int = 0):
    """Every weight of `model` random at a scale that keeps activations O(1): kernels
    N(0, 1/fan_in), norm scales and frozen-BN variances U(0.5, 1.5), the rest N(0, 0.1)."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        if "seed_generator" in variable.path:
            continue
        shape, leaf = tuple(variable.shape), variable.path.rsplit("/", 1)[-1]
        if leaf in ("gamma", "moving_variance"):
            value = rng.uniform(0.5, 1.5, shape)
        elif len(shape) >= 2:
            value = rng.normal(0, 1 / np.sqrt(np.prod(shape[:-1])), shape)
        else:
            value = rng.normal(0, 0.1, shape)
        variable.assign(value.astype(np.float32))
    return model


def original_state(model) -> dict[str, np.ndarray]:
    """`model`'s weights under the original's names and PyTorch layouts: OIHW convs, [out, in]
    linears, q/k/v stacked into `in_proj_*`; plus the criterion's class weights and, for Swin,
    the relative-position index buffers, as a model_final_*.pkl holds them."""
    state, fused = {}, {}
    for target in weight_map(model):
        (name,) = target.sources
        value = np.asarray(ops.convert_to_numpy(target.variable))
        kind = target.transform.__name__
        if name.endswith(("in_proj_weight", "in_proj_bias")):  # q, k, v in this order
            fused.setdefault(name, []).append(value.T if value.ndim == 2 else value)
        elif kind == "_conv":
            state[name] = value.transpose(3, 2, 0, 1)
        elif kind == "_linear":
            state[name] = value.T
        else:
            state[name] = value
    state.update({name: np.concatenate(parts, axis=0) for name, parts in fused.items()})
    classes = model.config.num_classes
    state["criterion.empty_weight"] = np.array([1.0] * classes + [0.1], np.float32)
    if model.config.backbone.type == "swin":
        index = relative_position_index(model.config.backbone.swin.window_size)
        for s, depth in enumerate(model.config.backbone.swin.depths):
            for b in range(depth):
                state[f"backbone.layers.{s}.blocks.{b}.attn.relative_position_index"] = index
    return state


def write_pickle(path, state):
    with open(path, "wb") as f:
        pickle.dump({"model": state, "__author__": "Mask2Former"}, f)
    return path


def weights(model) -> dict[str, np.ndarray]:
    return {k: np.asarray(ops.convert_to_numpy(v)) for k, v in variable_keys(model).items()
            if "seed_generator" not in k}


def assert_same_weights(a, b):
    a, b = weights(a), weights(b)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.fixture(scope="module")
def source():
    """The experiment and a model of it with random weights."""
    config = get_experiment(EXPERIMENT)
    return config, randomize(build_model(config.model))


@pytest.fixture(scope="module")
def checkpoint(source, tmp_path_factory):
    return write_pickle(tmp_path_factory.mktemp("d2") / "model_final.pkl",
                        original_state(source[1]))


@pytest.fixture(scope="module")
def more_classes():
    """A model of the experiment for two more classes (fine-tuning on new classes)."""
    config = copy.deepcopy(get_experiment(EXPERIMENT).model)
    config.num_classes += 2
    return build_model(config)


def test_signature_names_the_experiment(source):
    config, model = source
    signature = infer.checkpoint_signature(original_state(model))
    assert signature == infer.config_signature(config.model)
    assert signature["architecture"] == "mask2former"
    assert (signature["dec_layers"], signature["pixel_decoder_enc_layers"],
            signature["pixel_decoder_num_heads"], signature["predictor_input_proj"]) == (
        4, 2, 4, False)
    assert infer.infer_experiment(signature) == EXPERIMENT


def test_signature_reads_every_setting():
    config = get_experiment(EXPERIMENT).model
    for key, value in {"hidden_dim": 64, "pixel_decoder_num_heads": 8,
                       "pixel_decoder_enc_layers": 3, "pixel_decoder_dim_feedforward": 48,
                       "dim_feedforward": 96, "dec_layers": 6, "num_queries": 7}.items():
        setattr(config, key, value)
    signature = infer.checkpoint_signature(original_state(build_model(config)))
    assert signature == infer.config_signature(config)
    assert (signature["predictor_input_proj"], signature["predictor_in_channels"]) == (True, 32)
    assert "closest: mask2former_smoke differs in dec_layers, dim_feedforward, hidden_dim, " \
           "num_queries, pixel_decoder_dim_feedforward, pixel_decoder_enc_layers, " \
           "pixel_decoder_num_heads, predictor_input_proj" in _no_match(signature)


def test_signature_of_an_enforced_input_projection(source):
    """ENFORCE_INPUT_PROJ with conv_dim = hidden_dim: the projections' presence tells."""
    config, model = source
    state = original_state(model)
    for level in range(3):
        state[f"sem_seg_head.predictor.input_proj.{level}.weight"] = np.zeros((32, 32, 1, 1))
        state[f"sem_seg_head.predictor.input_proj.{level}.bias"] = np.zeros(32)
    enforced = copy.deepcopy(config.model)
    enforced.enforce_input_proj = True
    assert infer.checkpoint_signature(state) == infer.config_signature(enforced)
    assert "mask2former_smoke differs in predictor_input_proj" in _no_match(
        infer.checkpoint_signature(state))


def _no_match(signature) -> str:
    with pytest.raises(CheckpointError, match="no registered experiment fits") as error:
        infer.infer_experiment(signature)
    return str(error.value)


def test_convert_command_infers_the_experiment(source, checkpoint, tmp_path, capsys):
    """`maskformer convert --from detectron2 model_final.pkl` without --experiment: a model
    directory of the checkpoint's experiment with every weight as in the source."""
    _, model = source
    assert main(["convert", "--from", "detectron2", str(checkpoint), "--out",
                 str(tmp_path / "m")]) == 0
    assert f"experiment: {EXPERIMENT}" in capsys.readouterr().out
    config = load_config(tmp_path / "m")
    assert (config.name, config.model.architecture) == (EXPERIMENT, "mask2former")
    saved, _ = read_model_arrays(tmp_path / "m")
    expected = weights(model)
    assert set(expected) <= set(saved)
    for key, value in expected.items():
        np.testing.assert_array_equal(saved[key], value, err_msg=key)


def test_old_head_names_are_read(source):
    """The head's names before the original's version-2 upgrade (`sem_seg_head.<X>` for the
    pixel decoder's `sem_seg_head.pixel_decoder.<X>`) read as the new ones."""
    _, model = source
    new = original_state(model)
    old = {k.replace("sem_seg_head.pixel_decoder.", "sem_seg_head.", 1): v for k, v in new.items()}
    assert old.keys() != new.keys()
    assert normalize_names(old).keys() == new.keys()
    converted = convert_names(old, "model_final_old.pkl")
    assert converted.format == "detectron2 Mask2Former"
    assert sorted(converted.state) == sorted(k for k in new if k != "criterion.empty_weight")


def test_swin_checkpoint_with_index_buffers(tmp_path):
    """A Swin backbone's checkpoint, its relative-position index buffers included: set strictly
    (the buffers checked against the model's own), and a wrong buffer named."""
    config = get_experiment(EXPERIMENT)
    config.model.backbone = BackboneConfig(type="swin", swin=SwinConfig(
        embed_dim=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4], window_size=7))
    model = randomize(build_model(config.model), seed=3)
    expected = weights(model)
    state = original_state(model)
    assert infer.checkpoint_signature(state) == infer.config_signature(config.model)
    path = write_pickle(tmp_path / "model_final.pkl", state)
    randomize(model, seed=4)
    assign_weights(model, normalize_names(load_state_dict(path)), source=str(path))
    for key, value in weights(model).items():
        np.testing.assert_array_equal(value, expected[key], err_msg=key)

    key = "backbone.layers.1.blocks.1.attn.relative_position_index"
    state[key] = state[key].T.copy()
    with pytest.raises(CheckpointError, match=rf"1 wrong: {key} \(differs"):
        assign_weights(model, state)


def test_sync_bn_checkpoint_with_its_step_counters(tmp_path):
    """A SyncBN backbone's checkpoint (Cityscapes' ResNets): its batch norms set from the same
    four tensors as a frozen one's, the step counters (`num_batches_tracked`) passed over."""
    config = get_experiment(EXPERIMENT)
    config.model.backbone.norm = "sync_bn"
    model = randomize(build_model(config.model), seed=5)
    expected = weights(model)
    state = original_state(model)
    counters = [k.replace("running_mean", "num_batches_tracked") for k in state
                if k.endswith(".norm.running_mean")]
    assert len(counters) == 1 + 5 * 3 + 4  # the tiny ResNet's norms
    state.update({k: np.array(1000, np.int64) for k in counters})
    path = write_pickle(tmp_path / "model_final.pkl", state)
    randomize(model, seed=6)
    assign_weights(model, normalize_names(load_state_dict(path)), source=str(path))
    for key, value in weights(model).items():
        np.testing.assert_array_equal(value, expected[key], err_msg=key)


MISSING = "sem_seg_head.predictor.transformer_ffn_layers.2.linear1.bias"
UNEXPECTED = "sem_seg_head.predictor.transformer_ffn_layers.9.linear1.bias"


def test_missing_and_unexpected_tensors_are_one_error(source, more_classes, tmp_path):
    """`maskformer convert` (`assign_weights`) and `train.init_checkpoint` refuse a checkpoint
    with a tensor missing and one too many in one line naming both, and set nothing."""
    _, model = source
    state = original_state(model)
    state[UNEXPECTED] = state.pop(MISSING)
    path = write_pickle(tmp_path / "model_final.pkl", state)
    before = weights(model)
    with pytest.raises(CheckpointError) as error:
        assign_weights(model, normalize_names(load_state_dict(path)), source=str(path))
    assert str(error.value) == (f"{path} does not fit the model; 1 missing: {MISSING}; "
                                f"1 unexpected: {UNEXPECTED}")
    assert_unchanged(model, before)

    before = weights(more_classes)
    with pytest.raises(CheckpointError) as error:
        load_init_checkpoint(more_classes, path, "all")
    text = str(error.value)
    assert "\n" not in text
    assert ("model_final.pkl (detectron2 Mask2Former, parts backbone, pixel_decoder, predictor) "
            f"does not fit the model; missing (the original's names): 1 ({MISSING}); "
            f"unexpected: 1 ({UNEXPECTED})") in text
    assert_unchanged(more_classes, before)


def assert_unchanged(model, before):
    for key, value in weights(model).items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


def test_init_checkpoint_for_new_classes(source, checkpoint, more_classes):
    """`train.init_checkpoint` with a model for other classes: every part as in the checkpoint
    but the class head, which keeps its initialisation."""
    _, model = source
    head = ["predictor/class_embed/bias", "predictor/class_embed/kernel"]
    before = weights(more_classes)
    report = load_init_checkpoint(more_classes, checkpoint, "all")
    assert report.format == "detectron2 Mask2Former"
    assert report.metadata.get("__author__") == "Mask2Former"
    assert sorted(sum(report.kept_initial.values(), [])) == head
    assert report.loaded == len(before) - 2
    assert report.dropped == {"the criterion's class weights and the input normalisation":
                              ["criterion.empty_weight"]}
    ours, after = weights(model), weights(more_classes)
    for key, value in after.items():
        np.testing.assert_array_equal(value, before[key] if key in head else ours[key],
                                      err_msg=key)


def test_mask2former_heads_do_not_start_a_maskformer(source, checkpoint):
    """A MaskFormer checkpoint reads as MaskFormer; a Mask2Former checkpoint's backbone starts a
    MaskFormer, its heads cannot."""
    _, model = source
    maskformer = build_model(get_experiment("maskformer_smoke").model)
    signature = infer.checkpoint_signature(original_state(maskformer))
    assert signature["architecture"] == "maskformer"
    assert infer.infer_experiment(signature) == "maskformer_smoke"

    with pytest.raises(CheckpointError, match="a detectron2 Mask2Former checkpoint, but the model "
                                              "is 'maskformer' .*set train.init_checkpoint_"
                                              "modules to backbone"):
        load_init_checkpoint(maskformer, checkpoint, "all")
    report = load_init_checkpoint(maskformer, checkpoint, "backbone")
    assert report.unused > 0
    ours = weights(model)
    for key, value in weights(maskformer).items():
        if key.startswith("backbone/"):
            np.testing.assert_array_equal(value, ours[key], err_msg=key)
