"""Semantic label maps -> TFRecords (schema in `records`): the general converter and its core.

A semantic label map gives every pixel a value (a class index, a dataset's own label id, or an
RGB colour). A `LabelMap` turns those values into contiguous class ids 0..K-1 or void; each
class present in an image becomes one segment, in class order, so the pipeline makes one target
per class present (the original semantic mapper's targets). ``segments/id`` holds the class's
``original_id`` from the category table.

Value rules of a `LabelMap`, in this order: a listed value is its class; a value in
``void_values`` is void; a value above ``max_value`` is bad input (``unknown category``, or
``unknown colour`` for palette labels); any other value is void. ``max_value=None`` makes every
unlisted value void.

The dataset presets (Pascal VOC, Cityscapes, Mapillary Vistas, COCO-Stuff-10K, ADE20K-Full)
live in `semantic_datasets`; ADE20K (150 classes) in `ade20k`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from maskformer.data.coco_panoptic import read_image_checked, read_mask_checked
from maskformer.data.converter import BadInput, ConversionReport, run_conversion
from maskformer.data.records import DataError, Sample, update_dataset_info

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

# How a label file is read into an integer value map [H, W] (see `read_label_values`).
INDEX = "index"  # single-channel PNG (a palette "P" PNG gives its indices)
RGB = "rgb"  # RGB PNG; value = R * 65536 + G * 256 + B
ADE20K_FULL = "ade20k_full"  # ADE20K *_seg.png; value = R // 10 * 256 + G (the object class)
# MATLAB files with the label array "S" (COCO-Stuff-10K). Both read MATLAB v5 files (scipy) and
# v7.3 files (HDF5, through h5py, which Keras depends on); they differ in the release they
# expect, checked against the file's class-name list "names" where it has one: v1.0 files name
# 172 classes (1 "unlabeled", 2..81 things, 82..172 stuff); v1.1 files, which number the classes
# like COCO (0 unlabeled, 1..91 things, 92..182 stuff), name more.
MAT = "mat"  # COCO-Stuff-10K v1.1: S = 0 (unlabeled) or the COCO-Stuff id 1..182
MAT_V10 = "mat_v1.0"  # COCO-Stuff-10K v1.0: S = 1 (unlabeled) or 2..172
COCO_STUFF_V10_NAMES = 172


@dataclass(frozen=True)
class LabelMap:
    """Label value -> contiguous class id (rules in the module docstring).

    Attributes:
      values: int64 [N], the listed label values (any order, no repeats).
      classes: int64 [N], the contiguous class id of each listed value.
      void_values: values that are void.
      max_value: values above it are bad input; None: unlisted values are void.
      unknown_kind: the `BadInput` kind of a value above `max_value`.
    """

    values: tuple[int, ...]
    classes: tuple[int, ...]
    void_values: tuple[int, ...] = ()
    max_value: int | None = None
    unknown_kind: str = "unknown category"

    def lookup(self, present: np.ndarray, path: str) -> np.ndarray:
        """Class ids of the distinct values `present` (int [U]): int64 [U], -1 = void.

        Raises:
          BadInput: a value above `max_value` (the message names up to five).
        """
        table = dict(zip(self.values, self.classes, strict=True))
        out = np.full(len(present), -1, np.int64)
        unknown = []
        for i, v in enumerate(int(v) for v in present):
            if v in table:
                out[i] = table[v]
            elif v not in self.void_values and self.max_value is not None and v > self.max_value:
                unknown.append(v)
        if unknown:
            if self.unknown_kind == "unknown colour":
                colours = [tuple(int(c) for c in unpack_rgb(v)) for v in unknown[:5]]
                raise BadInput("unknown colour", path,
                               f"colour(s) {', '.join(map(str, colours))} not in the palette")
            raise BadInput(self.unknown_kind, path,
                           f"label value(s) {unknown[:5]} outside 0..{self.max_value}")
        return out


def unpack_rgb(value: int) -> tuple[int, int, int]:
    """A packed colour R * 65536 + G * 256 + B -> (R, G, B)."""
    return value // 65536 % 256, value // 256 % 256, value % 256


def read_label_values(path: str, label_format: str) -> np.ndarray:
    """Reads a label file into an integer value map [H, W] (`BadInput` when missing/broken)."""
    if label_format in (MAT, MAT_V10):
        return _read_mat_label(path, label_format)
    if label_format == INDEX:
        label = read_mask_checked(path, kind="label")
        if label.ndim != 2:
            raise BadInput("corrupt label", path,
                           f"label PNG must be single-channel, got shape {label.shape}")
        return label
    label = _read_rgb_label(path)
    if label_format == RGB:
        rgb = label.astype(np.int64)
        return rgb[..., 0] * 65536 + rgb[..., 1] * 256 + rgb[..., 2]
    # ADE20K full: R / 10 * 256 + G is the object class index (the dataset's loader rule).
    return (label[..., 0].astype(np.int64) // 10) * 256 + label[..., 1].astype(np.int64)


def _read_rgb_label(path: str) -> np.ndarray:
    from PIL import Image

    if not Path(path).is_file():
        raise BadInput("missing label", path, "label PNG not found")
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    except Exception as e:  # PIL raises many types for broken files
        raise BadInput("corrupt label", path, f"label PNG does not decode ({e})") from None


def _load_mat(path: str) -> tuple[np.ndarray, int | None]:
    """(the array "S" [H, W], the number of entries of "names" or None) of a .mat file."""
    import h5py

    if h5py.is_hdf5(path):  # MATLAB v7.3; arrays are stored transposed (column-major)
        with h5py.File(path, "r") as f:
            if "S" not in f:
                raise KeyError("S")
            names = int(f["names"].size) if "names" in f else None
            return np.array(f["S"]).T, names
    import scipy.io

    mat = scipy.io.loadmat(path)
    names = int(np.size(mat["names"])) if "names" in mat else None
    return mat["S"], names


def _read_mat_label(path: str, label_format: str) -> np.ndarray:
    if not Path(path).is_file():
        raise BadInput("missing label", path, "label .mat not found")
    try:
        label, names = _load_mat(path)
    except KeyError:
        raise BadInput("corrupt label", path, "no label array 'S' in the .mat file") from None
    except Exception as e:  # scipy and h5py raise many types for broken files
        raise BadInput("corrupt label", path, f"label .mat does not load ({e})") from None
    if names is not None and (names == COCO_STUFF_V10_NAMES) != (label_format == MAT_V10):
        this, other = ("1.0", "1.1") if label_format == MAT_V10 else ("1.1", "1.0")
        raise BadInput("corrupt label", path,
                       f"the file names {names} classes, so it is not a COCO-Stuff-10K v{this} "
                       f"annotation (v1.0 files name {COCO_STUFF_V10_NAMES}); convert it as "
                       f"v{other}")
    if label.ndim != 2:
        raise BadInput("corrupt label", path, f"label array must be 2-D, got {label.shape}")
    if label.dtype.kind == "f":  # MATLAB doubles: the values must still be whole numbers
        if not np.all(np.isfinite(label)) or np.any(label != np.round(label)):
            raise BadInput("corrupt label", path, "label array 'S' holds non-integer values")
        label = label.astype(np.int64)
    elif label.dtype.kind not in "iub":
        raise BadInput("corrupt label", path, f"label array 'S' has type {label.dtype}")
    return label


def class_map_to_sample(class_values: np.ndarray, label_map: LabelMap, original_ids: list[int],
                        path: str, **image_fields: Any) -> Sample:
    """A value map [H, W] -> `Sample` with one segment per class present, in class order.

    Args:
      class_values: integer label values [H, W].
      label_map: the value rules.
      original_ids: per contiguous class, its ``original_id`` (written as ``segments/id``).
      path: the label file (for bad-input reports).
      image_fields: the `Sample` image fields (image_bytes ... filename).
    """
    present, inverse, counts = np.unique(class_values, return_inverse=True, return_counts=True)
    contiguous = label_map.lookup(present, path)  # [U], -1 = void
    classes = sorted({int(c) for c in contiguous if c >= 0})
    rank = {c: k + 1 for k, c in enumerate(classes)}  # segment index, 1-based
    lut = np.array([rank.get(int(c), 0) for c in contiguous], np.uint16)
    areas = {c: 0 for c in classes}
    for c, n in zip(contiguous, counts, strict=True):
        if c >= 0:
            areas[int(c)] += int(n)
    return Sample(**image_fields, segment_map=lut[inverse.reshape(class_values.shape)],
                  segment_ids=[int(original_ids[c]) for c in classes], categories=classes,
                  iscrowd=[0] * len(classes), areas=[areas[c] for c in classes])


@dataclass
class Task:
    """One image for `convert_one`: picklable, so that worker processes can take it."""

    image_path: str
    label_path: str
    image_id: int
    label_format: str
    label_map: LabelMap
    original_ids: tuple[int, ...]


def convert_one(task: Task) -> Sample:
    """Reads, checks and converts one image/label pair (`BadInput` for bad input)."""
    data, fmt, height, width = read_image_checked(task.image_path)
    values = read_label_values(task.label_path, task.label_format)
    if values.shape != (height, width):
        raise BadInput("size mismatch", task.label_path,
                       f"label is {values.shape[1]}x{values.shape[0]} but the image "
                       f"{Path(task.image_path).name} is {width}x{height}")
    return class_map_to_sample(values, task.label_map, list(task.original_ids), task.label_path,
                               image_bytes=data, image_format=fmt, height=height, width=width,
                               image_id=task.image_id, filename=Path(task.image_path).name)


def run_pairs(pairs: list[tuple[Path, Path]], out: str | Path, label_format: str,
              label_map: LabelMap, categories: list[dict[str, Any]], dataset: str,
              source: dict[str, str], description: str, num_shards: int = 1,
              num_workers: int = 1, strict: bool = False, progress: bool = True,
              log=None) -> ConversionReport:
    """Converts (image, label) pairs in the given order and writes dataset.json.

    Args:
      pairs: (image file, label file); record i is pair i (image id i).
      categories: the dataset.json category table (its ``original_id`` goes to segments/id).
      dataset: dataset.json's "dataset" value. source: recorded in the split entry.
      Other arguments: see `converter.run_conversion`.
    """
    if not pairs:
        raise DataError(f"{description}: no images found")
    original_ids = tuple(int(c["original_id"]) for c in categories)
    tasks = [Task(str(image), str(label), i, label_format, label_map, original_ids)
             for i, (image, label) in enumerate(pairs)]
    report = run_conversion(tasks, convert_one, out, num_shards=num_shards,
                            num_workers=num_workers, strict=strict,
                            description=f"{description} {Path(out).name}", progress=progress,
                            log=log)
    info = report.as_dict()
    info["source"] = source
    update_dataset_info(out, dataset, categories, info)
    return report


# ---------------------------------------------------------------------------------------------
# The general converter: an images folder, a labels folder and a class list
# ---------------------------------------------------------------------------------------------


def default_color(index: int) -> list[int]:
    """A colour for a class with none given (the same rule as `ade20k`)."""
    return [int(v) for v in np.random.default_rng(index).integers(0, 256, 3)]


def read_classes(path: str | Path) -> list[dict[str, Any]]:
    """A class list: ``.txt`` (one name per line) or JSON (a list of names or of
    ``{"name", "color"}`` objects). Returns ``[{"name", "color" or None}, ...]``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise DataError(f"{path}: cannot read the class list ({e.strerror})") from None
    if path.suffix.lower() != ".json":
        entries: list[Any] = [line.strip() for line in text.splitlines() if line.strip()]
    else:
        try:
            entries = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: invalid JSON ({e})") from None
        if not isinstance(entries, list):
            raise DataError(f"{path}: a class list must be a JSON list")
    classes = []
    for i, e in enumerate(entries):
        if isinstance(e, str):
            name, color = e, None
        elif isinstance(e, dict) and isinstance(e.get("name"), str):
            name, color = e["name"], e.get("color")
        else:
            raise DataError(f"{path}: entry {i} must be a name or an object with 'name'")
        if color is not None and not (isinstance(color, list) and len(color) == 3 and all(
                isinstance(v, int) and 0 <= v <= 255 for v in color)):
            raise DataError(f"{path}: class {name!r}: 'color' must be [r, g, b] in 0..255")
        classes.append({"name": name.strip(), "color": color})
    if not classes:
        raise DataError(f"{path}: no classes")
    names = [c["name"] for c in classes]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DataError(f"{path}: class name(s) listed twice: {duplicates[:5]}")
    return classes


def read_palette(path: str | Path, names: list[str]) -> LabelMap:
    """A palette file: a JSON list of ``{"color": [r, g, b], "class": index | name | null}``
    (null = void). Returns the `LabelMap` of packed colours; unlisted colours are bad input."""
    path = Path(path)
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise DataError(f"{path}: cannot read the palette ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON ({e})") from None
    if not isinstance(entries, list):
        raise DataError(f"{path}: a palette must be a JSON list of {{'color', 'class'}}")
    values, classes, void = [], [], []
    for i, e in enumerate(entries):
        color = e.get("color") if isinstance(e, dict) else None
        if not (isinstance(color, list) and len(color) == 3 and all(
                isinstance(v, int) and 0 <= v <= 255 for v in color)):
            raise DataError(f"{path}: entry {i}: 'color' must be [r, g, b] in 0..255")
        packed = color[0] * 65536 + color[1] * 256 + color[2]
        if packed in values or packed in void:
            raise DataError(f"{path}: colour {color} listed twice")
        target = e.get("class")
        if target is None:
            void.append(packed)
            continue
        if isinstance(target, str):
            if target not in names:
                raise DataError(f"{path}: entry {i}: class {target!r} is not in the class list")
            index = names.index(target)
        elif isinstance(target, int) and not isinstance(target, bool) and \
                0 <= target < len(names):
            index = target
        else:
            raise DataError(f"{path}: entry {i}: 'class' must be a class name, an index in "
                            f"0..{len(names) - 1} or null, got {target!r}")
        values.append(packed)
        classes.append(index)
    return LabelMap(tuple(values), tuple(classes), tuple(void), max_value=-1,
                    unknown_kind="unknown colour")


def pair_by_stem(images: Path, labels: Path, label_suffix: str = ".png",
                 recursive: bool = False, image_suffix: str = "") -> list[tuple[Path, Path]]:
    """Images with their label files, matched by file stem.

    Image ``IMAGES/[SUB/]<stem><image_suffix>.<jpg|jpeg|png>`` pairs with
    ``LABELS/[SUB/]<stem><label_suffix>``: `image_suffix` is cut from the image's stem (images
    whose stem does not end with it are not part of the set), `label_suffix` is what follows
    the stem in the label's name. Cityscapes, for example: ``image_suffix="_leftImg8bit"``,
    ``label_suffix="_gtFine_labelIds.png"``, ``recursive=True`` (the city folders).

    Args:
      images, labels: the two folders.
      label_suffix: the label file name after the stem.
      recursive: look in subfolders too; SUB, the image's folder below `images`, is then
        repeated below `labels`.
      image_suffix: the end of an image's stem that its label's name does not have.

    Returns:
      (image, label) pairs sorted by the image's path below `images`.
    """
    for folder, what in ((images, "images"), (labels, "labels")):
        if not folder.is_dir():
            raise DataError(f"{folder}: {what} folder not found")
    found = images.rglob("*") if recursive else images.iterdir()
    image_files = sorted(p for p in found if p.suffix.lower() in IMAGE_SUFFIXES
                         and p.stem.endswith(image_suffix) and p.is_file())
    if not image_files:
        where = " (or below)" if recursive else ""
        ending = f" ending in {image_suffix}" if image_suffix else ""
        raise DataError(f"{images}{where}: no .jpg/.png images{ending}")
    pairs = []
    for p in image_files:
        stem = p.stem[: len(p.stem) - len(image_suffix)]
        pairs.append((p, labels / p.parent.relative_to(images) / (stem + label_suffix)))
    return pairs


def convert(images: str | Path, labels: str | Path, out: str | Path, classes: str | Path,
            ignore_value: int = 255, reduce_labels: bool = False,
            palette: str | Path | None = None, recursive: bool = False,
            image_suffix: str = "", label_suffix: str = "", num_shards: int = 1,
            num_workers: int = 1, strict: bool = False, progress: bool = True,
            log=None) -> ConversionReport:
    """Converts an images folder and a label-PNG folder (matched by file stem) to TFRecords.

    Args:
      images: folder of images (.jpg/.jpeg/.png). labels: folder of label PNGs.
      out: output prefix (``dataset.json`` is written beside the shards, "dataset": "semantic").
      classes: the class list (`read_classes`); class i is contiguous id i.
      ignore_value: label value that is void.
      reduce_labels: value 0 is void and value v is class v - 1.
      palette: a palette file (`read_palette`); the label PNGs are then RGB.
      recursive, image_suffix: see `pair_by_stem`; label_suffix: what follows the stem in a
        label's name before ``.png``.
      Other arguments: see `converter.run_conversion`.

    Without a palette, value v is class v (v - 1 with `reduce_labels`); values above the last
    class other than `ignore_value` are "unknown category".
    """
    class_list = read_classes(classes)
    names = [c["name"] for c in class_list]
    k = len(names)
    if palette is not None:
        if reduce_labels:
            raise DataError("--reduce-labels applies to label values, not to colour-coded "
                            "labels (--palette)")
        label_format = RGB
        label_map = read_palette(palette, names)
        original_ids = list(range(k))
    else:
        label_format = INDEX
        offset = 1 if reduce_labels else 0
        original_ids = [i + offset for i in range(k)]
        if ignore_value in original_ids:
            raise DataError(f"ignore value {ignore_value} is also the label of class "
                            f"{names[original_ids.index(ignore_value)]!r}")
        void = (ignore_value, 0) if reduce_labels else (ignore_value,)
        label_map = LabelMap(tuple(original_ids), tuple(range(k)), void,
                             max_value=k - 1 + offset)
    categories = [{"id": i, "original_id": original_ids[i], "name": c["name"], "isthing": 0,
                   "color": c["color"] or default_color(i)} for i, c in enumerate(class_list)]
    images, labels = Path(images), Path(labels)
    source = {"images": str(images), "labels": str(labels), "classes": str(classes)}
    if palette is not None:
        source["palette"] = str(palette)
    pairs = pair_by_stem(images, labels, label_suffix + ".png", recursive=recursive,
                         image_suffix=image_suffix)
    return run_pairs(pairs, out, label_format, label_map, categories,
                     "semantic", source, "semantic", num_shards=num_shards,
                     num_workers=num_workers, strict=strict, progress=progress, log=log)
