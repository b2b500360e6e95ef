"""Dataset presets of the semantic converter: each reads its dataset's own layout and maps the
label values through a built-in category list (`categories.builtin_categories`, ``original_id``
= the label value), then converts with `semantic.run_pairs` ("dataset": "semantic").

=================  ======================================================  ==================
preset             layout under ROOT                                       list
=================  ======================================================  ==================
voc                [VOCdevkit/][VOC2012/] JPEGImages/X.jpg,                voc_21
                   SegmentationClass/X.png, ImageSets/Segmentation/S.txt
cityscapes         leftImg8bit/S/CITY/X_leftImg8bit.png,                   cityscapes_19
                   gtFine/S/CITY/X_gtFine_labelIds.png
mapillary_vistas   S/images/X.jpg, S/labels/X.png (v1.2)                   mapillary_vistas_65
coco_stuff_10k     images/X.jpg, annotations/X.mat (array S),              coco_stuff_171
                   imageLists/S.txt
ade20k_full        index_ade20k.pkl (or images/ADE/S/**/X.jpg) with        ade20k_full_847
                   X_seg.png beside each image
=================  ======================================================  ==================

ADE20K-Full's image list, ``index_ade20k.pkl``, is a pickle, and unpickling can run code that
the file names. It is read with `_IndexUnpickler`, which admits only numpy arrays, dtypes and
scalars besides plain containers (all the index holds) and refuses anything else with an error
naming it. The project's checkpoint unpickler (`conversion.safe_pickle`) has the same rule but
lives above `data` in the import layout (shared/ARCHITECTURE.md), so this small one is kept here.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from maskformer.data.categories import builtin_categories
from maskformer.data.converter import ConversionReport
from maskformer.data.records import DataError
from maskformer.data.semantic import (
    ADE20K_FULL,
    INDEX,
    MAT,
    MAT_V10,
    LabelMap,
    pair_by_stem,
    run_pairs,
)


def _label_map(categories, void_values=(), max_value=None) -> LabelMap:
    return LabelMap(tuple(int(c["original_id"]) for c in categories),
                    tuple(int(c["id"]) for c in categories), tuple(void_values), max_value)


def _need_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DataError(f"{path}: {what} folder not found")
    return path


def _read_list(path: Path) -> list[str]:
    try:
        return [line.strip().split()[0] for line in path.read_text().splitlines()
                if line.strip()]
    except OSError as e:
        raise DataError(f"{path}: cannot read the image list ({e.strerror})") from None


def _common(kw: dict) -> dict:
    """The `run_pairs` options among a preset's keyword arguments; anything else is a mistake."""
    allowed = ("num_shards", "num_workers", "strict", "progress", "log")
    unexpected = sorted(set(kw) - set(allowed))
    if unexpected:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(unexpected)}")
    return kw


def convert_voc(root: str | Path, split: str, out: str | Path, **kw) -> ConversionReport:
    """Pascal VOC 2012: the images listed in ``ImageSets/Segmentation/<split>.txt``.

    ``SegmentationClass`` PNGs are palette PNGs whose indices are the labels: 0 background,
    1..20 the classes, 255 the void border; 21..254 are "unknown category".
    ROOT may be ``VOCdevkit/VOC2012``, ``VOCdevkit`` or the folder above it.
    """
    root = Path(root)
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "ImageSets" / "Segmentation").is_dir():
            root = candidate
            break
    else:
        raise DataError(f"{root}: no ImageSets/Segmentation (expected VOCdevkit/VOC2012)")
    names = _read_list(root / "ImageSets" / "Segmentation" / f"{split}.txt")
    pairs = [(root / "JPEGImages" / f"{n}.jpg", root / "SegmentationClass" / f"{n}.png")
             for n in names]
    categories = builtin_categories("voc_21")
    return run_pairs(pairs, out, INDEX, _label_map(categories, (255,), 20), categories,
                     "semantic", {"root": str(root), "split": split}, "voc", **_common(kw))


def convert_cityscapes(root: str | Path, split: str, out: str | Path, **kw) -> ConversionReport:
    """Cityscapes fine labels: ``*_gtFine_labelIds.png`` label ids -> the 19 train ids; every
    other id (including the ignored 0..6, 9, 10, 14..16, 18, 29, 30) is void."""
    root = Path(root)
    images = _need_dir(root / "leftImg8bit" / split, "images")
    labels = _need_dir(root / "gtFine" / split, "labels")
    pairs = pair_by_stem(images, labels, "_gtFine_labelIds.png", recursive=True,
                         image_suffix="_leftImg8bit")
    categories = builtin_categories("cityscapes_19")
    return run_pairs(pairs, out, INDEX, _label_map(categories), categories, "semantic",
                     {"root": str(root), "split": split}, "cityscapes", **_common(kw))


def convert_mapillary_vistas(root: str | Path, split: str, out: str | Path,
                             **kw) -> ConversionReport:
    """Mapillary Vistas v1.2: label values 0..64 are the classes, 65 ("Unlabeled") is void and
    larger values are "unknown category". Labels in ``SPLIT/labels`` (or ``SPLIT/v1.2/labels``
    of the v2.0 download)."""
    root = Path(root)
    images = _need_dir(root / split / "images", "images")
    labels = root / split / "labels"
    if not labels.is_dir() and (root / split / "v1.2" / "labels").is_dir():
        labels = root / split / "v1.2" / "labels"
    _need_dir(labels, "labels")
    pairs = [(p, labels / f"{p.stem}.png") for p in sorted(images.glob("*.jpg"))]
    categories = builtin_categories("mapillary_vistas_65")
    return run_pairs(pairs, out, INDEX, _label_map(categories, (65,), 65), categories,
                     "semantic", {"root": str(root), "split": split}, "mapillary-vistas",
                     **_common(kw))


COCO_STUFF_VERSIONS = ("1.0", "1.1")


def convert_coco_stuff_10k(root: str | Path, split: str, out: str | Path,
                           version: str = "1.0", **kw) -> ConversionReport:
    """COCO-Stuff-10K: the images of ``imageLists/<split>.txt`` with the label array ``S`` of
    ``annotations/<name>.mat``.

    Args:
      version: the release of the .mat files. "1.0" (what MaskFormer's README downloads and its
        prepare_coco_stuff_10k_v1.0_sem_seg.py reads: MATLAB v7.3 files, S = 1 for unlabeled,
        2..81 the 80 things, 82..172 the 91 stuff classes): class = S - 2, so 2..172 become
        0..170; 0 and 1 are void. "1.1" (MATLAB v5 files, S = 0 for unlabeled, else the
        COCO-Stuff id 1..182): the ids of the 171 classes become 0..170 in ascending order (the
        same classes in the same order); 0 and the 11 thing ids COCO never annotated are void.
        Values above 172 (v1.0) or 182 (v1.1) are "unknown category"; a file whose class-name
        list does not fit `version` is reported ("corrupt label") rather than misread.
      Other arguments: see `semantic.run_pairs`.
    """
    if version not in COCO_STUFF_VERSIONS:
        raise DataError(f"COCO-Stuff-10K version must be one of {', '.join(COCO_STUFF_VERSIONS)},"
                        f" got {version!r}")
    root = Path(root)
    names = _read_list(root / "imageLists" / f"{split}.txt")
    pairs = [(root / "images" / f"{n}.jpg", root / "annotations" / f"{n}.mat") for n in names]
    categories = builtin_categories("coco_stuff_171")
    if version == "1.0":
        label_format = MAT_V10
        label_map = LabelMap(tuple(range(2, 173)), tuple(range(171)), (0, 1), max_value=172)
    else:
        label_format = MAT
        label_map = _label_map(categories, (0,), 182)
    return run_pairs(pairs, out, label_format, label_map, categories, "semantic",
                     {"root": str(root), "split": split, "version": version},
                     "coco-stuff-10k", **_common(kw))


# The globals a pickle of numpy arrays and plain containers refers to (numpy 1 and 2 module
# names; `_frombuffer` rebuilds an array under protocol 5), and the one function protocol 2
# uses to store raw bytes. All are pure constructors.
_INDEX_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _IndexUnpickler(pickle.Unpickler):
    """Loads ``index_ade20k.pkl`` without running code from it (module docstring)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _INDEX_GLOBALS or (module == "numpy.dtypes"
                                                and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global '{module}.{name}': the index "
                                     "may hold only numpy arrays and plain containers")


def _ade20k_full_files(root: Path, split: str) -> list[Path]:
    """The split's images: from ``index_ade20k.pkl`` when present (its ``folder`` and
    ``filename`` lists; a ``_val_`` file name is validation), else every ``*.jpg`` under
    ``images/ADE/<split>``, sorted."""
    index = root / "index_ade20k.pkl"
    if index.is_file():
        try:
            with open(index, "rb") as f:
                table = _IndexUnpickler(f, encoding="latin1").load()
            folders, files = list(table["folder"]), list(table["filename"])
        except (pickle.UnpicklingError, EOFError, ValueError, KeyError, TypeError,
                AttributeError, ImportError, OSError) as e:
            raise DataError(f"{index}: cannot read the image index ({e})") from None
        if len(folders) != len(files):
            raise DataError(f"{index}: {len(folders)} folders but {len(files)} file names")
        want_val = split == "validation"
        # The index's folders start with the dataset folder's name (ADE20K_2021_17_01/images/
        # ADE/...; MaskFormer joins them to the folder above it): ROOT takes that first part's
        # place, so a renamed dataset folder still works.
        out = []
        for d, f in zip(folders, files, strict=True):
            if (str(f).split("_")[1:2] == ["val"]) == want_val:
                parts = Path(str(d)).parts
                out.append(root.joinpath(*parts[1:]) / str(f))
        return out
    images = _need_dir(root / "images" / "ADE" / split, "images")
    return sorted(images.rglob("*.jpg"))


def convert_ade20k_full(root: str | Path, split: str, out: str | Path,
                        **kw) -> ConversionReport:
    """ADE20K-Full (ADE20K_2021_17_01): the object class of a pixel of ``X_seg.png`` is
    R // 10 * 256 + G; the 847 listed classes (MaskFormer's) become 0..846, every other class
    (and 0, unlabeled) is void. Images are kept at full size (MaskFormer's preparation script
    shrinks them to a 512 short side first; the input pipeline resizes anyway)."""
    root = Path(root)
    if split not in ("training", "validation"):
        raise DataError(f"ADE20K-Full split must be 'training' or 'validation', got {split!r}")
    pairs = [(p, p.with_name(p.stem + "_seg.png")) for p in _ade20k_full_files(root, split)]
    categories = builtin_categories("ade20k_full_847")
    return run_pairs(pairs, out, ADE20K_FULL, _label_map(categories), categories, "semantic",
                     {"root": str(root), "split": split}, "ade20k-full", **_common(kw))


PRESETS = {
    "voc": convert_voc,
    "cityscapes": convert_cityscapes,
    "mapillary-vistas": convert_mapillary_vistas,
    "coco-stuff-10k": convert_coco_stuff_10k,
    "ade20k-full": convert_ade20k_full,
}
