"""ADE20K (SceneParsing, 150 classes) semantic labels -> TFRecords (schema in `records`).

Images ``IMAGES/<name>.jpg`` pair with labels ``LABELS/<name>.png`` (8-bit, 0 = "other",
ignored; 1..150 = the classes). Label v becomes contiguous category v - 1; 0 becomes void
(255 in the semantic maps of the pipeline). Each class present in an image is one segment, in
class order, so the pipeline's targets are the original semantic mapper's (one mask per class).
"""

from __future__ import annotations

from pathlib import Path

from maskformer.data.converter import ConversionReport
from maskformer.data.records import DataError
from maskformer.data.semantic import INDEX, LabelMap, default_color, pair_by_stem, run_pairs

NUM_CLASSES = 150


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
    names = read_class_names(class_names, num_classes)
    pairs = pair_by_stem(images, labels)
    # Label v is class v - 1; 0 ("other") is void; values above the last class are bad input.
    values = tuple(range(1, num_classes + 1))
    label_map = LabelMap(values, tuple(range(num_classes)), void_values=(0,),
                         max_value=num_classes)
    categories = [{"id": i, "original_id": i + 1, "name": n, "isthing": 0,
                   "color": default_color(i)} for i, n in enumerate(names)]
    return run_pairs(pairs, out, INDEX, label_map, categories, "ade20k_semantic",
                     {"images": str(images), "labels": str(labels)}, "ade20k-semantic",
                     num_shards=num_shards, num_workers=num_workers, strict=strict,
                     progress=progress, log=log)
