"""ADE20K (SceneParsing, 150 classes) semantic labels -> TFRecords (schema in `records`).

Images ``IMAGES/<name>.jpg`` pair with labels ``LABELS/<name>.png`` (8-bit, 0 = "other",
ignored; 1..150 = the classes). Label v becomes contiguous category v - 1; 0 becomes void
(255 in the semantic maps of the pipeline). Each class present in an image is one segment, in
class order, so the pipeline's targets are the original semantic mapper's (one mask per class).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maskformer.data.coco_panoptic import read_image_checked, read_mask_checked
from maskformer.data.converter import BadInput, ConversionReport, run_conversion
from maskformer.data.records import DataError, Sample, update_dataset_info

NUM_CLASSES = 150
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass
class _Task:
    image_path: str
    label_path: str
    image_id: int
    num_classes: int


def _convert_one(task: _Task) -> Sample:
    data, fmt, height, width = read_image_checked(task.image_path)
    label = read_mask_checked(task.label_path, kind="label")
    if label.ndim != 2:
        raise BadInput("corrupt label", task.label_path,
                       f"label PNG must be single-channel, got shape {label.shape}")
    if label.shape != (height, width):
        raise BadInput("size mismatch", task.label_path,
                       f"label PNG is {label.shape[1]}x{label.shape[0]} but the image "
                       f"{Path(task.image_path).name} is {width}x{height}")
    present, inverse, counts = np.unique(label, return_inverse=True, return_counts=True)
    classes = [int(v) for v in present if v != 0]
    unknown = [v for v in classes if v > task.num_classes]
    if unknown:
        raise BadInput("unknown category", task.label_path,
                       f"label value(s) {unknown[:5]} outside 0..{task.num_classes}")
    lut = np.array([0 if v == 0 else classes.index(int(v)) + 1 for v in present], np.uint16)
    counts_of = {int(v): int(c) for v, c in zip(present, counts, strict=True)}
    return Sample(image_bytes=data, image_format=fmt, height=height, width=width,
                  image_id=task.image_id, filename=Path(task.image_path).name,
                  segment_map=lut[inverse.reshape(label.shape)], segment_ids=classes,
                  categories=[v - 1 for v in classes], iscrowd=[0] * len(classes),
                  areas=[counts_of[v] for v in classes])


def read_class_names(path: str | Path | None, num_classes: int) -> list[str]:
    """Class names from ``objectInfo150.csv`` (Name column) or a text file with one per line."""
    if path is None:
        return [f"class_{i + 1}" for i in range(num_classes)]
    path = Path(path)
    try:
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except OSError as e:
        raise DataError(f"{path}: cannot read class names ({e.strerror})") from None
    if lines and lines[0].lower().startswith("idx"):  # objectInfo150.csv
        import csv

        rows = list(csv.DictReader(lines))
        names = [r.get("Name", "").split(";")[0] for r in rows]
    else:
        names = lines
    if len(names) != num_classes:
        raise DataError(f"{path}: {len(names)} class names, expected {num_classes}")
    return names


def convert(images: str | Path, labels: str | Path, out: str | Path, num_shards: int = 1,
            num_workers: int = 1, strict: bool = False, class_names: str | Path | None = None,
            num_classes: int = NUM_CLASSES, progress: bool = True, log=None) -> ConversionReport:
    """Converts an ADE20K split (an images folder and a labels folder) to sharded TFRecords.

    Args:
      images: folder of ``*.jpg`` images. labels: folder of ``*.png`` labels (same stems).
      out: output prefix (``dataset.json`` is written beside the shards).
      class_names: optional ``objectInfo150.csv`` or names file for dataset.json.
      Other arguments: see `converter.run_conversion`.
    """
    images, labels = Path(images), Path(labels)
    for folder, what in ((images, "images"), (labels, "labels")):
        if not folder.is_dir():
            raise DataError(f"{folder}: {what} folder not found")
    names = read_class_names(class_names, num_classes)
    image_files = sorted(p for p in images.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not image_files:
        raise DataError(f"{images}: no .jpg/.png images")
    tasks = [_Task(str(p), str(labels / (p.stem + ".png")), i, num_classes)
             for i, p in enumerate(image_files)]
    report = run_conversion(tasks, _convert_one, out, num_shards=num_shards,
                            num_workers=num_workers, strict=strict,
                            description=f"ade20k-semantic {Path(out).name}", progress=progress,
                            log=log)
    categories = [{"id": i, "original_id": i + 1, "name": n, "isthing": 0,
                   "color": [int(v) for v in np.random.default_rng(i).integers(0, 256, 3)]}
                  for i, n in enumerate(names)]
    info = report.as_dict()
    info["source"] = {"images": str(images), "labels": str(labels)}
    update_dataset_info(out, "ade20k_semantic", categories, info)
    return report
