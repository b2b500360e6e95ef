"""The TFRecord schema written by the converters, sharded atomic writing and `dataset.json`.

One `tf.train.Example` per image:

====================  =======  ==================================================================
key                   type     meaning
====================  =======  ==================================================================
image/encoded         bytes    the image file as it was on disk (JPEG or PNG)
image/format          bytes    "jpeg" | "png" | ...
image/height          int64    image height in pixels
image/width           int64    image width in pixels
image/id              int64    image id (COCO image id; running index for ADE20K)
image/filename        bytes    file name of the image
segments/map          bytes    16-bit grayscale PNG, [height, width]: 0 = void (no segment),
                               k >= 1 = the k-th segment of the lists below
segments/id           int64[]  original segment id (COCO: R + 256 G + 256^2 B; ADE20K: label)
segments/category     int64[]  contiguous category id (index into dataset.json's categories)
segments/iscrowd      int64[]  1 for crowd regions
segments/area         int64[]  pixel count of the segment in `segments/map`
====================  =======  ==================================================================

The segment map stores per-image segment *indices* rather than the 24-bit panoptic ids so that
it fits a 16-bit PNG (up to 65535 segments per image) and the per-segment lists stay aligned with
it; the original ids are kept in `segments/id`.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from maskformer.errors import DataError

SCHEMA_VERSION = 1
MAX_SEGMENTS = 65535


@dataclass
class Sample:
    """One converted image, ready to be serialised.

    Attributes:
      image_bytes: the encoded image file.
      image_format: "jpeg" or "png".
      height, width: image size.
      image_id: integer image id.
      filename: the image's file name.
      segment_map: uint16 [height, width]; 0 void, k = k-th segment (1-based).
      segment_ids, categories, iscrowd, areas: per-segment int lists of equal length.
    """

    image_bytes: bytes
    image_format: str
    height: int
    width: int
    image_id: int
    filename: str
    segment_map: np.ndarray
    segment_ids: list[int]
    categories: list[int]
    iscrowd: list[int]
    areas: list[int]


def encode_segment_map(segment_map: np.ndarray) -> bytes:
    """Encodes a [H, W] segment-index map as a 16-bit PNG."""
    from PIL import Image

    if segment_map.max(initial=0) > MAX_SEGMENTS:
        raise DataError(f"more than {MAX_SEGMENTS} segments in one image")
    buffer = io.BytesIO()
    Image.fromarray(segment_map.astype(np.uint16)).save(buffer, format="PNG")
    return buffer.getvalue()


def serialize_sample(sample: Sample) -> bytes:
    """Serialises a `Sample` to a `tf.train.Example` string (schema in the module docstring)."""
    import tensorflow as tf

    def b(values):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))

    def i(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))

    feature = {
        "image/encoded": b([sample.image_bytes]),
        "image/format": b([sample.image_format.encode()]),
        "image/height": i([sample.height]),
        "image/width": i([sample.width]),
        "image/id": i([sample.image_id]),
        "image/filename": b([sample.filename.encode()]),
        "segments/map": b([encode_segment_map(sample.segment_map)]),
        "segments/id": i(sample.segment_ids),
        "segments/category": i(sample.categories),
        "segments/iscrowd": i(sample.iscrowd),
        "segments/area": i(sample.areas),
    }
    # deterministic=True writes the feature map sorted by key: without it the order (and so
    # the shard bytes) can differ from one process to the next.
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString(deterministic=True)


def _feature_spec() -> dict[str, Any]:
    import tensorflow as tf

    return {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/height": tf.io.FixedLenFeature([], tf.int64),
        "image/width": tf.io.FixedLenFeature([], tf.int64),
        "image/id": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
        "segments/map": tf.io.FixedLenFeature([], tf.string),
        "segments/id": tf.io.VarLenFeature(tf.int64),
        "segments/category": tf.io.VarLenFeature(tf.int64),
        "segments/iscrowd": tf.io.VarLenFeature(tf.int64),
        "segments/area": tf.io.VarLenFeature(tf.int64),
    }


def decode_image(data):
    """Decodes a JPEG/PNG string to uint8 [h, w, 3] RGB.

    JPEGs use the accurate integer IDCT, which gives the same pixels as PIL (what the original
    code decodes with); TensorFlow's default fast IDCT differs by up to ~10 levels.
    """
    import tensorflow as tf

    image = tf.cond(
        tf.io.is_jpeg(data),
        lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(data, channels=3, expand_animations=False))
    return tf.ensure_shape(image, [None, None, 3])


def parse_record(serialized):
    """Parses one record of this schema into decoded tensors (works eagerly and in tf.data).

    Returns:
      A dict: `image` uint8 [h, w, 3] RGB; `segment_map` int32 [h, w] (0 void, k = segment k);
      `categories` int32 [S]; `iscrowd` bool [S]; `segment_ids` int64 [S]; `areas` int64 [S];
      `image_id` int64 []; `height`, `width` int32 [].
    """
    import tensorflow as tf

    parsed = tf.io.parse_single_example(serialized, _feature_spec())
    image = decode_image(parsed["image/encoded"])
    segment_map = tf.cast(tf.io.decode_png(parsed["segments/map"], dtype=tf.uint16)[..., 0],
                          tf.int32)
    height = tf.cast(parsed["image/height"], tf.int32)
    width = tf.cast(parsed["image/width"], tf.int32)

    def dense(key):
        return tf.sparse.to_dense(parsed[key])

    return {
        "image": image,
        "segment_map": segment_map,
        "categories": tf.cast(dense("segments/category"), tf.int32),
        "iscrowd": dense("segments/iscrowd") > 0,
        "segment_ids": dense("segments/id"),
        "areas": dense("segments/area"),
        "image_id": parsed["image/id"],
        "height": height,
        "width": width,
    }


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def shard_paths(prefix: str | Path, num_shards: int) -> list[Path]:
    """Final shard names: ``PREFIX-00000-of-00004.tfrecord`` ..."""
    prefix = Path(prefix)
    return [prefix.with_name(f"{prefix.name}-{i:05d}-of-{num_shards:05d}.tfrecord")
            for i in range(num_shards)]


def shard_pattern(prefix: str | Path) -> str:
    """A glob that matches the shards of `prefix`."""
    prefix = Path(prefix)
    return str(prefix.with_name(f"{prefix.name}-?????-of-?????.tfrecord"))


class ShardedWriter:
    """Writes records to `num_shards` files under temporary names; `commit()` renames them.

    Record i goes to shard ``i % num_shards`` so that the assignment depends only on the order of
    the input. Until `commit()` the files carry a ``.tmp`` suffix, so an interrupted run never
    leaves files that look complete; `abort()` (or leaving the ``with`` block by an exception)
    removes them.
    """

    def __init__(self, prefix: str | Path, num_shards: int):
        import tensorflow as tf

        if num_shards < 1:
            raise DataError(f"--shards must be at least 1, got {num_shards}")
        self.final_paths = shard_paths(prefix, num_shards)
        self.final_paths[0].parent.mkdir(parents=True, exist_ok=True)
        self.tmp_paths = [p.with_name(p.name + ".tmp") for p in self.final_paths]
        self._writers = [tf.io.TFRecordWriter(str(p)) for p in self.tmp_paths]
        self.count = 0

    def write(self, record: bytes) -> None:
        self._writers[self.count % len(self._writers)].write(record)
        self.count += 1

    def _close(self) -> None:
        for w in self._writers:
            w.close()
        self._writers = []

    def commit(self) -> list[Path]:
        self._close()
        for tmp, final in zip(self.tmp_paths, self.final_paths, strict=True):
            os.replace(tmp, final)
        return self.final_paths

    def abort(self) -> None:
        self._close()
        for tmp in self.tmp_paths:
            tmp.unlink(missing_ok=True)

    def __enter__(self) -> ShardedWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


def atomic_write_text(path: str | Path, text: str) -> None:
    """Writes `text` to `path` through a temporary file and a rename."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def dataset_info_path(prefix: str | Path) -> Path:
    """`dataset.json` lives in the folder of the shards."""
    return Path(prefix).parent / "dataset.json"


def update_dataset_info(prefix: str | Path, dataset: str, categories: list[dict[str, Any]],
                        split_info: dict[str, Any]) -> Path:
    """Writes or updates ``dataset.json`` beside the shards of `prefix`.

    The file holds the category table and one entry per converted split (keyed by the prefix's
    base name). Converting a second split into the same folder adds its entry; a category table
    that differs from the one already there is an error.
    """
    path = dataset_info_path(prefix)
    info: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "dataset": dataset,
                            "categories": categories, "splits": {}}
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"{path}: cannot read existing dataset.json ({e})") from None
        if old.get("categories") != categories:
            raise DataError(f"{path}: exists with a different category table; use another "
                            "output folder")
        info["splits"] = old.get("splits", {})
    info["splits"][Path(prefix).name] = split_info
    atomic_write_text(path, json.dumps(info, indent=1))
    return path


def read_dataset_info(path: str | Path) -> dict[str, Any]:
    """Reads a ``dataset.json`` written by the converters."""
    path = Path(path)
    try:
        info = json.loads(path.read_text())
    except OSError as e:
        raise DataError(f"{path}: cannot read dataset.json ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON ({e})") from None
    if "categories" not in info:
        raise DataError(f"{path}: no 'categories' key")
    return info
