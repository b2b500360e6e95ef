"""The published category lists of the datasets of the released models, built in.

A converted model predicts class indices; to name them without the dataset on disk, the package
carries each dataset's category table in the format the converters write into dataset.json
(`coco_panoptic.categories_from_annotations`): one dict per class, in contiguous order::

    {"id": 0..K-1, "original_id": the dataset's id, "name": str, "isthing": 0 | 1,
     "color": [r, g, b]}

The tables are data files, ``builtin/<name>.json``, each naming its public source (and, in
``notes``, what the source does not give: COCO-Stuff's stuff colours, ADE20K-Full's colours and
thing split are drawn, not published). `shapes`, the synthetic dataset, is derived from
`shapes.CATEGORIES`, so the two cannot drift apart.

Lists and their contiguous order:

=====================  =====  =========================================================
name                   K      contiguous order (= the original models' class index)
=====================  =====  =========================================================
coco_panoptic          133    ascending COCO id (1..200): 80 things, then 53 stuff
ade20k_150             150    SceneParsing label 1..150 (100 things in the panoptic split)
coco_stuff_171         171    ascending COCO-Stuff id (1..182, 11 unused ids skipped)
cityscapes_19          19     train id 0..18 (8 things)
mapillary_vistas_65    65     v1.2 label value 0..64 (37 things)
ade20k_full_847        847    MaskFormer's train id 0..846
voc_21                 21     Pascal VOC label value 0..20: background, then 20 things
shapes                 5      ascending id: circle, square, triangle, sky, ground
coco_instance_80       80     the things of coco_panoptic, in its order
ade20k_instance_100    100    the things of ade20k_150, in its order
cityscapes_instance_8  8      the things of cityscapes_19, in its order
=====================  =====  =========================================================

The instance lists are derived, not files: an instance dataset's classes are the thing classes
of its panoptic list, renumbered 0..K-1 in the same order (detectron2's COCO instance metadata;
Mask2Former's ADE20K instance registration, whose category ids are ade20k_150's contiguous ids
of the same 100 classes; Cityscapes' hasInstances classes in train-id order); `original_id`,
`name` and `color` stay those of the panoptic list.
"""

from __future__ import annotations

import copy
import functools
import json
from importlib import resources
from typing import Any

from maskformer.errors import ConfigError

_FILE_LISTS = ("coco_panoptic", "ade20k_150", "coco_stuff_171", "cityscapes_19",
               "mapillary_vistas_65", "ade20k_full_847", "voc_21")
# Instance list -> the list whose thing classes it is.
_THINGS_OF = {"coco_instance_80": "coco_panoptic", "ade20k_instance_100": "ade20k_150",
              "cityscapes_instance_8": "cityscapes_19"}
_NAMES = (*_FILE_LISTS, "shapes", *_THINGS_OF)

# `data.dataset` values (config.DataConfig) -> the built-in lists that may describe the data,
# told apart by their number of classes. The shapes data are COCO panoptic files and are
# converted as such. A built-in name also stands for itself.
_FOR_DATASET: dict[str, tuple[str, ...]] = {
    "coco_panoptic": ("coco_panoptic", "shapes"),
    # Semantic records (ADE20K's converter and format): the published semantic datasets'
    # lists, told apart by their lengths.
    "ade20k_semantic": ("ade20k_150", "ade20k_full_847", "coco_stuff_171", "cityscapes_19",
                        "mapillary_vistas_65", "voc_21"),
}
_FOR_DATASET["semantic"] = _FOR_DATASET["ade20k_semantic"]
# Instance records (`maskformer data coco-instance`): the instance datasets' lists.
_FOR_DATASET["coco_instance"] = tuple(_THINGS_OF)


def builtin_names() -> list[str]:
    """The names of the built-in category lists (`builtin_categories` takes them)."""
    return list(_NAMES)


@functools.cache
def _load(name: str) -> tuple[dict[str, Any], ...]:
    if name == "shapes":
        from maskformer.data.coco_panoptic import categories_from_annotations
        from maskformer.data.shapes import CATEGORIES

        return tuple(categories_from_annotations(CATEGORIES))
    if name in _THINGS_OF:
        things = [c for c in _load(_THINGS_OF[name]) if c["isthing"]]
        return tuple({**c, "id": i} for i, c in enumerate(things))
    text = (resources.files("maskformer.data") / "builtin" / f"{name}.json").read_text(
        encoding="utf-8")
    return tuple(json.loads(text)["categories"])


def builtin_categories(name: str) -> list[dict[str, Any]]:
    """A built-in dataset's category table (a fresh copy: the caller may change it).

    Args:
      name: one of `builtin_names()`, e.g. ``"coco_panoptic"``.

    Returns:
      ``[{"id", "original_id", "name", "isthing", "color"}, ...]`` with ``id`` = list index.

    Raises:
      ConfigError: for an unknown name (the message lists the known ones).
    """
    if name not in _NAMES:
        raise ConfigError(f"unknown built-in category list {name!r}; known: "
                          f"{', '.join(_NAMES)}")
    return copy.deepcopy(list(_load(name)))


def builtin_for_dataset(data_dataset: str, num_classes: int) -> list[dict[str, Any]] | None:
    """The built-in list that fits an experiment: one of those `data_dataset` (the config's
    ``data.dataset``, or a built-in name) may be, with `num_classes` entries.

    Returns:
      A copy of the list, or None when no built-in list of that length goes with the dataset
      (e.g. the smoke experiments' 7 classes, or a dataset with no built-in list).
    """
    if data_dataset in _FOR_DATASET:
        candidates = _FOR_DATASET[data_dataset]
    elif data_dataset in _NAMES:
        candidates = (data_dataset,)
    else:
        return None
    for name in candidates:
        if len(_load(name)) == num_classes:
            return builtin_categories(name)
    return None
