"""Segmenting image files: COCO panoptic PNG + JSON, semantic label PNG, instance RLE JSON,
and an overlay with class names, per image."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from maskformer.errors import DataError
from maskformer.images import read_image
from maskformer.inference import ImagePrediction, Predictor


@dataclass
class PredictResult:
    """What `predict_files` did.

    Attributes:
        written: the output stems (out_dir / NAME, see `output_names`), one per image
            segmented, in the order of the files.
        skipped: (file, message) of each file that could not be read, in the order of the
            files; the message is the `DataError`'s ("PATH: cannot read the image: REASON").
    """

    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def output_names(files: Sequence[str | Path], roots: Iterable[str | Path] = ()) -> list[Path]:
    """The NAME each file's results are written under (relative paths, distinct).

    The rule, in three steps:
    1. A file below one of the folders among `roots` (the first that holds it) is named by its
       path below that folder, other files by their file name; the suffix is dropped:
       root/a/x.png -> a/x (results in out_dir/a/), /photos/y.jpg -> y.
    2. Files whose names from step 1 are equal keep their suffix: x.jpg and x.png -> x.jpg and
       x.png (results x.jpg_panoptic.png, x.png_panoptic.png). The other names are unchanged.
    3. Names still equal (the same file name in two folders not among `roots`) get "-2", "-3",
       ... in the order of the files: x.jpg, x.jpg-2.
    Names are compared ignoring case, so the results are distinct also on a file system that
    does not tell X.jpg from x.jpg.
    """
    folders = [Path(r) for r in roots if Path(r).is_dir()]
    relative = [_relative_to_roots(Path(f), folders) for f in files]
    stems = [r.with_name(r.stem) if r.suffix else r for r in relative]
    count: dict[str, int] = {}
    for stem in stems:
        count[_key(stem)] = count.get(_key(stem), 0) + 1
    names = [stem if count[_key(stem)] == 1 else rel
             for stem, rel in zip(stems, relative, strict=True)]
    used: set[str] = set()
    distinct = []
    for name in names:
        candidate, k = name, 1
        while _key(candidate) in used:
            k += 1
            candidate = name.with_name(f"{name.name}-{k}")
        used.add(_key(candidate))
        distinct.append(candidate)
    return distinct


def _key(name: Path) -> str:
    return name.as_posix().casefold()


def _relative_to_roots(file: Path, folders: list[Path]) -> Path:
    for folder in folders:
        if file.is_relative_to(folder):
            return file.relative_to(folder)
        # the same folder written differently (relative / absolute, through a link)
        if file.resolve().is_relative_to(folder.resolve()):
            return file.resolve().relative_to(folder.resolve())
    return Path(file.name)


def predict_files(model, config, files: Sequence[str | Path], out_dir: str | Path,
                  batch_size: int = 4, roots: Iterable[str | Path] = (),
                  categories: list[dict] | None = None,
                  predictor: Predictor | None = None) -> PredictResult:
    """Segments image files with `Predictor` (the experiment's test-time pipeline) and writes,
    for each image NAME: NAME_panoptic.png/.json, NAME_semantic.png/.json, NAME_instances.json
    (when eval.instance) and NAME_overlay.png (of the panoptic map, or of the semantic map for
    a semantic model), in `out_dir` (in its sub-folders for names with folders).

    Each file is read with `maskformer.images.read_image`. A file that cannot be read is
    reported on stderr ("skipped PATH: cannot read the image: REASON"), left out and counted
    in the result; the others are segmented, `batch_size` readable images at a time.

    Args:
        files: the image files (e.g. from `maskformer.images.find_images`).
        out_dir: where the results go (created).
        roots: the folders the files were found in (e.g. the inputs given to `find_images`;
            files among them are ignored): results keep the files' paths below them, see
            `output_names` for the rule that makes the names distinct.
        categories: the dataset's categories in contiguous order (default: those of
            `data.dataset_info`).
        predictor: a `Predictor` of `model` and `config` to use (and its compiled forward
            pass), instead of a new one.

    Returns:
        The written stems and the skipped files.

    Raises:
        DataError: no files, a batch size under 1, or none of the files could be read.
    """
    files = [Path(f) for f in files]
    if not files:
        raise DataError("no image files to segment")
    if batch_size < 1:
        raise DataError(f"the batch size must be at least 1, got {batch_size}")
    names = output_names(files, roots)
    if predictor is None:
        predictor = Predictor(model, config, categories)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = PredictResult()
    pending: list[tuple[Path, Path, np.ndarray]] = []  # (file, name, image) of the next batch

    with tqdm(total=len(files), desc="predict", unit="image") as progress:

        def segment_pending() -> None:
            predictions = predictor.predict_images([image for _, _, image in pending])
            for (path, name, image), prediction in zip(pending, predictions, strict=True):
                stem = out_dir / name
                stem.parent.mkdir(parents=True, exist_ok=True)
                write_prediction(prediction, image, predictor.categories, path.name, stem)
                result.written.append(stem)
            progress.update(len(pending))
            pending.clear()

        for path, name in zip(files, names, strict=True):
            try:
                image = read_image(path)
            except DataError as e:
                tqdm.write(f"skipped {e}", file=sys.stderr)
                result.skipped.append((path, str(e)))
                progress.update(1)
                continue
            pending.append((path, name, image))
            if len(pending) == batch_size:
                segment_pending()
        if pending:
            segment_pending()
    if not result.written:
        raise DataError(f"none of the {len(files)} image files could be read; the first: "
                        f"{result.skipped[0][1]}")
    return result


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
        present, pixels = np.unique(prediction.semantic_map, return_counts=True)
        classes = [{"id": int(k), "name": categories[int(k)]["name"],
                    "original_id": categories[int(k)].get("original_id", int(k)),
                    "pixels": int(n)} for k, n in zip(present, pixels, strict=True)]
        Path(f"{stem}_semantic.json").write_text(json.dumps(
            {"file_name": file_name, "classes": classes}, indent=1))
        if prediction.panoptic_map is None:
            # A semantic model's picture: each class present is one segment (id = class + 1).
            present = np.unique(prediction.semantic_map)
            segments = [{"id": int(k) + 1, "category_id": int(k),
                         "isthing": int(categories[int(k)].get("isthing", 0))} for k in present]
            overlay(image, prediction.semantic_map.astype(np.int64) + 1, segments,
                    categories).save(f"{stem}_overlay.png")
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
