"""train.mixed_precision: bfloat16 and float16 compute with float32 variables and losses;
float16 trains through a dynamic loss-scale optimizer."""

import keras
import numpy as np
import pytest

from maskformer.config import ConfigError, apply_overrides
from maskformer.experiments import get_experiment
from maskformer.training.trainer import build_trainer
from tests.training.test_train_step import synthetic_batch

STEPS = 3


def _trainer(precision):
    config = apply_overrides(get_experiment("maskformer_smoke"), [
        f"train.mixed_precision={precision}", "loss.matcher=scipy", "model.dropout=0.0"])
    keras.utils.set_random_seed(0)
    return build_trainer(config.validate())


@pytest.fixture(scope="module")
def reference():
    """Initial float32 weights and the float32 losses after 0, 1, ... STEPS updates."""
    images, targets = synthetic_batch()
    trainer = _trainer("float32")
    weights = [np.asarray(v).copy() for v in trainer.network.trainable_variables]
    losses = [trainer.train_on_batch(images, targets, return_dict=True)["step_loss"]
              for _ in range(STEPS + 1)]
    return weights, losses


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_mixed_precision_trains_close_to_float32(precision, reference):
    weights, ref = reference
    images, targets = synthetic_batch()
    trainer = _trainer(precision)
    assert keras.config.dtype_policy().name == "float32", "the global policy was not restored"
    assert trainer.network.compute_dtype == precision
    assert all(v.dtype == "float32" for v in trainer.network.trainable_variables)
    for a, b in zip(weights, trainer.network.trainable_variables, strict=True):
        np.testing.assert_array_equal(a, np.asarray(b))  # the same initial weights
    scaled = isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
    assert scaled == (precision == "float16")
    if scaled:
        # The dynamic scale starts at 2^15 and halves at every step whose scaled gradients
        # overflow float16 (this untrained model needs 11 such steps to reach 16). Start where
        # they fit, so that every step below applies an update.
        trainer.optimizer.dynamic_scale.assign(16.0)

    for step in range(STEPS):
        assert int(np.asarray(trainer.optimizer.iterations)) == step
        loss = trainer.train_on_batch(images, targets, return_dict=True)["step_loss"]
        # 8 (bfloat16) or 11 (float16) mantissa bits against 24: a few percent on the loss.
        np.testing.assert_allclose(loss, ref[step], rtol=0.05, err_msg=f"step {step}")
    assert int(np.asarray(trainer.optimizer.iterations)) == STEPS


def test_unknown_precision_is_named():
    config = get_experiment("maskformer_smoke")
    with pytest.raises(ConfigError, match="train.mixed_precision"):
        apply_overrides(config, ["train.mixed_precision=int8"]).validate()
