"""Panoptic quality (PQ, SQ, RQ) with the semantics of COCO's panopticapi `pq_compute`.

Per image, a ground-truth and a predicted segment of the same category match when
IoU > 0.5, where the union leaves out the predicted segment's pixels on void (gt id 0). Crowd
ground-truth segments are never matched and never false negatives; an unmatched predicted segment
is not a false positive when more than half of it lies on void or on the crowd region of its
category. Statistics are kept as per-class arrays (tp, fp, fn, iou_sum) that add up over images,
batches and replicas (`merge`, or an all-reduce of `state()`).

Differences from panopticapi, by design: several crowd segments of one category in an image form
one crowd region (panopticapi keeps only the last one; COCO has at most one per category), and
metrics are reported in percent (as published).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

VOID = 0


class PanopticQuality:
    """Accumulates per-class panoptic statistics over a dataset.

    Args:
        isthing: [K] bool per contiguous category index.
        class_names: optional K names for the per-class table.
    """

    def __init__(self, isthing: Sequence[bool], class_names: Sequence[str] | None = None):
        self.isthing = np.asarray(isthing, dtype=bool)
        self.num_classes = len(self.isthing)
        if class_names is not None and len(class_names) != self.num_classes:
            raise ValueError(f"class_names has {len(class_names)} names for {self.num_classes} classes")
        self.class_names = list(class_names) if class_names is not None else None
        self.reset()

    def reset(self) -> None:
        self.tp = np.zeros(self.num_classes, np.int64)
        self.fp = np.zeros(self.num_classes, np.int64)
        self.fn = np.zeros(self.num_classes, np.int64)
        self.iou_sum = np.zeros(self.num_classes, np.float64)
        self.num_images = 0

    # -- accumulation ---------------------------------------------------------------------------

    def update(
        self,
        gt_panoptic: np.ndarray,
        gt_segments: Sequence[Mapping[str, Any]],
        pred_panoptic: np.ndarray,
        pred_segments: Sequence[Mapping[str, Any]],
        image_id: Any = None,
    ) -> None:
        """Adds one image.

        Args:
            gt_panoptic: [H, W] int segment ids, 0 = void.
            gt_segments: [{"id", "category_id", "iscrowd" (optional, 0)}] for every non-zero id.
            pred_panoptic: [H, W] int segment ids, 0 = void.
            pred_segments: [{"id", "category_id"}] for every non-zero id.
            image_id: named in error messages.
        """
        where = f"image {image_id}" if image_id is not None else "image"
        gt_panoptic = np.asarray(gt_panoptic).astype(np.int64)
        pred_panoptic = np.asarray(pred_panoptic).astype(np.int64)
        if gt_panoptic.shape != pred_panoptic.shape:
            raise ValueError(f"{where}: ground truth {gt_panoptic.shape} and prediction "
                             f"{pred_panoptic.shape} differ in size")
        gt_cat, gt_crowd = self._segment_table(gt_segments, where, "ground-truth", True)
        pred_cat, _ = self._segment_table(pred_segments, where, "predicted", False)

        gt_ids, gt_area = np.unique(gt_panoptic, return_counts=True)
        pred_ids, pred_area = np.unique(pred_panoptic, return_counts=True)
        self._check_ids(gt_ids, gt_cat, where, "ground-truth", require_pixels=False)
        self._check_ids(pred_ids, pred_cat, where, "predicted", require_pixels=True)
        gt_area_of = dict(zip(gt_ids.tolist(), gt_area.tolist(), strict=True))
        pred_area_of = dict(zip(pred_ids.tolist(), pred_area.tolist(), strict=True))

        # Intersections of every (gt id, pred id) pair present in the image.
        offset = int(max(pred_panoptic.max(initial=0), 0)) + 1
        pairs, inter = np.unique(gt_panoptic * offset + pred_panoptic, return_counts=True)
        pair_gt, pair_pred = pairs // offset, pairs % offset
        void_overlap = {int(p): int(n) for g, p, n in zip(pair_gt, pair_pred, inter, strict=True)
                        if g == VOID}

        gt_matched, pred_matched = set(), set()
        for g, p, n in zip(pair_gt.tolist(), pair_pred.tolist(), inter.tolist(), strict=True):
            if g == VOID or p == VOID or gt_crowd[g] or gt_cat[g] != pred_cat[p]:
                continue
            union = pred_area_of[p] + gt_area_of[g] - n - void_overlap.get(p, 0)
            iou = n / union
            if iou > 0.5:  # at most one match per segment, since segments do not overlap
                self.tp[gt_cat[g]] += 1
                self.iou_sum[gt_cat[g]] += iou
                gt_matched.add(g)
                pred_matched.add(p)

        crowd_ids_of_category: dict[int, set[int]] = {}
        for g, category in gt_cat.items():
            if gt_crowd[g]:
                crowd_ids_of_category.setdefault(category, set()).add(g)
            elif g not in gt_matched:
                self.fn[category] += 1

        crowd_overlap: dict[int, int] = {}
        for g, p, n in zip(pair_gt.tolist(), pair_pred.tolist(), inter.tolist(), strict=True):
            if p != VOID and g in crowd_ids_of_category.get(pred_cat.get(p, -1), ()):
                crowd_overlap[p] = crowd_overlap.get(p, 0) + n
        for p, category in pred_cat.items():
            if p in pred_matched:
                continue
            ignored = void_overlap.get(p, 0) + crowd_overlap.get(p, 0)
            if ignored / pred_area_of[p] > 0.5:  # mostly void or crowd: not a false positive
                continue
            self.fp[category] += 1
        self.num_images += 1

    def _segment_table(self, segments, where, what, with_crowd):
        categories: dict[int, int] = {}
        crowd: dict[int, bool] = {}
        for i, seg in enumerate(segments):
            try:
                seg_id, category = int(seg["id"]), int(seg["category_id"])
            except KeyError as e:
                raise KeyError(f"{where}: {what} segment {i} has no key {e}") from None
            if seg_id == VOID:
                raise ValueError(f"{where}: {what} segment {i} uses the void id 0")
            if seg_id in categories:
                raise ValueError(f"{where}: {what} segment id {seg_id} is listed twice")
            if not 0 <= category < self.num_classes:
                raise ValueError(f"{where}: {what} segment {seg_id} has category_id {category}, "
                                 f"outside [0, {self.num_classes})")
            categories[seg_id] = category
            crowd[seg_id] = bool(seg.get("iscrowd", 0)) if with_crowd else False
        return categories, crowd

    @staticmethod
    def _check_ids(ids, table, where, what, require_pixels):
        present = {int(i) for i in ids if i != VOID}
        missing = present - table.keys()
        if missing:
            raise KeyError(f"{where}: {what} segment ids {sorted(missing)} are in the map but not "
                           "in the segments list")
        if require_pixels:
            empty = table.keys() - present
            if empty:
                raise KeyError(f"{where}: {what} segment ids {sorted(empty)} are listed but have "
                               "no pixels")

    # -- replicas ---------------------------------------------------------------------------------

    def state(self) -> np.ndarray:
        """[4, K] float64 (tp, fp, fn, iou_sum): add these over replicas (e.g. an all-reduce)."""
        return np.stack([self.tp, self.fp, self.fn, self.iou_sum]).astype(np.float64)

    def add_state(self, state: np.ndarray, num_images: int = 0) -> None:
        """Adds another accumulator's `state()` (from another replica or worker)."""
        state = np.asarray(state)
        if state.shape != (4, self.num_classes):
            raise ValueError(f"state has shape {state.shape}, expected (4, {self.num_classes})")
        self.tp += np.rint(state[0]).astype(np.int64)
        self.fp += np.rint(state[1]).astype(np.int64)
        self.fn += np.rint(state[2]).astype(np.int64)
        self.iou_sum += state[3]
        self.num_images += num_images

    def merge(self, other: PanopticQuality) -> PanopticQuality:
        """Adds the statistics of `other` (same categories) into this accumulator."""
        if not np.array_equal(other.isthing, self.isthing):
            raise ValueError("cannot merge PanopticQuality accumulators of different categories")
        self.add_state(other.state(), other.num_images)
        return self

    # -- results ----------------------------------------------------------------------------------

    def result(self) -> dict[str, Any]:
        """PQ, SQ, RQ (percent) for All, Things, Stuff, and per class.

        A class counts in an average only when it has any tp, fp or fn (as in panopticapi); a
        group with no such class reports 0 with n = 0.
        """
        denom = self.tp + 0.5 * self.fp + 0.5 * self.fn
        present = denom > 0
        safe = np.where(present, denom, 1.0)
        pq = np.where(present, self.iou_sum / safe, 0.0)
        sq = np.where(self.tp > 0, self.iou_sum / np.maximum(self.tp, 1), 0.0)
        rq = np.where(present, self.tp / safe, 0.0)
        results: dict[str, Any] = {}
        for group, selected in (("All", np.ones_like(present)), ("Things", self.isthing),
                                ("Stuff", ~self.isthing)):
            use = present & selected
            n = int(use.sum())
            results[group] = {
                "PQ": 100.0 * float(pq[use].mean()) if n else 0.0,
                "SQ": 100.0 * float(sq[use].mean()) if n else 0.0,
                "RQ": 100.0 * float(rq[use].mean()) if n else 0.0,
                "n": n,
            }
        names = self.class_names or [str(k) for k in range(self.num_classes)]
        results["per_class"] = {
            names[k]: {"PQ": 100.0 * float(pq[k]), "SQ": 100.0 * float(sq[k]),
                       "RQ": 100.0 * float(rq[k]), "isthing": bool(self.isthing[k]),
                       "tp": int(self.tp[k]), "fp": int(self.fp[k]), "fn": int(self.fn[k])}
            for k in range(self.num_classes)
        }
        results["num_images"] = self.num_images
        return results

    def format_table(self, per_class: bool = False) -> str:
        """The All/Things/Stuff table (and optionally the per-class one) as text."""
        res = self.result()
        lines = [f"{'':8} {'PQ':>6} {'SQ':>6} {'RQ':>6} {'#cls':>5}"]
        for group in ("All", "Things", "Stuff"):
            r = res[group]
            lines.append(f"{group:8} {r['PQ']:6.2f} {r['SQ']:6.2f} {r['RQ']:6.2f} {r['n']:5d}")
        if per_class:
            width = max([8, *(len(n) for n in res["per_class"])])
            lines.append("")
            lines.append(f"{'class':{width}} {'PQ':>6} {'SQ':>6} {'RQ':>6} {'type':>5}")
            for name, r in res["per_class"].items():
                kind = "thing" if r["isthing"] else "stuff"
                lines.append(f"{name:{width}} {r['PQ']:6.2f} {r['SQ']:6.2f} {r['RQ']:6.2f} {kind:>5}")
        return "\n".join(lines)
