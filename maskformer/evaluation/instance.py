"""COCO mask AP for instance predictions, computed with pycocotools' COCOeval (iouType "segm").

Ground-truth and predicted masks are run-length encoded as they arrive (`update`), so the
accumulator stays small; accumulators of several replicas or workers are combined with `merge`
before `result()`.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

_SUMMARY_NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl"]


def _mask_utils():
    try:
        from pycocotools import mask as mask_utils
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("mask AP needs pycocotools (pip install pycocotools)") from e
    return mask_utils


def _encode(masks: np.ndarray) -> list[dict[str, Any]]:
    """[N, H, W] bool -> N COCO RLEs (counts as str, so they serialise to JSON)."""
    mask_utils = _mask_utils()
    if len(masks) == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(np.asarray(masks, dtype=np.uint8).transpose(1, 2, 0)))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


class InstanceAP:
    """Accumulates instance ground truth and predictions; `result()` runs COCOeval.

    Args:
        num_classes: K contiguous category indices.
        evaluated: optional [K] bool, the classes AP is computed over (thing classes for a
            panoptic dataset); all classes by default.
        class_names: optional K names for per-class AP.
    """

    def __init__(self, num_classes: int, evaluated: Sequence[bool] | None = None,
                 class_names: Sequence[str] | None = None):
        self.num_classes = int(num_classes)
        self.evaluated = (np.ones(self.num_classes, bool) if evaluated is None
                          else np.asarray(evaluated, dtype=bool))
        if len(self.evaluated) != self.num_classes:
            raise ValueError(f"evaluated has {len(self.evaluated)} entries for {num_classes} classes")
        self.class_names = list(class_names) if class_names is not None else None
        self.reset()

    def reset(self) -> None:
        self.images: dict[Any, tuple[int, int]] = {}
        self.gt: list[dict[str, Any]] = []
        self.dt: list[dict[str, Any]] = []

    def update(
        self,
        image_id: Any,
        gt_masks: np.ndarray,
        gt_labels: Sequence[int],
        pred_masks: np.ndarray,
        pred_scores: Sequence[float],
        pred_labels: Sequence[int],
        gt_iscrowd: Sequence[int] | None = None,
    ) -> None:
        """Adds one image.

        Args:
            image_id: a unique hashable id of the image.
            gt_masks: [N, H, W] bool ground-truth instance masks.
            gt_labels: [N] category indices.
            pred_masks: [M, H, W] bool predicted masks.
            pred_scores: [M] scores.
            pred_labels: [M] category indices.
            gt_iscrowd: optional [N] 0/1 crowd flags.
        """
        if image_id in self.images:
            raise ValueError(f"image {image_id} was added twice")
        gt_masks = np.asarray(gt_masks, dtype=bool)
        pred_masks = np.asarray(pred_masks, dtype=bool)
        size = gt_masks.shape[1:] if gt_masks.ndim == 3 and len(gt_masks) else pred_masks.shape[1:]
        if len(gt_masks) and len(pred_masks) and gt_masks.shape[1:] != pred_masks.shape[1:]:
            raise ValueError(f"image {image_id}: ground-truth masks {gt_masks.shape[1:]} and "
                             f"predicted masks {pred_masks.shape[1:]} differ in size")
        gt_labels = np.asarray(gt_labels, dtype=np.int64).reshape(-1)
        pred_labels = np.asarray(pred_labels, dtype=np.int64).reshape(-1)
        pred_scores = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
        crowd = (np.zeros(len(gt_labels), np.int64) if gt_iscrowd is None
                 else np.asarray(gt_iscrowd, dtype=np.int64).reshape(-1))
        if not (len(gt_masks) == len(gt_labels) == len(crowd)):
            raise ValueError(f"image {image_id}: {len(gt_masks)} ground-truth masks, "
                             f"{len(gt_labels)} labels, {len(crowd)} crowd flags")
        if not (len(pred_masks) == len(pred_labels) == len(pred_scores)):
            raise ValueError(f"image {image_id}: {len(pred_masks)} predicted masks, "
                             f"{len(pred_labels)} labels, {len(pred_scores)} scores")
        for name, labels in (("ground-truth", gt_labels), ("predicted", pred_labels)):
            if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise ValueError(f"image {image_id}: a {name} label is outside [0, {self.num_classes})")
        self.images[image_id] = (int(size[0]), int(size[1])) if len(size) == 2 else (0, 0)

        for rle, label, is_crowd, mask in zip(_encode(gt_masks), gt_labels, crowd, gt_masks,
                                              strict=True):
            if self.evaluated[label]:
                self.gt.append({"image_id": image_id, "category_id": int(label),
                                "iscrowd": int(is_crowd), "segmentation": rle,
                                "area": float(mask.sum())})
        for rle, label, score, mask in zip(_encode(pred_masks), pred_labels, pred_scores,
                                           pred_masks, strict=True):
            if self.evaluated[label]:
                self.dt.append({"image_id": image_id, "category_id": int(label),
                                "score": float(score), "segmentation": rle,
                                "area": float(mask.sum())})

    def update_from_panoptic(
        self,
        image_id: Any,
        gt_panoptic: np.ndarray,
        gt_segments: Sequence[Mapping[str, Any]],
        pred_masks: np.ndarray,
        pred_scores: Sequence[float],
        pred_labels: Sequence[int],
    ) -> None:
        """Like `update`, with the ground truth given as a panoptic map and its segments list
        (each segment becomes one instance; classes outside `evaluated` are left out)."""
        gt_panoptic = np.asarray(gt_panoptic)
        masks = np.stack([gt_panoptic == s["id"] for s in gt_segments]) if gt_segments else \
            np.zeros((0, *gt_panoptic.shape), bool)
        self.update(image_id, masks, [s["category_id"] for s in gt_segments], pred_masks,
                    pred_scores, pred_labels, [s.get("iscrowd", 0) for s in gt_segments])

    def merge(self, other: InstanceAP) -> InstanceAP:
        """Adds the images of `other` (another replica or worker; image ids must not repeat)."""
        repeated = self.images.keys() & other.images.keys()
        if repeated:
            raise ValueError(f"cannot merge: images {sorted(map(str, repeated))[:5]} are in both")
        self.images.update(other.images)
        self.gt.extend(other.gt)
        self.dt.extend(other.dt)
        return self

    def result(self) -> dict[str, Any]:
        """AP, AP50, AP75, APs, APm, APl and per-class AP in percent (None where COCOeval has
        no ground truth to score)."""
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        names = self.class_names or [str(k) for k in range(self.num_classes)]
        evaluated = np.flatnonzero(self.evaluated)
        if not self.images or not self.gt:
            empty: dict[str, Any] = {name: None for name in _SUMMARY_NAMES}
            empty["per_class"] = {names[k]: None for k in evaluated}
            empty["num_images"] = len(self.images)
            return empty
        # COCO ids must be positive (a matched id of 0 reads as "unmatched" in COCOeval).
        image_index = {image_id: i + 1 for i, image_id in enumerate(self.images)}
        images = [{"id": image_index[i], "height": h, "width": w}
                  for i, (h, w) in self.images.items()]
        categories = [{"id": int(k) + 1, "name": names[k]} for k in evaluated]

        def build(annotations):
            coco = COCO()
            anns = []
            for n, ann in enumerate(annotations):
                ann = dict(ann, id=n + 1, image_id=image_index[ann["image_id"]],
                           category_id=ann["category_id"] + 1)
                ann.setdefault("iscrowd", 0)
                anns.append(ann)
            coco.dataset = {"images": images, "categories": categories, "annotations": anns}
            with contextlib.redirect_stdout(io.StringIO()):
                coco.createIndex()
            return coco

        coco_gt, coco_dt = build(self.gt), build(self.dt)
        evaluator = COCOeval(coco_gt, coco_dt, iouType="segm")
        with contextlib.redirect_stdout(io.StringIO()):
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        stats = evaluator.stats[: len(_SUMMARY_NAMES)]
        results: dict[str, Any] = {
            name: None if value < 0 else 100.0 * float(value)
            for name, value in zip(_SUMMARY_NAMES, stats, strict=True)
        }
        # precision: [T iou thresholds, R recall points, K categories, A area ranges, M max dets]
        precision = evaluator.eval["precision"]
        per_class = {}
        for column, k in enumerate(evaluated):
            p = precision[:, :, column, 0, -1]
            p = p[p > -1]
            per_class[names[k]] = 100.0 * float(p.mean()) if p.size else None
        results["per_class"] = per_class
        results["num_images"] = len(self.images)
        return results

    def format_table(self, per_class: bool = False, results: dict[str, Any] | None = None) -> str:
        """The summary (and per-class AP) as text; `results` from `result()` saves rerunning
        COCOeval."""
        res = results if results is not None else self.result()

        def fmt(value):
            return "-" if value is None else f"{value:.2f}"

        lines = [" ".join(f"{name:>6}" for name in _SUMMARY_NAMES),
                 " ".join(f"{fmt(res[name]):>6}" for name in _SUMMARY_NAMES)]
        if per_class:
            width = max([8, *(len(n) for n in res["per_class"])])
            lines += ["", f"{'class':{width}} {'AP':>6}"]
            lines += [f"{name:{width}} {fmt(ap):>6}" for name, ap in res["per_class"].items()]
        return "\n".join(lines)
