"""Training with Keras `fit`: the model, the set criterion wired in through `compute_loss`,
the optimizer recipe, distribution strategies and checkpoints."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import keras
import numpy as np

from maskformer.config import ExperimentConfig, save_yaml
from maskformer.errors import CheckpointError
from maskformer.model_dir import (
    assign_by_name,
    checkpoint_paths,
    network_arrays,
    network_variables,
    read_arrays,
    variable_keys,
    write_arrays,
)
from maskformer.modeling.maskformer import MaskFormer, build_model
from maskformer.objective.criterion import build_criterion
from maskformer.training import distribute
from maskformer.training.optimizer import (
    StepCountingLossScaleOptimizer,
    build_optimizer,
    build_schedule,
)
from maskformer.training.progress import TrainingProgress
from maskformer.training.summaries import (
    PeriodicEvaluation,
    ScalarSummaries,
    StepCallback,
    optimizer_step,
    sync_state,
)


class LastValue(keras.metrics.Metric):
    """The value of the latest step (not a running mean): the per-step logs.

    Under tf.distribute each replica holds its own value; the logs are the mean over replicas,
    which for the loss and each term is the value of the global batch (the replicas' losses
    are means over their share, normalised by the masks averaged over replicas).
    """

    def __init__(self, name: str = "step_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.value = self.add_variable(shape=(), initializer="zeros", name="value",
                                       aggregation="mean")

    def update_state(self, value):
        self.value.assign(keras.ops.cast(value, self.dtype))

    def result(self):
        return keras.ops.convert_to_tensor(self.value)

    def reset_state(self):
        self.value.assign(0.0)


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


class MaskFormerTrainer(distribute.FirstReplicaBuild, keras.Model):
    """Wraps a MaskFormer and its criterion so that `fit` trains it.

    `compute_loss` runs the in-graph matching and the 18 loss terms; each unweighted term is
    logged under its own name (`loss_ce`, `loss_mask_0`, ...). Every log is the step's own
    value: `loss` and `step_loss` the step's total, not Keras' running mean, so that the logs of
    a resumed run are those of an uninterrupted one.

    A point-sampled criterion (`loss.num_points` > 0) draws each step's points with the key
    (`point_seed`, step * replicas + replica): fresh points every step and on every replica,
    and the same ones again in a resumed run (the step is the optimizer's, which checkpoints
    keep), on TensorFlow and JAX alike.
    """

    def __init__(self, network: MaskFormer, criterion, point_seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.criterion = criterion
        self.point_seed = point_seed
        self._step_value = None  # JAX: the traced step of the train step being built
        self.term_trackers: dict[str, LastValue] = {}
        for name in self._term_names():
            self.term_trackers[name] = LastValue(name=name)
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
        if getattr(self.criterion, "num_points", 0) > 0:
            total, terms, _ = self.criterion.compute(y_pred, y, seed=self.point_key())
        else:
            total, terms = self.criterion(y_pred, y)
        for name, tracker in self.term_trackers.items():
            if name in terms:
                tracker.update_state(terms[name])
        self.step_loss.update_state(total)
        return distribute.scale_for_replicas(total)

    @property
    def metrics(self):
        return [*super().metrics, *self.term_trackers.values(), self.step_loss]

    def point_key(self):
        """[2] int32 key of this step's random points: (point_seed, step * replicas + replica)."""
        step = self._step_value if self._step_value is not None else self.optimizer.iterations
        stream = (keras.ops.cast(step, "int32") * distribute.replicas()
                  + keras.ops.cast(distribute.replica_index(), "int32"))
        return keras.ops.stack([keras.ops.convert_to_tensor(self.point_seed, "int32"), stream])

    def train_step(self, *args):
        # (data) on TensorFlow, (state, data) on JAX, which returns (logs, state).
        if len(args) == 2:
            # JAX's stateless step: the optimizer's variables come in the state, in the order
            # of `optimizer.variables`; the step counter is read from there.
            optimizer_variables = args[0][2]
            index = [id(v) for v in self.optimizer.variables].index(
                id(self.optimizer.iterations))
            self._step_value = optimizer_variables[index]
        try:
            result = super().train_step(*args)
        finally:
            self._step_value = None
        logs, state = result if isinstance(result, tuple) else (result, None)
        logs = dict(logs)
        logs["loss"] = logs["step_loss"]  # the step's total, not the running mean
        logs = distribute.reshape_logs(logs)
        return logs if state is None else (logs, state)


# ---------------------------------------------------------------------------------------------
# Checkpoints: every variable of the network and the optimizer, written atomically.
# ---------------------------------------------------------------------------------------------

OPTIMIZER = "optimizer/"  # the optimizer's own variables and its slots, by model variable
LOSS_SCALE = "loss_scale/"  # the dynamic loss scale's variables (float16)


def optimizer_keys(optimizer, network) -> dict[str, keras.Variable]:
    """Every optimizer variable by a stable key.

    A slot is keyed by the network variable it belongs to: "optimizer/<key>/momentum"; the
    optimizer's own variables by name ("optimizer/iteration"); a loss-scale optimizer's own
    variables "loss_scale/<name>".
    """
    keys: dict[str, keras.Variable] = {}
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        inner = {id(v) for v in optimizer.inner_optimizer.variables}
        keys.update({LOSS_SCALE + v.name: v for v in optimizer.variables if id(v) not in inner})
        optimizer = optimizer.inner_optimizer
    owners = getattr(optimizer, "slot_owners", {})
    names = {id(v): k for k, v in variable_keys(network).items()}
    for v in optimizer.variables:
        owner = owners.get(id(v))
        if owner is not None and owner[0] not in names:
            raise CheckpointError(f"{v.path}: the slot of a variable outside the network")
        key = OPTIMIZER + (f"{names[owner[0]]}/{owner[1]}" if owner is not None else v.name)
        if key in keys:
            raise CheckpointError(f"two optimizer variables have the key {key!r}")
        keys[key] = v
    return keys


def save_checkpoint(trainer: MaskFormerTrainer, model_dir: str | Path, step: int,
                    keep: int) -> Path:
    """Writes ckpt-<step>.npz (network and optimizer variables by name), then prunes to `keep`.

    `step` must be the optimizer's iterations: the step counter a resume continues from.
    """
    folder = Path(model_dir) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    sync_state(trainer)
    iterations = int(keras.ops.convert_to_numpy(trainer.optimizer.iterations))
    if iterations != step:
        raise RuntimeError(f"step {step} but the optimizer has taken {iterations} steps")
    arrays = network_arrays(trainer.network)
    arrays.update({k: np.asarray(keras.ops.convert_to_numpy(v))
                   for k, v in optimizer_keys(trainer.optimizer, trainer.network).items()})
    final = write_arrays(folder / f"ckpt-{step}.npz", arrays)
    for _, old in checkpoint_paths(model_dir)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return final


def restore_checkpoint(trainer: MaskFormerTrainer, path: str | Path) -> int:
    """Restores network and optimizer variables by name; returns the step (the optimizer's
    iterations).

    Raises:
        CheckpointError: the checkpoint does not fit (missing, unexpected, mis-shaped names).
    """
    arrays = read_arrays(path)
    variables = {**network_variables(trainer.network),
                 **optimizer_keys(trainer.optimizer, trainer.network)}
    assign_by_name(variables, arrays, path)  # checks every name and shape, then assigns
    return optimizer_step(trainer)


class CheckpointCallback(StepCallback):
    """Saves every `every` steps and at the end of training."""

    def __init__(self, model_dir, every: int, keep: int, write: bool = True):
        super().__init__()
        self.model_dir, self.every, self.keep = model_dir, every, keep
        self.write = write  # False on the workers other than the chief: count steps only
        self.last_saved = 0

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.last_saved = self.step

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)
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


class History(StepCallback):
    """Per-step logs (the global step, the learning rate the step used, the step's loss and
    each of its terms), kept and appended to `path` (JSON lines)."""

    def __init__(self, path: str | Path | None = None, schedule=None):
        super().__init__()
        self.steps: list[dict[str, float]] = []
        self.path = Path(path) if path else None
        self.schedule = schedule

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)
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
        criterion = build_criterion(config.loss, config.model.num_classes,
                                    reduce_num_masks=distribute.replica_mean)
        # The host (scipy) matcher cannot be compiled; JAX always compiles the whole step.
        jit = keras.backend.backend() == "jax" or config.loss.matcher != "scipy"
        trainer = MaskFormerTrainer(network, criterion, point_seed=config.train.seed)
        optimizer = build_optimizer(config.train)
        if config.train.mixed_precision == "float16":
            # Wrapped here rather than by `compile`, so that skipped steps count (see there).
            optimizer = StepCountingLossScaleOptimizer(optimizer, name="loss_scale_optimizer")
        trainer.compile(optimizer=optimizer, jit_compile=jit)
        # The optimizer's variables exist before the first step: a `tf.function` that creates
        # variables is traced twice, and the train step's trace takes seconds to minutes.
        trainer.optimizer.build(trainer.trainable_variables)
    return trainer


def init_from_checkpoint(network: MaskFormer, config: ExperimentConfig) -> None:
    """Sets the parts `train.init_checkpoint_modules` of a fresh network from
    `train.init_checkpoint` and prints what was loaded and what kept its initialisation."""
    from maskformer.conversion.pretrained import load_init_checkpoint

    report = load_init_checkpoint(network, config.train.init_checkpoint,
                                  config.train.init_checkpoint_modules)
    for line in report.lines():
        print(f"init_checkpoint: {line}")


def train(config: ExperimentConfig, model_dir: str | Path, steps: int | None = None,
          steps_per_epoch: int | None = None, verbose: int = 1, callbacks=(),
          strategy=None) -> dict:
    """Trains `config` into `model_dir`, resuming from its latest checkpoint.

    A run that does not resume starts from `train.init_checkpoint` when one is set (its parts
    `train.init_checkpoint_modules`; `maskformer.conversion.pretrained`); a resumed run ignores it.

    Args:
        verbose: 0 prints nothing while training; 1 a progress line (`TrainingProgress`:
            step, loss, learning rate, speed, ETA) redrawn in place on a terminal, or a new
            line every 30 s when the output is a file or a pipe; 2 always the plain lines.
        strategy: a `tf.distribute.Strategy` (TensorFlow backend); each replica gets
            `global_batch_size / replicas` images and its own share of the input files.

    Returns:
        {"history": per-step logs, "step": the final step, "trainer": the trainer}.
    """
    from maskformer.data.pipeline import build_dataset

    config.check_input_pipeline()
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
        if config.train.init_checkpoint:
            print(f"init_checkpoint: {config.train.init_checkpoint} not loaded: the run "
                  "resumes from its own checkpoint")
    elif config.train.init_checkpoint:
        init_from_checkpoint(trainer.network, config)
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
    # Every callback counts steps from the optimizer's iterations (restored above).
    history = History(model_dir / "train_log.jsonl" if chief else None,
                      build_schedule(config.train))
    ckpt = CheckpointCallback(model_dir, config.train.checkpoint_every,
                              config.train.keep_checkpoints, write=chief)
    fit_callbacks = [history, StopOnNonFinite()]
    evaluate_every = config.train.eval_every if chief and config.data.val_files else 0
    if chief:
        # TensorBoard: every loss term and the learning rate every log_every steps.
        fit_callbacks.append(ScalarSummaries(model_dir / "logs", config.train.log_every,
                                             build_schedule(config.train)))
    progress = None
    if verbose:
        # In place of Keras' bar, which prints every log entry (the terms are in the logs).
        # It shows the line of each evaluation's step before the evaluation prints its result.
        progress = TrainingProgress(total, build_schedule(config.train),
                                    live=False if verbose == 2 else None,
                                    show_every=evaluate_every)
        fit_callbacks.append(progress)
    if evaluate_every > 0:
        # Metrics and sample predictions on the validation split every eval_every steps.
        fit_callbacks.append(PeriodicEvaluation(config, model_dir, evaluate_every))
    fit_callbacks += [ckpt, *callbacks]
    try:
        # The tf.data pipeline shuffles; shuffle=False keeps Keras from warning that it won't.
        trainer.fit(dataset, steps_per_epoch=per_epoch, epochs=epochs, verbose=0,
                    shuffle=False, callbacks=fit_callbacks)
    finally:
        if progress is not None:  # an interrupted run's line ends before the next message
            progress.close()
    if chief and not getattr(trainer, "stop_training_nan", False):
        # config.yaml + model.weights.npz: what `load_model`, evaluate and predict read.
        from maskformer.model_dir import save_model

        save_model(trainer.network, config, model_dir)
    return {"history": history.steps, "step": ckpt.step, "trainer": trainer}
