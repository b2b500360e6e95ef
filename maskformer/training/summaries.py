"""TensorBoard summaries of training: scalars at the global step, and periodic evaluation
(metrics and sample prediction pictures) on the validation split.

Both write with `tf.summary`, which works whichever Keras backend trains, at the global step:
the optimizer's iterations (`StepCallback`), so that a resumed run continues the curves of the
first one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras


def sync_state(model) -> None:
    """Makes the model's variables current. Under JAX, `fit` keeps the training state outside
    the variables between epochs; a callback that reads them must attach it first."""
    if hasattr(model, "jax_state_sync"):
        model.jax_state_sync()


def optimizer_step(model) -> int:
    """The optimizer's iterations: the global step, the number of training steps taken."""
    sync_state(model)
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


class StepCallback(keras.callbacks.Callback):
    """A callback that knows the global step (`self.step`, the step just trained).

    The optimizer's iterations are the one step counter. They are read once when training
    begins and counted on from there, one per batch: under JAX `fit` keeps the optimizer's
    state outside its variables during an epoch, and reading them every step would force a
    state sync every step. `CheckpointCallback` checks that the count and the iterations agree
    whenever it writes.
    """

    def __init__(self):
        super().__init__()
        self.step = 0

    def on_train_begin(self, logs=None):
        self.step = optimizer_step(self.model)

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1


def metric_scalars(results: dict[str, Any]) -> dict[str, float]:
    """The headline numbers of `evaluate`'s results, flat: panoptic/PQ_All, semantic/mIoU..."""
    scalars = {}
    for group, values in results.get("panoptic", {}).items():
        if group in ("All", "Things", "Stuff"):
            for name in ("PQ", "SQ", "RQ"):
                scalars[f"panoptic/{name}_{group}"] = float(values[name])
    for name in ("mIoU", "fwIoU", "mACC", "pACC"):
        if name in results.get("semantic", {}):
            scalars[f"semantic/{name}"] = float(results["semantic"][name])
    for name in ("AP", "AP50", "AP75"):
        if results.get("instance", {}).get(name) is not None:
            scalars[f"instance/{name}"] = float(results["instance"][name])
    return scalars


class ScalarSummaries(StepCallback):
    """Every `every` steps: each log entry (the step's total loss, each loss term) and the
    learning rate, at the global step, into `log_dir/train`."""

    def __init__(self, log_dir: str | Path, every: int, schedule=None):
        super().__init__()
        import tensorflow as tf

        self.every = max(every, 1)
        self.schedule = schedule
        self.writer = tf.summary.create_file_writer(str(Path(log_dir) / "train"))

    def on_train_batch_end(self, batch, logs=None):
        import tensorflow as tf

        super().on_train_batch_end(batch, logs)
        if self.step % self.every:
            return
        values = {k: float(v) for k, v in (logs or {}).items()}
        if self.schedule is not None:  # the rate this step used
            values["learning_rate"] = float(keras.ops.convert_to_numpy(
                self.schedule(self.step - 1)))
        with self.writer.as_default():
            for name, value in values.items():
                tf.summary.scalar(name, value, step=self.step)
        self.writer.flush()

    def on_train_end(self, logs=None):
        self.writer.close()


class PeriodicEvaluation(StepCallback):
    """Evaluates the training network on `data.val_files` every `every` steps.

    Writes the metrics (`panoptic/PQ_All`, `semantic/mIoU`, ...) and image | ground truth |
    prediction pictures of the first `num_pictures` images into `log_dir/validation`, and one
    JSON line per evaluation to `eval_log.jsonl` in the model dir.
    """

    def __init__(self, config, model_dir: str | Path, every: int, num_pictures: int = 4):
        super().__init__()
        import tensorflow as tf

        self.config, self.every = config, every
        self.num_pictures = num_pictures
        self.log_path = Path(model_dir) / "eval_log.jsonl"
        self.writer = tf.summary.create_file_writer(str(Path(model_dir) / "logs" / "validation"))
        self.evaluations: list[dict[str, Any]] = []
        self.predictor = None

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)
        if self.every > 0 and self.step % self.every == 0:
            self.evaluate()

    def evaluate(self) -> dict[str, Any]:
        import tensorflow as tf

        from maskformer.inference import Predictor, evaluate
        from maskformer.visualize import OverlayCollector

        sync_state(self.model)
        if self.predictor is None:  # compiled at the first evaluation, then reused
            self.predictor = Predictor(self.model.network, self.config)
        collect = OverlayCollector(self.predictor.categories, self.num_pictures, scale=1)
        results = evaluate(self.model.network, self.config, progress=False,
                           on_batch=collect if self.config.eval.panoptic else None,
                           predictor=self.predictor)
        scalars = metric_scalars(results)
        with self.writer.as_default():
            for name, value in scalars.items():
                tf.summary.scalar(name, value, step=self.step)
            for image_id, picture in collect.pictures:
                tf.summary.image(f"predictions/{image_id:06d}", picture[None], step=self.step)
        self.writer.flush()
        entry = {"step": self.step, **scalars}
        self.evaluations.append(entry)
        with open(self.log_path, "a") as f:
            f.write(json.dumps(entry) + "\n")
        # On its own line: `TrainingProgress` ends its line at the evaluation's steps.
        print("step {}: {}".format(self.step, ", ".join(
            f"{k.split('/')[-1]} {v:.1f}" for k, v in scalars.items()
            if k in ("panoptic/PQ_All", "semantic/mIoU"))), flush=True)
        return results

    def on_train_end(self, logs=None):
        self.writer.close()


def read_summaries(log_dir: str | Path, plugin: str = "scalars") -> dict[str, dict[int, Any]]:
    """Summaries of one kind ("scalars", "images") in the event files under `log_dir`, as
    {tag: {step: value}}; a scalar's value is a float, an image's its [width, height, PNG]
    strings."""
    import tensorflow as tf

    found: dict[str, dict[int, Any]] = {}
    for path in sorted(Path(log_dir).rglob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == plugin:
                    array = tf.make_ndarray(value.tensor)
                    found.setdefault(value.tag, {})[int(event.step)] = (
                        float(array) if plugin == "scalars" else array)
    return found
