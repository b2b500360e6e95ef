"""Segmenting image files: COCO panoptic PNG + JSON, semantic label PNG, instance RLE JSON,
and an overlay with class names, per image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from maskformer.training.evaluate import make_predict_fn, read_categories


def _load_image(path: Path, short_edge: int, max_size: int):
    """RGB uint8 at its original size, and float32 resized by the evaluation rule."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            original = np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError) as e:
        raise FileNotFoundError(f"{path}: cannot read the image ({e})") from None
    h, w = original.shape[:2]
    scale = short_edge / min(h, w)
    if max(h, w) * scale > max_size:
        scale = max_size / max(h, w)
    new_h, new_w = int(h * scale + 0.5), int(w * scale + 0.5)
    resized = np.asarray(Image.fromarray(original).resize((new_w, new_h), Image.BILINEAR),
                         np.float32)
    return original, resized


def predict_files(model, config, files: list[Path], out_dir: str | Path,
                  batch_size: int = 4) -> list[Path]:
    """Writes, for each image NAME: NAME_panoptic.png/.json, NAME_semantic.png,
    NAME_instances.json (when eval.instance) and NAME_overlay.png."""
    from PIL import Image

    from maskformer.data.coco_panoptic import id_to_rgb
    from maskformer.postprocess import build_postprocessor, crop_to_output, panoptic_segments_info
    from maskformer.training.visualize import overlay

    categories = read_categories(config)
    postprocess = build_postprocessor(config.eval, [bool(c["isthing"]) for c in categories])
    predict = make_predict_fn(model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    div = max(config.model.size_divisibility, 32)
    written = []
    for start in tqdm(range(0, len(files), batch_size), desc="predict", unit="batch"):
        batch_files = files[start:start + batch_size]
        loaded = [_load_image(f, config.data.eval_short_edge, config.data.eval_max_size)
                  for f in batch_files]
        height = -(-max(r.shape[0] for _, r in loaded) // div) * div
        width = -(-max(r.shape[1] for _, r in loaded) // div) * div
        images = np.zeros((len(loaded), height, width, 3), np.float32)
        for i, (_, resized) in enumerate(loaded):
            images[i, :resized.shape[0], :resized.shape[1]] = resized
        valid = np.array([r.shape[:2] for _, r in loaded], np.int32)
        original_sizes = np.array([o.shape[:2] for o, _ in loaded], np.int32)
        outputs = predict(images)
        results = postprocess({k: outputs[k] for k in ("pred_logits", "pred_masks")},
                              (height, width), valid, original_sizes)
        panoptic = (crop_to_output(results["panoptic"]["panoptic_seg"], original_sizes)
                    if "panoptic" in results else None)
        semantic = (crop_to_output(np.argmax(np.asarray(results["sem_seg"]), axis=1),
                                   original_sizes) if "sem_seg" in results else None)
        for i, path in enumerate(batch_files):
            stem = out_dir / path.stem
            if panoptic is not None:
                segments = panoptic_segments_info(results["panoptic"], i)
                Image.fromarray(id_to_rgb(panoptic[i].astype(np.int64))).save(
                    f"{stem}_panoptic.png")
                named = [{**s, "category_name": categories[s["category_id"]]["name"],
                          "original_category_id": categories[s["category_id"]].get(
                              "original_id", s["category_id"])} for s in segments]
                Path(f"{stem}_panoptic.json").write_text(json.dumps(
                    {"file_name": path.name, "segments_info": named}, indent=1))
                overlay(loaded[i][0], panoptic[i], segments, categories).save(
                    f"{stem}_overlay.png")
            if semantic is not None:
                dtype = np.uint8 if len(categories) < 256 else np.uint16
                Image.fromarray(semantic[i].astype(dtype)).save(f"{stem}_semantic.png")
            if "instance" in results:
                _write_instances(results["instance"], i, original_sizes[i], categories,
                                 path.name, f"{stem}_instances.json")
            written.append(stem)
    return written


def _write_instances(result, index: int, size, categories, file_name: str, path: str) -> None:
    """COCO results format with RLE masks."""
    from pycocotools import mask as mask_utils

    # Only the pairs instance inference kept (thing classes for a panoptic-trained model).
    keep = np.asarray(result["valid"][index])
    masks = np.asarray(result["masks"][index])[keep][:, : size[0], : size[1]]
    scores = np.asarray(result["scores"][index])[keep]
    labels = np.asarray(result["labels"][index])[keep]
    entries = []
    for m, s, c in zip(masks, scores, labels, strict=True):
        rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        entries.append({"file_name": file_name, "category_id": int(
            categories[int(c)].get("original_id", int(c))), "score": float(s),
            "segmentation": rle})
    Path(path).write_text(json.dumps(entries))
