"""Reading TFRecords written by TF Model Garden's COCO converter with panoptic masks.

Model Garden's ``official/vision/data/create_coco_tf_record.py`` (with
``--panoptic_annotations_file``, ``--panoptic_masks_dir`` and ``--include_panoptic_masks``)
writes, besides the detection keys, per image:

=================================  =======  ==========================================================
key                                type     meaning (as that converter writes it)
=================================  =======  ==========================================================
image/encoded                      bytes    the JPEG
image/height, image/width          int64    size
image/source_id                    bytes    the COCO image id as a decimal string
image/panoptic/category_mask       bytes    8-bit PNG: original COCO category id per pixel, 0 = void
image/panoptic/instance_mask       bytes    8-bit PNG: thing pixels hold (index of the segment in
                                            segments_info) + 1, stuff and void pixels 0
image/segmentation/class/encoded   bytes    8-bit PNG: semantic mask (things as 1, stuff as
                                            category - 90, void 0); not used here
=================================  =======  ==========================================================

What this reader supports and what it cannot recover:

* Segments are the distinct (category, instance) pairs of the two masks: a thing segment is
  (category, instance id), a stuff segment is (category, 0). Category ids are mapped to
  contiguous ids with a category table (``dataset.json`` or the panoptic annotation JSON);
  there is no built-in COCO table. A category absent from the table fails with its id.
* Crowd flags are not in the panoptic keys: every segment reads as non-crowd. Records written
  with ``--panoptic_skip_crowd`` have crowd pixels as void, which matches the training targets
  of the original (crowd segments dropped).
* The instance mask is 8-bit: an image with more than 255 segments has wrapped instance ids in
  such records; segments whose ids collide merge. Use the ``coco-panoptic`` converter instead
  for such data.
* Segment order is the order of first appearance in raster scan, not the JSON order.
"""

from __future__ import annotations

import json
from pathlib import Path

import tensorflow as tf

from maskformer.data.records import DataError, decode_image

CATEGORY_MASK_KEY = "image/panoptic/category_mask"
INSTANCE_MASK_KEY = "image/panoptic/instance_mask"


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
        CATEGORY_MASK_KEY: tf.io.FixedLenFeature([], tf.string),
        INSTANCE_MASK_KEY: tf.io.FixedLenFeature([], tf.string),
    }
    parsed = tf.io.parse_single_example(serialized, spec)
    image = decode_image(parsed["image/encoded"])
    category = tf.cast(tf.io.decode_png(parsed[CATEGORY_MASK_KEY], channels=1)[..., 0], tf.int32)
    instance = tf.cast(tf.io.decode_png(parsed[INSTANCE_MASK_KEY], channels=1)[..., 0], tf.int32)
    key = tf.where(category > 0, category * 256 + instance, 0)
    # A leading 0 makes void the first unique value, so its index is 0 and segments are 1..S.
    unique, index = tf.unique(tf.concat([[0], tf.reshape(key, [-1])], 0))
    segment_map = tf.reshape(index[1:], tf.shape(key))
    keys = unique[1:]
    contiguous = tf.gather(tf.constant(lookup, tf.int32), keys // 256)
    tf.debugging.assert_non_negative(
        contiguous, message="Model Garden record: a category id of image/panoptic/category_mask "
        "is not in the category table")
    areas = tf.math.bincount(index[1:], minlength=tf.shape(unique)[0], dtype=tf.int64)[1:]
    return {
        "image": image,
        "segment_map": segment_map,
        "categories": contiguous,
        "iscrowd": tf.zeros(tf.shape(keys), tf.bool),
        "segment_ids": tf.cast(keys, tf.int64),
        "areas": areas,
        "image_id": tf.strings.to_number(parsed["image/source_id"], tf.int64),
        "height": tf.cast(parsed["image/height"], tf.int32),
        "width": tf.cast(parsed["image/width"], tf.int32),
    }
