"""Inference from MaskFormer's outputs: semantic, panoptic and instance segmentation.

Reproduces the original MaskFormer post-processing (REFERENCE.md section 9) in `keras.ops`, batched
and in-graph, so it runs on TensorFlow and JAX and can be compiled with the model:

1. `pred_masks` [B, Q, h, w] (stride 4) are bilinearly upsampled to the padded input size H x W,
2. cropped to each image's valid (resized, unpadded) size and resized bilinearly to its original
   size (half-pixel centres, align_corners=False, no antialiasing, PyTorch's source-index rule),
   giving masks on a common canvas [B, Q, Ho, Wo] whose top-left `output_sizes[b]` pixels belong
   to image b,
3. semantic, panoptic or instance inference on those masks. Panoptic inference follows MaskFormer's
   painting rule or, with `rule="mask2former"` / `panoptic_rule="mask2former"`, Mask2Former's
   (a query paints only the pixels it wins inside its own mask).

`semantic_inference`, `panoptic_inference` and `instance_inference` take mask logits already at
output resolution. `PostProcessor` runs the whole step from the model's outputs without ever
holding every query's full-size mask (Q x Ho x Wo values, 1.6 GB at batch 4, 100 queries and
800x1216; the original's users run out of memory there): steps 1 and 2 are linear along each
axis, so a band of output rows is a few weighted mask-resolution rows, resampled along the
width (`_output_taps`). The canvas is produced band by band (`keras.ops.map`), and each band
gives its piece of the per-pixel results (the winning query, the semantic label, the instance
masks) and its share of the per-query sums (won and own areas, mask scores). What stays is
image-sized (one map per image, K score maps only when asked for, one mask per instance).

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

from maskformer.resize import _source_taps, bilinear_weights, bilinear_weights_tensor

# Panoptic painting rules: MaskFormer paints every pixel a kept query wins; Mask2Former only those
# it wins where its own mask is >= 0.5 (the rest stay void).
PANOPTIC_RULES = ("maskformer", "mask2former")

# Size (in values) of the largest tensor one band of output rows creates: 2**24 float32 values
# are 64 MiB. The rows per band follow from it and the batch, width and query or class count.
BAND_VALUES = 2**24


def _static(value):
    """`value` as a Python int where it is known when tracing, else as an int32 tensor.

    Post-processing is shape-static everywhere it can be (JAX, XLA, fixed-size export); on the
    TensorFlow backend the canvas, input and mask-grid sizes may also be tensors (a SavedModel
    signature for images of any size), and the same code builds a graph for them.
    """
    if value is None:
        raise ValueError("a size unknown when tracing needs a tensor, not None")
    try:
        return int(value)
    except TypeError:
        return ops.cast(value, "int32")


def _is_static(*values) -> bool:
    return all(isinstance(v, int) for v in values)


def _taps(low, padded):
    """`bilinear_weights` as tensors, computed on the host when both sizes are known."""
    if _is_static(low, padded):
        return tuple(ops.convert_to_tensor(a) for a in bilinear_weights(low, padded))
    return bilinear_weights_tensor(low, padded)


def _fill_canvas_unresized(valid_sizes, output_sizes, output_shape) -> bool:
    """Whether every image is known, when tracing, to fill the canvas at its resized size (no
    crop-and-resize to do): sizes given as arrays, not tensors of a graph."""
    try:
        valid = np.asarray(valid_sizes, np.int64).reshape(-1, 2)
        output = np.asarray(output_sizes, np.int64).reshape(-1, 2)
        canvas = np.array([int(output_shape[0]), int(output_shape[1])])
    except (TypeError, ValueError, NotImplementedError):
        return False
    return bool((valid == canvas).all() and (output == canvas).all())


def _pixel_validity(output_sizes, shape: Sequence[int]):
    """[B, Ho, Wo] bool: True inside each image's output size."""
    output_sizes = ops.convert_to_tensor(output_sizes, "int32")
    rows = ops.arange(shape[0])[None, :, None] < output_sizes[:, 0, None, None]
    cols = ops.arange(shape[1])[None, None, :] < output_sizes[:, 1, None, None]
    return ops.logical_and(rows, cols)


def _isthing_tensor(isthing, num_classes: int):
    isthing = ops.convert_to_tensor(np.asarray(isthing, dtype=bool))
    if isthing.shape[0] != num_classes:
        raise ValueError(
            f"isthing has {isthing.shape[0]} entries but pred_logits has {num_classes} classes"
        )
    return isthing


def _class_probs(pred_logits):
    """[B, Q, K]: softmax over the K+1 classes without "no object" (as the original does)."""
    return ops.softmax(ops.cast(pred_logits, "float32"), axis=-1)[..., :-1]


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
    probs = _class_probs(pred_logits)  # [B, Q, K]
    masks = ops.sigmoid(ops.cast(mask_logits, "float32"))  # [B, Q, H, W]
    return ops.einsum("bqk,bqhw->bkhw", probs, masks)


# ---------------------------------------------------------------------------------------------
# Panoptic
# ---------------------------------------------------------------------------------------------


def _panoptic_queries(pred_logits, object_mask_threshold: float):
    """Top class and score of every query, and which queries are kept: [B, Q] each."""
    num_classes = ops.shape(pred_logits)[2] - 1
    probs = ops.softmax(ops.cast(pred_logits, "float32"), axis=-1)  # [B, Q, K+1]
    scores = ops.max(probs, axis=-1)  # [B, Q]
    labels = _argmax(probs, axis=-1)  # first index wins ties
    keep = ops.logical_and(labels != num_classes, scores > object_mask_threshold)  # [B, Q]
    return scores, labels, keep


def _argmax(x, axis: int):
    """int32 index of the first maximum along `axis` of a float tensor without NaN or -0.0.

    `ops.argmax`'s answer for such tensors, but found as the first position equal to the
    maximum: on TensorFlow, `ops.argmax` of floats tells -0.0 from 0.0 with bit operations that
    LiteRT lacks (the post-processing's scores are never -0.0).
    """
    is_max = ops.cast(x == ops.max(x, axis=axis, keepdims=True), "int32")
    return ops.cast(ops.argmax(is_max, axis=axis), "int32")


def _all(*conditions):
    """Logical and of boolean tensors (`&` becomes a bitwise op, which LiteRT lacks)."""
    result = conditions[0]
    for condition in conditions[1:]:
        result = ops.logical_and(result, condition)
    return result


def _check_rule(rule: str) -> str:
    if rule not in PANOPTIC_RULES:
        raise ValueError(f"panoptic rule must be one of {PANOPTIC_RULES}, got {rule!r}")
    return rule


def _panoptic_segments(labels, keep, area, original_area, painted_area, isthing,
                       overlap_threshold: float):
    """The original's walk over the kept queries, from their areas ([B, Q] each).

    `area` is the pixels a query wins, `original_area` its own mask's (sigmoid >= 0.5) and
    `painted_area` those it would paint (its won pixels; with Mask2Former's rule only those
    inside its own mask). A query is accepted when all three are non-zero and area /
    original_area >= `overlap_threshold`.

    The sequential walk is expressed with prefix sums: a query opens a new segment unless it is a
    stuff query whose class an earlier accepted query already has; segment ids are the running
    count of opened segments.

    Returns:
        The `panoptic_inference` dict without "panoptic_seg".
    """
    num_queries = ops.shape(labels)[1]
    num_classes = isthing.shape[0]
    ratio = ops.cast(area, "float32") / ops.cast(ops.maximum(original_area, 1), "float32")
    # painted_area <= area, so painted_area > 0 also says area > 0.
    accepted = _all(keep, painted_area > 0, original_area > 0, ratio >= overlap_threshold)

    query_range = ops.arange(num_queries, dtype="int32")
    query_isthing = ops.take(isthing, ops.minimum(labels, num_classes - 1))  # [B, Q]
    # same[b, q, p]: accepted query p < q has the same class as query q.
    same_class = labels[:, :, None] == labels[:, None, :]  # [B, Q, Q]
    earlier = query_range[None, :] < query_range[:, None]  # [Q(q), Q(p)]
    same_before = _all(same_class, earlier[None], accepted[:, None, :])
    stuff_repeat = _all(ops.logical_not(query_isthing), ops.any(same_before, axis=-1))
    opens = _all(accepted, ops.logical_not(stuff_repeat))  # [B, Q]
    running = ops.cumsum(ops.cast(opens, "int32"), axis=1)  # ids of opened segments
    # A repeated stuff query reuses the id of the first accepted query of its class.
    first_same = ops.cast(ops.argmax(ops.cast(same_before, "int32"), axis=-1), "int32")  # [B, Q]
    reused_id = ops.take_along_axis(running, first_same, axis=1)
    query_segment_id = ops.where(opens, running, ops.where(_all(accepted, stuff_repeat), reused_id, 0))

    # Segment slot s (id s + 1) holds the query that opened it.
    slot_of_query = ops.where(opens, running - 1, -1)  # [B, Q]
    slot_hit = slot_of_query[:, :, None] == query_range[None, None, :]  # [B, Q(query), Q(slot)]
    return {
        "segment_category": ops.cast(
            ops.sum(ops.where(slot_hit, labels[:, :, None], 0), axis=1), "int32"),
        "segment_isthing": ops.any(_all(slot_hit, query_isthing[:, :, None]), axis=1),
        "segment_valid": ops.any(slot_hit, axis=1),
        "num_segments": ops.sum(ops.cast(opens, "int32"), axis=1),
        "query_segment_id": ops.cast(query_segment_id, "int32"),
    }


def _panoptic_map(query_segment_id, mask_ids, valid_px=None):
    """[B, H, W] segment ids: each pixel's winning query's id, 0 outside `valid_px`."""
    panoptic = ops.take_along_axis(
        query_segment_id, ops.reshape(mask_ids, (ops.shape(mask_ids)[0], -1)), axis=1
    )
    panoptic = ops.reshape(panoptic, ops.shape(mask_ids))
    if valid_px is not None:
        panoptic = ops.where(valid_px, panoptic, 0)
    return ops.cast(panoptic, "int32")


def panoptic_inference(
    pred_logits,
    mask_logits,
    isthing,
    object_mask_threshold: float = 0.8,
    overlap_threshold: float = 0.8,
    output_sizes=None,
    rule: str = "maskformer",
) -> dict[str, Any]:
    """MaskFormer's (or Mask2Former's) panoptic inference, batched and in-graph, on masks at
    output resolution.

    Per image: keep queries whose top class is not "no object" with probability >
    `object_mask_threshold`; each pixel goes to the kept query of highest score * sigmoid(mask);
    walking the kept queries in order, a query whose won area is below `overlap_threshold` of its
    own mask (sigmoid >= 0.5) is dropped (its pixels stay 0), a stuff class seen before reuses the
    earlier segment's id, anything else gets the next id (1, 2, ...).

    With `rule="mask2former"` a query paints only the pixels it wins where its own sigmoid is
    >= 0.5 (its other won pixels stay 0), and a query with no such pixel is dropped; the area
    ratio is still won area / own area.

    Args:
        pred_logits: [B, Q, K+1] class logits.
        mask_logits: [B, Q, H, W] mask logits at output resolution.
        isthing: [K] bool, True for thing classes.
        object_mask_threshold: score a query needs to be kept (strictly greater).
        overlap_threshold: minimum won-area / mask-area ratio.
        output_sizes: optional [B, 2] int (height, width): only the top-left region of each image
            is counted and labelled; the rest of the canvas is 0.
        rule: painting rule, "maskformer" or "mask2former" (see above).

    Returns:
        A dict of tensors:
        - "panoptic_seg": [B, H, W] int32 segment ids, 0 = void.
        - "segment_category": [B, Q] int32 category of segment slot s (id s + 1), in creation order.
        - "segment_isthing": [B, Q] bool.
        - "segment_valid": [B, Q] bool, True for slots that hold a segment.
        - "num_segments": [B] int32.
        - "query_segment_id": [B, Q] int32 segment id each query wrote (0 if none).
    """
    _check_rule(rule)
    mask_logits = ops.cast(mask_logits, "float32")
    num_queries = ops.shape(pred_logits)[1]
    isthing = _isthing_tensor(isthing, ops.shape(pred_logits)[2] - 1)
    scores, labels, keep = _panoptic_queries(pred_logits, object_mask_threshold)

    masks = ops.sigmoid(mask_logits)  # [B, Q, H, W]
    prob_masks = scores[:, :, None, None] * masks
    # Dropped queries get -1 (below any real probability >= 0), so the argmax over all queries
    # equals the argmax over the kept ones with the same first-index tie-breaking.
    prob_masks = ops.where(keep[:, :, None, None], prob_masks, -1.0)
    mask_ids = _argmax(prob_masks, axis=1)  # [B, H, W]

    query_range = ops.arange(num_queries, dtype="int32")
    won = mask_ids[:, None, :, :] == query_range[None, :, None, None]  # [B, Q, H, W]
    own = masks >= 0.5
    valid_px = None
    if output_sizes is not None:
        valid_px = _pixel_validity(output_sizes, ops.shape(mask_logits)[2:])
        won = ops.logical_and(won, valid_px[:, None])
        own = ops.logical_and(own, valid_px[:, None])
    painted = ops.logical_and(won, own) if rule == "mask2former" else won
    area, original_area, painted_area = (
        ops.sum(ops.cast(x, "int32"), axis=(2, 3)) for x in (won, own, painted))  # [B, Q] each
    result = _panoptic_segments(labels, keep, area, original_area, painted_area, isthing,
                                overlap_threshold)
    if rule == "mask2former":  # pixels left unpainted stay 0 (`won` is already within valid_px)
        valid_px = ops.any(painted, axis=1)  # [B, H, W]
    return {"panoptic_seg": _panoptic_map(result["query_segment_id"], mask_ids, valid_px),
            **result}


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


def _instance_candidates(pred_logits, isthing, top_k: int):
    """The top `top_k` (query, class) pairs: class scores, labels, queries, valid; [B, k] each."""
    batch, num_queries = ops.shape(pred_logits)[0], ops.shape(pred_logits)[1]
    num_classes = ops.shape(pred_logits)[2] - 1
    k = min(int(top_k), int(num_queries) * int(num_classes))
    probs = _class_probs(pred_logits)  # [B, Q, K]
    class_scores, flat_index = ops.top_k(ops.reshape(probs, (batch, -1)), k=k)  # [B, k]
    flat_index = ops.cast(flat_index, "int32")
    labels = flat_index % num_classes
    query = flat_index // num_classes
    if isthing is None:
        valid = ops.ones_like(labels, dtype="bool")
    else:
        valid = ops.take(_isthing_tensor(isthing, num_classes), labels)
    return class_scores, labels, query, valid


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
    mask_logits = ops.cast(mask_logits, "float32")
    class_scores, labels, query, valid = _instance_candidates(pred_logits, isthing, top_k)
    batch, num_queries = ops.shape(mask_logits)[0], ops.shape(mask_logits)[1]
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
        "masks": ops.reshape(binary, (batch, ops.shape(query)[1], height, width)),
    }


# ---------------------------------------------------------------------------------------------
# From the mask grid to the output canvas, band by band
# ---------------------------------------------------------------------------------------------


def _take_per_image(x, index):
    """out[b, l] = x[b, index[b, l]]: x [B, N, ...], index [B, L] int -> [B, L, ...].

    One plain gather of whole trailing slices (the batch folded into the gathered axis), so no
    index tensor as large as the result is formed.
    """
    shape = ops.shape(x)
    flat = ops.reshape(x, (-1, *shape[2:]))  # [B*N, ...]
    offset = ops.arange(shape[0], dtype="int32")[:, None] * shape[1]  # [B, 1]
    return ops.take(flat, index + offset, axis=0)


def _resample(x, index, weight):
    """Per-image linear resampling along axis 1.

    out[b, l] = sum_t weight[b, l, t] * x[b, index[b, l, t]]

    Args:
        x: [B, N, ...] float32.
        index: [B, L, T] int32 into 0..N-1; weight: [B, L, T] float32.

    Returns:
        [B, L, ...] float32.
    """
    out = None
    for t in range(index.shape[-1]):
        w = weight[:, :, t]
        for _ in range(len(x.shape) - 2):
            w = ops.expand_dims(w, -1)
        term = w * _take_per_image(x, index[:, :, t])
        out = term if out is None else out + term
    return out


def _crop_taps(valid_sizes, output_sizes, out_len: int):
    """Crop to the valid size, then resize to the output size, along one axis: index, weight
    [B, out_len, 2] into the padded input's samples (zero weights beyond each output size)."""
    i0, i1, w0, w1 = _source_taps(valid_sizes, output_sizes, out_len)
    return ops.stack([i0, i1], axis=-1), ops.stack([w0, w1], axis=-1)


def _output_taps(low: int, padded: int, valid_sizes, output_sizes, out_len: int):
    """Taps from the mask grid straight to the output canvas along one axis, per image.

    The stride-4 upsampling (`low` -> `padded` samples, PyTorch's taps, `bilinear_weights`) and
    the crop-and-resize (`_crop_taps`) are both two-tap interpolations, so their composition is
    one: an output sample is a weighted sum of four mask samples. When upsampling (padded >=
    low, which post-processing always does) consecutive padded samples start at most one mask
    sample apart, so the four fall on three consecutive mask samples; their weights are merged
    (the rounding of a product of two weights, against the original's rounding of the
    intermediate upsampled value: float32 rounding either way).

    Args:
        low: mask samples along the axis (h or w); padded: the padded input's (H or W); ints,
            or tensors when the sizes are known only at run time (then padded >= low).
        valid_sizes, output_sizes: [B] int per image along the axis.
        out_len: length of the output canvas along the axis (an int or a tensor).

    Returns:
        index [B, out_len, T] int32 into 0..low-1 and weight [B, out_len, T] float32, T = 3
        (4 when padded < low); weights are 0 beyond each image's output size.
    """
    j0, j1, v0, v1 = _taps(low, padded)  # index0, index1, weight0, weight1: [padded] each
    i0, i1, w0, w1 = _source_taps(valid_sizes, output_sizes, out_len)  # [B, L] each
    terms = [(ops.take(j, i), w * ops.take(v, i))
             for i, w in ((i0, w0), (i1, w1)) for j, v in ((j0, v0), (j1, v1))]
    # Shrinking (the taps not consecutive): keep all four. Sizes known only at run time come
    # from the model's stride-4 grid, which post-processing always enlarges.
    if _is_static(low, padded) and np.any(np.diff(bilinear_weights(low, padded)[0]) > 1):
        return (ops.stack([t[0] for t in terms], axis=-1),
                ops.stack([t[1] for t in terms], axis=-1))
    base = terms[0][0]  # the lowest index of the four
    index, weight = [], []
    for offset in range(3):
        target = base + offset
        index.append(ops.minimum(target, low - 1))  # an index past the end has weight 0
        weight.append(sum(ops.where(j == target, w, 0.0) for j, w in terms))
    return ops.stack(index, axis=-1), ops.stack(weight, axis=-1)


def _split_bands(x, num_bands: int, rows: int):
    """[B, num_bands * rows, ...] -> [num_bands, B, rows, ...] (one slice per band for ops.map)."""
    x = ops.reshape(x, (-1, num_bands, rows, *x.shape[2:]))
    return ops.moveaxis(x, 1, 0)


def _join_bands(bands, height: int):
    """Band outputs [n, B, ..., rows, W] -> [B, ..., height, W] (the padding rows dropped)."""
    rank = len(bands.shape)
    x = ops.moveaxis(bands, 0, rank - 3)  # [B, ..., n, rows, W]
    shape = ops.shape(x)
    x = ops.reshape(x, (-1, *shape[1:rank - 3], shape[-3] * shape[-2], shape[-1]))
    if _is_static(ops.shape(x)[-2], height) and ops.shape(x)[-2] == height:
        return x
    return x[..., :height, :]


# ---------------------------------------------------------------------------------------------
# The whole step, from model outputs
# ---------------------------------------------------------------------------------------------


class PostProcessor:
    """Model outputs -> semantic scores, panoptic maps and instances at original image size.

    Works on bands of output rows (see the module docstring), so that memory grows with the
    image, not with queries times image.

    Args:
        isthing: [K] bool per class (from the dataset's category list).
        object_mask_threshold, overlap_threshold: panoptic thresholds.
        panoptic_rule: "maskformer" or "mask2former": which pixels a kept query paints (see
            `panoptic_inference`).
        semantic, panoptic, instance: which results to produce.
        instance_top_k: (query, class) pairs kept per image for instance output.
        semantic_before_inference: resize mask logits before the semantic combination (the
            original forces this when panoptic output is on); otherwise the K-class score map is
            computed at the padded input size, then cropped and resized.
        instance_things_only: keep only thing classes in instance output (panoptic-trained models).
        band_values: bound on the values of the largest tensor one band creates; sets the rows
            per band (at least 1). An unknown batch size counts as 1.
        sigmoid_by_exp: compute the masks' sigmoid as 1 / (1 + exp(-x)), for runtimes whose
            sigmoid kernel is coarse (onnxruntime's is off by up to 1e-7 absolute and 0 below
            -18, so strongly negative masks tie at 0 where TensorFlow still ranks them).
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
        band_values: int = BAND_VALUES,
        sigmoid_by_exp: bool = False,
        panoptic_rule: str = "maskformer",
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
        self.band_values = int(band_values)
        self.sigmoid_by_exp = sigmoid_by_exp
        self.panoptic_rule = _check_rule(panoptic_rule)

    def _sigmoid(self, x):
        if self.sigmoid_by_exp:
            return 1.0 / (1.0 + ops.exp(-x))
        return ops.sigmoid(x)

    def __call__(
        self,
        outputs: dict[str, Any],
        input_shape: Sequence[int],
        valid_sizes,
        output_sizes,
        output_shape: Sequence[int] | None = None,
        semantic_scores: bool = True,
    ) -> dict[str, Any]:
        """Runs the enabled inferences.

        Args:
            outputs: model outputs with "pred_logits" [B, Q, K+1] and "pred_masks" [B, Q, h, w].
            input_shape: (H, W) padded input size of the batch. On the TensorFlow backend it
                and `output_shape` may be scalar tensors (sizes known only at run time).
            valid_sizes: [B, 2] int (height, width) of each resized image inside the padded input.
            output_sizes: [B, 2] int original (height, width) of each image.
            output_shape: static canvas (Ho, Wo); defaults to the maximum of `output_sizes`
                (which must then be concrete).
            semantic_scores: also return the K score maps "sem_seg" (K x Ho x Wo per image);
                without them only their argmax "sem_seg_labels" is kept.

        Returns:
            "sem_seg" [B, K, Ho, Wo] scores (with `semantic_scores`) and "sem_seg_labels"
            [B, Ho, Wo] int32 (their argmax over K); the `panoptic_inference` dict under
            "panoptic"; the `instance_inference` dict under "instance" (as enabled).
        """
        if output_shape is None:
            output_shape = tuple(int(v) for v in np.max(np.asarray(output_sizes), axis=0))
        output_shape = (_static(output_shape[0]), _static(output_shape[1]))
        input_shape = (_static(input_shape[0]), _static(input_shape[1]))
        pred_logits = ops.cast(outputs["pred_logits"], "float32")
        pred_masks = ops.cast(outputs["pred_masks"], "float32")
        unresized = _fill_canvas_unresized(valid_sizes, output_sizes, output_shape)
        valid_sizes = ops.convert_to_tensor(valid_sizes, "int32")
        output_sizes = ops.convert_to_tensor(output_sizes, "int32")
        args = (pred_logits, pred_masks, input_shape, valid_sizes, output_sizes, output_shape)
        results: dict[str, Any] = {}
        if self.panoptic or self.instance or (self.semantic and self.semantic_before_inference):
            results.update(self._from_output_logits(*args, semantic_scores))
        if self.semantic and not self.semantic_before_inference:
            results.update(self._semantic_after_inference(*args, semantic_scores, unresized))
        return results

    def _rows_per_band(self, batch, width, channels: int, height):
        batch = batch if isinstance(batch, int) else 1
        if _is_static(width, height):
            return int(min(max(1, self.band_values // max(1, batch * width * channels)), height))
        per_row = ops.maximum(1, width * (batch * channels))
        return ops.minimum(ops.maximum(1, self.band_values // per_row), height)

    def _from_output_logits(self, pred_logits, pred_masks, input_shape, valid_sizes,
                            output_sizes, output_shape, semantic_scores: bool) -> dict[str, Any]:
        """Panoptic, instance, and semantic combined after the masks' resize, in one pass."""
        batch, num_queries = pred_masks.shape[:2]
        low_h, low_w = (_static(v) for v in ops.shape(pred_masks)[2:])
        num_classes = pred_logits.shape[-1] - 1
        out_h, out_w = output_shape
        semantic = self.semantic and self.semantic_before_inference
        channels = max(num_queries, num_classes if semantic else 0,
                       self.instance_top_k if self.instance else 0)
        rows = self._rows_per_band(batch, out_w, channels, out_h)
        num_bands = -(-out_h // rows)
        taps_y = _output_taps(low_h, input_shape[0], valid_sizes[:, 0], output_sizes[:, 0],
                              num_bands * rows)  # [B, n * rows, T]
        index_x, weight_x = _output_taps(low_w, input_shape[1], valid_sizes[:, 1],
                                         output_sizes[:, 1], out_w)  # [B, Wo, T]
        masks_by_row = ops.transpose(pred_masks, (0, 2, 1, 3))  # [B, h, Q, w]
        col_valid = ops.arange(out_w, dtype="int32")[None, :] < output_sizes[:, 1:2]  # [B, Wo]
        query_range = ops.arange(num_queries, dtype="int32")

        if self.panoptic:
            isthing = _isthing_tensor(self.isthing, num_classes)
            scores, labels, keep = _panoptic_queries(pred_logits, self.object_mask_threshold)
        if semantic:
            class_probs = _class_probs(pred_logits)  # [B, Q, K]
        if self.instance:
            things = self.isthing if self.instance_things_only else None
            class_scores, inst_labels, inst_query, inst_valid = _instance_candidates(
                pred_logits, things, self.instance_top_k)

        def band(xs):
            index_y, weight_y, row = xs  # [B, r, T], [B, r, T], [r]
            logits = _resample(masks_by_row, index_y, weight_y)  # [B, r, Q, w]
            logits = _resample(ops.transpose(logits, (0, 3, 1, 2)), index_x, weight_x)
            # logits: [B, Wo, r, Q], the band's mask logits at output resolution
            valid = ops.logical_and(col_valid[:, :, None],
                                    row[None, None, :] < output_sizes[:, 0, None, None])
            masks = self._sigmoid(logits)
            out = {}
            if self.panoptic:
                prob = ops.where(keep[:, None, None, :], scores[:, None, None, :] * masks, -1.0)
                ids = _argmax(prob, axis=-1)  # [B, Wo, r]
                won = ops.logical_and(ids[..., None] == query_range, valid[..., None])
                own = ops.logical_and(masks >= 0.5, valid[..., None])
                out["mask_ids"] = ops.transpose(ids, (0, 2, 1))  # [B, r, Wo]
                out["area"] = ops.sum(ops.cast(won, "int32"), axis=(1, 2))  # [B, Q]
                out["original_area"] = ops.sum(ops.cast(own, "int32"), axis=(1, 2))
                if self.panoptic_rule == "mask2former":
                    painted = ops.logical_and(won, own)
                    out["painted_area"] = ops.sum(ops.cast(painted, "int32"), axis=(1, 2))
                    out["painted"] = ops.transpose(ops.any(painted, axis=-1),
                                                   (0, 2, 1))  # [B, r, Wo]
            if semantic:
                sem = ops.einsum("bxrq,bqk->bxrk", masks, class_probs)  # [B, Wo, r, K]
                out["sem_labels"] = ops.transpose(
                    _argmax(sem, axis=-1), (0, 2, 1))  # [B, r, Wo]
                if semantic_scores:
                    out["sem_scores"] = ops.transpose(sem, (0, 3, 2, 1))  # [B, K, r, Wo]
            if self.instance:
                chosen = _take_per_image(ops.transpose(logits, (0, 3, 1, 2)), inst_query)
                binary = ops.logical_and(chosen > 0, valid[:, None])  # [B, k, Wo, r]
                binary_f = ops.cast(binary, "float32")
                out["inst_prob"] = ops.sum(self._sigmoid(chosen) * binary_f, axis=(2, 3))
                out["inst_area"] = ops.sum(binary_f, axis=(2, 3))  # [B, k]
                out["inst_masks"] = ops.transpose(binary, (0, 1, 3, 2))  # [B, k, r, Wo]
            return out

        band_rows = ops.reshape(ops.arange(num_bands * rows, dtype="int32"), (num_bands, rows))
        bands = ops.map(band, (_split_bands(taps_y[0], num_bands, rows),
                               _split_bands(taps_y[1], num_bands, rows), band_rows))

        results: dict[str, Any] = {}
        if semantic:
            if semantic_scores:
                results["sem_seg"] = _join_bands(bands["sem_scores"], out_h)
            results["sem_seg_labels"] = _join_bands(bands["sem_labels"], out_h)
        if self.panoptic:
            area = ops.sum(bands["area"], axis=0)
            painted_area = ops.sum(bands["painted_area"], axis=0) if "painted" in bands else area
            segments = _panoptic_segments(labels, keep, area,
                                          ops.sum(bands["original_area"], axis=0), painted_area,
                                          isthing, self.overlap_threshold)
            mask_ids = _join_bands(bands["mask_ids"], out_h)  # [B, Ho, Wo]
            valid_px = _pixel_validity(output_sizes, output_shape)
            if "painted" in bands:  # Mask2Former: only painted pixels get an id
                valid_px = _join_bands(bands["painted"], out_h)
            results["panoptic"] = {
                "panoptic_seg": _panoptic_map(segments["query_segment_id"], mask_ids, valid_px),
                **segments}
        if self.instance:
            mask_score = ops.sum(bands["inst_prob"], axis=0) / (
                ops.sum(bands["inst_area"], axis=0) + 1e-6)
            results["instance"] = {
                "scores": class_scores * mask_score,
                "labels": inst_labels,
                "query": inst_query,
                "valid": inst_valid,
                "masks": _join_bands(bands["inst_masks"], out_h),  # [B, k, Ho, Wo]
            }
        return results

    def _semantic_after_inference(self, pred_logits, pred_masks, input_shape, valid_sizes,
                                  output_sizes, output_shape, semantic_scores: bool,
                                  unresized: bool = False) -> dict[str, Any]:
        """Semantic scores at the padded input size, then cropped and resized, band by band.

        An output row interpolates two padded-input rows of the K score maps; each of those is
        the class combination of the sigmoid of two upsampled mask rows. A band computes its
        2 x rows padded-input rows, combines them, and resamples the width last.

        `unresized` (every image's valid size is known to be the canvas): the crop-and-resize is
        the identity (weights exactly 1 and 0), so a band computes its own rows only and the
        width is a slice: half the work, the same values.
        """
        batch, num_queries = pred_masks.shape[:2]
        low_h, low_w = (_static(v) for v in ops.shape(pred_masks)[2:])
        num_classes = pred_logits.shape[-1] - 1
        in_h, in_w = input_shape
        out_h, out_w = output_shape
        width = max(in_w, out_w) if _is_static(in_w, out_w) else ops.maximum(in_w, out_w)
        rows = self._rows_per_band(batch, width, 2 * max(num_queries, num_classes), out_h)
        num_bands = -(-out_h // rows)
        crop_index, crop_weight = _crop_taps(valid_sizes[:, 0], output_sizes[:, 0],
                                             num_bands * rows)  # [B, n * rows, 2]
        j0, j1, v0, v1 = _taps(low_h, in_h)

        def upsample_taps(rows_read):  # the mask rows of padded-input rows [B, L] -> [B, L, 2]
            return (ops.stack([ops.take(j0, rows_read), ops.take(j1, rows_read)], axis=-1),
                    ops.stack([ops.take(v0, rows_read), ops.take(v1, rows_read)], axis=-1))

        # Per band: the padded-input rows its first taps read, then those its second taps read.
        first, second = (upsample_taps(crop_index[:, :, t]) for t in range(2))
        up_index, up_weight = (
            ops.concatenate([_split_bands(first[i], num_bands, rows)]
                            + ([] if unresized else [_split_bands(second[i], num_bands, rows)]),
                            axis=2)
            for i in range(2))  # [n, B, 2 rows (rows when unresized), 2]
        jx0, jx1, vx0, vx1 = _taps(low_w, in_w)  # the width: one rule for the batch
        index_x, weight_x = _crop_taps(valid_sizes[:, 1], output_sizes[:, 1], out_w)
        masks_by_row = ops.transpose(pred_masks, (0, 2, 1, 3))  # [B, h, Q, w]
        class_probs = _class_probs(pred_logits)  # [B, Q, K]

        def band(xs):
            index_y, weight_y, crop_w = xs  # [B, 2r, 2], [B, 2r, 2], [B, r, 2]
            up = _resample(masks_by_row, index_y, weight_y)  # [B, 2r, Q, w]
            up = ops.take(up, jx0, axis=3) * vx0 + ops.take(up, jx1, axis=3) * vx1  # [B, 2r, Q, W]
            sem = ops.einsum("bsqx,bqk->bxsk", self._sigmoid(up), class_probs)  # [B, W, 2r, K]
            if unresized:
                sem = sem[:, :out_w]  # [B, Wo, r, K]
            else:
                sem = (sem[:, :, :rows] * crop_w[:, None, :, 0, None]
                       + sem[:, :, rows:] * crop_w[:, None, :, 1, None])  # [B, W, r, K]
                sem = _resample(sem, index_x, weight_x)  # [B, Wo, r, K]
            out = {"sem_labels": ops.transpose(_argmax(sem, axis=-1),
                                               (0, 2, 1))}  # [B, r, Wo]
            if semantic_scores:
                out["sem_scores"] = ops.transpose(sem, (0, 3, 2, 1))  # [B, K, r, Wo]
            return out

        bands = ops.map(band, (up_index, up_weight, _split_bands(crop_weight, num_bands, rows)))
        results = {"sem_seg_labels": _join_bands(bands["sem_labels"], out_h)}
        if semantic_scores:
            results = {"sem_seg": _join_bands(bands["sem_scores"], out_h), **results}
        return results


def build_postprocessor(eval_config: Any, isthing: Sequence[bool],
                        panoptic_rule: str = "maskformer") -> PostProcessor:
    """A `PostProcessor` from an `EvalConfig`, the dataset's per-class thing flags and the
    model's panoptic rule (its `model.architecture`: "maskformer" or "mask2former")."""
    return PostProcessor(
        isthing,
        panoptic_rule=panoptic_rule,
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
