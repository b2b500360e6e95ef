"""Semantic segmentation metrics: mIoU, frequency-weighted IoU, mean and pixel accuracy.

Follows detectron2's SemSegEvaluator: a confusion matrix over all evaluated pixels (ground-truth
label `ignore_label` is skipped); a class counts in mIoU and mACC only when it occurs in the
ground truth. Results are in percent. The confusion matrix adds up over batches and replicas.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class SemanticSegmentationMetrics:
    """Accumulates a [K, K] confusion matrix (rows: ground truth, columns: prediction).

    Args:
        num_classes: K.
        ignore_label: ground-truth value that is not evaluated (255).
        class_names: optional K names for the per-class table.
    """

    def __init__(self, num_classes: int, ignore_label: int = 255,
                 class_names: Sequence[str] | None = None):
        self.num_classes = int(num_classes)
        self.ignore_label = ignore_label
        if class_names is not None and len(class_names) != self.num_classes:
            raise ValueError(f"class_names has {len(class_names)} names for {num_classes} classes")
        self.class_names = list(class_names) if class_names is not None else None
        self.reset()

    def reset(self) -> None:
        self.confusion = np.zeros((self.num_classes, self.num_classes), np.int64)

    def update(self, gt: np.ndarray, pred: np.ndarray, image_id: Any = None) -> None:
        """Adds one image or a batch.

        Args:
            gt: [..., H, W] int labels in [0, K) or `ignore_label`.
            pred: [..., H, W] int predicted labels in [0, K), same shape as `gt`.
            image_id: named in error messages.
        """
        where = f"image {image_id}" if image_id is not None else "semantic update"
        gt = np.asarray(gt).astype(np.int64)
        pred = np.asarray(pred).astype(np.int64)
        if gt.shape != pred.shape:
            raise ValueError(f"{where}: ground truth {gt.shape} and prediction {pred.shape} differ")
        evaluated = gt != self.ignore_label
        gt, pred = gt[evaluated], pred[evaluated]
        for name, labels in (("ground-truth", gt), ("predicted", pred)):
            if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
                bad = labels[(labels < 0) | (labels >= self.num_classes)][0]
                raise ValueError(f"{where}: {name} label {bad} is outside [0, {self.num_classes}) "
                                 f"and is not the ignore label {self.ignore_label}")
        self.confusion += np.bincount(
            gt * self.num_classes + pred, minlength=self.num_classes**2
        ).reshape(self.num_classes, self.num_classes)

    def merge(self, other: SemanticSegmentationMetrics) -> SemanticSegmentationMetrics:
        """Adds another accumulator (another replica or worker) into this one."""
        if other.num_classes != self.num_classes:
            raise ValueError("cannot merge semantic metrics with different numbers of classes")
        self.confusion += other.confusion
        return self

    def result(self) -> dict[str, Any]:
        """mIoU, fwIoU, mACC, pACC (percent) and per-class IoU / accuracy (None where the class
        has no ground-truth pixel)."""
        conf = self.confusion.astype(np.float64)
        tp = np.diag(conf)
        pos_gt = conf.sum(axis=1)
        pos_pred = conf.sum(axis=0)
        present = pos_gt > 0
        union = pos_gt + pos_pred - tp
        iou = np.where(present, tp / np.where(union > 0, union, 1.0), np.nan)
        acc = np.where(present, tp / np.where(present, pos_gt, 1.0), np.nan)
        total = pos_gt.sum()
        n = int(present.sum())
        names = self.class_names or [str(k) for k in range(self.num_classes)]
        return {
            "mIoU": 100.0 * float(np.nanmean(iou)) if n else 0.0,
            "fwIoU": 100.0 * float(np.nansum(iou * pos_gt / total)) if total else 0.0,
            "mACC": 100.0 * float(np.nanmean(acc)) if n else 0.0,
            "pACC": 100.0 * float(tp.sum() / total) if total else 0.0,
            "per_class": {
                names[k]: {"IoU": None if not present[k] else 100.0 * float(iou[k]),
                           "ACC": None if not present[k] else 100.0 * float(acc[k])}
                for k in range(self.num_classes)
            },
            "num_classes_present": n,
        }

    def format_table(self, per_class: bool = False) -> str:
        res = self.result()
        lines = [f"{'mIoU':>7} {'fwIoU':>7} {'mACC':>7} {'pACC':>7}",
                 f"{res['mIoU']:7.2f} {res['fwIoU']:7.2f} {res['mACC']:7.2f} {res['pACC']:7.2f}"]
        if per_class:
            width = max([8, *(len(n) for n in res["per_class"])])
            lines += ["", f"{'class':{width}} {'IoU':>7} {'ACC':>7}"]
            for name, r in res["per_class"].items():
                iou = "-" if r["IoU"] is None else f"{r['IoU']:.2f}"
                acc = "-" if r["ACC"] is None else f"{r['ACC']:.2f}"
                lines.append(f"{name:{width}} {iou:>7} {acc:>7}")
        return "\n".join(lines)
