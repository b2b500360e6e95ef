"""The whole train step of the tiny experiment: gradients reach every trainable variable, and
forward + matching + losses + backward + update compile with XLA (TensorFlow) / jax.jit."""

import numpy as np
import pytest

from maskformer.experiments import get_experiment
from maskformer.training.trainer import build_trainer
from tests.conftest import backend


def synthetic_batch(batch=2, size=64, max_instances=16, num_classes=7, seed=0):
    """Images with rectangles; one binary target mask and label per rectangle."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (batch, size, size, 3)).astype(np.float32)
    masks = np.zeros((batch, max_instances, size, size), np.float32)
    labels = np.zeros((batch, max_instances), np.int32)
    valid = np.zeros((batch, max_instances), bool)
    for b in range(batch):
        for n in range(3 + b):
            y0, x0 = rng.integers(0, size - 16, 2)
            h, w = rng.integers(8, 16, 2)
            masks[b, n, y0:y0 + h, x0:x0 + w] = 1
            images[b, y0:y0 + h, x0:x0 + w] = rng.uniform(0, 255, 3)
            labels[b, n] = rng.integers(0, num_classes)
            valid[b, n] = True
    targets = {"masks": masks, "labels": labels, "valid": valid,
               "pixel_valid": np.ones((batch, size, size), bool)}
    return images, targets


def _gradients(trainer, images, targets):
    network, criterion = trainer.network, trainer.criterion
    if backend() == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            total, _ = criterion(network(images, training=True), targets)
        return [np.asarray(g) if g is not None else None
                for g in tape.gradient(total, network.trainable_variables)]
    import jax

    trainable = [v.value for v in network.trainable_variables]
    frozen = [v.value for v in network.non_trainable_variables]

    def loss_fn(params):
        outputs, _ = network.stateless_call(params, frozen, images, training=True)
        return criterion(outputs, targets)[0]

    return [np.asarray(g) for g in jax.jit(jax.grad(loss_fn))(trainable)]


# Variables without a gradient in the original too. MaskFormer: the first decoder layer's input
# is zero, so the v projection's kernel multiplies zeros. (q and k do get gradients in
# training: attention dropout makes the output depend on the attention weights even though
# every value row is the v bias.) Mask2Former: none.
INERT = {"maskformer_smoke": {"decoder_0/self_attn/v_proj/kernel"}, "mask2former_smoke": set()}


@pytest.mark.parametrize("experiment", sorted(INERT))
def test_every_trainable_variable_gets_a_finite_nonzero_gradient(experiment):
    trainer = build_trainer(get_experiment(experiment))
    # Zero-initialised weights (the first decoder layer's biases; Mask2Former's sampling
    # offsets' and attention weights' kernels, as in the original) make more parts inert at
    # initialisation (their output is then exactly zero); check from a generic point instead.
    rng = np.random.default_rng(1)
    for v in trainer.network.trainable_variables:
        if not np.any(np.asarray(v)):
            v.assign(rng.normal(0, 0.05, v.shape).astype("float32"))
    images, targets = synthetic_batch()
    grads = _gradients(trainer, images, targets)
    variables = trainer.network.trainable_variables
    assert len(grads) == len(variables) > 0
    for v, g in zip(variables, grads, strict=True):
        assert g is not None, f"{v.path}: no gradient"
        assert np.all(np.isfinite(g)), f"{v.path}: non-finite gradient"
        if any(v.path.endswith(name) for name in INERT[experiment]):
            assert np.all(g == 0), f"{v.path}: gradient where the original has none"
        else:
            assert np.any(g != 0), f"{v.path}: zero gradient"
    # Frozen batch norm is not trainable and gets no update.
    frozen = [v for v in trainer.network.non_trainable_variables if "backbone" in v.path]
    assert frozen and not any(v.trainable for v in frozen)


def test_compiled_train_step_updates_weights():
    """fit's train step with jit_compile=True: XLA through tf.function(jit_compile=True) on
    TensorFlow, jax.jit on JAX. Forward, matching, 9 loss terms, backward and update."""
    config = get_experiment("maskformer_smoke")
    trainer = build_trainer(config)
    assert trainer.jit_compile
    images, targets = synthetic_batch()
    before = [np.asarray(v).copy() for v in trainer.network.trainable_variables]
    frozen_before = [np.asarray(v).copy() for v in trainer.network.non_trainable_weights]
    logs = [trainer.train_on_batch(images, targets, return_dict=True) for _ in range(2)]
    assert all(np.isfinite(log["loss"]) for log in logs)
    assert {"loss_ce", "loss_mask", "loss_dice", "loss_ce_0", "loss_dice_1"} <= set(logs[0])
    unchanged = [v.path for v, b in zip(trainer.network.trainable_variables, before, strict=True)
                 if np.all(np.asarray(v) == b)]
    # The first decoder layer's v kernel multiplies zeros (no gradient; its weight decay of
    # lr * wd = 1e-8 is below float32 resolution), and at initialisation, with zero attention
    # biases as in PyTorch, so does the norm after that attention (weight decay skips norms).
    expected = ("decoder_0/self_attn/v_proj/kernel", "decoder_0/norm1/")
    assert all(any(e in p for e in expected) for p in unchanged), unchanged
    for v, b in zip(trainer.network.non_trainable_weights, frozen_before, strict=True):
        np.testing.assert_array_equal(np.asarray(v), b, err_msg=v.path)


def test_private_keras_hooks_still_exist():
    """The private Keras / TensorFlow hooks that training overrides or calls (listed in
    maskformer/training/distribute.py) exist with the parameters the code passes: a Keras
    release that moves one fails here, not in a distributed run."""
    import importlib
    import inspect

    from maskformer.training.distribute import PRIVATE_HOOKS

    for owner, name, parameters in PRIVATE_HOOKS:
        module, _, attr = owner.rpartition(".")
        try:
            scope = getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError:
            scope = importlib.import_module(owner)
        hook = getattr(scope, name, None)
        assert callable(hook), f"{owner}.{name} is gone"
        found = [p for p in inspect.signature(hook).parameters if p != "self"]
        assert found == list(parameters), f"{owner}.{name}{tuple(found)}"


def test_point_sampled_train_steps_draw_new_points_each_step_reproducibly():
    """loss.num_points > 0 in fit's compiled step: the points are keyed by the optimizer's step,
    so with the weights held still (no dropout, a vanishing learning rate) the same batch gives
    a different loss at every step, and the same steps again give the same losses."""
    import keras

    config = get_experiment("maskformer_smoke")
    config.model.dropout = 0.0
    config.train.learning_rate = 1e-30
    config.loss.num_points = 48
    # TensorFlow: graph mode with the host matcher compiles in seconds rather than a minute;
    # the keying is the same (the XLA criterion with drawn points is tested in tests/objective).
    config.loss.matcher = "scipy" if backend() == "tensorflow" else "hungarian"
    images, targets = synthetic_batch()

    keras.utils.set_random_seed(3)
    trainer = build_trainer(config)

    def run():
        return [float(trainer.train_on_batch(images, targets, return_dict=True)["loss_mask"])
                for _ in range(3)]

    first = run()
    assert all(np.isfinite(first)) and len(set(first)) == 3, first
    # Back at step 0 (the weights have not moved): the same points, so the same losses.
    trainer.optimizer.iterations.assign(0)
    np.testing.assert_allclose(run(), first, rtol=1e-6)
