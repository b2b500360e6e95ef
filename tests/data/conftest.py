"""Fixtures for the data tests: a tiny shapes dataset and records built from arrays."""

import json
import shutil

import numpy as np
import pytest

from maskformer.data import records


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory):
    """A tiny generated shapes dataset (COCO panoptic format), shared read-only."""
    from maskformer.data import shapes

    out = tmp_path_factory.mktemp("shapes")
    shapes.generate(out, num_train=6, num_val=2, size=32, seed=3, progress=False)
    return out


@pytest.fixture
def shapes_copy(shapes_dir, tmp_path):
    """A private, modifiable copy of the shapes dataset."""
    dst = tmp_path / "shapes"
    shutil.copytree(shapes_dir, dst)
    return dst


def encode_png(array: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def sample_from_arrays(image: np.ndarray, segment_map: np.ndarray, categories, iscrowd=None,
                       image_id: int = 1) -> bytes:
    """A serialized record from a uint8 [h, w, 3] image (stored losslessly as PNG) and a
    segment-index map [h, w] (0 void, k = k-th segment)."""
    n = len(categories)
    iscrowd = iscrowd or [0] * n
    return records.serialize_sample(records.Sample(
        image_bytes=encode_png(image), image_format="png", height=image.shape[0],
        width=image.shape[1], image_id=image_id, filename=f"{image_id}.png",
        segment_map=segment_map.astype(np.uint16), segment_ids=[1000 + k for k in range(n)],
        categories=list(categories), iscrowd=list(iscrowd),
        areas=[int((segment_map == k + 1).sum()) for k in range(n)]))


def write_records(path, serialized_list) -> str:
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as w:
        for s in serialized_list:
            w.write(s)
    return str(path)


def rename_image_ids(path, name) -> None:
    """Rewrites the COCO-style file `path` with image ids `name[id]` (in `images` and in the
    annotations' `image_id`), as the Cityscapes and ADE20K exports name images by file stem."""
    data = json.loads(path.read_text())
    for image in data["images"]:
        image["id"] = name[image["id"]]
    for a in data["annotations"]:
        a["image_id"] = name[a["image_id"]]
    path.write_text(json.dumps(data))
