"""Peak memory and time per image of `Predictor.predict_images`, and of the forward pass alone.

The COCO panoptic R50 experiment (`maskformer_coco_panoptic_r50`: transformer-encoder pixel
decoder, 100 queries, 133 classes, of which the first 80 are things), randomly initialised (how
much memory inference takes does not depend on the weights), on random images of
`--size` (default 800x1216, which the test-time resize keeps as it is: shortest edge 800,
longest at most 1333), one batch size at a time.

Each batch size runs in its own process, so that one measurement's peak is not another's.
Peak resident memory is `getrusage(RUSAGE_SELF).ru_maxrss`, read twice in that process:

- "forward peak": after building the model and running the compiled forward pass on the padded
  batch (a warm-up, then `--runs` timed calls); nothing else has run yet;
- "predict peak": after a warm-up call of `predict_images` and `--runs` timed ones (resize,
  padding, the forward pass, post-processing, per-image results), so the difference is what
  post-processing adds on top of the forward pass.

Times are medians of the timed calls, per image (call time / batch).

    KERAS_BACKEND=tensorflow python benchmarks/predict_memory.py [--batches 1 4] [--runs 3]
        [--size 800x1216]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NUM_THINGS = 80


def peak_rss_gib() -> float:
    """The process's peak resident set so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def measure(batch: int, size: tuple[int, int], runs: int, experiment: str) -> dict:
    """One configuration in this process: the row of the table, as a dict."""
    import keras
    import numpy as np

    from maskformer.experiments import get_experiment
    from maskformer.inference import Predictor, pad_batch, resize_for_inference
    from maskformer.modeling.maskformer import build_model

    config = get_experiment(experiment)
    num_classes = config.model.num_classes
    categories = [{"id": i, "name": f"class {i}", "isthing": int(i < NUM_THINGS)}
                  for i in range(num_classes)]
    keras.utils.set_random_seed(0)
    model = build_model(config.model)
    predictor = Predictor(model, config, categories=categories)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(batch)]
    built = peak_rss_gib()

    padded, _ = pad_batch([resize_for_inference(im, config.data) for im in images], config.data)

    def forward():
        outputs = predictor.forward(padded)
        return keras.ops.convert_to_numpy(outputs["pred_masks"])

    def timed(fn) -> float:
        fn()  # warm-up: tracing and compilation
        seconds = []
        for _ in range(runs):
            start = time.perf_counter()
            fn()
            seconds.append(time.perf_counter() - start)
        return statistics.median(seconds)

    forward_s = timed(forward)
    forward_peak = peak_rss_gib()
    predictions: list = []
    predict_s = timed(lambda: predictions.append(predictor.predict_images(images)))
    last = predictions[-1]
    return {
        "batch": batch,
        "input": list(padded.shape[1:3]),
        "built_gib": built,
        "forward_peak_gib": forward_peak,
        "predict_peak_gib": peak_rss_gib(),
        "forward_s_per_image": forward_s / batch,
        "predict_s_per_image": predict_s / batch,
        "segments_per_image": statistics.mean(len(p.segments) for p in last),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--runs", type=int, default=3, help="timed calls after the warm-up")
    parser.add_argument("--size", default="800x1216", help="image height x width")
    parser.add_argument("--experiment", default="maskformer_coco_panoptic_r50")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))

    if args.child is not None:
        print(json.dumps(measure(args.child, size, args.runs, args.experiment)), flush=True)
        return

    rows = []
    for batch in args.batches:  # one at a time: the peaks must not add up on the machine
        command = [sys.executable, __file__, "--child", str(batch), "--runs", str(args.runs),
                   "--size", args.size, "--experiment", args.experiment]
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
        if done.returncode != 0:
            sys.stderr.write(done.stderr[-4000:])
            raise SystemExit(f"batch {batch}: the measuring process failed "
                             f"(exit status {done.returncode})")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))

    backend = os.environ["KERAS_BACKEND"]
    print(f"{args.experiment}, images {size[0]}x{size[1]}, backend {backend}, "
          f"median of {args.runs} calls after a warm-up")
    print()
    print("| batch | padded input | peak after building (GiB) | forward peak (GiB) "
          "| predict peak (GiB) | forward (s / image) | predict (s / image) | segments / image |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch']} | {r['input'][0]}x{r['input'][1]} | {r['built_gib']:.2f} "
              f"| {r['forward_peak_gib']:.2f} | {r['predict_peak_gib']:.2f} "
              f"| {r['forward_s_per_image']:.2f} | {r['predict_s_per_image']:.2f} "
              f"| {r['segments_per_image']:.1f} |")


if __name__ == "__main__":
    main()
