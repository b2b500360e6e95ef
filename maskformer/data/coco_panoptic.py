"""COCO panoptic format -> TFRecords (schema in `records`).

The COCO panoptic format: an annotation JSON with ``images``, ``annotations`` (one per image:
``file_name`` of its PNG and ``segments_info`` with ``id``, ``category_id``, ``iscrowd``,
``area``) and ``categories`` (``id``, ``name``, ``isthing``, optionally ``color``), plus one RGB
PNG per image whose pixels hold segment id = R + 256 G + 256^2 B (0 = void).

The category table is derived from the annotation file: categories sorted by original id get
contiguous ids 0..K-1. Every segment is kept, crowd ones included (flagged); the input pipeline
drops crowd segments from the training targets.
"""

from __future__ import annotations

import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from maskformer.data.converter import BadInput, ConversionReport, record_image_ids, run_conversion
from maskformer.data.records import DataError, Sample, update_dataset_info


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """Panoptic PNG [H, W, 3] uint8 -> segment ids [H, W] int64 (R + 256 G + 256^2 B)."""
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """Segment ids [H, W] -> panoptic PNG colours [H, W, 3] uint8."""
    ids = np.asarray(ids, np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)


def _default_color(category_id: int) -> list[int]:
    rng = np.random.default_rng(category_id)
    return [int(c) for c in rng.integers(0, 256, size=3)]


def categories_from_annotations(raw_categories: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The dataset.json category table: contiguous id by ascending original id.

    Returns:
      A list of ``{"id", "original_id", "name", "isthing", "color"}``; ``id`` is the list index.
    """
    seen = set()
    for c in raw_categories:
        if "id" not in c:
            raise DataError(f"a category has no 'id': {c}")
        if c["id"] in seen:
            raise DataError(f"category id {c['id']} appears twice in 'categories'")
        seen.add(c["id"])
    table = []
    for contiguous, c in enumerate(sorted(raw_categories, key=lambda c: c["id"])):
        table.append({
            "id": contiguous,
            "original_id": int(c["id"]),
            "name": str(c.get("name", f"category_{c['id']}")),
            "isthing": int(c.get("isthing", 1)),
            "color": [int(v) for v in c.get("color", _default_color(int(c["id"])))],
        })
    return table


@dataclass
class _Task:
    image_path: str
    mask_path: str
    image_id: int
    json_size: tuple[int, int] | None  # (height, width) from the images list
    segments: list[dict[str, Any]]
    original_to_contiguous: dict[int, int]


def _image_format(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    return "other"


def read_image_checked(path: str) -> tuple[bytes, str, int, int]:
    """Reads an image file and checks that it decodes; returns (bytes, format, height, width)."""
    from PIL import Image

    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise BadInput("missing image", path, "image file not found") from None
    except OSError as e:
        raise BadInput("missing image", path, f"cannot read image ({e.strerror})") from None
    fmt = _image_format(data)
    if fmt not in ("jpeg", "png"):
        raise BadInput("corrupt image", path, "not a JPEG or PNG file")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            width, height = im.size
    except Exception as e:  # PIL raises many types for broken files
        raise BadInput("corrupt image", path, f"image does not decode ({e})") from None
    return data, fmt, height, width


def read_mask_checked(path: str, kind: str = "mask") -> np.ndarray:
    """Reads a PNG label/panoptic file into an array; `BadInput` when missing or broken."""
    from PIL import Image

    if not Path(path).is_file():
        raise BadInput(f"missing {kind}", path, f"{kind} PNG not found")
    try:
        with Image.open(path) as im:
            return np.array(im)
    except Exception as e:
        raise BadInput(f"corrupt {kind}", path, f"{kind} PNG does not decode ({e})") from None


def _convert_one(task: _Task) -> Sample:
    data, fmt, height, width = read_image_checked(task.image_path)
    if task.json_size is not None and task.json_size != (height, width):
        raise BadInput("size mismatch", task.image_path,
                       f"image is {width}x{height} but the annotation file says "
                       f"{task.json_size[1]}x{task.json_size[0]}")
    png = read_mask_checked(task.mask_path)
    if png.ndim != 3 or png.shape[2] < 3:
        raise BadInput("corrupt mask", task.mask_path,
                       f"panoptic PNG must be RGB, got shape {png.shape}")
    if png.shape[:2] != (height, width):
        raise BadInput("size mismatch", task.mask_path,
                       f"panoptic PNG is {png.shape[1]}x{png.shape[0]} but the image "
                       f"{Path(task.image_path).name} is {width}x{height}")
    ids = rgb_to_id(png[..., :3])
    present, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    listed = [int(s["id"]) for s in task.segments]
    if len(set(listed)) != len(listed):
        raise BadInput("segment not in mask", task.mask_path,
                       "segments_info lists a segment id twice")
    index_of = {sid: k + 1 for k, sid in enumerate(listed)}
    extra = [int(v) for v in present if v != 0 and int(v) not in index_of]
    if extra:
        raise BadInput("segment not in annotation", task.mask_path,
                       f"segment id(s) {extra[:5]} in the PNG are not in segments_info")
    present_set = {int(v) for v in present}
    missing = [sid for sid in listed if sid not in present_set]
    if missing:
        raise BadInput("segment not in mask", task.mask_path,
                       f"segment id(s) {missing[:5]} of segments_info are absent from the PNG")
    categories = []
    for s in task.segments:
        cat = s.get("category_id")
        if cat not in task.original_to_contiguous:
            raise BadInput("unknown category", task.mask_path,
                           f"segment {s['id']} has category_id {cat}, not in 'categories'")
        categories.append(task.original_to_contiguous[cat])
    # Map ids to 1-based indices through the unique values (void stays 0).
    lut = np.array([index_of.get(int(v), 0) for v in present], np.uint16)
    segment_map = lut[inverse.reshape(ids.shape)]
    area_of = {int(v): int(c) for v, c in zip(present, counts, strict=True)}
    return Sample(
        image_bytes=data, image_format=fmt, height=height, width=width, image_id=task.image_id,
        filename=Path(task.image_path).name, segment_map=segment_map, segment_ids=listed,
        categories=categories, iscrowd=[int(bool(s.get("iscrowd", 0))) for s in task.segments],
        areas=[area_of[sid] for sid in listed])


def _load_annotations(path: Path) -> dict[str, Any]:
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise DataError(f"{path}: annotation file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read annotation file ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON ({e})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: not a COCO panoptic annotation file (a JSON "
                        f"{type(data).__name__}, not an object)")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{path}: not a COCO panoptic annotation file (no '{key}' list)")
    annotations = data["annotations"]
    if annotations and isinstance(annotations[0], dict) and "segmentation" in annotations[0] \
            and "segments_info" not in annotations[0]:
        raise DataError(f"{path}: a COCO instances file (annotations with 'segmentation'); "
                        "this command reads COCO panoptic annotations (panoptic_*.json with "
                        "a PNG per image)")
    for key, required in (("images", ("id", "file_name")),
                          ("annotations", ("image_id", "file_name")),
                          ("categories", ("id",))):
        for i, entry in enumerate(data[key]):
            missing = [k for k in required if not isinstance(entry, dict) or k not in entry]
            if missing:
                raise DataError(f"{path}: {key}[{i}] has no '{missing[0]}'")
    return data


def convert(images: str | Path, annotations: str | Path, masks: str | Path, out: str | Path,
            num_shards: int = 1, num_workers: int = 1, strict: bool = False,
            progress: bool = True, log=None) -> ConversionReport:
    """Converts a COCO-panoptic-format split to sharded TFRecords and updates dataset.json.

    Args:
      images: folder of the images (``file_name`` of the ``images`` entries).
      annotations: the ``panoptic_*.json`` file.
      masks: folder of the panoptic PNGs (``file_name`` of the ``annotations`` entries).
      out: output prefix, e.g. ``data/coco/train``: shards ``train-0000i-of-0000n.tfrecord``
        and ``dataset.json`` in ``data/coco/``.
      num_shards, num_workers, strict, progress, log: see `converter.run_conversion`.

    Returns:
      The `ConversionReport` (records written, skipped images by reason, shard paths).
    """
    images, masks, annotations = Path(images), Path(masks), Path(annotations)
    if not images.is_dir():
        raise DataError(f"{images}: images folder not found")
    if not masks.is_dir():
        raise DataError(f"{masks}: masks folder not found")
    data = _load_annotations(annotations)
    categories = categories_from_annotations(data["categories"])
    original_to_contiguous = {c["original_id"]: c["id"] for c in categories}
    annotation_of = {}
    for a in data["annotations"]:
        annotation_of[a["image_id"]] = a
    tasks, missing_annotation = [], []
    ordered, record_id, original_ids = record_image_ids(data["images"])
    for image in ordered:
        ann = annotation_of.get(image["id"])
        image_path = str(images / image["file_name"])
        if ann is None:
            missing_annotation.append(image_path)
            continue
        size = (int(image["height"]), int(image["width"])) if "height" in image else None
        tasks.append(_Task(image_path=image_path, mask_path=str(masks / ann["file_name"]),
                           image_id=record_id[image["id"]], json_size=size,
                           segments=list(ann.get("segments_info", [])),
                           original_to_contiguous=original_to_contiguous))
    if missing_annotation and strict:
        raise DataError(f"{missing_annotation[0]}: no entry in {annotations.name}'s "
                        "annotations (--strict)")
    report = run_conversion(tasks, _convert_one, out, num_shards=num_shards,
                            num_workers=num_workers, strict=strict,
                            description=f"coco-panoptic {Path(out).name}", progress=progress,
                            log=log)
    for path in missing_annotation:
        message = f"{path}: no entry in {annotations.name}'s annotations"
        report.skipped["missing annotation"] += 1
        report.problems.append(message)
        (log or (lambda line: print(line, file=sys.stderr)))(f"skipped {message}")
    info = report.as_dict()
    info["source"] = {"annotations": str(annotations)}
    if original_ids:
        info["image_ids"] = original_ids
    update_dataset_info(out, "coco_panoptic", categories, info)
    return report
