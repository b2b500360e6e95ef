"""The set criterion of MaskFormer (REFERENCE.md section 8), in `keras.ops`.

For the final output and each auxiliary output: match queries to targets (`matcher.py`), then

* ``loss_ce``: cross-entropy over all B x Q queries, unmatched queries labelled "no object" (index
  K), class weights 1 and `no_object_weight`, weighted mean (PyTorch's `F.cross_entropy` with
  `weight`);
* ``loss_mask``: sigmoid focal loss of each matched pair, the mask logits upsampled bilinearly
  (half-pixel) to the target size, mean over pixels, summed over pairs, / num_masks;
* ``loss_dice``: dice loss of each matched pair, summed, / num_masks;

num_masks being the number of targets in the batch (averaged over replicas by
`reduce_num_masks`), at least 1. Auxiliary
terms carry the suffix ``_i`` (``loss_ce_0`` is the first decoder layer). The total is the
weighted sum of all terms.

Shapes are static: targets are padded to N per image with a validity mask, and the mask losses
are computed per padded target (the prediction of its matched query) and masked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from keras import ops

from maskformer.config import LossConfig
from maskformer.objective.matcher import compute_cost_matrix, match
from maskformer.resize import bilinear_resize

__all__ = ["SetCriterion", "build_criterion", "dice_loss", "sigmoid_focal_loss"]


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
            (off in the original, where padding counts as background).
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
        reduce_num_masks: Callable[[Any], Any] | None = None,
    ):
        if matcher not in ("hungarian", "scipy"):
            raise ValueError(f"loss.matcher: {matcher!r} is not 'hungarian' or 'scipy'")
        self.num_classes = num_classes
        self.class_weight = class_weight
        self.mask_weight = mask_weight
        self.dice_weight = dice_weight
        self.no_object_weight = no_object_weight
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.matcher = matcher
        self.ignore_padding = ignore_padding
        self.reduce_num_masks = reduce_num_masks

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

    def _read_targets(self, targets: dict[str, Any]):
        for key in ("masks", "labels", "valid"):
            if key not in targets:
                raise KeyError(f"targets[{key!r}] is missing (expected masks [B, N, H, W], "
                               "labels [B, N], valid [B, N])")
        masks = ops.cast(targets["masks"], "float32")
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

    def match_layer(self, pred_logits, pred_masks, labels, masks, valid, pixel_valid=None):
        """Matches one output: returns ([B, Q] target index or -1, [B] non-finite cost count)."""
        cost = compute_cost_matrix(
            pred_logits, pred_masks, labels, masks,
            class_weight=self.class_weight, mask_weight=self.mask_weight,
            dice_weight=self.dice_weight, focal_alpha=self.focal_alpha,
            focal_gamma=self.focal_gamma, pixel_valid=pixel_valid,
        )
        return match(cost, valid, self.matcher)

    # -- losses -----------------------------------------------------------------------------

    def _layer_losses(self, pred_logits, pred_masks, query_to_target, labels, masks, valid,
                      pixel_valid, num_masks):
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
        index = ops.broadcast_to(target_query[:, :, None, None], (batch, num_targets, h, w))
        matched_pred = ops.take_along_axis(pred_masks, index, axis=1)  # [B, N, h, w]
        matched_pred = bilinear_resize(matched_pred, (height, width))  # [B, N, H, W]

        logits = ops.reshape(matched_pred, (batch * num_targets, height * width))
        target = ops.reshape(masks, (batch * num_targets, height * width))
        pixel_weight = None
        if pixel_valid is not None:
            pixel_weight = ops.broadcast_to(pixel_valid[:, None], (batch, num_targets, height, width))
            pixel_weight = ops.reshape(pixel_weight, (batch * num_targets, height * width))
        focal = sigmoid_focal_loss(logits, target, self.focal_alpha, self.focal_gamma, pixel_weight)
        dice = dice_loss(logits, target, pixel_weight)
        pair = ops.reshape(ops.logical_and(target_matched, valid), (batch * num_targets,))
        pair = ops.cast(pair, "float32")
        # where(), not a product: an unmatched padded target must not leak NaN into the sum.
        loss_mask = ops.sum(ops.where(pair > 0, focal, 0.0)) / num_masks
        loss_dice = ops.sum(ops.where(pair > 0, dice, 0.0)) / num_masks
        return {"loss_ce": loss_ce, "loss_mask": loss_mask, "loss_dice": loss_dice}

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

    def compute(self, outputs: dict[str, Any], targets: dict[str, Any]):
        """Like `__call__`, also returning the assignments: (total, terms, matches).

        `matches` is a list of [B, Q] int32 target indices (-1: no object), final output first,
        then auxiliary outputs 0, 1, ...
        """
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
        reduce_num_masks=reduce_num_masks,
    )
