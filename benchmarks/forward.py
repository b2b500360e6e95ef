"""Forward latency: ours (TensorFlow graph and XLA) against Hugging Face PyTorch, same weights.

The Hugging Face-comparable model: ResNet-50 + FPN pixel decoder, 150 classes, 100 queries,
randomly initialised, converted into ours. Batch 1, CPU, median over repeated runs, every
contender timed in turn within one process.

    KERAS_BACKEND=tensorflow python benchmarks/forward.py [--sizes 512x512 800x1216] [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import torch  # noqa: E402

from maskformer.config import ExperimentConfig  # noqa: E402
from maskformer.conversion.io import convert_checkpoint, max_relative_difference  # noqa: E402
from tests.conversion.test_huggingface import MEAN, STD, hf_model  # noqa: E402


def timed(fn, runs: int) -> float:
    fn()  # warm-up (tracing, compilation)
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", nargs="+", default=["512x512", "800x1216"])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    reference = hf_model(num_labels=150, num_queries=100)
    with tempfile.TemporaryDirectory() as tmp:
        reference.save_pretrained(tmp)
        model, _ = convert_checkpoint("hf", Path(tmp) / "model.safetensors", ExperimentConfig())

    graph = tf.function(lambda x: model(x, training=False))
    xla = tf.function(lambda x: model(x, training=False), jit_compile=True)
    print(f"threads: torch {torch.get_num_threads()}, cores {os.cpu_count()}")
    rows = []
    for size in args.sizes:
        h, w = (int(v) for v in size.split("x"))
        images = np.random.default_rng(0).uniform(0, 255, (1, h, w, 3)).astype(np.float32)
        pixel_values = torch.from_numpy(((images - MEAN) / STD).transpose(0, 3, 1, 2).copy())
        x = tf.constant(images)

        def run_torch(pixel_values=pixel_values):
            with torch.no_grad():
                return reference(pixel_values=pixel_values)

        ref_masks = run_torch().masks_queries_logits.numpy()
        err = max_relative_difference(xla(x)["pred_masks"].numpy(), ref_masks)
        t_torch = timed(run_torch, args.runs)
        t_graph = timed(lambda x=x: graph(x)["pred_masks"].numpy(), args.runs)
        t_xla = timed(lambda x=x: xla(x)["pred_masks"].numpy(), args.runs)
        rows.append((size, t_torch, t_graph, t_xla, err))

    print("\n| size | HF PyTorch (s) | ours TF graph (s) | ours XLA (s) | graph / PyTorch "
          "| XLA / PyTorch | max rel. diff |")
    print("|---|---|---|---|---|---|---|")
    for size, t_torch, t_graph, t_xla, err in rows:
        print(f"| {size} | {t_torch:.3f} | {t_graph:.3f} | {t_xla:.3f} | {t_graph / t_torch:.2f} "
              f"| {t_xla / t_torch:.2f} | {err:.1e} |")


if __name__ == "__main__":
    main()
