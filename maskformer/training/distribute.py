"""`tf.distribute` in training: what the trainer and the optimizer do differently when several
replicas (devices or worker processes) train one model.

* The criterion's num_masks (targets in the batch) is averaged over the replicas
  (`replica_mean`), as the original all-reduces it and divides by the world size.
* Each replica's loss is divided by the replicas in sync, because the optimizer sums the
  replicas' gradients (`scale_for_replicas`): the update is that of the mean loss, as in
  DistributedDataParallel.
* The global gradient norm is clipped after the cross-replica sum (`ClipAfterAllReduce`), as
  DDP clips the all-reduced gradient; Keras would clip each replica's gradient before it.
* Under MultiWorkerMirroredStrategy Keras reduces the logs with `strategy.reduce(..., axis=0)`,
  which needs an axis (`reshape_logs`), and builds the metrics on a cross-replica batch that a
  dataset distributed from a function cannot give (`FirstReplicaBuild`).

These lean on private Keras hooks (`_maybe_symbolic_build`, `_clip_gradients`,
`_all_reduce_sum_gradients`, `strategy.extended._in_multi_worker_mode`); `PRIVATE_HOOKS` lists
them for the test that fails when a Keras release moves one. On the JAX backend every function
here is the identity (`replica_mean` takes a `pmap` axis name there). `strategy_from_name`
builds the strategies the command line names.
"""

from __future__ import annotations

import keras

# (class path, attribute, parameters after self) of each private Keras hook used here and in
# trainer.py / optimizer.py; tests/training/test_train_step.py checks they still exist.
PRIVATE_HOOKS = (
    ("keras.src.backend.tensorflow.trainer.TensorFlowTrainer", "_maybe_symbolic_build",
     ("iterator", "data_batch")),
    ("keras.src.optimizers.base_optimizer.BaseOptimizer", "_clip_gradients", ("grads",)),
    ("keras.src.backend.tensorflow.optimizer.TFOptimizer", "_all_reduce_sum_gradients",
     ("grads_and_vars",)),
    ("keras.src.optimizers.base_optimizer", "clip_by_global_norm", ("value_list", "clip_norm")),
    ("tensorflow.python.distribute.collective_all_reduce_strategy."
     "CollectiveAllReduceExtended", "_in_multi_worker_mode", ()),
    ("keras.src.optimizers.loss_scale_optimizer.LossScaleOptimizer",
     "_stateful_handle_non_finite_grads", ()),
    ("keras.src.optimizers.loss_scale_optimizer.LossScaleOptimizer",
     "_stateless_handle_non_finite_grads", ("optimizer_variables", "trainable_variables")),
)


def replica_mean(value, axis_name: str | None = None):
    """Averages a scalar over data-parallel replicas, as the original's all-reduce / world size.

    TensorFlow: inside a `tf.distribute` replica context the replica context's all-reduce is
    used. JAX: under `jax.jit` on global arrays the batch is already global (nothing to do);
    under `pmap`/`shard_map` pass the mapped `axis_name`.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        if tf.distribute.has_strategy() and not tf.distribute.in_cross_replica_context():
            context = tf.distribute.get_replica_context()
            total = context.all_reduce(tf.distribute.ReduceOp.SUM, value)
            return total / context.num_replicas_in_sync
    elif backend == "jax" and axis_name is not None:
        import jax

        return jax.lax.pmean(value, axis_name)
    return value


def strategy_from_name(name: str, tpu: str = ""):
    """The strategy "default" (None: one device), "mirrored", "multi_worker_mirrored" (from
    TF_CONFIG) or "tpu" (at address `tpu`)."""
    if name == "default":
        return None
    from maskformer.errors import ConfigError

    if keras.backend.backend() != "tensorflow":
        raise ConfigError(f"strategy {name!r} needs KERAS_BACKEND=tensorflow")
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker_mirrored":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name != "tpu":
        raise ConfigError(f"unknown strategy {name!r}: default, mirrored, "
                          "multi_worker_mirrored or tpu")
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def _tensorflow() -> bool:
    return keras.backend.backend() == "tensorflow"


def replicas() -> int:
    """The replicas in sync of the current strategy (1 outside tf.distribute and on JAX)."""
    if not _tensorflow():
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def replica_index():
    """This replica's number in its sync group (a tensor in a tf.distribute replica context;
    0 elsewhere and on JAX)."""
    if not _tensorflow():
        return 0
    import tensorflow as tf

    if tf.distribute.has_strategy() and not tf.distribute.in_cross_replica_context():
        return tf.distribute.get_replica_context().replica_id_in_sync_group
    return 0


def multi_worker() -> bool:
    """Whether training runs under MultiWorkerMirroredStrategy with more than one worker."""
    if not _tensorflow():
        return False
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode())


def scale_for_replicas(loss):
    """Divides a replica's loss by the replicas in sync: the optimizer sums their gradients."""
    count = replicas()
    return loss / count if count > 1 else loss


def reshape_logs(logs: dict) -> dict:
    """The train step's logs as Keras' multi-worker reduction needs them.

    Keras reduces each log over the workers with `strategy.reduce(..., axis=0)`, which needs an
    axis: the scalars travel as [1] and arrive as scalars again. Elsewhere `logs` unchanged.
    """
    if not multi_worker():
        return logs
    return {k: keras.ops.reshape(v, [1]) for k, v in logs.items()}


def clip_by_global_norm(grads, clip_norm: float):
    from keras.src.optimizers.base_optimizer import clip_by_global_norm as clip

    return clip(grads, clip_norm)


class ClipAfterAllReduce:
    """Optimizer mixin: with `global_clipnorm` and several replicas, clips the global norm of
    the summed gradient (as DDP does) instead of each replica's."""

    def _clip_gradients(self, grads):
        # Under tf.distribute the gradients here are one replica's: clip after the all-reduce.
        if self.global_clipnorm and replicas() > 1:
            return grads
        return super()._clip_gradients(grads)

    def _all_reduce_sum_gradients(self, grads_and_vars):
        reduced = super()._all_reduce_sum_gradients(grads_and_vars)
        if self.global_clipnorm and replicas() > 1:
            pairs = list(reduced)
            grads = clip_by_global_norm([g for g, _ in pairs], self.global_clipnorm)
            reduced = list(zip(grads, [v for _, v in pairs], strict=True))
        return reduced


class FirstReplicaBuild:
    """Model mixin: builds the metrics on the first local replica's batch.

    Under tf.distribute Keras builds them on a batch averaged over the replicas (a
    cross-replica reduce), which MultiWorkerMirroredStrategy refuses for a dataset distributed
    from a function. The first local replica's batch has the same structure and is all the
    build needs.
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
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
