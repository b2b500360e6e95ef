"""Inference from MaskFormer's outputs: semantic, panoptic and instance segmentation.

Reproduces the original MaskFormer post-processing (REFERENCE.md section 9) in `keras.ops`, batched
and in-graph, so it runs on TensorFlow and JAX and can be compiled with the model:

1. `pred_masks` [B, Q, h, w] (stride 4) are bilinearly upsampled to the padded input size H x W,
2. cropped to each image's valid (resized, unpadded) size and resized bilinearly to its original
   size (`crop_and_resize`; half-pixel centres, align_corners=False, no antialiasing, PyTorch's
   source-index rule), giving masks on a common canvas [B, Q, Ho, Wo] whose top-left
   `output_sizes[b]` pixels belong to image b,
3. `semantic_inference`, `panoptic_inference` or `instance_inference` on those masks.

Images of one batch may have different sizes: every per-image size is a tensor, and only the
canvas shape is static. `panoptic_segments_info` and `crop_to_output` turn the batched arrays into
per-image NumPy arrays and the JSON `segments_info` lists on the host.

Thing/stuff is a per-class boolean array from the dataset's category list.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from keras import ops

from maskformer.resize import crop_and_resize, upsample_bilinear


def _pixel_validity(output_sizes, shape: Sequence[int]):
    """[B, Ho, Wo] bool: True inside each image's output size."""
    output_sizes = ops.convert_to_tensor(output_sizes, "int32")
    rows = ops.arange(shape[0])[None, :, None] < output_sizes[:, 0, None, None]
    cols = ops.arange(shape[1])[None, None, :] < output_sizes[:, 1, None, None]
    return ops.logical_and(rows, cols)


# ---------------------------------------------------------------------------------------------
# Semantic
# ---------------------------------------------------------------------------------------------


def semantic_inference(pred_logits, mask_logits):
    """Per-class scores: sum over queries of class probability times mask probability.

    Args:
        pred_logits: [B, Q, K+1] class logits (the last class is "no object").
        mask_logits: [B, Q, H, W] mask logits.

    Returns:
        [B, K, H, W] float32 scores; the label map is their argmax over K.
    """
    # Softmax over K+1 classes, then drop "no object" (as the original does).
    probs = ops.softmax(ops.cast(pred_logits, "float32"), axis=-1)[..., :-1]  # [B, Q, K]
    masks = ops.sigmoid(ops.cast(mask_logits, "float32"))  # [B, Q, H, W]
    return ops.einsum("bqk,bqhw->bkhw", probs, masks)


# ---------------------------------------------------------------------------------------------
# Panoptic
# ---------------------------------------------------------------------------------------------


def panoptic_inference(
    pred_logits,
    mask_logits,
    isthing,
    object_mask_threshold: float = 0.8,
    overlap_threshold: float = 0.8,
    output_sizes=None,
) -> dict[str, Any]:
    """MaskFormer's panoptic inference, batched and in-graph.

    Per image: keep queries whose top class is not "no object" with probability >
    `object_mask_threshold`; each pixel goes to the kept query of highest score * sigmoid(mask);
    walking the kept queries in order, a query whose won area is below `overlap_threshold` of its
    own mask (sigmoid >= 0.5) is dropped (its pixels stay 0), a stuff class seen before reuses the
    earlier segment's id, anything else gets the next id (1, 2, ...).

    The sequential walk is expressed with prefix sums: a query opens a new segment unless it is a
    stuff query whose class an earlier accepted query already has; segment ids are the running
    count of opened segments.

    Args:
        pred_logits: [B, Q, K+1] class logits.
        mask_logits: [B, Q, H, W] mask logits at output resolution.
        isthing: [K] bool, True for thing classes.
        object_mask_threshold: score a query needs to be kept (strictly greater).
        overlap_threshold: minimum won-area / mask-area ratio.
        output_sizes: optional [B, 2] int (height, width): only the top-left region of each image
            is counted and labelled; the rest of the canvas is 0.

    Returns:
        A dict of tensors:
        - "panoptic_seg": [B, H, W] int32 segment ids, 0 = void.
        - "segment_category": [B, Q] int32 category of segment slot s (id s + 1), in creation order.
        - "segment_isthing": [B, Q] bool.
        - "segment_valid": [B, Q] bool, True for slots that hold a segment.
        - "num_segments": [B] int32.
        - "query_segment_id": [B, Q] int32 segment id each query wrote (0 if none).
    """
    pred_logits = ops.cast(pred_logits, "float32")
    mask_logits = ops.cast(mask_logits, "float32")
    num_queries = ops.shape(pred_logits)[1]
    num_classes = ops.shape(pred_logits)[2] - 1
    isthing = ops.convert_to_tensor(np.asarray(isthing, dtype=bool))
    if isthing.shape[0] != num_classes:
        raise ValueError(
            f"isthing has {isthing.shape[0]} entries but pred_logits has {num_classes} classes"
        )

    probs = ops.softmax(pred_logits, axis=-1)  # [B, Q, K+1]
    scores = ops.max(probs, axis=-1)  # [B, Q]
    labels = ops.cast(ops.argmax(probs, axis=-1), "int32")  # first index wins ties
    keep = ops.logical_and(labels != num_classes, scores > object_mask_threshold)  # [B, Q]

    masks = ops.sigmoid(mask_logits)  # [B, Q, H, W]
    prob_masks = scores[:, :, None, None] * masks
    # Dropped queries get -1 (below any real probability >= 0), so the argmax over all queries
    # equals the argmax over the kept ones with the same first-index tie-breaking.
    prob_masks = ops.where(keep[:, :, None, None], prob_masks, -1.0)
    mask_ids = ops.cast(ops.argmax(prob_masks, axis=1), "int32")  # [B, H, W]

    query_range = ops.arange(num_queries, dtype="int32")
    won = mask_ids[:, None, :, :] == query_range[None, :, None, None]  # [B, Q, H, W]
    own = masks >= 0.5
    if output_sizes is not None:
        valid_px = _pixel_validity(output_sizes, ops.shape(mask_logits)[2:])[:, None]
        won = ops.logical_and(won, valid_px)
        own = ops.logical_and(own, valid_px)
    area = ops.sum(ops.cast(won, "int32"), axis=(2, 3))  # [B, Q]
    original_area = ops.sum(ops.cast(own, "int32"), axis=(2, 3))
    ratio = ops.cast(area, "float32") / ops.cast(ops.maximum(original_area, 1), "float32")
    accepted = keep & (area > 0) & (original_area > 0) & (ratio >= overlap_threshold)  # [B, Q]

    query_isthing = ops.take(isthing, ops.minimum(labels, num_classes - 1))  # [B, Q]
    # same[b, q, p]: accepted query p < q has the same class as query q.
    same_class = labels[:, :, None] == labels[:, None, :]  # [B, Q, Q]
    earlier = query_range[None, :] < query_range[:, None]  # [Q(q), Q(p)]
    same_before = same_class & earlier[None] & accepted[:, None, :]
    stuff_repeat = ops.logical_not(query_isthing) & ops.any(same_before, axis=-1)
    opens = accepted & ops.logical_not(stuff_repeat)  # [B, Q]
    running = ops.cumsum(ops.cast(opens, "int32"), axis=1)  # ids of opened segments
    # A repeated stuff query reuses the id of the first accepted query of its class.
    first_same = ops.cast(ops.argmax(ops.cast(same_before, "int32"), axis=-1), "int32")  # [B, Q]
    reused_id = ops.take_along_axis(running, first_same, axis=1)
    query_segment_id = ops.where(opens, running, ops.where(accepted & stuff_repeat, reused_id, 0))

    panoptic = ops.take_along_axis(
        query_segment_id, ops.reshape(mask_ids, (ops.shape(mask_ids)[0], -1)), axis=1
    )
    panoptic = ops.reshape(panoptic, ops.shape(mask_ids))
    if output_sizes is not None:
        panoptic = ops.where(valid_px[:, 0], panoptic, 0)

    # Segment slot s (id s + 1) holds the query that opened it.
    slot_of_query = ops.where(opens, running - 1, -1)  # [B, Q]
    slot_hit = slot_of_query[:, :, None] == query_range[None, None, :]  # [B, Q(query), Q(slot)]
    segment_valid = ops.any(slot_hit, axis=1)
    segment_category = ops.sum(ops.where(slot_hit, labels[:, :, None], 0), axis=1)
    segment_isthing = ops.any(slot_hit & query_isthing[:, :, None], axis=1)
    return {
        "panoptic_seg": ops.cast(panoptic, "int32"),
        "segment_category": ops.cast(segment_category, "int32"),
        "segment_isthing": segment_isthing,
        "segment_valid": segment_valid,
        "num_segments": ops.sum(ops.cast(opens, "int32"), axis=1),
        "query_segment_id": ops.cast(query_segment_id, "int32"),
    }


def panoptic_segments_info(result: dict[str, Any], index: int) -> list[dict[str, Any]]:
    """The JSON `segments_info` list of one image of a `panoptic_inference` result (host side).

    Returns:
        [{"id": int, "isthing": bool, "category_id": int}, ...] in creation order; category ids are
        the contiguous class indices of the model.
    """
    valid = np.asarray(ops.convert_to_numpy(result["segment_valid"]))[index]
    category = np.asarray(ops.convert_to_numpy(result["segment_category"]))[index]
    isthing = np.asarray(ops.convert_to_numpy(result["segment_isthing"]))[index]
    return [
        {"id": int(s) + 1, "isthing": bool(isthing[s]), "category_id": int(category[s])}
        for s in np.flatnonzero(valid)
    ]


# ---------------------------------------------------------------------------------------------
# Instance
# ---------------------------------------------------------------------------------------------


def instance_inference(
    pred_logits,
    mask_logits,
    isthing=None,
    top_k: int = 100,
    output_sizes=None,
) -> dict[str, Any]:
    """Instance inference as in the Mask2Former code (used for MaskFormer's instance numbers).

    Scores are softmax(pred_logits)[:, :K] flattened over Q x K; the top `top_k` (query, class)
    pairs are taken; with `isthing` given (panoptic-trained models) only thing classes stay valid.
    A mask is `logit > 0`; the final score is the class score times the mean sigmoid inside it.

    Args:
        pred_logits: [B, Q, K+1] class logits.
        mask_logits: [B, Q, H, W] mask logits at output resolution.
        isthing: optional [K] bool; None keeps every class.
        top_k: number of (query, class) pairs per image (at most Q * K).
        output_sizes: optional [B, 2] int: pixels outside each image's size are not in any mask.

    Returns:
        A dict of tensors: "scores" [B, k] float32, "labels" [B, k] int32, "query" [B, k] int32,
        "valid" [B, k] bool, "masks" [B, k, H, W] bool, with k = min(top_k, Q * K).
    """
    pred_logits = ops.cast(pred_logits, "float32")
    mask_logits = ops.cast(mask_logits, "float32")
    batch, num_queries = ops.shape(pred_logits)[0], ops.shape(pred_logits)[1]
    num_classes = ops.shape(pred_logits)[2] - 1
    k = min(int(top_k), int(num_queries) * int(num_classes))
    probs = ops.softmax(pred_logits, axis=-1)[..., :-1]  # [B, Q, K]
    class_scores, flat_index = ops.top_k(ops.reshape(probs, (batch, -1)), k=k)  # [B, k]
    flat_index = ops.cast(flat_index, "int32")
    labels = flat_index % num_classes
    query = flat_index // num_classes
    if isthing is None:
        valid = ops.ones_like(labels, dtype="bool")
    else:
        isthing_t = ops.convert_to_tensor(np.asarray(isthing, dtype=bool))
        if isthing_t.shape[0] != num_classes:
            raise ValueError(
                f"isthing has {isthing_t.shape[0]} entries but pred_logits has {num_classes} classes"
            )
        valid = ops.take(isthing_t, labels)

    height, width = ops.shape(mask_logits)[2], ops.shape(mask_logits)[3]
    flat_masks = ops.reshape(mask_logits, (batch, num_queries, -1))  # [B, Q, H*W]
    chosen = ops.take_along_axis(flat_masks, query[:, :, None], axis=1)  # [B, k, H*W]
    binary = chosen > 0
    if output_sizes is not None:
        valid_px = ops.reshape(_pixel_validity(output_sizes, (height, width)), (batch, 1, -1))
        binary = ops.logical_and(binary, valid_px)
    binary_f = ops.cast(binary, "float32")
    mask_score = ops.sum(ops.sigmoid(chosen) * binary_f, axis=-1) / (
        ops.sum(binary_f, axis=-1) + 1e-6
    )
    return {
        "scores": class_scores * mask_score,
        "labels": labels,
        "query": query,
        "valid": valid,
        "masks": ops.reshape(binary, (batch, k, height, width)),
    }


# ---------------------------------------------------------------------------------------------
# The whole step, from model outputs
# ---------------------------------------------------------------------------------------------


class PostProcessor:
    """Model outputs -> semantic scores, panoptic maps and instances at original image size.

    Args:
        isthing: [K] bool per class (from the dataset's category list).
        object_mask_threshold, overlap_threshold: panoptic thresholds.
        semantic, panoptic, instance: which results to produce.
        instance_top_k: (query, class) pairs kept per image for instance output.
        semantic_before_inference: resize mask logits before the semantic combination (the
            original forces this when panoptic output is on); otherwise the K-class score map is
            computed at the padded input size, then cropped and resized.
        instance_things_only: keep only thing classes in instance output (panoptic-trained models).
    """

    def __init__(
        self,
        isthing: Sequence[bool],
        object_mask_threshold: float = 0.8,
        overlap_threshold: float = 0.8,
        semantic: bool = True,
        panoptic: bool = True,
        instance: bool = False,
        instance_top_k: int = 100,
        semantic_before_inference: bool = False,
        instance_things_only: bool = True,
    ):
        self.isthing = np.asarray(isthing, dtype=bool)
        self.object_mask_threshold = object_mask_threshold
        self.overlap_threshold = overlap_threshold
        self.semantic = semantic
        self.panoptic = panoptic
        self.instance = instance
        self.instance_top_k = instance_top_k
        self.semantic_before_inference = semantic_before_inference or panoptic
        self.instance_things_only = instance_things_only

    def __call__(
        self,
        outputs: dict[str, Any],
        input_shape: Sequence[int],
        valid_sizes,
        output_sizes,
        output_shape: Sequence[int] | None = None,
    ) -> dict[str, Any]:
        """Runs the enabled inferences.

        Args:
            outputs: model outputs with "pred_logits" [B, Q, K+1] and "pred_masks" [B, Q, h, w].
            input_shape: (H, W) padded input size of the batch.
            valid_sizes: [B, 2] int (height, width) of each resized image inside the padded input.
            output_sizes: [B, 2] int original (height, width) of each image.
            output_shape: static canvas (Ho, Wo); defaults to the maximum of `output_sizes`
                (which must then be concrete).

        Returns:
            "sem_seg" [B, K, Ho, Wo] scores; the `panoptic_inference` dict under "panoptic"; the
            `instance_inference` dict under "instance" (as enabled).
        """
        if output_shape is None:
            output_shape = tuple(int(v) for v in np.max(np.asarray(output_sizes), axis=0))
        pred_logits = outputs["pred_logits"]
        masks = upsample_bilinear(outputs["pred_masks"], input_shape)  # [B, Q, H, W]
        need_resized = self.panoptic or self.instance or (
            self.semantic and self.semantic_before_inference
        )
        resized = (
            crop_and_resize(masks, valid_sizes, output_sizes, output_shape) if need_resized else None
        )
        results: dict[str, Any] = {}
        if self.semantic:
            if self.semantic_before_inference:
                results["sem_seg"] = semantic_inference(pred_logits, resized)
            else:
                scores = semantic_inference(pred_logits, masks)  # [B, K, H, W]
                results["sem_seg"] = crop_and_resize(scores, valid_sizes, output_sizes, output_shape)
        if self.panoptic:
            results["panoptic"] = panoptic_inference(
                pred_logits,
                resized,
                self.isthing,
                self.object_mask_threshold,
                self.overlap_threshold,
                output_sizes=output_sizes,
            )
        if self.instance:
            results["instance"] = instance_inference(
                pred_logits,
                resized,
                self.isthing if self.instance_things_only else None,
                self.instance_top_k,
                output_sizes=output_sizes,
            )
        return results


def build_postprocessor(eval_config: Any, isthing: Sequence[bool]) -> PostProcessor:
    """A `PostProcessor` from an `EvalConfig` and the dataset's per-class thing flags."""
    return PostProcessor(
        isthing,
        object_mask_threshold=eval_config.object_mask_threshold,
        overlap_threshold=eval_config.overlap_threshold,
        semantic=eval_config.semantic,
        panoptic=eval_config.panoptic,
        instance=eval_config.instance,
        instance_top_k=eval_config.instance_top_k,
        semantic_before_inference=eval_config.sem_seg_postprocess_before_inference,
        instance_things_only=eval_config.instance_things_only,
    )


def crop_to_output(array, output_sizes) -> list[np.ndarray]:
    """Per-image NumPy crops of a batched canvas [B, ..., Ho, Wo] to each image's output size."""
    array = np.asarray(ops.convert_to_numpy(array))
    sizes = np.asarray(ops.convert_to_numpy(output_sizes)).astype(int)
    return [array[b, ..., : sizes[b, 0], : sizes[b, 1]] for b in range(array.shape[0])]
