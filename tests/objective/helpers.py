"""Shared helpers of the objective tests: compiling a function on the active backend."""

from __future__ import annotations

import keras
import numpy as np


def compiled(fn):
    """`fn` compiled with XLA: `tf.function(jit_compile=True)` or `jax.jit`."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(fn)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True)
    raise NotImplementedError(keras.backend.backend())


def to_numpy(tree):
    """Converts every tensor of a nested structure to numpy."""
    if isinstance(tree, dict):
        return {k: to_numpy(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(to_numpy(v) for v in tree)
    return np.asarray(keras.ops.convert_to_numpy(tree))


def quick(fn):
    """The quickest way to run `fn` on tiny test shapes.

    TensorFlow: eagerly (the loops run op by op; no compile). JAX: `jax.jit`, because eager
    `lax.while_loop` compiles its body anew on every call.
    """
    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(fn)
    return fn


def compiled_value_and_grad(criterion, outputs, targets):
    """Runs `criterion` and its gradient w.r.t. every prediction in one XLA-compiled call.

    Returns numpy (total, terms, matches, grads): `matches` as from `criterion.compute`,
    `grads` shaped like `outputs`.
    """
    if keras.backend.backend() == "jax":
        import jax

        def loss(outs, tgts):
            total, terms, matches = criterion.compute(outs, tgts)
            return total, (terms, matches)

        (total, (terms, matches)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(
            outputs, targets)
        return to_numpy((total, terms, matches, grads))

    import tensorflow as tf

    @tf.function(jit_compile=True)
    def step(outs, tgts):
        leaves = tf.nest.flatten(outs)
        with tf.GradientTape() as tape:
            tape.watch(leaves)
            total, terms, matches = criterion.compute(tf.nest.pack_sequence_as(outs, leaves), tgts)
        grads = tape.gradient(total, leaves)
        return total, terms, matches, tf.nest.pack_sequence_as(outs, grads)

    outputs = tf.nest.map_structure(tf.convert_to_tensor, outputs)
    targets = tf.nest.map_structure(tf.convert_to_tensor, targets)
    return to_numpy(step(outputs, targets))
