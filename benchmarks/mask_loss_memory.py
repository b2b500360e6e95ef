"""Peak memory and time of the set criterion's forward + backward: dense vs point-sampled.

The criterion alone (matching of every output, the 18 loss terms, gradients w.r.t. the
predictions), at the COCO training shapes: batch 8 at 640x640, 100 queries, 6 outputs (final +
5 auxiliary) of `pred_logits` [8, 100, K+1] and stride-4 `pred_masks` [8, 100, 160, 160];
targets [8, 100, 640, 640] with about 30 valid slots per image. Two configurations:

- dense (`loss.num_points` 0): the mask logits upsampled to 640x640 for every matched pair;
- points (`loss.num_points` 12544, Mask2Former's): logits and targets read at sampled points.

Each configuration runs in its own process, compiled with `tf.function(jit_compile=True)`
(TensorFlow) or `jax.jit`. Peak resident memory is `getrusage(RUSAGE_SELF).ru_maxrss` after a
warm-up call and `--runs` timed ones, minus the same reading taken once the inputs exist (the
"baseline": the framework and the 1.3 GB of float32 targets). The parent kills a child whose
resident set passes `--max-gib` or that runs past `--max-seconds`, and reports that instead.

    KERAS_BACKEND=tensorflow python benchmarks/mask_loss_memory.py [--points 0 12544]
        [--runs 3] [--batch 8] [--size 640] [--valid 30] [--whole-step]

`--whole-step` measures the whole training step instead: Keras `train_on_batch` of the
`maskformer_coco_panoptic_r50` experiment (R50 + FPN, 133 classes, forward, matching, losses,
backward, clipping and the AdamW update, one XLA program) on random images with the same
targets; its baseline also holds the model and optimizer.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NUM_CLASSES = 133
NUM_QUERIES = 100
AUX_LAYERS = 5


def peak_rss_gib() -> float:
    """The process's peak resident set so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def make_inputs(batch: int, size: int, valid: int, seed: int = 0):
    """Random predictions of every output and `valid` rectangle targets per image."""
    import numpy as np

    rng = np.random.default_rng(seed)
    h = size // 4

    def output():
        return {"pred_logits": rng.normal(0, 2, (batch, NUM_QUERIES, NUM_CLASSES + 1)
                                          ).astype(np.float32),
                "pred_masks": rng.normal(0, 3, (batch, NUM_QUERIES, h, h)).astype(np.float32)}

    outputs = output()
    outputs["aux_outputs"] = [output() for _ in range(AUX_LAYERS)]
    masks = np.zeros((batch, NUM_QUERIES, size, size), np.float32)
    labels = np.zeros((batch, NUM_QUERIES), np.int32)
    flags = np.zeros((batch, NUM_QUERIES), bool)
    for b in range(batch):
        for n in range(valid):
            y0, x0 = rng.integers(0, size - 64, 2)
            hh, ww = rng.integers(16, 256, 2)
            masks[b, n, y0:y0 + hh, x0:x0 + ww] = 1
            labels[b, n] = rng.integers(0, NUM_CLASSES)
            flags[b, n] = True
    return outputs, {"masks": masks, "labels": labels, "valid": flags}


def time_steps(run, num_points: int, runs: int) -> dict:
    """Peak memory above the reading before the first call, the first call's time and the
    median of `runs` further calls: the row of the table, as a dict."""
    baseline = peak_rss_gib()
    start = time.perf_counter()
    run()  # warm-up: tracing and compilation
    first_s = time.perf_counter() - start
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        value = run()
        seconds.append(time.perf_counter() - start)
    return {"num_points": num_points, "baseline_gib": baseline,
            "peak_gib": peak_rss_gib() - baseline, "first_s": first_s,
            "step_s": statistics.median(seconds), "loss": value}


def measure(num_points: int, batch: int, size: int, valid: int, runs: int) -> dict:
    """One configuration in this process: the row of the table, as a dict."""
    import keras

    from maskformer.objective.criterion import SetCriterion

    outputs, targets = make_inputs(batch, size, valid)
    criterion = SetCriterion(NUM_CLASSES, num_points=num_points, seed=0)

    if keras.backend.backend() == "jax":
        import jax

        def loss(outs, tgts):
            return criterion(outs, tgts)[0]

        # JAX: an int seed (the SeedGenerator's state would not be threaded through jit).
        if num_points:
            def loss(outs, tgts):  # noqa: F811
                return criterion.compute(outs, tgts, seed=0)[0]
        step = jax.jit(jax.value_and_grad(loss))
        outputs = jax.tree_util.tree_map(jax.numpy.asarray, outputs)
        targets = jax.tree_util.tree_map(jax.numpy.asarray, targets)

        def run():
            value, grads = step(outputs, targets)
            jax.block_until_ready(grads)
            return float(value)
    else:
        import tensorflow as tf

        @tf.function(jit_compile=True)
        def step(outs, tgts):
            leaves = tf.nest.flatten(outs)
            with tf.GradientTape() as tape:
                tape.watch(leaves)
                total, _ = criterion(tf.nest.pack_sequence_as(outs, leaves), tgts)
            return total, tape.gradient(total, leaves)

        outputs = tf.nest.map_structure(tf.convert_to_tensor, outputs)
        targets = tf.nest.map_structure(tf.convert_to_tensor, targets)

        def run():
            value, grads = step(outputs, targets)
            _ = [g.numpy() for g in grads]
            return float(value)

    return time_steps(run, num_points, runs)


def measure_whole_step(num_points: int, batch: int, size: int, valid: int, runs: int) -> dict:
    """The training step of the R50 COCO panoptic model in this process."""
    import keras
    import numpy as np

    from maskformer.experiments import get_experiment
    from maskformer.training.trainer import build_trainer

    _, targets = make_inputs(batch, size, valid)
    images = np.random.default_rng(1).uniform(0, 255, (batch, size, size, 3)).astype(np.float32)
    config = get_experiment("maskformer_coco_panoptic_r50")
    config.data.max_instances = NUM_QUERIES
    config.loss.num_points = num_points
    keras.utils.set_random_seed(0)
    trainer = build_trainer(config)

    def run():
        return float(trainer.train_on_batch(images, targets, return_dict=True)["loss"])

    return time_steps(run, num_points, runs)


def run_child(command: list[str], max_gib: float, max_seconds: float) -> dict | str:
    """Runs one measuring process; the parsed row, or why it was stopped."""
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=ROOT)
    start, worst = time.monotonic(), 0.0
    while child.poll() is None:
        try:
            status = Path(f"/proc/{child.pid}/status").read_text()
            rss = int(next(line.split()[1] for line in status.splitlines()
                           if line.startswith("VmRSS"))) / 2**20
        except (OSError, StopIteration):
            rss = 0.0
        worst = max(worst, rss)
        if rss > max_gib or time.monotonic() - start > max_seconds:
            child.kill()
            child.wait()
            return (f"stopped: resident {rss:.1f} GiB (max seen {worst:.1f}) after "
                    f"{time.monotonic() - start:.0f} s")
        time.sleep(0.5)
    out, err = child.communicate()
    if child.returncode != 0:
        sys.stderr.write(err[-4000:])
        oom = re.findall(r"Out of memory while trying to allocate ([0-9.]+ ?[KMGT]i?B)", err)
        if oom:  # the framework refused one allocation
            return f"out of memory: one allocation of {oom[-1]} refused"
        return f"failed (exit status {child.returncode})"
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, nargs="+", default=[0, 12544])
    parser.add_argument("--runs", type=int, default=3, help="timed calls after the warm-up")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--valid", type=int, default=30, help="valid targets per image")
    parser.add_argument("--max-gib", type=float, default=20.0)
    parser.add_argument("--max-seconds", type=float, default=900.0)
    parser.add_argument("--whole-step", action="store_true",
                        help="the R50 model's whole training step, not the criterion alone")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child is not None:
        row = (measure_whole_step if args.whole_step else measure)(
            args.child, args.batch, args.size, args.valid, args.runs)
        print(json.dumps(row), flush=True)
        return

    rows = []
    for num_points in args.points:  # one at a time: the peaks must not add up on the machine
        command = [sys.executable, __file__, "--child", str(num_points), "--runs", str(args.runs),
                   "--batch", str(args.batch), "--size", str(args.size), "--valid",
                   str(args.valid)] + (["--whole-step"] if args.whole_step else [])
        rows.append((num_points, run_child(command, args.max_gib, args.max_seconds)))
        print(num_points, rows[-1][1], file=sys.stderr, flush=True)

    what = ("R50 training step (train_on_batch)" if args.whole_step
            else "SetCriterion forward + backward")
    print(f"{what}, {1 + AUX_LAYERS} outputs, batch {args.batch}, "
          f"{args.size}x{args.size} targets ({args.valid} valid of {NUM_QUERIES}), "
          f"{NUM_CLASSES} classes, backend {os.environ['KERAS_BACKEND']}, XLA; median of "
          f"{args.runs} steps after a warm-up")
    print()
    print("| num_points | peak RSS above baseline (GiB) | baseline (GiB) | first call (s) "
          "| step (s) |")
    print("|---|---|---|---|---|")
    for num_points, r in rows:
        name = "0 (dense)" if num_points == 0 else str(num_points)
        if isinstance(r, str):
            print(f"| {name} | {r} | | | |")
        else:
            print(f"| {name} | {r['peak_gib']:.2f} | {r['baseline_gib']:.2f} "
                  f"| {r['first_s']:.1f} | {r['step_s']:.2f} |")


if __name__ == "__main__":
    main()
