"""How hard it is to name a shape of the shapes dataset from what a model sees.

Cuts every "thing" of a COCO-panoptic dataset (the demo's, `maskformer data shapes`) out of its
image: a square crop around the segment's box with a margin, resized to 32x32. A small CNN
(three 3x3 convolutions, 32-64-64 channels, global average pooling) is trained on the training
split's crops and scored on the validation split's, from three inputs: the image crop only,
the segment's visible mask only (its silhouette), and both.

    KERAS_BACKEND=tensorflow python benchmarks/shape_crops.py DATA_DIR [--epochs 30]

DATA_DIR holds `images/{train,val}/` and `annotations/panoptic_{train,val}[.json]`, as written by
`maskformer data shapes` or `maskformer demo` (OUT/data).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from maskformer.data.coco_panoptic import rgb_to_id  # noqa: E402

CROP = 32
INPUTS = {"image crop": slice(0, 3), "visible mask": slice(3, 4), "image + mask": slice(0, 4)}


def _resize(channel: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(channel.astype(np.float32)).resize((CROP, CROP),
                                                                        Image.BILINEAR))


def load_crops(data_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """[T, 32, 32, 4] crops (RGB in 0..1, then the visible mask) and [T] class indices."""
    annotations = json.loads((data_dir / "annotations" / f"panoptic_{split}.json").read_text())
    things = sorted(c["id"] for c in annotations["categories"] if c["isthing"])
    names = {c["id"]: c["name"] for c in annotations["categories"]}
    images = {im["id"]: im["file_name"] for im in annotations["images"]}
    crops, labels = [], []
    for ann in annotations["annotations"]:
        path = data_dir / "images" / split / images[ann["image_id"]]
        image = np.asarray(Image.open(path).convert("RGB"), np.float32) / 255.0
        ids = rgb_to_id(np.asarray(Image.open(data_dir / "annotations" / f"panoptic_{split}" /
                                              ann["file_name"]).convert("RGB")))
        for segment in ann["segments_info"]:
            if segment["category_id"] not in things:
                continue
            x0, y0, w, h = segment["bbox"]
            half = max(w, h) // 2 + 3
            cx, cy = x0 + w // 2, y0 + h // 2
            stack = np.concatenate([image, (ids == segment["id"])[..., None]], axis=-1)
            pad = half + 1
            stack = np.pad(stack, ((pad, pad), (pad, pad), (0, 0)))
            window = stack[cy - half + pad:cy + half + pad, cx - half + pad:cx + half + pad]
            crops.append(np.stack([_resize(window[..., c]) for c in range(4)], axis=-1))
            labels.append(things.index(segment["category_id"]))
    return (np.asarray(crops, np.float32), np.asarray(labels, np.int32),
            [names[t] for t in things])


def train_and_score(x_train, y_train, x_val, y_val, num_classes: int, epochs: int,
                    seed: int = 0) -> tuple[float, float]:
    """(train accuracy, validation accuracy) of the small CNN."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input(x_train.shape[1:]),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.MaxPool2D(),
        keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
        keras.layers.MaxPool2D(),
        keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(num_classes),
    ])
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
    return (float(model.evaluate(x_train, y_train, verbose=0)[1]),
            float(model.evaluate(x_val, y_val, verbose=0)[1]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args(argv)
    x_train, y_train, names = load_crops(args.data_dir, "train")
    x_val, y_val, _ = load_crops(args.data_dir, "val")
    print(f"{len(y_train)} training and {len(y_val)} validation things; classes {names}, "
          f"training counts {np.bincount(y_train).tolist()}; chance "
          f"{np.bincount(y_val).max() / len(y_val):.2f} on val")
    for name, channels in INPUTS.items():
        train_acc, val_acc = train_and_score(x_train[..., channels], y_train,
                                             x_val[..., channels], y_val, len(names), args.epochs)
        print(f"    {name:13s} accuracy: train {train_acc:.2f}, val {val_acc:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
