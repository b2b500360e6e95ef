"""The set criterion of MaskFormer (REFERENCE.md section 8), in `keras.ops`.

For the final output and each auxiliary output: match queries to targets (`matcher.py`), then

* ``loss_ce``: cross-entropy over all B x Q queries, unmatched queries labelled "no object" (index
  K), class weights 1 and `no_object_weight`, weighted mean (PyTorch's `F.cross_entropy` with
  `weight`);
* ``loss_mask``: sigmoid focal loss of each matched pair, the mask logits upsampled bilinearly
  (half-pixel) to the target size, mean over pixels, summed over pairs, / num_masks;
* ``loss_dice``: dice loss of each matched pair, summed, / num_masks;

num_masks being the number of targets in the batch (averaged over replicas by
`reduce_num_masks`), at least 1. `mask_loss="bce"` replaces the focal loss and cost by plain
sigmoid binary cross-entropy (Mask2Former's). Auxiliary
terms carry the suffix ``_i`` (``loss_ce_0`` is the first decoder layer). The total is the
weighted sum of all terms.

With `num_points` P > 0 (Mask2Former), neither side is resized: the matcher compares queries and
targets at P uniform random points per image (shared by all of them), and each matched pair's
losses read the stride-4 logits and the full-size target at P points chosen by PointRend's
importance sampling (`points.py`), so no [B, N, H, W] logits are ever made. The loss points are
selected only for the matched targets, `point_chunk` at a time in a loop whose length follows the
number of targets, so padded target slots cost (almost) nothing. The points are drawn from a
counter-based generator keyed by `compute(seed=...)` (an int, a [2] integer tensor such as the
trainer's (seed, step)) or by the criterion's `seed_generator`, or given to
`compute(points=...)`.

Shapes are static: targets are padded to N per image with a validity mask, and the mask losses
are computed per padded target (the prediction of its matched query) and masked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
from keras import ops

from maskformer.config import LossConfig
from maskformer.objective.matcher import compute_cost_matrix, match
from maskformer.objective.points import (
    draw_candidates,
    point_counts,
    point_sample,
    random_key,
    select_points_of_pairs,
    uniform_points,
)
from maskformer.resize import bilinear_resize

__all__ = ["SetCriterion", "build_criterion", "dice_loss", "sigmoid_ce_loss",
           "sigmoid_focal_loss"]


def sigmoid_focal_loss(logits, targets, alpha: float = 0.25, gamma: float = 2.0, pixel_weight=None):
    """Per-mask sigmoid focal loss, averaged over pixels.

    Args:
        logits: [M, P] mask logits.
        targets: [M, P] 0/1 targets.
        pixel_weight: optional [M, P] 0/1 weights; the mean is then over weighted pixels.

    Returns:
        [M] loss per mask.
    """
    prob = ops.sigmoid(logits)
    bce = ops.maximum(logits, 0.0) - logits * targets + ops.log1p(ops.exp(-ops.abs(logits)))
    p_t = prob * targets + (1.0 - prob) * (1.0 - targets)
    loss = bce * (1.0 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1.0 - alpha) * (1.0 - targets)) * loss
    if pixel_weight is None:
        return ops.mean(loss, axis=-1)
    return ops.sum(loss * pixel_weight, axis=-1) / ops.maximum(ops.sum(pixel_weight, axis=-1), 1.0)


def sigmoid_ce_loss(logits, targets, pixel_weight=None):
    """Per-mask binary cross-entropy with logits, averaged over pixels (Mask2Former's loss).

    Args:
        logits: [M, P]; targets: [M, P] in [0, 1]; pixel_weight: optional [M, P].

    Returns:
        [M] loss per mask.
    """
    loss = ops.maximum(logits, 0.0) - logits * targets + ops.log1p(ops.exp(-ops.abs(logits)))
    if pixel_weight is None:
        return ops.mean(loss, axis=-1)
    return ops.sum(loss * pixel_weight, axis=-1) / ops.maximum(ops.sum(pixel_weight, axis=-1), 1.0)


def dice_loss(logits, targets, pixel_weight=None):
    """Per-mask dice loss 1 - (2 sum(p t) + 1) / (sum(p) + sum(t) + 1), p = sigmoid(logits).

    Args:
        logits: [M, P]; targets: [M, P]; pixel_weight: optional [M, P].

    Returns:
        [M] loss per mask.
    """
    prob = ops.sigmoid(logits)
    if pixel_weight is not None:
        prob, targets = prob * pixel_weight, targets * pixel_weight
    numerator = 2.0 * ops.sum(prob * targets, axis=-1)
    denominator = ops.sum(prob, axis=-1) + ops.sum(targets, axis=-1)
    return 1.0 - (numerator + 1.0) / (denominator + 1.0)


class SetCriterion:
    """Matching plus losses: ``criterion(outputs, targets) -> (total, terms)``.

    Args:
        num_classes: K, the number of real classes (the logits have K + 1).
        class_weight, mask_weight, dice_weight: weights of the three terms in the total, also
            used as the matcher's cost weights (as in the original configs).
        no_object_weight: cross-entropy weight of the "no object" class.
        focal_alpha, focal_gamma: sigmoid focal loss parameters (matcher cost and loss).
        matcher: "hungarian" (in-graph) or "scipy" (host).
        ignore_padding: exclude pixels outside `targets["pixel_valid"]` from mask costs and losses
            (off in the original, where padding counts as background). Dense only.
        num_points: 0 for dense losses and costs on every pixel (MaskFormer); P > 0 to compute
            them at P sampled points (Mask2Former; 12544 = 112 x 112 there).
        oversample_ratio, importance_sample_ratio: PointRend's importance sampling of the loss
            points: int(P * oversample_ratio) candidates, of which the int(P *
            importance_sample_ratio) most uncertain are kept, the rest uniform.
        mask_loss: "focal" (sigmoid focal, MaskFormer) or "bce" (sigmoid cross-entropy,
            Mask2Former), for both the loss and the matcher's cost.
        seed: seed of the `seed_generator` the points are drawn from by default (None: random).
        point_chunk: how many matched masks' candidates are drawn and ranked at once (at most
            the number of target slots). A round costs the same for valid and padded masks.
        reduce_num_masks: averages the batch's target count over data-parallel replicas, as
            the original's all-reduce / world size does (the trainer passes
            `training.distribute.replica_mean`); None on one device, or where the batch is
            global (`jax.jit` on global arrays).
    """

    def __init__(
        self,
        num_classes: int,
        *,
        class_weight: float = 1.0,
        mask_weight: float = 20.0,
        dice_weight: float = 1.0,
        no_object_weight: float = 0.1,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        matcher: str = "hungarian",
        ignore_padding: bool = False,
        num_points: int = 0,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        mask_loss: str = "focal",
        seed: int | None = None,
        point_chunk: int = 32,
        reduce_num_masks: Callable[[Any], Any] | None = None,
    ):
        if matcher not in ("hungarian", "scipy"):
            raise ValueError(f"loss.matcher: {matcher!r} is not 'hungarian' or 'scipy'")
        if mask_loss not in ("focal", "bce"):
            raise ValueError(f"loss.mask_loss: {mask_loss!r} is not 'focal' or 'bce'")
        if num_points < 0 or oversample_ratio < 1 or not 0 <= importance_sample_ratio <= 1:
            raise ValueError(f"loss.num_points {num_points} must be >= 0, oversample_ratio "
                             f"{oversample_ratio} >= 1, importance_sample_ratio "
                             f"{importance_sample_ratio} in [0, 1]")
        if num_points > 0 and ignore_padding:
            raise ValueError("loss.ignore_padding is not supported with loss.num_points > 0")
        self.num_classes = num_classes
        self.class_weight = class_weight
        self.mask_weight = mask_weight
        self.dice_weight = dice_weight
        self.no_object_weight = no_object_weight
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.matcher = matcher
        self.ignore_padding = ignore_padding
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.mask_loss = mask_loss
        self.seed = seed
        if point_chunk < 1:
            raise ValueError(f"point_chunk {point_chunk} must be >= 1")
        self.point_chunk = point_chunk
        self.reduce_num_masks = reduce_num_masks
        # The state of the point draws: a variable, updated by every draw (in a compiled step
        # too). Made only where points are drawn, so dense criteria carry no extra state.
        self.seed_generator = keras.random.SeedGenerator(seed) if num_points > 0 else None

    def get_config(self) -> dict[str, Any]:
        return {
            "num_classes": self.num_classes,
            "class_weight": self.class_weight,
            "mask_weight": self.mask_weight,
            "dice_weight": self.dice_weight,
            "no_object_weight": self.no_object_weight,
            "focal_alpha": self.focal_alpha,
            "focal_gamma": self.focal_gamma,
            "matcher": self.matcher,
            "ignore_padding": self.ignore_padding,
            "num_points": self.num_points,
            "oversample_ratio": self.oversample_ratio,
            "importance_sample_ratio": self.importance_sample_ratio,
            "mask_loss": self.mask_loss,
            "seed": self.seed,
            "point_chunk": self.point_chunk,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SetCriterion:
        config = dict(config)
        return cls(config.pop("num_classes"), **config)

    @property
    def weights(self) -> dict[str, float]:
        return {"loss_ce": self.class_weight, "loss_mask": self.mask_weight,
                "loss_dice": self.dice_weight}

    # -- inputs -----------------------------------------------------------------------------

    def _read_targets(self, targets: dict[str, Any], cast_masks: bool = True):
        for key in ("masks", "labels", "valid"):
            if key not in targets:
                raise KeyError(f"targets[{key!r}] is missing (expected masks [B, N, H, W], "
                               "labels [B, N], valid [B, N])")
        # Point sampling reads the masks in their own dtype (no float32 copy of [B, N, H, W]).
        masks = (ops.cast(targets["masks"], "float32") if cast_masks
                 else ops.convert_to_tensor(targets["masks"]))
        labels = ops.cast(targets["labels"], "int32")
        valid = ops.cast(targets["valid"], "bool")
        if len(masks.shape) != 4 or masks.shape[:2] != labels.shape or labels.shape != valid.shape:
            raise ValueError(
                f"targets: masks {tuple(masks.shape)} must be [B, N, H, W] and labels "
                f"{tuple(labels.shape)} / valid {tuple(valid.shape)} [B, N]"
            )
        pixel_valid = None
        if self.ignore_padding:
            if targets.get("pixel_valid") is None:
                raise KeyError("targets['pixel_valid'] [B, H, W] is required with "
                               "loss.ignore_padding=true")
            pixel_valid = ops.cast(targets["pixel_valid"], "float32")
        return masks, labels, valid, pixel_valid

    @staticmethod
    def _layers(outputs: dict[str, Any]) -> list[tuple[str, Any, Any]]:
        """(suffix, pred_logits, pred_masks) for the final output and every auxiliary one."""
        for key in ("pred_logits", "pred_masks"):
            if key not in outputs:
                raise KeyError(f"outputs[{key!r}] is missing")
        layers = [("", outputs["pred_logits"], outputs["pred_masks"])]
        for i, aux in enumerate(outputs.get("aux_outputs") or []):
            for key in ("pred_logits", "pred_masks"):
                if key not in aux:
                    raise KeyError(f"outputs['aux_outputs'][{i}][{key!r}] is missing")
            layers.append((f"_{i}", aux["pred_logits"], aux["pred_masks"]))
        return layers

    # -- matching ---------------------------------------------------------------------------

    def match_layer(self, pred_logits, pred_masks, labels, masks, valid, pixel_valid=None,
                    point_coords=None):
        """Matches one output: returns ([B, Q] target index or -1, [B] non-finite cost count).

        `point_coords` [B, P, 2]: the matcher's points (with `num_points` > 0).
        """
        cost = compute_cost_matrix(
            pred_logits, pred_masks, labels, masks,
            class_weight=self.class_weight, mask_weight=self.mask_weight,
            dice_weight=self.dice_weight, focal_alpha=self.focal_alpha,
            focal_gamma=self.focal_gamma, pixel_valid=pixel_valid,
            mask_loss=self.mask_loss, point_coords=point_coords,
        )
        return match(cost, valid, self.matcher)

    # -- points -----------------------------------------------------------------------------

    def layer_points(self, batch: int, key, layer: int) -> dict[str, Any]:
        """One output's drawn points: `match` [B, P, 2] and `draw(slots)` for the loss.

        Output `layer` (0: final) uses streams 3 * layer (matcher), + 1 (candidates) and + 2
        (extra random points) of `key`; a mask's loss points depend on its slot b * N + n.
        """
        stream = 3 * layer

        def draw(slots):
            return draw_candidates(slots, self.num_points, self.oversample_ratio,
                                   self.importance_sample_ratio, key, stream + 1)

        return {"match": uniform_points(batch, self.num_points, key, stream), "draw": draw}

    def _pair_mask_losses(self, logits, target, pixel_weight=None):
        """[M] mask loss and [M] dice loss of M pairs; [M, P] logits and targets."""
        if self.mask_loss == "bce":
            mask = sigmoid_ce_loss(logits, target, pixel_weight)
        else:
            mask = sigmoid_focal_loss(logits, target, self.focal_alpha, self.focal_gamma,
                                      pixel_weight)
        return mask, dice_loss(logits, target, pixel_weight)

    # -- losses -----------------------------------------------------------------------------

    def _layer_losses(self, pred_logits, pred_masks, query_to_target, labels, masks, valid,
                      pixel_valid, num_masks, points=None):
        pred_logits = ops.cast(pred_logits, "float32")
        pred_masks = ops.cast(pred_masks, "float32")
        batch, num_queries, num_logits = pred_logits.shape
        num_targets = labels.shape[1]
        height, width = masks.shape[2], masks.shape[3]
        matched_query = query_to_target >= 0  # [B, Q]

        # Classification over all queries; unmatched ones are "no object" (index K).
        target_classes = ops.full((batch, num_queries), self.num_classes, dtype="int32")
        if num_targets > 0:
            safe_target = ops.maximum(query_to_target, 0)
            matched_label = ops.take_along_axis(labels, safe_target, axis=1)  # [B, Q]
            target_classes = ops.where(matched_query, matched_label, target_classes)
        target_classes = ops.clip(target_classes, 0, num_logits - 1)
        log_probs = ops.log_softmax(pred_logits, axis=-1)  # [B, Q, K+1]
        nll = -ops.take_along_axis(log_probs, target_classes[:, :, None], axis=2)[:, :, 0]
        class_weight = ops.where(target_classes == self.num_classes, self.no_object_weight, 1.0)
        loss_ce = ops.sum(class_weight * nll) / ops.sum(class_weight)

        if num_targets == 0:
            zero = ops.sum(pred_masks) * 0.0  # keeps the graph connected to pred_masks
            return {"loss_ce": loss_ce, "loss_mask": zero, "loss_dice": zero}

        # For every padded target, the query matched to it.
        hits = query_to_target[:, :, None] == ops.arange(num_targets, dtype="int32")[None, None, :]
        target_matched = ops.any(hits, axis=1)  # [B, N]
        target_query = ops.cast(ops.argmax(ops.cast(hits, "int32"), axis=1), "int32")  # [B, N]
        h, w = pred_masks.shape[2], pred_masks.shape[3]
        # One gather of whole maps by flat query number (no [B, N, h, w] index tensor).
        flat_query = target_query + ops.arange(batch, dtype="int32")[:, None] * num_queries
        matched_pred = ops.take(ops.reshape(pred_masks, (batch * num_queries, h, w)),
                                ops.reshape(flat_query, (-1,)), axis=0)
        matched_pred = ops.reshape(matched_pred, (batch, num_targets, h, w))
        # The pairs whose losses count: valid targets that a query was matched to. [B * N]
        pair_valid = ops.reshape(ops.logical_and(target_matched, valid), (batch * num_targets,))
        if points is not None:
            focal, dice = self._point_losses(matched_pred, masks, points, pair_valid)
        else:
            matched_pred = bilinear_resize(matched_pred, (height, width))  # [B, N, H, W]
            logits = ops.reshape(matched_pred, (batch * num_targets, height * width))
            target = ops.reshape(masks, (batch * num_targets, height * width))
            pixel_weight = None
            if pixel_valid is not None:
                pixel_weight = ops.broadcast_to(pixel_valid[:, None],
                                                (batch, num_targets, height, width))
                pixel_weight = ops.reshape(pixel_weight, (batch * num_targets, height * width))
            focal, dice = self._pair_mask_losses(logits, target, pixel_weight)
        # where(), not a product: an unmatched padded target must not leak NaN into the sum.
        loss_mask = ops.sum(ops.where(pair_valid, focal, 0.0)) / num_masks
        loss_dice = ops.sum(ops.where(pair_valid, dice, 0.0)) / num_masks
        return {"loss_ce": loss_ce, "loss_mask": loss_mask, "loss_dice": loss_dice}

    def _point_losses(self, matched_pred, masks, points, pair_valid):
        """Mask and dice loss of every padded target ([B * N] each) at importance-sampled points.

        matched_pred: [B, N, h, w] logits of each target's query; masks: [B, N, H, W]; points:
        `coords` [B, N, P, 2], or `candidates` [B, N, C, 2] and `random` [B, N, R, 2] to select
        from, or `draw(slots)`; pair_valid [B * N]: the matched valid targets, the only ones whose
        points are selected (the others' losses are computed on unspecified points and dropped).
        """
        batch, num_targets, h, w = matched_pred.shape
        pairs = batch * num_targets
        pred = ops.reshape(matched_pred, (pairs, 1, h, w))
        if "coords" in points:
            coords = ops.stop_gradient(ops.cast(points["coords"], "float32"))
        else:
            draw = points.get("draw")
            if draw is None:
                candidates = ops.reshape(points["candidates"],
                                         (pairs, *points["candidates"].shape[2:]))
                random_points = ops.reshape(points["random"],
                                            (pairs, *points["random"].shape[2:]))

                def draw(slots):
                    return (ops.take(candidates, slots, axis=0),
                            ops.take(random_points, slots, axis=0))

            _, num_importance, _ = point_counts(self.num_points, self.oversample_ratio,
                                                self.importance_sample_ratio)
            coords = select_points_of_pairs(pred, pair_valid, draw, self.num_points,
                                            num_importance, chunk=self.point_chunk)
        coords = ops.reshape(coords, (pairs, coords.shape[-2], 2))  # [B*N, P, 2]
        point_logits = point_sample(pred, coords)[:, 0]  # [B*N, P]
        target = ops.reshape(masks, (pairs, 1, *masks.shape[2:]))
        point_labels = ops.stop_gradient(point_sample(target, coords)[:, 0])  # [B*N, P]
        return self._pair_mask_losses(point_logits, point_labels)

    def __call__(self, outputs: dict[str, Any], targets: dict[str, Any]):
        """Computes every loss term and their weighted total.

        Args:
            outputs: `pred_logits` [B, Q, K+1], `pred_masks` [B, Q, h, w], optional `aux_outputs`
                (a list of such dicts).
            targets: `masks` [B, N, H, W] 0/1, `labels` [B, N] int, `valid` [B, N] bool, optional
                `pixel_valid` [B, H, W] (required with `ignore_padding`).

        Returns:
            (total, terms): the weighted scalar total, and a dict of the unweighted terms
            `loss_ce`, `loss_mask`, `loss_dice`, `loss_ce_0`, ... (as the original's SetCriterion
            returns them) plus `matcher_nonfinite_costs`, the number of non-finite matching
            costs that were replaced (0 in healthy training; not part of the total).
        """
        total, terms, _ = self.compute(outputs, targets)
        return total, terms

    def compute(self, outputs: dict[str, Any], targets: dict[str, Any], points=None,
                seed: Any = None):
        """Like `__call__`, also returning the assignments: (total, terms, matches).

        `matches` is a list of [B, Q] int32 target indices (-1: no object), final output first,
        then auxiliary outputs 0, 1, ...

        With `num_points` > 0, `points` may give every output's points (final first) as a list
        of dicts like `draw_points` returns (`match`, and `candidates` + `random` or the final
        loss points `coords` [B, N, P, 2]); by default they are drawn with the key of `seed`
        (an int, a [2] integer tensor or a `keras.random.SeedGenerator`), else of
        `self.seed_generator` (which then advances by one).
        """
        if self.num_points > 0:
            return self._compute(outputs, targets, points, seed)
        if points is not None:
            raise ValueError("points are given but num_points is 0 (dense losses)")
        masks, labels, valid, pixel_valid = self._read_targets(targets)
        local_count = ops.sum(ops.cast(valid, "float32"))
        if self.reduce_num_masks is not None:
            local_count = self.reduce_num_masks(local_count)
        num_masks = ops.maximum(local_count, 1.0)
        num_masks = ops.stop_gradient(num_masks)

        terms: dict[str, Any] = {}
        matches = []
        total = 0.0
        num_bad = 0
        for suffix, pred_logits, pred_masks in self._layers(outputs):
            query_to_target, bad = self.match_layer(
                pred_logits, pred_masks, labels, masks, valid, pixel_valid
            )
            matches.append(query_to_target)
            num_bad = num_bad + ops.sum(bad)
            losses = self._layer_losses(pred_logits, pred_masks, query_to_target, labels, masks,
                                        valid, pixel_valid, num_masks)
            for name, value in losses.items():
                terms[name + suffix] = value
                total = total + self.weights[name] * value
        terms["matcher_nonfinite_costs"] = ops.cast(num_bad, "float32")
        return total, terms, matches

    def _compute(self, outputs, targets, points, seed):
        """`compute` with point-sampled costs and losses."""
        masks, labels, valid, _ = self._read_targets(targets, cast_masks=False)
        local_count = ops.sum(ops.cast(valid, "float32"))
        if self.reduce_num_masks is not None:
            local_count = self.reduce_num_masks(local_count)
        num_masks = ops.stop_gradient(ops.maximum(local_count, 1.0))

        layers = self._layers(outputs)
        if points is not None and len(points) != len(layers):
            raise ValueError(f"points: {len(points)} entries for {len(layers)} outputs")
        batch = labels.shape[0]
        key = None
        if points is None:
            key = random_key(self.seed_generator if seed is None else seed)
        terms: dict[str, Any] = {}
        matches = []
        total = 0.0
        num_bad = 0
        for i, (suffix, pred_logits, pred_masks) in enumerate(layers):
            layer_points = points[i] if points is not None else self.layer_points(batch, key, i)
            query_to_target, bad = self.match_layer(
                pred_logits, pred_masks, labels, masks, valid,
                point_coords=layer_points["match"])
            matches.append(query_to_target)
            num_bad = num_bad + ops.sum(bad)
            losses = self._layer_losses(pred_logits, pred_masks, query_to_target, labels, masks,
                                        valid, None, num_masks, points=layer_points)
            for name, value in losses.items():
                terms[name + suffix] = value
                total = total + self.weights[name] * value
        terms["matcher_nonfinite_costs"] = ops.cast(num_bad, "float32")
        return total, terms, matches


def build_criterion(loss_config: LossConfig, num_classes: int,
                    reduce_num_masks: Callable[[Any], Any] | None = None) -> SetCriterion:
    """The criterion of an experiment's `loss` config for a model with `num_classes` classes."""
    return SetCriterion(
        num_classes,
        class_weight=loss_config.class_weight,
        mask_weight=loss_config.mask_weight,
        dice_weight=loss_config.dice_weight,
        no_object_weight=loss_config.no_object_weight,
        focal_alpha=loss_config.focal_alpha,
        focal_gamma=loss_config.focal_gamma,
        matcher=loss_config.matcher,
        ignore_padding=loss_config.ignore_padding,
        num_points=loss_config.num_points,
        oversample_ratio=loss_config.oversample_ratio,
        importance_sample_ratio=loss_config.importance_sample_ratio,
        mask_loss=loss_config.mask_loss,
        reduce_num_masks=reduce_num_masks,
    )
