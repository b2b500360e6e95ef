"""COCO instance segmentation (detection format, ``instances_*.json``) -> TFRecords (schema in
`records`).

The format: an annotation JSON with ``images`` (``id``, ``file_name``, ``height``, ``width``),
``annotations`` (``id``, ``image_id``, ``category_id``, ``iscrowd``, ``segmentation``, plus
``area`` and ``bbox``, which are not read) and ``categories`` (``id``, ``name``,
``supercategory``). A ``segmentation`` is a list of polygons ``[[x0, y0, x1, y1, ...], ...]``,
an uncompressed RLE ``{"counts": [int, ...], "size": [h, w]}`` (COCO's crowd regions) or a
compressed RLE ``{"counts": str, "size": [h, w]}``. All are decoded with pycocotools, as
``COCO.annToMask`` does: the polygons of one instance are rasterised and united.

Every category is a thing (``isthing`` 1); sorted by original id they get contiguous ids 0..K-1
(80 for COCO, whose ids run 1..90 with gaps). Segment k of a record is the k-th annotation of
its image in file order; ``segments/id`` holds the COCO annotation id.

Overlaps. The record's segment map holds one segment per pixel, but instance masks may overlap.
A pixel covered by several instances goes to the one that comes first by (crowd last, smaller
pixel area of its own decoded mask first, earlier annotation first): a small object in front of
a large one is not hidden under it, and crowd regions only keep pixels no instance claims. An
instance can lose every pixel (a duplicate annotation, or a mask covered by smaller ones); it
stays in the segment lists with area 0, so it still gives a (empty) training target, and it is
reported by annotation id. Pixels covered by more than one instance, hidden instances and
instances whose own mask is empty (zero-area polygons) are counted per image and in total
(`InstanceConversionReport`, and the split's entry in dataset.json). None of them is a bad
input: ``--strict`` does not stop for them.

Images without annotations are written with no segments (all void), and counted.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import sys
from collections import Counter
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from maskformer.data.coco_panoptic import categories_from_annotations, read_image_checked
from maskformer.data.converter import BadInput, ConversionReport, record_image_ids, run_conversion
from maskformer.data.records import DataError, Sample, update_dataset_info

# Bad-input kinds that concern one annotation, not an image: the image is still converted.
ANNOTATION_KINDS = ("unknown image",)


@dataclass(frozen=True)
class ImageOverlap:
    """What resolving the overlaps of one written image cost.

    Attributes:
      num_instances: annotations of the image (crowd included).
      overlap_pixels: pixels covered by more than one instance (crowd included).
      hidden: annotation ids of non-crowd instances that lost every pixel.
      hidden_crowd: annotation ids of crowd regions that lost every pixel.
      empty: annotation ids whose own mask has no pixel (degenerate polygons).
    """

    num_instances: int
    overlap_pixels: int
    hidden: tuple[int, ...] = ()
    hidden_crowd: tuple[int, ...] = ()
    empty: tuple[int, ...] = ()


@dataclass
class InstanceConversionReport(ConversionReport):
    """A `ConversionReport` with the cost of the overlap rule.

    Attributes:
      images: ImageOverlap per written image, by image id.
      (skipped also counts the annotation-level kinds of `ANNOTATION_KINDS`.)
    """

    images: dict[int, ImageOverlap] = field(default_factory=dict)

    @property
    def overlap_pixels(self) -> int:
        """Pixels covered by more than one instance, over all written images."""
        return sum(s.overlap_pixels for s in self.images.values())

    @property
    def images_with_overlap(self) -> int:
        return sum(1 for s in self.images.values() if s.overlap_pixels)

    @property
    def hidden_ids(self) -> list[int]:
        """Annotation ids of the non-crowd instances that lost every pixel."""
        return sorted(i for s in self.images.values() for i in s.hidden)

    @property
    def hidden_crowd_ids(self) -> list[int]:
        """Annotation ids of the crowd regions that lost every pixel."""
        return sorted(i for s in self.images.values() for i in s.hidden_crowd)

    @property
    def empty_ids(self) -> list[int]:
        """Annotation ids whose own mask has no pixel."""
        return sorted(i for s in self.images.values() for i in s.empty)

    @property
    def images_without_annotations(self) -> int:
        return sum(1 for s in self.images.values() if s.num_instances == 0)

    def summary(self) -> str:
        image_kinds = {k: v for k, v in self.skipped.items() if k not in ANNOTATION_KINDS}
        annotation_kinds = {k: v for k, v in self.skipped.items() if k in ANNOTATION_KINDS}
        lines = [f"wrote {self.written} records to {len(self.shards)} shard(s)"]
        for what, kinds in (("image", image_kinds), ("annotation", annotation_kinds)):
            total = sum(kinds.values())
            if what == "image" or total:
                lines.append(f"skipped {total} {what}(s)" + (":" if total else ""))
            lines += [f"  {kind}: {count}" for kind, count in sorted(kinds.items())]
        lines.append(f"overlap: {self.overlap_pixels} pixel(s) in {self.images_with_overlap} "
                     "image(s) covered by more than one instance (smallest first, crowd last)")
        lines.append(f"hidden: {len(self.hidden_ids)} instance(s) and "
                     f"{len(self.hidden_crowd_ids)} crowd region(s) lost every pixel to "
                     "instances that come first (kept with area 0)")
        lines.append(f"empty: {len(self.empty_ids)} instance(s) with no pixel in their own "
                     "mask (kept with area 0)")
        lines.append(f"without annotations: {self.images_without_annotations} image(s), "
                     "written with no segments")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        info = super().as_dict()
        info.update({
            "overlap_rule": "smallest instance first, crowd last, ties by annotation order",
            "overlap_pixels": self.overlap_pixels,
            "images_with_overlap": self.images_with_overlap,
            "hidden_instances": len(self.hidden_ids),
            "hidden_crowd": len(self.hidden_crowd_ids),
            "empty_instances": len(self.empty_ids),
            "images_without_annotations": self.images_without_annotations,
            "hidden_annotation_ids": self.hidden_ids + self.hidden_crowd_ids,
            "empty_annotation_ids": self.empty_ids,
        })
        return info


# ---------------------------------------------------------------------------------------------
# Decoding and overlaps
# ---------------------------------------------------------------------------------------------


class _Malformed(Exception):
    """A segmentation that cannot be decoded; `kind` is a `BadInput` kind."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """One COCO ``segmentation`` -> bool mask [height, width], decoded with pycocotools.

    Polygons: each is ``[x0, y0, x1, y1, ...]``; polygons of fewer than 3 points enclose nothing
    and are left out, as detectron2 does (pycocotools would read a 2-point one as a box). The
    polygons of one instance are united (``COCO.annToRLE``). RLE: the ``size`` must be
    ``[height, width]`` and the runs must add up to height * width.

    Raises:
      _Malformed: "size mismatch" or "corrupt annotation".
    """
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        polygons = []
        for polygon in segmentation:
            if not (isinstance(polygon, list) and all(_is_number(v) for v in polygon)
                    and len(polygon) % 2 == 0):
                raise _Malformed("corrupt annotation", "a polygon is not an even-length list "
                                 "of finite numbers")
            if len(polygon) >= 6:
                polygons.append(polygon)
        if not polygons:
            return np.zeros((height, width), bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
        return mask_utils.decode(rle).astype(bool)
    if not (isinstance(segmentation, dict) and "counts" in segmentation
            and "size" in segmentation):
        raise _Malformed("corrupt annotation", "segmentation is neither polygons nor an RLE "
                         "with 'counts' and 'size'")
    size, counts = segmentation["size"], segmentation["counts"]
    if not (isinstance(size, list) and len(size) == 2 and all(_is_count(v) for v in size)):
        raise _Malformed("corrupt annotation", f"RLE size {size!r} is not [height, width]")
    if tuple(size) != (height, width):
        raise _Malformed("size mismatch", f"RLE size is {size[1]}x{size[0]} (width x height) "
                         f"but the image is {width}x{height}")
    if isinstance(counts, list):  # uncompressed
        if not (counts and all(_is_count(v) for v in counts) and sum(counts) == height * width):
            raise _Malformed("corrupt annotation", "uncompressed RLE counts are not "
                             f"non-negative integers adding up to {height}x{width}")
        rle = mask_utils.frPyObjects(segmentation, height, width)
        return mask_utils.decode(rle).astype(bool)
    if not (isinstance(counts, (str, bytes)) and counts):
        raise _Malformed("corrupt annotation", "RLE counts are neither a list nor a string")
    rle = {"size": [height, width], "counts": counts}
    # A valid RLE's runs add up to h * w; pycocotools leaves the pixels past shorter runs
    # uninitialised. It decodes a list of RLEs into one buffer, one after the other, so a full
    # mask decoded after this one fills those pixels with ones, and the mask then has more
    # pixels than the RLE's area: shorter runs are found deterministically.
    full = mask_utils.encode(np.ones((height, width), np.uint8, order="F"))
    try:
        mask = mask_utils.decode([rle, full])[..., 0]
    except ValueError as e:  # runs past the end of the image
        raise _Malformed("corrupt annotation", f"compressed RLE does not decode ({e})") from None
    if np.count_nonzero(mask) != mask_utils.area(rle):
        raise _Malformed("corrupt annotation", "compressed RLE runs do not add up to "
                         f"{height}x{width}")
    return mask.astype(bool)


def resolve_overlaps(masks: Sequence[np.ndarray], iscrowd: Sequence[bool], height: int,
                     width: int) -> tuple[np.ndarray, int]:
    """Instance masks -> one segment per pixel (the rule in the module docstring).

    Args:
      masks: S bool masks [height, width], in annotation order.
      iscrowd: S crowd flags.

    Returns:
      segment_map uint16 [height, width] (0 void, k = masks[k - 1]) and the number of pixels
      covered by more than one mask.
    """
    segment_map = np.zeros((height, width), np.uint16)
    coverage = np.zeros((height, width), np.uint16)
    areas = [int(np.count_nonzero(m)) for m in masks]
    # First = wins. Painting from the last to the first leaves each pixel to the first.
    order = sorted(range(len(masks)), key=lambda i: (bool(iscrowd[i]), areas[i], i))
    for i in reversed(order):
        segment_map[masks[i]] = i + 1
    for m in masks:
        coverage += m
    return segment_map, int(np.count_nonzero(coverage > 1))


# ---------------------------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------------------------


@dataclass
class _Task:
    image_path: str
    image_id: int
    json_size: tuple[int, int] | None  # (height, width) from the images list
    annotations: list[dict[str, Any]]  # id, category_id, iscrowd, segmentation; file order
    original_to_contiguous: dict[int, int]
    source: str  # the annotation file's name, for messages
    # Where the worker leaves the image's ImageOverlap: run_conversion returns only the
    # records, so the statistics come back through this mapping (a Manager dict across
    # processes, a plain dict in this one).
    overlaps: MutableMapping[int, ImageOverlap]


def _convert_one(task: _Task) -> Sample:
    data, fmt, height, width = read_image_checked(task.image_path)
    if task.json_size is not None and task.json_size != (height, width):
        raise BadInput("size mismatch", task.image_path,
                       f"image is {width}x{height} but {task.source} says "
                       f"{task.json_size[1]}x{task.json_size[0]}")
    masks, categories, crowd, ids = [], [], [], []
    for ann in task.annotations:
        category = ann["category_id"]
        if category not in task.original_to_contiguous:
            raise BadInput("unknown category", task.image_path,
                           f"annotation {ann['id']} has category_id {category}, not in "
                           f"{task.source}'s 'categories'")
        try:
            masks.append(decode_segmentation(ann["segmentation"], height, width))
        except _Malformed as e:
            raise BadInput(e.kind, task.image_path,
                           f"annotation {ann['id']} in {task.source}: {e}") from None
        categories.append(task.original_to_contiguous[category])
        crowd.append(int(bool(ann.get("iscrowd", 0))))
        ids.append(int(ann["id"]))
    segment_map, overlap = resolve_overlaps(masks, crowd, height, width)
    written = np.bincount(segment_map.ravel(), minlength=len(masks) + 1)[1:]
    own = [int(np.count_nonzero(m)) for m in masks]
    lost = [k for k in range(len(masks)) if own[k] and not written[k]]
    task.overlaps[task.image_id] = ImageOverlap(
        num_instances=len(masks), overlap_pixels=overlap,
        hidden=tuple(ids[k] for k in lost if not crowd[k]),
        hidden_crowd=tuple(ids[k] for k in lost if crowd[k]),
        empty=tuple(ids[k] for k in range(len(masks)) if not own[k]))
    return Sample(
        image_bytes=data, image_format=fmt, height=height, width=width, image_id=task.image_id,
        filename=Path(task.image_path).name, segment_map=segment_map, segment_ids=ids,
        categories=categories, iscrowd=crowd, areas=[int(a) for a in written])


_REQUIRED = (("images", ("id", "file_name")),
             ("annotations", ("id", "image_id", "category_id", "segmentation")),
             ("categories", ("id",)))


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
        raise DataError(f"{path}: not a COCO instances file (a JSON {type(data).__name__}, "
                        "not an object)")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{path}: not a COCO instances file (no '{key}' list)")
    annotations = data["annotations"]
    if annotations and isinstance(annotations[0], dict) and "segments_info" in annotations[0]:
        raise DataError(f"{path}: a COCO panoptic file (annotations with 'segments_info'); "
                        "convert it with `maskformer data coco-panoptic`")
    for key, required in _REQUIRED:
        for i, entry in enumerate(data[key]):
            missing = [k for k in required if not isinstance(entry, dict) or k not in entry]
            if missing:
                hint = (" (a detection-only file? instance segmentation needs masks)"
                        if missing[0] == "segmentation" else "")
                raise DataError(f"{path}: {key}[{i}] has no '{missing[0]}'{hint}")
    for key in ("images", "annotations"):
        repeated = [v for v, n in Counter(e["id"] for e in data[key]).items() if n > 1]
        if repeated:
            raise DataError(f"{path}: {key} id {repeated[0]} appears more than once")
    return data


def convert(images: str | Path, annotations: str | Path, out: str | Path, num_shards: int = 1,
            num_workers: int = 1, strict: bool = False, progress: bool = True,
            log: Callable[[str], None] | None = None) -> InstanceConversionReport:
    """Converts a COCO instances split to sharded TFRecords and updates dataset.json.

    Args:
      images: folder of the images (``file_name`` of the ``images`` entries).
      annotations: the ``instances_*.json`` file.
      out: output prefix, e.g. ``data/coco_instance/train``: shards
        ``train-0000i-of-0000n.tfrecord`` and ``dataset.json`` in ``data/coco_instance/``.
      num_shards, num_workers, strict, progress, log: see `converter.run_conversion`; `log`
        also gets one line per image with hidden or empty instances.

    Returns:
      An `InstanceConversionReport`: records written, skipped images (and annotations whose
      image_id is not in ``images``) by reason, shard paths, and the overlap statistics.
    """
    images, annotations = Path(images), Path(annotations)
    if not images.is_dir():
        raise DataError(f"{images}: images folder not found")
    data = _load_annotations(annotations)
    categories = categories_from_annotations([{**c, "isthing": 1} for c in data["categories"]])
    original_to_contiguous = {c["original_id"]: c["id"] for c in categories}
    by_image: dict[Any, list[dict[str, Any]]] = {image["id"]: [] for image in data["images"]}
    orphans = []
    for a in data["annotations"]:
        if a["image_id"] in by_image:
            by_image[a["image_id"]].append(
                {k: a[k] for k in ("id", "category_id", "iscrowd", "segmentation") if k in a})
        else:
            orphans.append(f"{annotations}: annotation {a['id']} has image_id {a['image_id']}, "
                           "not in 'images'")
    if orphans and strict:
        raise DataError(orphans[0] + " (--strict)")
    write = log or (lambda line: print(line, file=sys.stderr))
    with contextlib.ExitStack() as stack:
        overlaps = (stack.enter_context(multiprocessing.Manager()).dict() if num_workers > 1
                    else {})
        tasks = []
        ordered, record_id, original_ids = record_image_ids(data["images"])
        for image in ordered:
            size = ((int(image["height"]), int(image["width"]))
                    if "height" in image and "width" in image else None)
            tasks.append(_Task(image_path=str(images / image["file_name"]),
                               image_id=record_id[image["id"]], json_size=size,
                               annotations=by_image[image["id"]],
                               original_to_contiguous=original_to_contiguous,
                               source=annotations.name, overlaps=overlaps))
        base = run_conversion(tasks, _convert_one, out, num_shards=num_shards,
                              num_workers=num_workers, strict=strict,
                              description=f"coco-instance {Path(out).name}", progress=progress,
                              log=log)
        report = InstanceConversionReport(**{f.name: getattr(base, f.name)
                                             for f in fields(ConversionReport)},
                                          images=dict(sorted(overlaps.items())))
    for message in orphans:
        report.skipped["unknown image"] += 1
        report.problems.append(message)
        write(f"skipped {message}")
    path_of = {t.image_id: t.image_path for t in tasks}
    for image_id, s in report.images.items():
        if s.hidden or s.hidden_crowd:
            write(f"{path_of[image_id]}: annotation(s) "
                  f"{', '.join(map(str, s.hidden + s.hidden_crowd))} lost every pixel to "
                  "overlapping instances that come first (kept with area 0)")
        if s.empty:
            write(f"{path_of[image_id]}: annotation(s) {', '.join(map(str, s.empty))} have no "
                  "pixel in their own mask (kept with area 0)")
    info = report.as_dict()
    info["source"] = {"annotations": str(annotations)}
    if original_ids:
        info["image_ids"] = original_ids
    update_dataset_info(out, "coco_instance", categories, info)
    return report
