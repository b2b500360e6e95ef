"""Segmenting image files: COCO panoptic PNG + JSON, semantic label PNG, instance RLE JSON,
and an overlay with class names, per image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from maskformer.inference import ImagePrediction, Predictor, read_image


def predict_files(model, config, files: list[Path], out_dir: str | Path,
                  batch_size: int = 4) -> list[Path]:
    """Segments image files with `Predictor` (the experiment's test-time pipeline) and writes,
    for each image NAME: NAME_panoptic.png/.json, NAME_semantic.png, NAME_instances.json
    (when eval.instance) and NAME_overlay.png.

    Returns:
        The output stems (out_dir / NAME), one per file.
    """
    predictor = Predictor(model, config)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for start in tqdm(range(0, len(files), batch_size), desc="predict", unit="batch"):
        batch_files = files[start:start + batch_size]
        images = [read_image(f) for f in batch_files]
        for path, image, prediction in zip(batch_files, images,
                                           predictor.predict_images(images), strict=True):
            stem = out_dir / path.stem
            write_prediction(prediction, image, predictor.categories, path.name, stem)
            written.append(stem)
    return written


def write_prediction(prediction: ImagePrediction, image: np.ndarray, categories, file_name: str,
                     stem: Path) -> None:
    """Writes one image's results next to `stem` (see `predict_files`)."""
    from PIL import Image

    from maskformer.data.coco_panoptic import id_to_rgb
    from maskformer.visualize import overlay

    if prediction.panoptic_map is not None:
        Image.fromarray(id_to_rgb(prediction.panoptic_map.astype(np.int64))).save(
            f"{stem}_panoptic.png")
        named = [{**s, "category_name": categories[s["category_id"]]["name"],
                  "original_category_id": categories[s["category_id"]].get(
                      "original_id", s["category_id"])} for s in prediction.segments]
        Path(f"{stem}_panoptic.json").write_text(json.dumps(
            {"file_name": file_name, "segments_info": named}, indent=1))
        overlay(image, prediction.panoptic_map, prediction.segments, categories).save(
            f"{stem}_overlay.png")
    if prediction.semantic_map is not None:
        dtype = np.uint8 if len(categories) < 256 else np.uint16
        Image.fromarray(prediction.semantic_map.astype(dtype)).save(f"{stem}_semantic.png")
    if prediction.instances is not None:
        _write_instances(prediction.instances, categories, file_name, f"{stem}_instances.json")


def _write_instances(instances, categories, file_name: str, path: str) -> None:
    """COCO results format with RLE masks (the instances inference kept: thing classes for a
    panoptic-trained model)."""
    from pycocotools import mask as mask_utils

    entries = []
    for m, s, c in zip(instances["masks"], instances["scores"], instances["labels"], strict=True):
        rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        entries.append({"file_name": file_name, "category_id": int(
            categories[int(c)].get("original_id", int(c))), "score": float(s),
            "segmentation": rle})
    Path(path).write_text(json.dumps(entries))
