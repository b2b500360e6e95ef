"""Where a trained model loses its "thing" segments: finding them or naming them.

For every ground-truth thing of a split, the query whose binary mask (logit > 0, upsampled to
the input) overlaps it best: is its IoU above 0.5 (found), and is its arg-max class the
ground-truth one (named)? How many queries draw a found thing (IoU > 0.5), and does any of them
name it? Then a linear probe: a softmax regression, fitted on the training
split, from each feature map average-pooled inside the ground-truth mask to the thing's class,
scored on the validation split (how much class information that pooling leaves).

    KERAS_BACKEND=tensorflow python benchmarks/thing_classification.py MODEL_DIR \
        [--train-batches 32]

MODEL_DIR is a model folder written by `maskformer train` or `maskformer demo` (OUT/model); the
data files are those of its config.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from scipy.special import log_softmax  # noqa: E402

from maskformer.data.pipeline import build_dataset  # noqa: E402
from maskformer.inference import read_categories  # noqa: E402
from maskformer.model_dir import load_config, load_model  # noqa: E402
from maskformer.resize import upsample_bilinear  # noqa: E402

FEATURES = ("res2", "res3", "res4", "res5", "mask_features")


def _pool(feature: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Average of `feature` [h, w, C] inside `mask` [H, W] (area-downsampled to h x w)."""
    s = mask.shape[0] // feature.shape[0]
    weight = mask.reshape(feature.shape[0], s, feature.shape[1], s).mean(axis=(1, 3))
    return (feature * weight[..., None]).sum(axis=(0, 1)) / max(weight.sum(), 1e-6)


def collect(model, config, files: str, batches: int, isthing: np.ndarray):
    """Per ground-truth thing: class, found, named, and the pooled features."""
    rows, pooled = [], {name: [] for name in FEATURES}
    dataset = build_dataset(config.data, files, training=False, batch_size=16).take(batches)
    for images, targets in dataset:
        x = model.normalize(keras.ops.convert_to_tensor(images))
        features = model.backbone(x)
        features["mask_features"] = model.pixel_decoder(features)["mask_features"]
        features = {k: keras.ops.convert_to_numpy(v) for k, v in features.items()}
        out = model(images, training=False)
        probs = keras.ops.convert_to_numpy(keras.ops.softmax(out["pred_logits"], axis=-1))
        binary = keras.ops.convert_to_numpy(
            upsample_bilinear(out["pred_masks"], images.shape[1:3])) > 0
        masks, labels = targets["masks"].numpy().astype(bool), targets["labels"].numpy()
        valid = targets["valid"].numpy()
        for b in range(len(images)):
            for k in np.flatnonzero(valid[b]):
                label = int(labels[b, k])
                if not isthing[label]:
                    continue
                gt = masks[b, k]
                iou = ((binary[b] & gt).sum(axis=(1, 2))
                       / np.maximum((binary[b] | gt).sum(axis=(1, 2)), 1))
                q = int(iou.argmax())
                good = iou > 0.5
                rows.append((label, good[q], probs[b, q].argmax() == label, good.sum(),
                             (probs[b, good].argmax(-1) == label).any()))
                for name in FEATURES:
                    pooled[name].append(_pool(features[name][b], gt.astype(np.float32)))
    return np.array(rows, dtype=np.int64), {k: np.stack(v) for k, v in pooled.items()}


def probe_accuracy(x_train, y_train, x_val, y_val, num_classes: int, steps: int = 3000,
                   lr: float = 0.1, l2: float = 1e-3) -> tuple[float, float]:
    """Softmax regression by full-batch gradient descent on standardised features."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_val = (x_train - mean) / std, (x_val - mean) / std
    w, b = np.zeros((x_train.shape[1], num_classes)), np.zeros(num_classes)
    onehot = np.eye(num_classes)[y_train]
    for _ in range(steps):
        grad = (np.exp(log_softmax(x_train @ w + b, axis=1)) - onehot) / len(x_train)
        w -= lr * (x_train.T @ grad + l2 * w)
        b -= lr * grad.sum(0)
    return (float(((x_train @ w + b).argmax(1) == y_train).mean()),
            float(((x_val @ w + b).argmax(1) == y_val).mean()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("--train-batches", type=int, default=32,
                        help="batches of 16 training images for the probe")
    args = parser.parse_args()
    config = load_config(args.model_dir)
    model = load_model(args.model_dir)
    categories = read_categories(config)
    isthing = np.array([bool(c["isthing"]) for c in categories])
    things = [i for i, t in enumerate(isthing) if t]
    names = [categories[i]["name"] for i in things]

    val_rows, val_pooled = collect(model, config, config.data.val_files, 10**9, isthing)
    train_rows, train_pooled = collect(model, config, config.data.train_files,
                                       args.train_batches, isthing)
    for split, rows in (("train", train_rows), ("val", val_rows)):
        found = rows[:, 1].astype(bool)
        print(f"{split}: {len(rows)} things; found (best query IoU > 0.5) {found.mean():.2f}; "
              f"named right among found {rows[found, 2].mean():.2f} "
              f"(chance {1 / len(things):.2f})")
        print(f"    queries with IoU > 0.5 per found thing: {rows[found, 3].mean():.2f} on "
              f"average, more than one for {(rows[found, 3] > 1).mean():.2f}; one of them "
              f"named right {rows[found, 4].mean():.2f}")
        for i, name in zip(things, names, strict=True):
            mine = found & (rows[:, 0] == i)
            print(f"    {name:10s} found {mine.sum():4d} / {(rows[:, 0] == i).sum():4d}, "
                  f"named right {rows[mine, 2].mean() if mine.any() else float('nan'):.2f}")
    index = {c: j for j, c in enumerate(things)}
    y_train = np.array([index[c] for c in train_rows[:, 0]])
    y_val = np.array([index[c] for c in val_rows[:, 0]])
    print("linear probe on features average-pooled in the ground-truth mask (accuracy):")
    for name in FEATURES:
        train_acc, val_acc = probe_accuracy(train_pooled[name], y_train, val_pooled[name],
                                            y_val, len(things))
        print(f"    {name:14s} {train_pooled[name].shape[1]:4d} channels: train {train_acc:.2f}, "
              f"val {val_acc:.2f}")


if __name__ == "__main__":
    main()
