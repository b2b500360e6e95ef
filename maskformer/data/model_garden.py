"""Reading TFRecords written by TF Model Garden's COCO converter with panoptic masks.

Model Garden's ``official/vision/data/create_coco_tf_record.py`` with
``--panoptic_annotations_file``, ``--panoptic_masks_dir`` and ``--include_panoptic_masks``
writes, per image (checked against records that converter made, in
``tests/testdata/model_garden/``):

=================================  =======  ==========================================================
key                                type     meaning
=================================  =======  ==========================================================
image/encoded                      bytes    the image file as on disk
image/format                       bytes    ``jpg`` (always, whatever the file is)
image/height, image/width          int64    size, from the annotation file's ``images``
image/source_id                    bytes    the COCO image id as a decimal string
image/filename, image/key/sha256   bytes    file name; SHA-256 of the image file
image/panoptic/category_mask       bytes    8-bit PNG: original category id per pixel, 0 = void
image/panoptic/instance_mask       bytes    8-bit PNG: a thing pixel holds 1 + the position of
                                            its segment in ``segments_info`` (counting every
                                            entry, stuff and crowd too); stuff and void hold 0
image/segmentation/class/encoded   bytes    8-bit PNG: things 1, stuff category - 90, void 0;
                                            not used here
image/object/...                   lists    detection keys (with ``--object_annotations_file``);
                                            not used here
=================================  =======  ==========================================================

Without ``--include_panoptic_masks`` only ``image/segmentation/class/encoded`` is written, and
an image that the panoptic file does not annotate gets no panoptic key at all.

What this reader recovers, and what it cannot:

* Segments are the distinct (category, instance) pairs of the two masks. Their order is the
  things in ``segments_info`` order (by instance id), then the stuff by category id. Category
  ids are mapped to contiguous ids with a category table (``dataset.json`` or the panoptic
  annotation JSON); there is no built-in COCO table.
* Crowd flags are not in the panoptic keys. Without ``--panoptic_skip_crowd`` a crowd segment
  is written like any other and reads as a non-crowd target; with it, crowd pixels are void.
  The latter gives the same training targets as our records (which keep crowd segments out of
  the targets), with crowd pixels void instead of crowd in the maps.
* Two stuff segments of one category in one image merge (they share (category, 0)).
* Instance ids are 8-bit: a thing listed at position 255 or later in ``segments_info`` cannot
  be stored (the converter wraps the id under NumPy 1.x).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import tensorflow as tf

from maskformer.data.records import DataError, decode_image

CATEGORY_MASK_KEY = "image/panoptic/category_mask"
INSTANCE_MASK_KEY = "image/panoptic/instance_mask"
MASK_KEYS = (CATEGORY_MASK_KEY, INSTANCE_MASK_KEY)
CONVERTER_HINT = ("write the records with Model Garden's create_coco_tf_record.py "
                  "--include_panoptic_masks")
# Sort key of a stuff segment: after every thing (instance ids are 1..255).
_STUFF_RANK = 256


def category_lookup(path: str | Path) -> list[int]:
    """Original-to-contiguous category table from a ``dataset.json`` or COCO panoptic JSON.

    Returns:
      A list of 256 ints: entry c is the contiguous id of original category c, or -1.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise DataError(f"{path}: cannot read category table ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON ({e})") from None
    cats = data.get("categories") if isinstance(data, dict) else None
    if not cats:
        raise DataError(f"{path}: no 'categories' list (expected dataset.json or a COCO "
                        "panoptic annotation file)")
    if "original_id" in cats[0]:
        pairs = [(c["original_id"], c["id"]) for c in cats]
    else:
        pairs = [(c["id"], k) for k, c in enumerate(sorted(cats, key=lambda c: c["id"]))]
    table = [-1] * 256
    for original, contiguous in pairs:
        if not 0 < original < 256:
            raise DataError(f"{path}: category id {original} does not fit Model Garden's "
                            "8-bit category mask")
        table[original] = contiguous
    return table


def check_records(files: Sequence[str]) -> None:
    """Checks that the first record of each file has the panoptic masks this reader needs.

    One record per file is read, so a wrong format or records written without
    ``--include_panoptic_masks`` fail here, naming the file and the key, instead of deep inside
    `tf.data`. (A later record that lacks the masks still fails in `parse_record`.)

    Raises:
      DataError: a file cannot be read, or its first record is not a Model Garden panoptic
        record.
    """
    for path in files:
        try:
            first = next(iter(tf.data.TFRecordDataset(path).take(1)), None)
        except (tf.errors.OpError, OSError) as e:
            raise DataError(f"{path}: cannot read records ({getattr(e, 'message', e)})") from None
        if first is None:
            continue
        try:
            feature = tf.train.Example.FromString(first.numpy()).features.feature
        except Exception:  # a protobuf DecodeError: not a tf.train.Example
            raise DataError(f"{path}: record 1 is not a tf.train.Example") from None
        missing = [k for k in MASK_KEYS
                   if k not in feature or not feature[k].bytes_list.value]
        if not missing:
            continue
        if "segments/map" in feature:
            raise DataError(f"{path}: record 1 has no {missing[0]}: it is a record of "
                            "`maskformer data`, set data.record_format=maskformer")
        raise DataError(f"{path}: record 1 has no {missing[0]} (data.record_format="
                        f"model_garden); {CONVERTER_HINT}")


def parse_record(serialized, lookup: list[int]):
    """Parses one Model Garden record into the same dict as `records.parse_record`.

    Args:
      serialized: scalar string tensor.
      lookup: from `category_lookup`.

    Returns:
      ``image`` uint8 [h, w, 3], ``segment_map`` int32 [h, w] (0 void), ``categories`` int32
      [S], ``iscrowd`` bool [S] (all False), ``segment_ids`` int64 [S] (category * 256 +
      instance), ``areas`` int64 [S], ``image_id`` int64, ``height``, ``width`` int32.
    """
    spec = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/height": tf.io.FixedLenFeature([], tf.int64),
        "image/width": tf.io.FixedLenFeature([], tf.int64),
        "image/source_id": tf.io.FixedLenFeature([], tf.string, default_value="-1"),
        CATEGORY_MASK_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
        INSTANCE_MASK_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
    }
    parsed = tf.io.parse_single_example(serialized, spec)
    checks = [tf.debugging.Assert(
        tf.strings.length(parsed[key]) > 0,
        [f"a Model Garden record has no {key}; {CONVERTER_HINT}. image/source_id:",
         parsed["image/source_id"]]) for key in MASK_KEYS]
    with tf.control_dependencies(checks):
        image = decode_image(parsed["image/encoded"])
        category = tf.io.decode_png(parsed[CATEGORY_MASK_KEY], channels=1)[..., 0]
        instance = tf.io.decode_png(parsed[INSTANCE_MASK_KEY], channels=1)[..., 0]
    category = tf.cast(category, tf.int32)
    instance = tf.cast(instance, tf.int32)
    # Sort key per pixel: things by instance id (segments_info order), then stuff by category;
    # void (category 0) is 0, below every segment.
    rank = tf.where(instance > 0, instance, _STUFF_RANK)
    key = tf.where(category > 0, rank * 256 + category, 0)
    flat = tf.reshape(key, [-1])
    keys = tf.sort(tf.unique(tf.concat([[0], flat], 0)).y)  # [S + 1], keys[0] = 0 (void)
    segment_map = tf.reshape(tf.searchsorted(keys, flat, out_type=tf.int32), tf.shape(key))
    keys = keys[1:]
    categories = keys % 256
    instances = tf.where(keys // 256 == _STUFF_RANK, 0, keys // 256)
    contiguous = tf.gather(tf.constant(lookup, tf.int32), categories)
    tf.debugging.assert_non_negative(
        contiguous, message="Model Garden record: a category id of image/panoptic/category_mask "
        "is not in the category table (data.dataset_info)")
    num = tf.shape(keys)[0]
    areas = tf.math.bincount(tf.reshape(segment_map, [-1]), minlength=num + 1, maxlength=num + 1,
                             dtype=tf.int64)[1:]
    return {
        "image": image,
        "segment_map": segment_map,
        "categories": contiguous,
        "iscrowd": tf.zeros([num], tf.bool),
        "segment_ids": tf.cast(categories * 256 + instances, tf.int64),
        "areas": areas,
        "image_id": tf.strings.to_number(parsed["image/source_id"], tf.int64),
        "height": tf.cast(parsed["image/height"], tf.int32),
        "width": tf.cast(parsed["image/width"], tf.int32),
    }
