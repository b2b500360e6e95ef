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
