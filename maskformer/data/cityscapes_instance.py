"""Cityscapes instance ground truth (``*_gtFine_instanceIds.png``) -> instance TFRecords (schema
in `records`, ``"dataset": "coco_instance"``, category list ``cityscapes_instance_8``).

Layout under ROOT (the Cityscapes download): images
``leftImg8bit/SPLIT/CITY/X_leftImg8bit.png`` with ``gtFine/SPLIT/CITY/X_gtFine_instanceIds.png``.

The value rules of an instanceIds PNG (16-bit, single channel), as cityscapesScripts writes it
(``json2instanceImg.py``) and detectron2's Cityscapes loader reads it (``from_json=False``):

* v >= 1000 is instance number ``v % 1000`` of label id ``v // 1000``;
* v < 1000 is a plain label id. For a label that has instances, such a region is a "group"
  (several objects annotated together): a crowd region, ``iscrowd`` 1.

Only the 8 labels that have instances and are evaluated give segments: 24 person, 25 rider,
26 car, 27 truck, 28 bus, 31 train, 32 motorcycle, 33 bicycle (contiguous ids 0..7 in this
order, the built-in list). Every other Cityscapes label id (0..33: road, sky, 0 unlabeled, ego
vehicle, ..., and the instances and groups of caravan 29 and trailer 30, which are ignored in
evaluation) is void. A value that is no Cityscapes label id at all (label id above 33, or a
value from 34 to 999) is bad input (``unknown category``).

Segments: one per distinct kept value (an instance or a crowd region) in increasing value order;
``segments/id`` is the pixel value, ``segments/area`` its pixel count. Instances cannot overlap:
the PNG already holds one value per pixel. An image with no instance is written with no
segments. Image ids are 1..N in the order of the image stems (``X``, e.g.
``frankfurt_000000_000294``), which the split's entry in dataset.json records as ``image_ids``
(`converter.record_image_ids`, as for the stem-named COCO-style exports).

Differences from the original. Mask2Former trains Cityscapes instance models from the polygons
JSON (detectron2's loader with ``from_json=True``, which redraws the polygons and resolves their
overlaps itself); this converter reads the instanceIds PNGs that cityscapesScripts rasterised
from the same polygons, which are the ground truth Cityscapes' own evaluation uses. Mask
borders can therefore differ by about a pixel from the original's training targets. detectron2's
PNG reader also drops a region whose pixels lie in a single row or column; such regions are kept
here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maskformer.data.categories import builtin_categories
from maskformer.data.coco_panoptic import read_image_checked
from maskformer.data.converter import BadInput, ConversionReport, record_image_ids, run_conversion
from maskformer.data.records import DataError, Sample, update_dataset_info
from maskformer.data.semantic import INDEX, pair_by_stem, read_label_values

CATEGORY_LIST = "cityscapes_instance_8"
MAX_LABEL_ID = 33  # cityscapesScripts' label ids are 0..33 (-1, license plate, is never drawn)
INSTANCE_OFFSET = 1000  # value = label id * 1000 + instance number
IMAGE_SUFFIX = "_leftImg8bit"
LABEL_SUFFIX = "_gtFine_instanceIds.png"


def instance_segments(values: np.ndarray, label_to_contiguous: dict[int, int],
                      path: str) -> tuple[np.ndarray, list[int], list[int], list[int], list[int]]:
    """An instanceIds map -> segments (the rules in the module docstring).

    Args:
      values: integer pixel values [H, W] of an instanceIds PNG.
      label_to_contiguous: Cityscapes label id -> contiguous category id, for the labels that
        give segments.
      path: the PNG (for bad-input reports).

    Returns:
      (segment_map uint16 [H, W] with 0 void and k = segment k, segment_ids (pixel values),
      categories, iscrowd, areas), the lists in increasing pixel value order.

    Raises:
      BadInput: "unknown category" for values that are no Cityscapes label id.
    """
    present, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    present = present.astype(np.int64)
    label = np.where(present >= INSTANCE_OFFSET, present // INSTANCE_OFFSET, present)
    unknown = present[(present < 0) | (label > MAX_LABEL_ID)]
    if unknown.size:
        raise BadInput("unknown category", path,
                       f"value(s) {unknown[:5].tolist()} are not Cityscapes label ids (a value is "
                       f"a label id 0..{MAX_LABEL_ID} or label id * {INSTANCE_OFFSET} + "
                       "instance number)")
    kept = [i for i in range(len(present)) if int(label[i]) in label_to_contiguous]
    lut = np.zeros(len(present), np.uint16)
    lut[kept] = np.arange(1, len(kept) + 1)
    segment_map = lut[inverse.reshape(values.shape)]
    return (segment_map, [int(present[i]) for i in kept],
            [label_to_contiguous[int(label[i])] for i in kept],
            [int(present[i] < INSTANCE_OFFSET) for i in kept], [int(counts[i]) for i in kept])


@dataclass
class _Task:
    image_path: str
    label_path: str
    image_id: int
    label_to_contiguous: dict[int, int]


def _convert_one(task: _Task) -> Sample:
    data, fmt, height, width = read_image_checked(task.image_path)
    # PIL reads a 16-bit grey PNG as mode "I;16" (uint16) or, in older versions, "I" (int32);
    # both give the values unchanged.
    values = read_label_values(task.label_path, INDEX)
    if values.dtype.kind not in "iub":
        raise BadInput("corrupt label", task.label_path,
                       f"instanceIds PNG has pixel type {values.dtype}, not integers")
    if values.shape != (height, width):
        raise BadInput("size mismatch", task.label_path,
                       f"label is {values.shape[1]}x{values.shape[0]} but the image "
                       f"{Path(task.image_path).name} is {width}x{height}")
    segment_map, ids, categories, crowd, areas = instance_segments(
        values.astype(np.int64), task.label_to_contiguous, task.label_path)
    return Sample(image_bytes=data, image_format=fmt, height=height, width=width,
                  image_id=task.image_id, filename=Path(task.image_path).name,
                  segment_map=segment_map, segment_ids=ids, categories=categories,
                  iscrowd=crowd, areas=areas)


def convert(root: str | Path, split: str, out: str | Path, num_shards: int = 1,
            num_workers: int = 1, strict: bool = False, progress: bool = True,
            log: Callable[[str], None] | None = None) -> ConversionReport:
    """Converts a Cityscapes split's instance ground truth to TFRecords and updates dataset.json.

    Args:
      root: the Cityscapes folder (``leftImg8bit/``, ``gtFine/``).
      split: ``train`` or ``val`` (the test split's ground truth is not public).
      out: output prefix, e.g. ``data/cityscapes_instance/train``: shards
        ``train-0000i-of-0000n.tfrecord`` and ``dataset.json`` in ``data/cityscapes_instance/``.
      num_shards, num_workers, strict, progress, log: see `converter.run_conversion`.

    Returns:
      The `ConversionReport`; an image without its instanceIds PNG is skipped and counted as
      "missing label".

    Raises:
      DataError: a missing folder, no image, two images with the same stem, or (with `strict`)
        the first bad input.
    """
    root = Path(root)
    pairs = pair_by_stem(root / "leftImg8bit" / split, root / "gtFine" / split, LABEL_SUFFIX,
                         recursive=True, image_suffix=IMAGE_SUFFIX)
    files_of: dict[str, tuple[Path, Path]] = {}
    for image, label in pairs:
        stem = image.stem[: len(image.stem) - len(IMAGE_SUFFIX)]
        if stem in files_of:
            raise DataError(f"{image}: {files_of[stem][0]} has the same name {stem}; the "
                            "names are the image ids, so they must be unique")
        files_of[stem] = (image, label)
    categories = builtin_categories(CATEGORY_LIST)
    label_to_contiguous = {int(c["original_id"]): int(c["id"]) for c in categories}
    ordered, record_id, original_ids = record_image_ids([{"id": stem} for stem in files_of])
    tasks = [_Task(str(files_of[e["id"]][0]), str(files_of[e["id"]][1]), record_id[e["id"]],
                   label_to_contiguous) for e in ordered]
    report = run_conversion(tasks, _convert_one, out, num_shards=num_shards,
                            num_workers=num_workers, strict=strict,
                            description=f"cityscapes-instance {Path(out).name}",
                            progress=progress, log=log)
    info = report.as_dict()
    info["source"] = {"root": str(root), "split": split}
    if original_ids:
        info["image_ids"] = original_ids
    update_dataset_info(out, "coco_instance", categories, info)
    return report
