"""One evaluator for a dataset: panoptic quality, mIoU and mask AP from ground-truth maps and
per-image predictions, accumulated over all images before any ratio is taken.

It knows nothing of the model or the input pipeline: `update` takes NumPy arrays. Ground truth
comes as the evaluation pipeline's maps (segment index, semantic class, crowd flag per pixel,
padded); predictions as objects with the attributes of `maskformer.inference.ImagePrediction`
(`panoptic_map`, `segments`, `semantic_map`, `instances`), at each image's original size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from maskformer.evaluation.instance import InstanceAP
from maskformer.evaluation.panoptic_quality import PanopticQuality
from maskformer.evaluation.semantic import SemanticSegmentationMetrics


def ground_truth_segments(segment_map: np.ndarray, semantic_map: np.ndarray,
                          crowd_map: np.ndarray) -> list[dict[str, Any]]:
    """COCO-style segment list of a segment-index map: category and crowd flag per segment.

    Args:
        segment_map: [H, W] int, segment index per pixel, 0 where void.
        semantic_map: [H, W] int, the segment's category per pixel.
        crowd_map: [H, W] bool, the segment's crowd flag per pixel.
    """
    segments = []
    ids, first = np.unique(segment_map.ravel(), return_index=True)
    for sid, index in zip(ids, first, strict=True):
        if sid == 0:
            continue
        segments.append({"id": int(sid), "category_id": int(semantic_map.ravel()[index]),
                         "iscrowd": int(crowd_map.ravel()[index])})
    return segments


def ground_truth_of(targets: Mapping[str, np.ndarray], index: int) -> dict[str, Any]:
    """Image `index` of a batch of pipeline targets, cropped to its original size:
    {"image_id", "segment_map", "semantic_map", "crowd_map", "segments"}."""
    h, w = (int(v) for v in targets["original_size"][index])
    segment_map = np.asarray(targets["segment_map"][index])[:h, :w]
    semantic_map = np.asarray(targets["semantic_map"][index])[:h, :w]
    crowd_map = np.asarray(targets["crowd_map"][index])[:h, :w]
    return {"image_id": int(targets["image_id"][index]), "segment_map": segment_map,
            "semantic_map": semantic_map, "crowd_map": crowd_map,
            "segments": ground_truth_segments(segment_map, semantic_map, crowd_map)}


class Evaluator:
    """Accumulates the enabled metrics over a dataset.

    Args:
        categories: the dataset's categories in contiguous-id order (name, isthing).
        panoptic, semantic, instance: which metrics to compute.
        instance_things_only: mask AP over thing classes only (panoptic-trained models).
        ignore_label: the semantic ground-truth value that is not evaluated.
    """

    def __init__(self, categories: Sequence[Mapping[str, Any]], panoptic: bool = True,
                 semantic: bool = True, instance: bool = False,
                 instance_things_only: bool = True, ignore_label: int = 255):
        isthing = [bool(c["isthing"]) for c in categories]
        names = [c["name"] for c in categories]
        self.pq = PanopticQuality(isthing, names) if panoptic else None
        self.semantic = (SemanticSegmentationMetrics(len(names), ignore_label=ignore_label,
                                                     class_names=names) if semantic else None)
        self.instance = (InstanceAP(len(names), isthing if instance_things_only else None,
                                    class_names=names) if instance else None)
        self.num_images = 0

    def update(self, targets: Mapping[str, np.ndarray], predictions: Sequence[Any]) -> None:
        """Adds a batch: pipeline `targets` (NumPy) and one prediction per image."""
        for b, prediction in enumerate(predictions):
            gt = ground_truth_of(targets, b)
            if self.pq is not None:
                self.pq.update(gt["segment_map"], gt["segments"], prediction.panoptic_map,
                               prediction.segments, image_id=gt["image_id"])
            if self.instance is not None:
                found = prediction.instances
                self.instance.update_from_panoptic(
                    gt["image_id"], gt["segment_map"], gt["segments"], found["masks"],
                    found["scores"], found["labels"])
            if self.semantic is not None:
                self.semantic.update(gt["semantic_map"], prediction.semantic_map,
                                     image_id=gt["image_id"])
            self.num_images += 1

    def result(self, tables: bool = False) -> dict[str, Any]:
        """{"panoptic": PQ results, "semantic": mIoU results, "instance": mask AP results,
        "num_images": n} for the enabled metrics; with `tables`, each one's printable table
        too ("panoptic_table", ...)."""
        out: dict[str, Any] = {"num_images": self.num_images}
        if self.pq is not None:
            out["panoptic"] = self.pq.result()
        if self.semantic is not None:
            out["semantic"] = self.semantic.result()
        if self.instance is not None:
            out["instance"] = self.instance.result()
        if tables:
            out.update(self.tables(out))
        return out

    def tables(self, results: Mapping[str, Any] | None = None) -> dict[str, str]:
        """The printable tables of the enabled metrics."""
        results = results if results is not None else self.result()
        out = {}
        if self.pq is not None:
            out["panoptic_table"] = self.pq.format_table(per_class=True)
        if self.semantic is not None:
            out["semantic_table"] = self.semantic.format_table(per_class=True)
        if self.instance is not None:
            out["instance_table"] = self.instance.format_table(results=results["instance"])
        return out


def print_results(results: Mapping[str, Any]) -> None:
    """Prints the tables of `Evaluator.result(tables=True)`."""
    for key in ("panoptic_table", "semantic_table", "instance_table"):
        if key in results:
            print(results[key])
    print(f"({results['num_images']} images)")


def write_results(results: Mapping[str, Any], path) -> None:
    """Writes the results without their tables as JSON."""
    from maskformer.evaluation.report import write_results_json

    write_results_json(path, {k: v for k, v in results.items() if not k.endswith("_table")})
