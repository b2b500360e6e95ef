"""A synthetic panoptic dataset in the real COCO panoptic format: shapes on sky and ground.

Things: circles, squares (rotated) and triangles (rotated), of random colour and size, 0 to 8
per image, drawn over each other (a later shape occludes an earlier one; a placement that would
hide most of an earlier shape is retried, so every listed segment stays visible).
Stuff: "sky" above a wavy horizon (a blue-ish vertical gradient with noise) and "ground" below
it (green/brown with stripes and noise).

The output is what the ``coco-panoptic`` converter reads::

    OUT/images/{train,val}/000000.jpg
    OUT/annotations/panoptic_{train,val}.json
    OUT/annotations/panoptic_{train,val}/000000.png

Everything is a function of (seed, split, image index), so a seed gives the same files.
Original category ids are deliberately not contiguous (as in COCO) to exercise the mapping.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from maskformer.data.coco_panoptic import id_to_rgb

CATEGORIES: list[dict[str, Any]] = [
    {"id": 1, "name": "circle", "isthing": 1, "color": [220, 20, 60], "supercategory": "shape"},
    {"id": 2, "name": "square", "isthing": 1, "color": [0, 130, 200], "supercategory": "shape"},
    {"id": 4, "name": "triangle", "isthing": 1, "color": [255, 200, 0],
     "supercategory": "shape"},
    {"id": 7, "name": "sky", "isthing": 0, "color": [135, 206, 235], "supercategory": "scene"},
    {"id": 9, "name": "ground", "isthing": 0, "color": [110, 80, 40], "supercategory": "scene"},
]
_THINGS = {"circle": 1, "square": 2, "triangle": 4}
_SKY, _GROUND = 7, 9
_SPLIT_CODE = {"train": 0, "val": 1}


@dataclass
class SplitPaths:
    """Where one split of the generated dataset lives (the converter's three inputs)."""

    images: Path
    annotations: Path
    masks: Path


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if kind == "circle":
        n = 48
        return [(cx + r * math.cos(2 * math.pi * k / n), cy + r * math.sin(2 * math.pi * k / n))
                for k in range(n)]
    corners = 4 if kind == "square" else 3
    # The square's circumradius is r * sqrt(2) so that its side is 2 r, like the circle's width.
    radius = r * math.sqrt(2) if kind == "square" else r * 1.25
    return [(cx + radius * math.cos(angle + 2 * math.pi * k / corners),
             cy + radius * math.sin(angle + 2 * math.pi * k / corners)) for k in range(corners)]


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    import colorsys

    h, s, v = rng.uniform(0, 1), rng.uniform(0.45, 1.0), rng.uniform(0.35, 1.0)
    return np.array(colorsys.hsv_to_rgb(h, s, v)) * 255


def render_image(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray,
                                                              list[dict[str, Any]]]:
    """Draws one image.

    Returns:
      image uint8 [size, size, 3], segment ids int64 [size, size] (0 never: stuff covers all),
      segments_info (``id``, ``category_id``, ``iscrowd``, ``area``, ``bbox``).
    """
    from PIL import Image, ImageDraw

    s = size
    ys, xs = np.mgrid[0:s, 0:s].astype(np.float64)
    horizon = (rng.uniform(0.3, 0.7) * s
               + rng.uniform(0.0, 0.08) * s * np.sin(2 * np.pi * xs / (s * rng.uniform(0.5, 2))
                                                     + rng.uniform(0, 2 * np.pi)))
    sky = ys < horizon
    ids = np.where(sky, _SKY * 1000 + 1, _GROUND * 1000 + 1).astype(np.int64)

    sky_top = np.array([rng.uniform(40, 110), rng.uniform(90, 170), rng.uniform(190, 255)])
    sky_bottom = sky_top + rng.uniform(20, 60)
    t = (ys / s)[..., None]
    sky_rgb = sky_top * (1 - t) + sky_bottom * t + rng.normal(0, 6, (s, s, 1))
    ground_base = np.array([rng.uniform(60, 140), rng.uniform(70, 150), rng.uniform(20, 60)])
    stripes = 18 * np.sin(2 * np.pi * ys / rng.uniform(3, 8) + rng.uniform(0, 6.3))[..., None]
    ground_rgb = ground_base + stripes + rng.normal(0, 14, (s, s, 3))
    image = np.where(sky[..., None], sky_rgb, ground_rgb)

    things = []
    for _ in range(int(rng.integers(0, 9))):
        for _attempt in range(5):
            kind = str(rng.choice(list(_THINGS)))
            r = rng.uniform(0.08, 0.2) * s
            cx, cy = rng.uniform(0.05, 0.95) * s, rng.uniform(0.05, 0.95) * s
            canvas = Image.new("L", (s, s), 0)
            ImageDraw.Draw(canvas).polygon(_polygon(kind, cx, cy, r, rng.uniform(0, 2 * np.pi)),
                                           fill=1)
            shape = np.array(canvas, bool)
            if shape.sum() < 12:
                continue
            # Keep every earlier shape at least 40% visible.
            if all((thing["mask"] & ~shape).sum() >= 0.4 * thing["full_area"] for thing in things):
                break
        else:
            continue
        for thing in things:
            thing["mask"] &= ~shape
        colour = _random_colour(rng)
        image[shape] = colour + rng.normal(0, 5, (int(shape.sum()), 3))
        things.append({"category_id": _THINGS[kind], "mask": shape, "full_area": shape.sum()})

    for k, thing in enumerate(things):
        ids[thing["mask"]] = thing["category_id"] * 1000 + 2 + k
    segments = []
    for sid in np.unique(ids):
        m = ids == sid
        yy, xx = np.nonzero(m)
        segments.append({"id": int(sid), "category_id": int(sid // 1000), "iscrowd": 0,
                         "area": int(m.sum()),
                         "bbox": [int(xx.min()), int(yy.min()), int(xx.max() - xx.min() + 1),
                                  int(yy.max() - yy.min() + 1)]})
    return np.clip(np.round(image), 0, 255).astype(np.uint8), ids, segments


def generate(out_dir: str | Path, num_train: int = 256, num_val: int = 64, size: int = 128,
             seed: int = 0, progress: bool = True) -> dict[str, SplitPaths]:
    """Writes the shapes dataset in COCO panoptic format.

    Args:
      out_dir: output folder (created).
      num_train, num_val: images per split (a split with 0 images is not written).
      size: image side in pixels (images are square).
      seed: the dataset is a function of the seed.

    Returns:
      ``{"train": SplitPaths, "val": SplitPaths}`` for the splits written.
    """
    from PIL import Image
    from tqdm import tqdm

    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    out = Path(out_dir)
    paths = {}
    for split, count in (("train", num_train), ("val", num_val)):
        if count <= 0:
            continue
        split_paths = SplitPaths(images=out / "images" / split,
                                 annotations=out / "annotations" / f"panoptic_{split}.json",
                                 masks=out / "annotations" / f"panoptic_{split}")
        split_paths.images.mkdir(parents=True, exist_ok=True)
        split_paths.masks.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for i in tqdm(range(count), desc=f"shapes {split}", unit="img", disable=not progress,
                      file=sys.stderr):
            rng = np.random.default_rng([seed, _SPLIT_CODE[split], i])
            image, ids, segments = render_image(rng, size)
            name = f"{i:06d}"
            Image.fromarray(image).save(split_paths.images / f"{name}.jpg", quality=95)
            Image.fromarray(id_to_rgb(ids)).save(split_paths.masks / f"{name}.png")
            image_id = i + 1
            images.append({"id": image_id, "file_name": f"{name}.jpg", "height": size,
                           "width": size})
            annotations.append({"image_id": image_id, "file_name": f"{name}.png",
                                "segments_info": segments})
        split_paths.annotations.write_text(json.dumps(
            {"info": {"description": f"MaskFormer shapes dataset, seed {seed}"},
             "images": images, "annotations": annotations, "categories": CATEGORIES}))
        paths[split] = split_paths
    return paths
