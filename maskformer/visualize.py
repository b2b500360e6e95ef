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


class OverlayCollector:
    """An `inference.evaluate(on_batch=...)` callback that keeps image | ground truth |
    prediction pictures (numpy RGB) of the first `count` images, as `(image_id, picture)`
    pairs."""

    def __init__(self, categories: list[dict[str, Any]], count: int = 8, scale: int = 2):
        self.categories, self.count, self.scale = categories, count, scale
        self.pictures: list[tuple[int, np.ndarray]] = []

    def __call__(self, images, targets, predictions) -> None:
        from PIL import Image

        from maskformer.evaluation.evaluator import ground_truth_of

        for b, prediction in enumerate(predictions):
            if len(self.pictures) >= self.count:
                return
            gt = ground_truth_of(targets, b)
            h, w = (int(v) for v in targets["image_size"][b])
            image = images[b, :h, :w].astype(np.uint8)
            if image.shape[:2] != gt["segment_map"].shape:  # evaluation resized: show original
                image = np.asarray(Image.fromarray(image).resize(gt["segment_map"].shape[::-1]))
            pictures = [overlay(image, np.zeros_like(gt["segment_map"]), [], self.categories),
                        overlay(image, gt["segment_map"], gt["segments"], self.categories),
                        overlay(image, prediction.panoptic_map, prediction.segments,
                                self.categories)]
            canvas = side_by_side(pictures)
            canvas = canvas.resize((canvas.width * self.scale, canvas.height * self.scale))
            self.pictures.append((gt["image_id"], np.asarray(canvas)))


def save_overlays(model, config, out_dir: str | Path, count: int = 8,
                  scale: int = 2) -> list[Path]:
    """Image | ground truth | prediction for the first `count` validation images."""
    from PIL import Image

    from maskformer.inference import evaluate, read_categories

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    collect = OverlayCollector(read_categories(config), count, scale)
    batches = -(-count // config.eval.batch_size)
    evaluate(model, config, max_batches=batches, progress=False, on_batch=collect)
    written = []
    for image_id, picture in collect.pictures:
        path = out_dir / f"{image_id:06d}.png"
        Image.fromarray(picture).save(path)
        written.append(path)
    return written
