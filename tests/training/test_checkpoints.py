"""Checkpoints and model directories store variables by name: a model built after other layers
(so that Keras' automatic names have moved on) restores exactly, a model of another
configuration is refused with the names at fault, and save / load round-trips exactly."""

import keras
import numpy as np
import pytest

from maskformer.config import apply_overrides
from maskformer.errors import CheckpointError
from maskformer.experiments import get_experiment
from maskformer.model_dir import (
    LEGACY_WEIGHTS_NAME,
    WEIGHTS_NAME,
    load_model,
    save_model,
    variable_keys,
)
from maskformer.training.trainer import (
    build_trainer,
    checkpoint_paths,
    optimizer_keys,
    restore_checkpoint,
    save_checkpoint,
)
from tests.training.test_train_step import synthetic_batch


def _config(*overrides):
    return apply_overrides(get_experiment("maskformer_smoke"),
                           ["loss.matcher=scipy", *overrides]).validate()


def _outputs(network, images):
    out = network(images, training=False)
    return {k: np.asarray(keras.ops.convert_to_numpy(out[k]))
            for k in ("pred_logits", "pred_masks")}


def _values(variables):
    return {k: np.asarray(keras.ops.convert_to_numpy(v)) for k, v in variables.items()}


@pytest.fixture(scope="module")
def trained():
    """A trainer after two updates, so that the optimizer's moments are not zero."""
    config = _config()
    trainer = build_trainer(config)
    images, targets = synthetic_batch(num_classes=config.model.num_classes)
    for _ in range(2):
        trainer.train_on_batch(images, targets)
    return config, trainer


def _shift_automatic_names():
    """Builds layers with automatic names, as other code in the process might."""
    for _ in range(3):
        keras.layers.Dropout(0.1)
        keras.layers.Dense(2).build((None, 3))


def test_keys_do_not_depend_on_what_the_process_built_before():
    config = _config()
    first = build_trainer(config)
    _shift_automatic_names()
    second = build_trainer(config)
    paths = [v.path for v in second.network.variables]
    assert paths != [v.path for v in first.network.variables]  # Keras' paths did move
    keys = list(variable_keys(first.network))
    assert keys == list(variable_keys(second.network))
    assert len(keys) == len(first.network.variables)
    assert "predictor/query_embed" in keys
    assert any(k.endswith("decoder_0/self_attn/q_proj/kernel") for k in keys)
    assert any(k.endswith("/seed_generator/state") for k in keys)  # dropout's random state
    assert list(optimizer_keys(first.optimizer, first.network)) == list(
        optimizer_keys(second.optimizer, second.network))
    slots = [k for k in optimizer_keys(first.optimizer, first.network) if k.endswith("momentum")]
    assert len(slots) == len(first.network.trainable_variables)


def test_checkpoint_restores_into_a_model_built_later(trained, tmp_path):
    config, trainer = trained
    path = save_checkpoint(trainer, tmp_path, 2, keep=2)
    assert path.name == "ckpt-2.npz"
    _shift_automatic_names()
    restored = build_trainer(config)
    assert restore_checkpoint(restored, path) == 2
    assert int(keras.ops.convert_to_numpy(restored.optimizer.iterations)) == 2
    expected = _values(variable_keys(trainer.network))
    for key, value in _values(variable_keys(restored.network)).items():
        np.testing.assert_array_equal(value, expected[key], err_msg=key)
    expected = _values(optimizer_keys(trainer.optimizer, trainer.network))
    for key, value in _values(optimizer_keys(restored.optimizer, restored.network)).items():
        np.testing.assert_array_equal(value, expected[key], err_msg=key)
    images, _ = synthetic_batch()
    a, b = _outputs(trainer.network, images), _outputs(restored.network, images)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize(("override", "expected"), [
    ("model.num_queries=12", "mis-shaped: 3 (network/predictor/query_embed (10, 32) for (12, 32)"),
    ("model.dec_layers=2", "unexpected:"),  # one decoder layer fewer
    ("model.hidden_dim=16", ", ...)"),  # a long list of mis-shaped names, truncated
])
def test_checkpoint_of_another_configuration_is_refused(trained, tmp_path, override, expected):
    _, trainer = trained
    path = save_checkpoint(trainer, tmp_path, 2, keep=1)
    other = build_trainer(_config(override))
    before = _values(variable_keys(other.network))
    with pytest.raises(CheckpointError, match="does not fit") as error:
        restore_checkpoint(other, path)
    message = str(error.value)
    assert expected in message and str(path) in message, message
    if override.startswith("model.num_queries"):
        assert "network/" in message and "optimizer/" in message  # both, with their names
    for key, value in _values(variable_keys(other.network)).items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)  # nothing assigned


def test_checkpoints_are_pruned_and_never_partial(trained, tmp_path):
    _, trainer = trained
    for step in (2, 2, 2):  # the step must be the optimizer's: rewrites are fine
        save_checkpoint(trainer, tmp_path, step, keep=2)
    assert [s for s, _ in checkpoint_paths(tmp_path)] == [2]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if "tmp" in p.name]
    with pytest.raises(RuntimeError, match="optimizer has taken 2"):
        save_checkpoint(trainer, tmp_path, 3, keep=2)


def test_model_dir_round_trip_is_exact(trained, tmp_path):
    config, trainer = trained
    save_model(trainer.network, config, tmp_path)
    assert (tmp_path / WEIGHTS_NAME).is_file()
    _shift_automatic_names()
    loaded = load_model(tmp_path)
    expected = _values(variable_keys(trainer.network))
    actual = _values(variable_keys(loaded))
    assert actual.keys() == expected.keys()
    for key in expected:
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)
    images, _ = synthetic_batch()
    a, b = _outputs(trainer.network, images), _outputs(loaded, images)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_model_dir_of_another_configuration_is_refused(trained, tmp_path):
    config, trainer = trained
    save_model(trainer.network, config, tmp_path)
    other = _config("model.num_queries=12")
    (tmp_path / "config.yaml").write_text((tmp_path / "config.yaml").read_text().replace(
        f"num_queries: {config.model.num_queries}", "num_queries: 12"))
    assert other.model.num_queries == 12
    with pytest.raises(CheckpointError, match=r"mis-shaped: 1 \(network/predictor/query_embed"):
        load_model(tmp_path)


def test_legacy_keras_weights_are_still_read(trained, tmp_path):
    config, trainer = trained
    save_model(trainer.network, config, tmp_path)
    (tmp_path / WEIGHTS_NAME).unlink()
    trainer.network.save_weights(tmp_path / LEGACY_WEIGHTS_NAME)
    loaded = load_model(tmp_path)
    images, _ = synthetic_batch()
    a, b = _outputs(trainer.network, images), _outputs(loaded, images)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_a_skipped_float16_step_still_counts():
    """The optimizer's iterations are the step counter: a step the loss scale skips (scaled
    gradients overflow at the initial scale of 2^15) counts too."""
    trainer = build_trainer(_config("train.mixed_precision=float16"))
    images, targets = synthetic_batch()
    before = np.asarray(trainer.network.trainable_variables[0]).copy()
    trainer.train_on_batch(images, targets)
    assert float(keras.ops.convert_to_numpy(trainer.optimizer.dynamic_scale)) < 2.0 ** 15
    np.testing.assert_array_equal(np.asarray(trainer.network.trainable_variables[0]), before)
    assert int(keras.ops.convert_to_numpy(trainer.optimizer.iterations)) == 1
