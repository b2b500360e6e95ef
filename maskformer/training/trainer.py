"""Training with Keras `fit`: the model, the set criterion wired in through `compute_loss`,
the optimizer recipe, distribution strategies and checkpoints."""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import re
from pathlib import Path

import keras
import numpy as np

from maskformer.config import ExperimentConfig, save_yaml
from maskformer.modeling.maskformer import MaskFormer, build_model
from maskformer.objective.criterion import build_criterion
from maskformer.training.optimizer import build_optimizer, build_schedule
from maskformer.training.summaries import PeriodicEvaluation, ScalarSummaries, sync_state


class LastValue(keras.metrics.Metric):
    """The value of the latest step (not a running mean): per-step losses for the logs."""

    def __init__(self, name: str = "step_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.value = self.add_variable(shape=(), initializer="zeros", name="value")

    def update_state(self, value):
        self.value.assign(keras.ops.cast(value, self.dtype))

    def result(self):
        return keras.ops.convert_to_tensor(self.value)

    def reset_state(self):
        self.value.assign(0.0)


def _replicas() -> int:
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def _multi_worker() -> bool:
    """Whether training runs under MultiWorkerMirroredStrategy with more than one worker."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode())


def _scale_for_replicas(loss):
    """Divides by the replicas in sync: the optimizer sums replica gradients (TF backend)."""
    if keras.backend.backend() == "tensorflow" and _replicas() > 1:
        loss = loss / _replicas()
    return loss


# Training targets; the flags travel as uint8 because Keras' distributed build averages a
# batch over replicas, which boolean tensors do not support.
_TARGET_KEYS = ("masks", "labels", "valid", "pixel_valid")
_FLAGS = ("valid", "pixel_valid")


def training_targets(dataset):
    """Keeps the targets the criterion reads (the evaluation maps stay out of the step)."""
    import tensorflow as tf

    def select(images, targets):
        return images, {k: tf.cast(targets[k], tf.uint8) if k in _FLAGS else targets[k]
                        for k in _TARGET_KEYS}

    return dataset.map(select, num_parallel_calls=tf.data.AUTOTUNE)


class MaskFormerTrainer(keras.Model):
    """Wraps a MaskFormer and its criterion so that `fit` trains it.

    `compute_loss` runs the in-graph matching and the 18 loss terms; each unweighted term is
    tracked as a metric of its own name (`loss_ce`, `loss_mask_0`, ...).
    """

    def __init__(self, network: MaskFormer, criterion, **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.criterion = criterion
        self.term_trackers: dict[str, keras.metrics.Mean] = {}
        for name in self._term_names():
            self.term_trackers[name] = keras.metrics.Mean(name=name)
        self.step_loss = LastValue("step_loss")

    def _term_names(self) -> list[str]:
        names = ["loss_ce", "loss_mask", "loss_dice"]
        if self.network.config.deep_supervision:
            for i in range(self.network.config.dec_layers - 1):
                names += [f"loss_ce_{i}", f"loss_mask_{i}", f"loss_dice_{i}"]
        return names + ["matcher_nonfinite_costs"]

    def call(self, images, training=None):
        return self.network(images, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        y = {k: keras.ops.cast(v, "bool") if k in _FLAGS else v for k, v in y.items()}
        total, terms = self.criterion(y_pred, y)
        for name, tracker in self.term_trackers.items():
            if name in terms:
                tracker.update_state(terms[name])
        if keras.backend.backend() != "tensorflow" or _replicas() == 1:
            # Under tf.distribute a last-value metric would sum the replicas on read.
            self.step_loss.update_state(total)
        return _scale_for_replicas(total)

    @property
    def metrics(self):
        return [*super().metrics, *self.term_trackers.values(), self.step_loss]

    def train_step(self, *args):
        # (data) on TensorFlow, (state, data) on JAX, which returns (logs, state).
        logs = super().train_step(*args)
        if _multi_worker():
            # Keras reduces each log over the workers with `strategy.reduce(..., axis=0)`,
            # which needs an axis: the scalars travel as [1] and arrive as scalars again.
            logs = {k: keras.ops.reshape(v, [1]) for k, v in logs.items()}
        return logs

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Under tf.distribute Keras builds the metrics on a batch averaged over the replicas
        # (a cross-replica reduce), which MultiWorkerMirroredStrategy refuses for a dataset
        # distributed from a function. The first local replica's batch has the same structure
        # and is all the build needs.
        strategy = getattr(self, "_distribute_strategy", None)
        if iterator is not None and strategy is not None:
            import tensorflow as tf

            for _, _, it in iterator:
                batch = next(it)
                break
            data_batch = keras.tree.map_structure(
                lambda v: strategy.experimental_local_results(v)[0]
                if isinstance(v, tf.distribute.DistributedValues) else v, batch)
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)


# ---------------------------------------------------------------------------------------------
# Checkpoints: every variable of the network and the optimizer, written atomically.
# ---------------------------------------------------------------------------------------------

_CKPT = re.compile(r"ckpt-(\d+)\.npz$")


def checkpoint_paths(model_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in `model_dir`, oldest first, as (step, path)."""
    found = []
    for path in glob.glob(os.path.join(model_dir, "checkpoints", "ckpt-*.npz")):
        match = _CKPT.search(path)
        if match:
            found.append((int(match[1]), Path(path)))
    return sorted(found)


def save_checkpoint(trainer: MaskFormerTrainer, model_dir: str | Path, step: int,
                    keep: int) -> Path:
    """Writes ckpt-<step>.npz (network and optimizer variables), then prunes to `keep`."""
    folder = Path(model_dir) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    sync_state(trainer)
    arrays = {f"net/{i}": np.asarray(keras.ops.convert_to_numpy(v))
              for i, v in enumerate(trainer.network.variables)}
    arrays.update({f"opt/{i}": np.asarray(keras.ops.convert_to_numpy(v))
                   for i, v in enumerate(trainer.optimizer.variables)})
    arrays["step"] = np.asarray(step)
    final = folder / f"ckpt-{step}.npz"
    tmp = folder / f".ckpt-{step}.tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, final)  # a partial file is never named like a checkpoint
    for _, old in checkpoint_paths(model_dir)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return final


def restore_checkpoint(trainer: MaskFormerTrainer, path: str | Path) -> int:
    """Restores network and optimizer variables; returns the step."""
    with np.load(path) as data:
        net = [k for k in data.files if k.startswith("net/")]
        opt = [k for k in data.files if k.startswith("opt/")]
        if len(net) != len(trainer.network.variables) or len(opt) != len(trainer.optimizer.variables):
            raise ValueError(f"{path}: checkpoint does not fit this model and optimizer "
                             f"({len(net)}/{len(trainer.network.variables)} network variables, "
                             f"{len(opt)}/{len(trainer.optimizer.variables)} optimizer variables)")
        for i, v in enumerate(trainer.network.variables):
            v.assign(data[f"net/{i}"])
        for i, v in enumerate(trainer.optimizer.variables):
            v.assign(data[f"opt/{i}"])
        return int(data["step"])


class CheckpointCallback(keras.callbacks.Callback):
    """Saves every `every` steps and at the end of training."""

    def __init__(self, model_dir, every: int, keep: int, start_step: int = 0, write: bool = True):
        super().__init__()
        self.model_dir, self.every, self.keep = model_dir, every, keep
        self.write = write  # False on the workers other than the chief: count steps only
        self.step = start_step
        self.last_saved = start_step

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if getattr(self.model, "stop_training_nan", False):
            return  # never overwrite the last good checkpoint with diverged weights
        if self.write and self.every > 0 and self.step % self.every == 0:
            save_checkpoint(self.model, self.model_dir, self.step, self.keep)
            self.last_saved = self.step

    def on_train_end(self, logs=None):
        if (self.write and self.step != self.last_saved
                and not getattr(self.model, "stop_training_nan", False)):
            save_checkpoint(self.model, self.model_dir, self.step, self.keep)


class StopOnNonFinite(keras.callbacks.Callback):
    """Stops training at the first NaN or Inf loss; the last good checkpoint is kept."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.model.stop_training = True
            self.model.stop_training_nan = True
            print(f"\nloss became {loss} at batch {batch}: training stopped; the last "
                  "checkpoint written before it is kept")


class History(keras.callbacks.Callback):
    """Per-step logs (step, the learning rate the step used, losses), kept and appended to
    `path` (JSON lines)."""

    def __init__(self, path: str | Path | None = None, start_step: int = 0, schedule=None):
        super().__init__()
        self.steps: list[dict[str, float]] = []
        self.path = Path(path) if path else None
        self.step = start_step
        self.schedule = schedule

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        entry = {"step": self.step, **{k: float(v) for k, v in (logs or {}).items()}}
        if self.schedule is not None:
            # From the schedule, not the optimizer: reading its variables would force the JAX
            # trainer to re-attach its state after every step.
            entry["learning_rate"] = float(keras.ops.convert_to_numpy(
                self.schedule(self.step - 1)))
        self.steps.append(entry)
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(json.dumps(entry) + "\n")


# train.mixed_precision -> the Keras dtype policy the network is built under.
DTYPE_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16",
                  "float16": "mixed_float16"}


@contextlib.contextmanager
def dtype_policy(name: str):
    """Builds layers under the dtype policy `name`, then restores the global one."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def build_trainer(config: ExperimentConfig) -> MaskFormerTrainer:
    """Network, criterion and optimizer, compiled for `fit` (XLA where the backend allows).

    `train.mixed_precision` "bfloat16" or "float16" computes in that type with float32
    variables; the losses are always computed in float32. With float16 `compile` wraps the
    optimizer in a dynamic `LossScaleOptimizer` (gradients are unscaled before clipping).
    """
    with dtype_policy(DTYPE_POLICIES[config.train.mixed_precision]):
        network = build_model(config.model)
        criterion = build_criterion(config.loss, config.model.num_classes)
        # The host (scipy) matcher cannot be compiled; JAX always compiles the whole step.
        jit = keras.backend.backend() == "jax" or config.loss.matcher != "scipy"
        trainer = MaskFormerTrainer(network, criterion)
        trainer.compile(optimizer=build_optimizer(config.train), jit_compile=jit)
        # The optimizer's variables exist before the first step: a `tf.function` that creates
        # variables is traced twice, and the train step's trace takes seconds to minutes.
        trainer.optimizer.build(trainer.trainable_variables)
    return trainer


def train(config: ExperimentConfig, model_dir: str | Path, steps: int | None = None,
          steps_per_epoch: int | None = None, verbose: int = 1, callbacks=(),
          strategy=None) -> dict:
    """Trains `config` into `model_dir`, resuming from its latest checkpoint.

    Args:
        strategy: a `tf.distribute.Strategy` (TensorFlow backend); each replica gets
            `global_batch_size / replicas` images and its own share of the input files.

    Returns:
        {"history": per-step logs, "step": the final step, "trainer": the trainer}.
    """
    from maskformer.data.pipeline import build_dataset

    model_dir = Path(model_dir)
    # Under MultiWorkerMirroredStrategy every worker trains, but only the chief writes the model
    # dir (config, checkpoints, logs, final weights); all of them resume from it.
    chief = strategy is None or getattr(strategy.extended, "should_checkpoint", True)
    if chief:
        model_dir.mkdir(parents=True, exist_ok=True)
    if config.data.seed is None:
        # A seeded stream, so that a resumed run sees the examples an uninterrupted one would.
        config.data.seed = config.train.seed
    if chief:
        save_yaml(config, model_dir / "config.yaml")
    keras.utils.set_random_seed(config.train.seed)
    total = steps if steps is not None else config.train.steps
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        trainer = build_trainer(config)

    start = 0
    found = checkpoint_paths(model_dir)
    if found:
        start = restore_checkpoint(trainer, found[-1][1])
        print(f"resumed from {found[-1][1]} at step {start}")
    if start >= total:
        return {"history": [], "step": start, "trainer": trainer}

    # Resuming continues the data stream where the checkpoint left it.
    skip = start * config.train.global_batch_size
    if strategy is None:
        dataset = training_targets(build_dataset(
            config.data, config.data.train_files, training=True,
            batch_size=config.train.global_batch_size, skip=skip))
    else:
        dataset = strategy.distribute_datasets_from_function(
            lambda context: training_targets(build_dataset(
                config.data, config.data.train_files, training=True,
                batch_size=config.train.global_batch_size, input_context=context,
                skip=skip // context.num_input_pipelines)))
    per_epoch = min(steps_per_epoch or total - start, total - start)
    epochs = math.ceil((total - start) / per_epoch)
    history = History(model_dir / "train_log.jsonl" if chief else None, start,
                      build_schedule(config.train))
    ckpt = CheckpointCallback(model_dir, config.train.checkpoint_every,
                              config.train.keep_checkpoints, start, write=chief)
    fit_callbacks = [history, StopOnNonFinite()]
    if chief:
        # TensorBoard: every loss term and the learning rate every log_every steps; metrics
        # and sample predictions on the validation split every eval_every steps.
        fit_callbacks.append(ScalarSummaries(model_dir / "logs", config.train.log_every, start,
                                             build_schedule(config.train)))
        if config.train.eval_every > 0 and config.data.val_files:
            fit_callbacks.append(PeriodicEvaluation(config, model_dir, config.train.eval_every,
                                                    start))
    fit_callbacks += [ckpt, *callbacks]
    trainer.fit(dataset, steps_per_epoch=per_epoch, epochs=epochs, verbose=verbose,
                callbacks=fit_callbacks)
    if chief and not getattr(trainer, "stop_training_nan", False):
        # config.yaml + model.weights.h5: what `load_model`, evaluate and predict read.
        from maskformer.model_dir import save_model

        save_model(trainer.network, config, model_dir)
    return {"history": history.steps, "step": ckpt.step, "trainer": trainer}
