"""Overlays of panoptic predictions with class names, for people to look at."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def colour_map(panoptic: np.ndarray, segments: list[dict[str, Any]],
               categories: list[dict[str, Any]]) -> np.ndarray:
    """RGB image of a panoptic map: stuff in its category colour, things in shades of it."""
    out = np.zeros((*panoptic.shape, 3), np.uint8)
    rng = np.random.default_rng(0)
    for seg in segments:
        base = np.array(categories[seg["category_id"]].get("color", [128, 128, 128]), float)
        if seg.get("isthing", categories[seg["category_id"]]["isthing"]):
            base = np.clip(base + rng.integers(-60, 60, 3), 0, 255)
        out[panoptic == seg["id"]] = base.astype(np.uint8)
    return out


def overlay(image: np.ndarray, panoptic: np.ndarray, segments: list[dict[str, Any]],
            categories: list[dict[str, Any]], alpha: float = 0.55):
    """The image blended with the coloured panoptic map, each segment labelled by name."""
    from PIL import Image, ImageDraw

    colours = colour_map(panoptic, segments, categories).astype(np.float32)
    blended = np.where(panoptic[..., None] > 0,
                       (1 - alpha) * image.astype(np.float32) + alpha * colours,
                       image.astype(np.float32))
    picture = Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for seg in segments:
        ys, xs = np.nonzero(panoptic == seg["id"])
        if len(ys):
            draw.text((float(xs.mean()) - 8, float(ys.mean()) - 5),
                      categories[seg["category_id"]]["name"], fill="white")
    return picture


def side_by_side(pictures) -> Any:
    from PIL import Image

    width = sum(p.width for p in pictures) + 4 * (len(pictures) - 1)
    canvas = Image.new("RGB", (width, max(p.height for p in pictures)), "white")
    x = 0
    for p in pictures:
        canvas.paste(p, (x, 0))
        x += p.width + 4
    return canvas


def save_overlays(model, config, out_dir: str | Path, count: int = 8,
                  scale: int = 2) -> list[Path]:
    """Image | ground truth | prediction for the first `count` validation images."""
    from maskformer.postprocess import crop_to_output, panoptic_segments_info
    from maskformer.training.evaluate import (
        evaluate,
        ground_truth_segments,
        read_categories,
    )

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    categories = read_categories(config)
    written: list[Path] = []

    def on_batch(images, targets, results):
        sizes = targets["image_size"]
        pred = crop_to_output(results["panoptic"]["panoptic_seg"], targets["original_size"])
        gt = crop_to_output(targets["segment_map"], targets["original_size"])
        sem = crop_to_output(targets["semantic_map"], targets["original_size"])
        crowd = crop_to_output(targets["crowd_map"], targets["original_size"])
        for b in range(len(images)):
            if len(written) >= count:
                return
            h, w = (int(v) for v in sizes[b])
            image = images[b, :h, :w].astype(np.uint8)
            if image.shape[:2] != pred[b].shape:  # evaluation resized: show original size
                from PIL import Image

                image = np.asarray(Image.fromarray(image).resize(pred[b].shape[::-1]))
            gt_segments = ground_truth_segments(gt[b], sem[b], crowd[b])
            pictures = [overlay(image, np.zeros_like(gt[b]), [], categories),
                        overlay(image, gt[b], gt_segments, categories),
                        overlay(image, pred[b], panoptic_segments_info(results["panoptic"], b),
                                categories)]
            canvas = side_by_side(pictures)
            canvas = canvas.resize((canvas.width * scale, canvas.height * scale))
            path = out_dir / f"{int(targets['image_id'][b]):06d}.png"
            canvas.save(path)
            written.append(path)

    batches = -(-count // config.eval.batch_size)
    evaluate(model, config, max_batches=batches, progress=False, on_batch=on_batch)
    return written
