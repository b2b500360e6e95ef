"""``maskformer data inspect``: what a set of records holds, and a picture of its first images.

One streaming pass over the records (`inspect_records`) counts, per class, the segments, the
images that hold it and its share of the pixels (classes that never occur are listed: that is
how a wrong category mapping shows); segments per image; image sizes; the void share (pixels of
segment index 0); and every inconsistency between a record's lists, its segment map and its
image. Only per-image numbers are kept, never images, so it runs on a dataset of any size.

It writes, into the output folder:

* ``stats.json``: everything the report shows, as numbers;
* ``contact_sheet.png``: the first images in a grid, each with its segments coloured (the class
  colours of ``dataset.json``), outlined and named, captioned with image id and file name.

Every image and segment map is decoded, as training would decode them: a record that cannot be
read stops the pass with one line naming its file and position.
"""

from __future__ import annotations

import colorsys
import heapq
import json
import math
import re
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from maskformer.config import DataConfig
from maskformer.data import model_garden, pipeline
from maskformer.data.records import (
    atomic_write_text,
    dataset_info_path,
    read_dataset_info,
    shard_pattern,
)
from maskformer.errors import DataError

TILE = 256  # side of a contact sheet cell's picture, pixels
GAP = 8  # pixels between cells and around the sheet
FONT_SIZE = 11  # class names on the pictures (small: they sit inside segments)
ALPHA = 0.55  # opacity of the class colours over the image
VOID_BRIGHTNESS = 0.4  # of the image where no segment is
WORST = 5  # images listed with the largest void share
EXAMPLES = 5  # records named per kind of inconsistency
COMMON_SIZES = 5  # most common image sizes listed
_CANDIDATES = 8  # points tried per label, deepest first

# The kinds of inconsistency, in the order they are reported.
OUTSIDE_TABLE = "category outside the class table"
LIST_LENGTHS = "segment lists of different lengths"
AREA = "segments/area differs from the map"
UNLISTED = "map index without a segment"
MAP_SIZE = "image size differs from the map"
DECLARED_SIZE = "image/height, image/width differ from the image"
KINDS = (OUTSIDE_TABLE, LIST_LENGTHS, AREA, UNLISTED, MAP_SIZE, DECLARED_SIZE)


@dataclass
class ClassTable:
    """The class names and colours the report uses.

    Attributes:
      categories: dataset.json's categories in contiguous order ({"name", "isthing", "color"}),
        or empty when no dataset.json was found (classes are then named by their index).
      path: the file they came from, or None.
    """

    categories: list[dict[str, Any]]
    path: str | None

    @property
    def fixed(self) -> bool:
        return self.path is not None

    def name(self, k: int) -> str:
        if k < len(self.categories):
            return str(self.categories[k].get("name", f"class {k}"))
        return f"class {k}"

    def isthing(self, k: int) -> bool:
        return k < len(self.categories) and bool(self.categories[k].get("isthing", 0))

    def colour(self, k: int) -> np.ndarray:
        """The category's "color", else a hue of its own (golden-ratio steps).

        The same rule as `maskformer.visualize.category_colour`, which `data` may not import
        (tests/test_layout.py): a class has the same colour in both pictures.
        """
        if k < len(self.categories) and self.categories[k].get("color") is not None:
            return np.array(self.categories[k]["color"], np.float64)
        return np.array(colorsys.hsv_to_rgb((k * 0.618034) % 1.0, 0.65, 0.9)) * 255


def read_class_table(first_record: str, dataset_info: str | Path | None) -> ClassTable:
    """The class table: `dataset_info`, else the dataset.json beside `first_record`, else none.

    `dataset_info` may also be a COCO panoptic annotation file (as for Model Garden records):
    its categories are put in contiguous order by ascending id, as the converter does.
    """
    if dataset_info is None:
        path = dataset_info_path(first_record)
        if not path.is_file():
            return ClassTable([], None)
    else:
        path = Path(dataset_info)
    categories = read_dataset_info(path)["categories"]
    if categories and "original_id" not in categories[0]:
        from maskformer.data.coco_panoptic import categories_from_annotations

        categories = categories_from_annotations(categories)
    return ClassTable(list(categories), str(path))


def resolve_records(records: str | Sequence[str]) -> list[str]:
    """`pipeline.resolve_files`, where a pattern that matches nothing may also be a converter's
    output prefix (``data/coco/train`` for ``data/coco/train-?????-of-?????.tfrecord``)."""
    patterns = records.split(",") if isinstance(records, str) else list(records)
    files: list[str] = []
    for pattern in (p.strip() for p in patterns if p.strip()):
        if not tf.io.gfile.glob(pattern) and tf.io.gfile.glob(shard_pattern(pattern)):
            pattern = shard_pattern(pattern)
        files += pipeline.resolve_files([pattern])
    if not files:
        raise DataError("no record files given")
    return files


def _first_line(error: Exception) -> str:
    """TensorFlow's message without the names of graph functions and iterators."""
    message = getattr(error, "message", None) or str(error)
    message = re.sub(r"\{\{function_node [^}]*\}\}", "", message)
    message = re.sub(r"Error in user-defined function passed to \S+ transformation with "
                     r"iterator: [\w:]+: ", "", message).strip()
    line = message.splitlines()[0] if message else type(error).__name__
    line = line.split(" [Op:")[0].strip()
    return line if len(line) <= 200 else line[:199] + "…"


def _record_count(path: str) -> int:
    return sum(1 for _ in tf.data.TFRecordDataset(path))


def _locate_error(files: list[str], last: tuple[int, int], error: Exception) -> str:
    """One line naming the record that failed: the one after `last` (file index, record index
    of the last record read; (-1, -1) for none). Records are read in order, so it is the next
    record of that file, or the first record of the next file that has one."""
    message = _first_line(error)
    file_index, record_index = last
    if file_index >= 0:
        try:
            count = _record_count(files[file_index])
        except tf.errors.OpError as e:
            return f"{files[file_index]}: cannot read records ({_first_line(e)})"
        if count > record_index + 1:
            return f"{files[file_index]}: record {record_index + 2}: {message}"
    for path in files[file_index + 1:]:
        try:
            first = next(iter(tf.data.TFRecordDataset(path).take(1)), None)
        except tf.errors.OpError as e:
            return f"{path}: cannot read records ({_first_line(e)})"
        if first is not None:
            return f"{path}: record 1: {message}"
    return f"{files[max(file_index, 0)]}: {message}"


def _check_format(files: list[str], record_format: str) -> None:
    """A wrong `record_format` fails here with a hint, not as a missing key deep in tf.data."""
    if record_format == "model_garden":
        model_garden.check_records(files)
        return
    try:
        first = next(iter(tf.data.TFRecordDataset(files[0]).take(1)), None)
    except tf.errors.OpError as e:
        raise DataError(f"{files[0]}: cannot read records ({_first_line(e)})") from None
    if first is None:
        return
    try:
        feature = tf.train.Example.FromString(first.numpy()).features.feature
    except Exception:  # a protobuf DecodeError: not a tf.train.Example
        raise DataError(f"{files[0]}: record 1 is not a tf.train.Example") from None
    if "segments/map" not in feature and model_garden.CATEGORY_MASK_KEY in feature:
        raise DataError(f"{files[0]}: record 1 has no segments/map but Model Garden's "
                        f"{model_garden.CATEGORY_MASK_KEY}: inspect it with "
                        "record_format='model_garden' and its dataset_info")


def _summaries(files: list[str], parser, keep: int) -> tf.data.Dataset:
    """Per record, small tensors only: where it is, its lists, the pixel count of each segment
    index, the sizes; and the serialized record itself for the first `keep` records."""

    def read(file_index, path):
        return tf.data.TFRecordDataset(path).enumerate().map(
            lambda n, serialized: (file_index, n, serialized))

    def summarise(position, element):
        file_index, record_index, serialized = element
        example = parser(serialized)
        filename = tf.io.parse_single_example(serialized, {
            "image/filename": tf.io.FixedLenFeature([], tf.string, default_value="")})
        segment_map = example["segment_map"]
        num = tf.shape(example["categories"])[0]
        # [max(S, largest index in the map) + 1]: entry 0 is void, entry k segment k.
        counts = tf.math.bincount(tf.reshape(segment_map, [-1]), minlength=num + 1,
                                  dtype=tf.int64)
        return {
            "file": file_index,
            "record": record_index,
            "image_id": example["image_id"],
            "filename": filename["image/filename"],
            "declared_size": tf.stack([example["height"], example["width"]]),
            "image_size": tf.shape(example["image"])[:2],
            "map_size": tf.shape(segment_map),
            "categories": example["categories"],
            "iscrowd": example["iscrowd"],
            "areas": example["areas"],
            "counts": counts,
            "serialized": tf.where(position < keep, serialized, ""),
        }

    ds = tf.data.Dataset.from_tensor_slices((tf.range(len(files), dtype=tf.int64), files))
    ds = ds.flat_map(read).enumerate()
    # Deterministic: summaries, and errors, arrive in record order (see `_locate_error`).
    ds = ds.map(summarise, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


@dataclass
class _Accumulator:
    """The running statistics of the pass."""

    table: ClassTable
    files: list[str]
    segments: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    crowd: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    images: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pixels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    segments_per_image: list[int] = field(default_factory=list)
    heights: list[int] = field(default_factory=list)
    widths: list[int] = field(default_factory=list)
    sizes: Counter = field(default_factory=Counter)
    total_pixels: int = 0
    void_pixels: int = 0
    most_void: list[tuple[float, int, dict[str, Any]]] = field(default_factory=list)
    problems: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self):
        self._grow(len(self.table.categories))

    def _grow(self, size: int) -> None:
        if size > len(self.segments):
            for name in ("segments", "crowd", "images", "pixels"):
                old = getattr(self, name)
                setattr(self, name, np.pad(old, (0, size - len(old))))

    def _problem(self, kind: str, where: str, detail: str) -> None:
        entry = self.problems.setdefault(kind, {"count": 0, "examples": []})
        entry["count"] += 1
        if len(entry["examples"]) < EXAMPLES:
            entry["examples"].append(f"{where}: {detail}")

    def add(self, s: dict[str, Any]) -> None:
        image_id, filename = int(s["image_id"]), s["filename"].decode(errors="replace")
        where = (f"image id {image_id}" + (f" ({filename})" if filename else "") +
                 f", {Path(self.files[s['file']]).name} record {s['record'] + 1}")
        cats, crowd, areas, counts = s["categories"], s["iscrowd"], s["areas"], s["counts"]
        num = len(cats)
        if not len(crowd) == len(areas) == num:
            self._problem(LIST_LENGTHS, where, f"{num} categories, {len(crowd)} iscrowd, "
                                               f"{len(areas)} areas")
            crowd = np.resize(crowd, num) if len(crowd) else np.zeros(num, bool)
        segment_pixels = counts[1:num + 1]  # [S], from the map: the truth for the statistics
        if len(areas) == num and np.any(areas != segment_pixels):
            k = int(np.flatnonzero(areas != segment_pixels)[0])
            self._problem(AREA, where, f"segment {k + 1}: area {int(areas[k])}, "
                                       f"{int(segment_pixels[k])} pixels in the map")
        if counts[num + 1:].any():
            self._problem(UNLISTED, where, f"the map holds index {len(counts) - 1}, the record "
                                           f"lists {num} segment(s)")
        image_size, map_size = tuple(s["image_size"].tolist()), tuple(s["map_size"].tolist())
        if image_size != map_size:
            self._problem(MAP_SIZE, where, f"image {_size(image_size)}, map {_size(map_size)}")
        if tuple(s["declared_size"].tolist()) != image_size:
            self._problem(DECLARED_SIZE, where, f"record says {_size(s['declared_size'])}, "
                                                f"image is {_size(image_size)}")

        outside = cats < 0
        if outside.any():
            self._problem(OUTSIDE_TABLE, where, f"category {int(cats[outside][0])}")
        if self.table.fixed and num and cats.max() >= len(self.table.categories):
            raise DataError(
                f"{self.table.path}: lists {len(self.table.categories)} classes, but the records "
                f"use category {int(cats.max())} ({where}); is it the class table of these "
                "records?")
        valid = ~outside
        self._grow(int(cats.max()) + 1 if num else 0)
        size = len(self.segments)
        self.segments += np.bincount(cats[valid], minlength=size)
        self.crowd += np.bincount(cats[valid], weights=crowd[valid].astype(float), minlength=size).astype(
            np.int64)
        self.pixels += np.bincount(cats[valid], weights=segment_pixels[valid],
                                   minlength=size).astype(np.int64)
        self.images[np.unique(cats[valid])] += 1

        self.segments_per_image.append(num)
        self.heights.append(image_size[0])
        self.widths.append(image_size[1])
        self.sizes[image_size] += 1
        map_pixels = int(np.prod(map_size))
        self.total_pixels += map_pixels
        self.void_pixels += int(counts[0])
        if map_pixels:
            share = int(counts[0]) / map_pixels
            entry = (share, -len(self.segments_per_image),
                     {"image_id": image_id, "filename": filename, "file": self.files[s["file"]],
                      "record": int(s["record"]) + 1, "share": share})
            if len(self.most_void) < WORST:
                heapq.heappush(self.most_void, entry)
            elif entry[:2] > self.most_void[0][:2]:
                heapq.heapreplace(self.most_void, entry)

    def summary(self) -> dict[str, Any]:
        """The statistics as plain JSON values (the content of stats.json)."""
        total = max(self.total_pixels, 1)
        classes = [{"id": k, "name": self.table.name(k), "segments": int(self.segments[k]),
                    "crowd_segments": int(self.crowd[k]), "images": int(self.images[k]),
                    "pixels": int(self.pixels[k]), "pixel_share": int(self.pixels[k]) / total}
                   for k in range(len(self.segments))]
        per_image = np.array(self.segments_per_image)
        heights, widths = np.array(self.heights), np.array(self.widths)
        return {
            "records": self.files,
            "num_images": len(per_image),
            "dataset_info": self.table.path,
            "classes": classes,
            "classes_never_seen": [c["id"] for c in classes if c["segments"] == 0],
            "segments": int(per_image.sum()),
            "crowd_segments": int(self.crowd.sum()),
            "segments_per_image": _spread(per_image, mean=True),
            "image_height": _spread(heights),
            "image_width": _spread(widths),
            "most_common_sizes": [{"height": h, "width": w, "images": n}
                                  for (h, w), n in self.sizes.most_common(COMMON_SIZES)],
            "pixels": self.total_pixels,
            "void_share": self.void_pixels / total,
            "most_void": [e[2] for e in sorted(self.most_void, reverse=True)],
            "inconsistencies": {k: self.problems[k] for k in KINDS if k in self.problems},
        }


def _size(hw) -> str:
    return f"{int(hw[0])} x {int(hw[1])}"


def _spread(values: np.ndarray, mean: bool = False) -> dict[str, float]:
    out = {"min": int(values.min()), "median": float(np.median(values)),
           "max": int(values.max())}
    if mean:
        out["mean"] = float(values.mean())
    return out


# ---------------------------------------------------------------------------------------------
# Contact sheet
# ---------------------------------------------------------------------------------------------


def _font():
    from PIL import ImageFont

    return ImageFont.load_default(size=FONT_SIZE)


def _fit(image: np.ndarray, segment_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Image [h, w, 3] and map [h, w] scaled to fit a TILE x TILE square: enlarged by a whole
    factor (nearest: each segment keeps its pixels), or shrunk (image bilinear, map nearest)."""
    from PIL import Image

    h, w = segment_map.shape
    scale = TILE / max(h, w, 1)
    if scale >= 1:
        f = int(scale)
        return (np.repeat(np.repeat(image, f, 0), f, 1),
                np.repeat(np.repeat(segment_map, f, 0), f, 1))
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    rows = ((np.arange(nh) + 0.5) * h / nh).astype(int)
    cols = ((np.arange(nw) + 0.5) * w / nw).astype(int)
    small = Image.fromarray(image).resize((nw, nh), Image.Resampling.BILINEAR)
    return np.asarray(small), segment_map[rows][:, cols]


def _label_points(mask: np.ndarray) -> list[tuple[float, float]]:
    """Up to `_CANDIDATES` points (x, y) inside a segment, deepest first (a ring's centroid is
    outside the ring; the maximum of its distance transform is not)."""
    from scipy import ndimage

    ys, xs = np.nonzero(mask)
    y0, x0 = ys.min(), xs.min()
    crop = np.pad(mask[y0:ys.max() + 1, x0:xs.max() + 1], 1)
    depth = ndimage.distance_transform_edt(crop)[1:-1, 1:-1]
    order = np.argsort(-depth, axis=None, kind="stable")
    order = order[depth.ravel()[order] > 0]
    order = order[np.unique(np.linspace(0, len(order) - 1, _CANDIDATES).astype(int))]
    cy, cx = np.unravel_index(order, depth.shape)
    return [(x0 + x + 0.5, y0 + y + 0.5) for y, x in zip(cy.tolist(), cx.tolist(), strict=True)]


def render_tile(image: np.ndarray, segment_map: np.ndarray, categories: np.ndarray,
                iscrowd: np.ndarray, table: ClassTable):
    """One cell's picture: the image fitted into TILE x TILE, each segment in its class colour
    (things in shades of it), outlined in white, and named (crowd ones "name (crowd)"); void
    darkened.

    Args:
      image: uint8 [h, w, 3]; segment_map: int [h, w], 0 void, k = segment k.
      categories: int [S]; iscrowd: bool [S].

    Returns:
      A PIL RGB image, at most TILE x TILE.
    """
    from PIL import Image, ImageDraw

    h, w = segment_map.shape
    if image.shape[:2] != (h, w):  # an inconsistent record: the map decides, the image is cut
        image = np.pad(image[:h, :w], ((0, h - min(h, image.shape[0])),
                                       (0, w - min(w, image.shape[1])), (0, 0)))
    image, segment_map = _fit(image, segment_map)
    colours = np.zeros((len(categories) + 1, 3))
    listed = np.zeros(len(categories) + 1, bool)
    rng = np.random.default_rng(0)
    for k, c in enumerate(categories.tolist(), 1):
        if c < 0 or (table.fixed and c >= len(table.categories)):
            continue  # not a class: shown as void
        colour = table.colour(c)
        if table.isthing(c):
            colour = np.clip(colour + rng.integers(-60, 60, 3), 0, 255)
        colours[k], listed[k] = colour, True
    index = np.where(segment_map < len(listed), segment_map, 0)
    on = listed[index][..., None]
    pixels = image.astype(np.float32)
    blended = np.where(on, (1 - ALPHA) * pixels + ALPHA * colours[index], VOID_BRIGHTNESS * pixels)
    picture = np.clip(blended, 0, 255).astype(np.uint8)
    edge = np.zeros(segment_map.shape, bool)
    edge[:, :-1] |= segment_map[:, 1:] != segment_map[:, :-1]
    edge[:-1, :] |= segment_map[1:, :] != segment_map[:-1, :]
    picture[edge] = 255
    canvas = Image.fromarray(picture)
    draw = ImageDraw.Draw(canvas)
    font = _font()
    placed: list[tuple[float, float, float, float]] = []
    # Small segments first: a large one has room for its name elsewhere.
    present = [k for k in range(1, len(listed)) if listed[k]]
    areas = {k: int((segment_map == k).sum()) for k in present}
    for k in sorted((k for k in present if areas[k]), key=lambda k: (areas[k], k)):
        name = table.name(int(categories[k - 1])) + (" (crowd)" if iscrowd[k - 1] else "")
        left, top, right, bottom = font.getbbox(name)
        w, h = right - left + 4, bottom - top + 4
        for x, y in _label_points(segment_map == k):
            x0 = min(max(x - w / 2, 0), canvas.width - w)
            y0 = min(max(y - h / 2, 0), canvas.height - h)
            box = (x0, y0, x0 + w, y0 + h)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3]
                       for b in placed):
                placed.append(box)
                draw.rectangle(box, fill=(0, 0, 0))
                draw.text((x0 + 2 - left, y0 + 2 - top), name, font=font, fill=(255, 255, 255))
                break
    return canvas


def contact_sheet(pictures: Sequence[Any], captions: Sequence[str]):
    """Pictures (PIL, at most TILE x TILE) in a grid of TILE-wide cells, each centred above its
    caption, on white; ceil(sqrt(n)) columns.

    Returns:
      (the PIL sheet, {"images", "rows", "columns", "cell_width", "cell_height"}): the sheet is
      columns * cell_width + (columns + 1) * GAP wide and rows * cell_height + (rows + 1) * GAP
      high.
    """
    from PIL import Image, ImageDraw

    font = _font()
    ascent, descent = font.getmetrics()
    caption_height = ascent + descent + 4
    n = len(pictures)
    columns = max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / columns))
    cell_w, cell_h = TILE, TILE + caption_height
    sheet = Image.new("RGB", (columns * cell_w + (columns + 1) * GAP,
                              rows * cell_h + (rows + 1) * GAP), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (picture, caption) in enumerate(zip(pictures, captions, strict=True)):
        x = GAP + (i % columns) * (cell_w + GAP)
        y = GAP + (i // columns) * (cell_h + GAP)
        sheet.paste(picture, (x + (TILE - picture.width) // 2, y + (TILE - picture.height) // 2))
        while caption and font.getlength(caption) > TILE:
            caption = caption[:-2] + "…"
        draw.text((x, y + TILE + 2), caption, font=font, fill=(0, 0, 0))
    return sheet, {"images": n, "rows": rows, "columns": columns, "cell_width": cell_w,
                   "cell_height": cell_h}


def _write_contact_sheet(kept: list[bytes], parser, table: ClassTable, path: Path):
    pictures, captions = [], []
    for serialized in kept:
        example = parser(tf.constant(serialized))
        filename = tf.io.parse_single_example(serialized, {
            "image/filename": tf.io.FixedLenFeature([], tf.string, default_value="")})
        pictures.append(render_tile(example["image"].numpy(), example["segment_map"].numpy(),
                                    example["categories"].numpy(), example["iscrowd"].numpy(),
                                    table))
        name = filename["image/filename"].numpy().decode(errors="replace")
        captions.append(f"id {int(example['image_id'])}" + (f"  {name}" if name else ""))
    sheet, geometry = contact_sheet(pictures, captions)
    sheet.save(path)
    return {"file": str(path), **geometry}


# ---------------------------------------------------------------------------------------------
# The pass and the report
# ---------------------------------------------------------------------------------------------


def inspect_records(records: str | Sequence[str], dataset_info: str | Path | None = None,
                    out_dir: str | Path | None = None, num_images: int = 16,
                    progress: bool = True, record_format: str = "maskformer") -> str:
    """Statistics of a set of records, written to `out_dir` with a contact sheet.

    Args:
      records: comma-separated glob pattern(s), or a list of files.
      dataset_info: the class table (dataset.json; for Model Garden records also a COCO
        panoptic annotation file). Default: the dataset.json beside the first record file; if
        there is none, classes are named by their index.
      out_dir: where ``stats.json`` and ``contact_sheet.png`` go; default
        ``<folder of the first record>/inspect``.
      num_images: images on the contact sheet (the first ones; 0 writes none).
      progress: a progress bar on stderr.
      record_format: "maskformer" (`maskformer data` converters) or "model_garden" (TF Model
        Garden's create_coco_tf_record.py; needs `dataset_info`).

    Returns:
      The report: a multi-line text, the paths of the files written at its end.

    Raises:
      DataError: no file matches, a file or record cannot be read, or the class table has
        fewer classes than the records use.
    """
    from tqdm import tqdm

    if num_images < 0:
        raise DataError(f"--num-images must not be negative, got {num_images}")
    files = resolve_records(records)
    table = read_class_table(files[0], dataset_info)
    if record_format == "model_garden" and not table.fixed:
        raise DataError(f"{files[0]}: Model Garden records need the class table: give "
                        "dataset_info (a dataset.json or the COCO panoptic annotation file)")
    parser = pipeline.make_parser(DataConfig(record_format=record_format,
                                             dataset_info=table.path or ""))
    _check_format(files, record_format)

    stats = _Accumulator(table, files)
    kept: list[bytes] = []
    last = (-1, -1)
    iterator = _summaries(files, parser, num_images).as_numpy_iterator()
    with tqdm(desc="inspect", unit="img", file=sys.stderr, disable=not progress) as bar:
        while True:
            try:
                summary = next(iterator)
            except StopIteration:
                break
            except tf.errors.OpError as e:
                raise DataError(_locate_error(files, last, e)) from None
            last = (int(summary["file"]), int(summary["record"]))
            stats.add(summary)
            if summary["serialized"]:
                kept.append(summary["serialized"])
            bar.update()
    if not stats.segments_per_image:
        raise DataError(f"{files[0]}: no records in the {len(files)} file(s)")

    out = Path(out_dir) if out_dir is not None else Path(files[0]).parent / "inspect"
    out.mkdir(parents=True, exist_ok=True)
    result = stats.summary()
    result["record_format"] = record_format
    written = []
    if kept:
        result["contact_sheet"] = _write_contact_sheet(kept, parser, table,
                                                       out / "contact_sheet.png")
        written.append(out / "contact_sheet.png")
    atomic_write_text(out / "stats.json", json.dumps(result, indent=1))
    written.append(out / "stats.json")
    return format_report(result, written)


def format_report(stats: dict[str, Any], written: Sequence[str | Path] = ()) -> str:
    """The text report of a `stats.json` dict."""
    files = stats["records"]
    lines = [f"{stats['num_images']} images in {len(files)} file(s): {files[0]}"
             + (f" ... {files[-1]}" if len(files) > 1 else "")]
    if stats["dataset_info"]:
        lines.append(f"classes: {len(stats['classes'])}, from {stats['dataset_info']}")
    else:
        lines.append("classes: no dataset.json found beside the records: classes are named by "
                     "their index, up to the largest one seen")
    per_image = stats["segments_per_image"]
    lines += [
        "",
        f"segments per image: min {per_image['min']}, median {per_image['median']:g}, "
        f"mean {per_image['mean']:.2f}, max {per_image['max']} ({stats['segments']} segments, "
        f"{stats['crowd_segments']} crowd)",
    ]
    for key in ("image_height", "image_width"):
        s = stats[key]
        lines.append(f"image {key[6:]}: min {s['min']}, median {s['median']:g}, max {s['max']}")
    lines.append("most common sizes (height x width): " + ", ".join(
        f"{s['height']} x {s['width']} ({s['images']})" for s in stats["most_common_sizes"]))
    void = f"void (segment index 0): {100 * stats['void_share']:.2f}% of the pixels"
    worst = [e for e in stats["most_void"] if e["share"] > 0]
    if worst:
        void += "\n  most void: " + ", ".join(
            f"{100 * e['share']:.1f}% image id {e['image_id']}"
            + (f" ({e['filename']})" if e["filename"] else "") for e in worst)
    lines.append(void)

    lines.append("")
    classes = sorted(stats["classes"], key=lambda c: (-c["pixels"], -c["segments"], c["id"]))
    width = max([4] + [len(c["name"]) for c in classes])
    lines.append(f"{'id':>5}  {'name':<{width}}  {'segments':>8}  {'crowd':>6}  {'images':>7}  "
                 f"{'pixels':>7}")
    for c in classes:
        lines.append(f"{c['id']:>5}  {c['name']:<{width}}  {c['segments']:>8}  "
                     f"{c['crowd_segments']:>6}  {c['images']:>7}  "
                     f"{100 * c['pixel_share']:>6.2f}%")
    never = [c for c in stats["classes"] if c["segments"] == 0]
    if never:
        lines.append(f"classes that never occur ({len(never)}): "
                     + ", ".join(f"{c['id']} {c['name']}" for c in never))
    else:
        lines.append("classes that never occur: none")

    lines.append("")
    problems = stats["inconsistencies"]
    if not problems:
        lines.append("inconsistencies: none")
    else:
        lines.append(f"inconsistencies: {sum(p['count'] for p in problems.values())}")
        for kind, p in problems.items():
            lines.append(f"  {kind}: {p['count']}")
            lines += [f"    {example}" for example in p["examples"]]
    if written:
        lines.append("")
        lines += [f"wrote {path}" for path in written]
    return "\n".join(lines)
