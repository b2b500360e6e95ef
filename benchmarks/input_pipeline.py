"""Input pipeline throughput: images per second through the training path.

COCO-like data: 640x480 JPEGs with about 10 segments (random rectangles and ellipses over a
two-region background), converted with the coco-panoptic converter, then read with the COCO
panoptic augmentation, fixed output size and targets of `maskformer_coco_panoptic_r50`'s
DataConfig (640x640, 100 instances, uint8 masks).

    python benchmarks/input_pipeline.py [--images 64] [--batch 8] [--batches 40] [--repeats 3]

Prints a table: the median over repeats of images per second (wall clock) after a warm-up, and
images per CPU-second of this process (all threads), which shows what the pipeline needs when
the cores are shared with other work: on N free cores the wall rate approaches N times it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_coco_like(out: Path, num_images: int, seed: int = 0) -> Path:
    from PIL import Image, ImageDraw

    from maskformer.data.coco_panoptic import convert, id_to_rgb

    rng = np.random.default_rng(seed)
    (out / "images").mkdir(parents=True)
    (out / "masks").mkdir()
    images, annotations = [], []
    for i in range(num_images):
        h, w = 480, 640
        ids = np.full((h, w), 1001, np.int64)
        ids[int(rng.integers(150, 330)):] = 1002
        for k in range(8):
            canvas = Image.new("L", (w, h), 0)
            x0, y0 = int(rng.integers(0, w - 60)), int(rng.integers(0, h - 60))
            box = [x0, y0, x0 + int(rng.integers(40, 250)), y0 + int(rng.integers(40, 200))]
            draw = ImageDraw.Draw(canvas)
            (draw.ellipse if k % 2 else draw.rectangle)(box, fill=1)
            ids[np.array(canvas, bool)] = 2000 + k
        image = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)
        image = np.array(Image.fromarray(image).resize((w, h), Image.BILINEAR))
        image = (image * 0.5 + (ids % 7)[..., None] * 18).astype(np.uint8)
        Image.fromarray(image).save(out / "images" / f"{i:06d}.jpg", quality=90)
        Image.fromarray(id_to_rgb(ids)).save(out / "masks" / f"{i:06d}.png")
        segs = [{"id": int(s), "category_id": 1 if s >= 2000 else int(s - 990),
                 "iscrowd": 0, "area": int((ids == s).sum())} for s in np.unique(ids)]
        images.append({"id": i + 1, "file_name": f"{i:06d}.jpg", "height": h, "width": w})
        annotations.append({"image_id": i + 1, "file_name": f"{i:06d}.png",
                            "segments_info": segs})
    cats = [{"id": 1, "name": "thing", "isthing": 1}, {"id": 11, "name": "sky", "isthing": 0},
            {"id": 12, "name": "ground", "isthing": 0}]
    (out / "panoptic.json").write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": cats}))
    convert(out / "images", out / "panoptic.json", out / "masks", out / "rec/train",
            num_shards=4, progress=False)
    return out / "rec"


def main(argv=None) -> int:
    import tensorflow as tf

    from maskformer.data.pipeline import build_dataset
    from maskformer.experiments import get_experiment

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--experiment", default="maskformer_coco_panoptic_r50")
    args = parser.parse_args(argv)

    config = get_experiment(args.experiment).data
    with tempfile.TemporaryDirectory() as tmp:
        records = make_coco_like(Path(tmp), args.images)
        ds = build_dataset(config, str(records / "train-*"), training=True,
                           batch_size=args.batch)
        it = iter(ds)
        for _ in range(3):  # warm-up: graph tracing, autotuning
            next(it)
        rates, cpu_rates = [], []
        for _ in range(args.repeats):
            start, cpu_start = time.perf_counter(), time.process_time()
            segments = 0
            for _ in range(args.batches):
                _, targets = next(it)
                segments += int(tf.reduce_sum(tf.cast(targets["valid"], tf.int32)))
            elapsed = time.perf_counter() - start
            cpu = time.process_time() - cpu_start  # all threads of this process
            rates.append(args.batches * args.batch / elapsed)
            cpu_rates.append(args.batches * args.batch / cpu)
    n = args.batches * args.batch
    print(f"| experiment | output | batch | images/run | segments/image | images/s (median of "
          f"{args.repeats}) | runs | images per CPU-second |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {args.experiment} | {config.output_size[0]}x{config.output_size[1]}, "
          f"N={config.max_instances}, masks {config.mask_dtype} | {args.batch} | {n} | "
          f"{segments / n:.1f} | {statistics.median(rates):.1f} | "
          f"{', '.join(f'{r:.1f}' for r in rates)} | {statistics.median(cpu_rates):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
