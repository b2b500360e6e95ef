"""Benchmark: the in-graph Hungarian matcher (XLA) against scipy on the host, and the full loss.

    KERAS_BACKEND=tensorflow python benchmarks/matcher.py [--repeats 10]

1. Matching only, B = 8, Q = 100, N in {10, 50, 100}, on cost matrices of the matcher's kind:
   `hungarian_match` compiled with XLA (`tf.function(jit_compile=True)` / `jax.jit`) against
   `scipy.optimize.linear_sum_assignment` looped over the images on the host (the original's way).
2. The whole criterion (matching + losses, final output and 5 auxiliary outputs) with gradients,
   predictions 128 x 128, targets 512 x 512, K = 133, compiled, with the in-graph matcher.

Prints a table of median milliseconds (compile time excluded).
"""

from __future__ import annotations

import argparse
import statistics
import time

import keras
import numpy as np
from scipy.optimize import linear_sum_assignment

from maskformer.objective.criterion import SetCriterion
from maskformer.objective.matcher import hungarian_match


def _compile(fn):
    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(fn)
    import tensorflow as tf

    return tf.function(fn, jit_compile=True)


def _block(x):
    for leaf in keras.tree.flatten(x):
        np.asarray(keras.ops.convert_to_numpy(leaf))


def _median_ms(fn, repeats: int) -> float:
    fn()  # compile / warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def _costs(rng, batch, queries, targets):
    # Like the matcher's: -p(class) + 20 * focal + dice, continuous (unique optimum).
    return (-rng.random((batch, queries, targets)) + 20 * 0.2 * rng.random((batch, queries, targets))
            + rng.random((batch, queries, targets))).astype(np.float32)


def bench_matching(repeats: int) -> list[tuple[str, float, float]]:
    rng = np.random.default_rng(0)
    rows = []
    matcher = _compile(hungarian_match)
    for n in (10, 50, 100):
        cost = _costs(rng, 8, 100, n)
        valid = np.ones((8, n), bool)
        cost_t, valid_t = keras.ops.convert_to_tensor(cost), keras.ops.convert_to_tensor(valid)
        in_graph = _median_ms(lambda c=cost_t, v=valid_t: _block(matcher(c, v)), repeats)

        def host(cost=cost):
            for b in range(cost.shape[0]):
                linear_sum_assignment(cost[b].astype(np.float64))

        rows.append((f"match B=8 Q=100 N={n}", in_graph, _median_ms(host, repeats)))
    return rows


def bench_loss(repeats: int, num_targets: int = 20) -> tuple[str, float]:
    rng = np.random.default_rng(1)
    batch, queries, classes = 8, 100, 133

    def layer():
        return {"pred_logits": rng.normal(0, 2, (batch, queries, classes + 1)).astype(np.float32),
                "pred_masks": rng.normal(0, 3, (batch, queries, 128, 128)).astype(np.float32)}

    outputs = layer()
    outputs["aux_outputs"] = [layer() for _ in range(5)]
    targets = {"masks": (rng.random((batch, num_targets, 512, 512)) > 0.7).astype(np.float32),
               "labels": rng.integers(0, classes, (batch, num_targets)).astype(np.int32),
               "valid": np.ones((batch, num_targets), bool)}
    criterion = SetCriterion(classes)
    if keras.backend.backend() == "jax":
        import jax

        step = jax.jit(jax.value_and_grad(lambda o, t: criterion(o, t)[0]))
        outputs, targets = jax.device_put(outputs), jax.device_put(targets)
        run = lambda: _block(step(outputs, targets))  # noqa: E731
    else:
        import tensorflow as tf

        outputs = tf.nest.map_structure(tf.convert_to_tensor, outputs)
        targets = tf.nest.map_structure(tf.convert_to_tensor, targets)

        @tf.function(jit_compile=True)
        def step(outs, tgts):
            leaves = tf.nest.flatten(outs)
            with tf.GradientTape() as tape:
                tape.watch(leaves)
                total, _ = criterion(tf.nest.pack_sequence_as(outs, leaves), tgts)
            return total, tape.gradient(total, leaves)

        run = lambda: _block(step(outputs, targets))  # noqa: E731
    name = f"loss+grad B=8 Q=100 N={num_targets} 5 aux, 128^2 -> 512^2"
    return name, _median_ms(run, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--skip-loss", action="store_true")
    args = parser.parse_args()

    print(f"backend: {keras.backend.backend()}, median of {args.repeats} runs (ms)")
    print(f"| {'case':<48} | {'in-graph (XLA)':>14} | {'scipy (host)':>12} |")
    print(f"|{'-' * 50}|{'-' * 16}|{'-' * 14}|")
    for name, ours, host in bench_matching(args.repeats):
        print(f"| {name:<48} | {ours:>14.2f} | {host:>12.2f} |")
    if not args.skip_loss:
        name, ms = bench_loss(args.repeats)
        print(f"| {name:<48} | {ms:>14.1f} | {'':>12} |")


if __name__ == "__main__":
    main()
