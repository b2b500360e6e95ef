"""Dataset-level evaluation: model -> post-processing -> PQ / mIoU (/ mask AP) over all images.

Ground truth comes from the evaluation pipeline's maps at the original resolution
(`data.eval_map_size`), predictions are resized back to each image's original size, and the
statistics are accumulated over the whole dataset before any ratio is taken.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
from tqdm import tqdm

from maskformer.config import ExperimentConfig
from maskformer.evaluation.instance import InstanceAP
from maskformer.evaluation.panoptic_quality import PanopticQuality
from maskformer.evaluation.semantic import SemanticSegmentationMetrics
from maskformer.postprocess import build_postprocessor, crop_to_output, panoptic_segments_info


def read_categories(config: ExperimentConfig) -> list[dict[str, Any]]:
    """The categories of `data.dataset_info` (dataset.json), in contiguous-id order."""
    from maskformer.data.records import read_dataset_info

    info = read_dataset_info(config.data.dataset_info)
    categories = sorted(info["categories"], key=lambda c: c["id"])
    if len(categories) != config.model.num_classes:
        raise ValueError(f"{config.data.dataset_info}: {len(categories)} categories, but "
                         f"model.num_classes is {config.model.num_classes}")
    return categories


def ground_truth_segments(segment_map: np.ndarray, semantic_map: np.ndarray,
                          crowd_map: np.ndarray) -> list[dict[str, Any]]:
    """COCO-style segment list of a segment-index map: category and crowd flag per segment."""
    segments = []
    ids, first = np.unique(segment_map.ravel(), return_index=True)
    for sid, index in zip(ids, first, strict=True):
        if sid == 0:
            continue
        segments.append({"id": int(sid), "category_id": int(semantic_map.ravel()[index]),
                         "iscrowd": int(crowd_map.ravel()[index])})
    return segments


def make_predict_fn(model: keras.Model):
    """The model's forward pass, compiled (tf.function with XLA on TensorFlow, jit on JAX)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(lambda x: model(x, training=False), jit_compile=True,
                           reduce_retracing=True)
    if keras.backend.backend() == "jax":
        import jax

        forward = jax.jit(lambda t, f, x: model.stateless_call(t, f, x, training=False)[0])
        # The variables' values are read at each call: the function follows training.
        return lambda x: forward([v.value for v in model.trainable_variables],
                                 [v.value for v in model.non_trainable_variables], x)
    return lambda x: model(x, training=False)


def evaluate(model: keras.Model, config: ExperimentConfig, files: str | None = None,
             max_batches: int | None = None, progress: bool = True,
             on_batch=None, predict_fn=None) -> dict[str, Any]:
    """Evaluates `model` on `files` (default `data.val_files`).

    Args:
        on_batch: optional callback(images, targets, results) for each batch (visualisation).
        predict_fn: the compiled forward pass of `make_predict_fn(model)`, to reuse one
            across evaluations (default: compiled here).

    Returns:
        {"panoptic": PQ results, "semantic": mIoU results, "instance": mask AP results (with
        `eval.instance`), "num_images": n}, and each one's printable table ("panoptic_table",
        ...).
    """
    from maskformer.data.pipeline import build_dataset

    categories = read_categories(config)
    isthing = [bool(c["isthing"]) for c in categories]
    names = [c["name"] for c in categories]
    postprocess = build_postprocessor(config.eval, isthing)
    pq = PanopticQuality(isthing, names) if config.eval.panoptic else None
    semantic = (SemanticSegmentationMetrics(len(categories), class_names=names)
                if config.eval.semantic else None)
    instance = (InstanceAP(len(categories), isthing if config.eval.instance_things_only else None,
                           class_names=names) if config.eval.instance else None)
    dataset = build_dataset(config.data, files or config.data.val_files, training=False,
                            batch_size=config.eval.batch_size)
    predict = predict_fn or make_predict_fn(model)
    count = 0
    for i, (images, targets) in enumerate(tqdm(dataset, desc="evaluate", unit="batch",
                                               disable=not progress)):
        if max_batches is not None and i >= max_batches:
            break
        images = images.numpy()
        targets = {k: v.numpy() for k, v in targets.items()}
        outputs = predict(images)
        # float32 also for a network trained in mixed precision
        outputs = {k: keras.ops.cast(outputs[k], "float32") for k in ("pred_logits", "pred_masks")}
        results = postprocess(outputs, images.shape[1:3], targets["image_size"],
                              targets["original_size"])
        sizes = targets["original_size"]
        gt_segment = crop_to_output(targets["segment_map"], sizes)
        gt_semantic = crop_to_output(targets["semantic_map"], sizes)
        gt_crowd = crop_to_output(targets["crowd_map"], sizes)
        gt_segments = [ground_truth_segments(gt_segment[b], gt_semantic[b], gt_crowd[b])
                       for b in range(len(images))]
        if pq is not None:
            pred_maps = crop_to_output(results["panoptic"]["panoptic_seg"], sizes)
            for b in range(len(images)):
                pq.update(gt_segment[b], gt_segments[b], pred_maps[b],
                          panoptic_segments_info(results["panoptic"], b),
                          image_id=int(targets["image_id"][b]))
        if instance is not None:
            found = {k: np.asarray(keras.ops.convert_to_numpy(v))
                     for k, v in results["instance"].items()}
            pred_masks = crop_to_output(found["masks"], sizes)
            for b in range(len(images)):
                keep = found["valid"][b]
                instance.update_from_panoptic(
                    int(targets["image_id"][b]), gt_segment[b], gt_segments[b],
                    pred_masks[b][keep], found["scores"][b][keep], found["labels"][b][keep])
        if semantic is not None:
            labels = crop_to_output(keras.ops.argmax(results["sem_seg"], axis=1), sizes)
            for b in range(len(images)):
                semantic.update(gt_semantic[b], labels[b], image_id=int(targets["image_id"][b]))
        if on_batch is not None:
            on_batch(images, targets, results)
        count += len(images)
    out: dict[str, Any] = {"num_images": count}
    if pq is not None:
        out["panoptic"] = pq.result()
        out["panoptic_table"] = pq.format_table(per_class=True)
    if semantic is not None:
        out["semantic"] = semantic.result()
        out["semantic_table"] = semantic.format_table()
    if instance is not None:
        out["instance"] = instance.result()
        out["instance_table"] = instance.format_table(results=out["instance"])
    return out


def write_results(results: dict[str, Any], path: str | Path) -> None:
    from maskformer.evaluation.report import write_results_json

    write_results_json(path, {k: v for k, v in results.items() if not k.endswith("_table")})


def print_results(results: dict[str, Any]) -> None:
    for key in ("panoptic_table", "semantic_table", "instance_table"):
        if key in results:
            print(results[key])
    print(f"({results['num_images']} images)")



