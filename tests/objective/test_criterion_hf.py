"""Parity with Hugging Face's MaskFormerHungarianMatcher and MaskFormerLoss, gradients included.

HF matches the original's matcher and losses (REFERENCE.md section 12). It differs in the model's
auxiliary outputs (6 including the decoder's zero input, not normalised), not in how the loss
treats them: here both receive the same auxiliary predictions, so the auxiliary terms follow the
original (dec_layers - 1 entries, suffix _i) and are compared one to one. HF names the
classification term `loss_cross_entropy`; the original and we call it `loss_ce`.

One case runs XLA-compiled (`tf.function(jit_compile=True)` / `jax.jit`) with the gradients
w.r.t. pred_logits and pred_masks, which are compared with PyTorch autograd.
"""

import os

import numpy as np
import pytest
import torch

from maskformer.objective.criterion import SetCriterion
from tests.objective.helpers import compiled_value_and_grad, quick, to_numpy

os.environ.setdefault("HF_HUB_OFFLINE", "1")
modeling = pytest.importorskip("transformers.models.maskformer.modeling_maskformer")

WEIGHTS = {"loss_ce": 1.0, "loss_mask": 20.0, "loss_dice": 1.0}


def _random_problem(rng, batch, queries, classes, hw, target_hw, counts, num_aux):
    h, w = hw
    height, width = target_hw
    nmax = max(counts) + 1  # at least one padded slot, filled with junk the criterion must ignore

    def layer():
        return {
            "pred_logits": rng.normal(0, 2, (batch, queries, classes + 1)).astype(np.float32),
            "pred_masks": rng.normal(0, 3, (batch, queries, h, w)).astype(np.float32),
        }

    outputs = layer()
    outputs["aux_outputs"] = [layer() for _ in range(num_aux)]
    masks = (rng.random((batch, nmax, height, width)) > 0.6).astype(np.float32)
    labels = rng.integers(0, classes, (batch, nmax)).astype(np.int32)
    valid = np.arange(nmax)[None, :] < np.asarray(counts)[:, None]
    labels[~valid] = -1
    return outputs, {"masks": masks, "labels": labels, "valid": valid}


def _hf(outputs, targets, classes, counts):
    """HF's matches, loss terms (renamed to the original's) and gradients of the total."""
    matcher = modeling.MaskFormerHungarianMatcher(cost_class=1.0, cost_mask=20.0, cost_dice=1.0)
    loss = modeling.MaskFormerLoss(num_labels=classes, matcher=matcher, weight_dict={},
                                   eos_coef=0.1)
    layers = [outputs] + outputs["aux_outputs"]
    tensors = [(torch.tensor(o["pred_logits"], requires_grad=True),
                torch.tensor(o["pred_masks"], requires_grad=True)) for o in layers]
    mask_labels = [torch.tensor(targets["masks"][b, :n]) for b, n in enumerate(counts)]
    class_labels = [torch.tensor(targets["labels"][b, :n]).long() for b, n in enumerate(counts)]
    aux = [{"class_queries_logits": lg, "masks_queries_logits": mk} for lg, mk in tensors[1:]]
    terms = loss(tensors[0][1], tensors[0][0], mask_labels, class_labels,
                 auxiliary_predictions=aux)
    terms = {k.replace("loss_cross_entropy", "loss_ce"): v for k, v in terms.items()}
    total = sum(WEIGHTS[k.rstrip("_0123456789") if k[-1].isdigit() else k] * v
                for k, v in terms.items())
    total.backward()
    with torch.no_grad():
        matches = []
        for lg, mk in tensors:
            per_image = matcher(mk, lg, mask_labels, class_labels)
            m = np.full((lg.shape[0], lg.shape[1]), -1)
            for b, (src, tgt) in enumerate(per_image):
                m[b, src.numpy()] = tgt.numpy()
            matches.append(m)
    grads = [(lg.grad.numpy(), mk.grad.numpy()) for lg, mk in tensors]
    return matches, {k: float(v.detach()) for k, v in terms.items()}, float(total.detach()), grads


def _check(outputs, targets, classes, counts, with_gradients):
    matches_hf, terms_hf, total_hf, grads_hf = _hf(outputs, targets, classes, counts)
    criterion = SetCriterion(classes)
    if with_gradients:
        total, terms, matches, grads = compiled_value_and_grad(criterion, outputs, targets)
    else:
        total, terms, matches = to_numpy(quick(criterion.compute)(outputs, targets))

    for layer, (ours, theirs) in enumerate(zip(matches, matches_hf, strict=True)):
        np.testing.assert_array_equal(ours, theirs, err_msg=f"matches of layer {layer}")
    assert set(terms) - {"matcher_nonfinite_costs"} == set(terms_hf)
    for name, value in terms_hf.items():
        np.testing.assert_allclose(terms[name], value, rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(total, total_hf, rtol=1e-5)
    if not with_gradients:
        return
    layers = [grads] + grads["aux_outputs"]
    for layer, (ours, (g_logits, g_masks)) in enumerate(zip(layers, grads_hf, strict=True)):
        assert np.isfinite(ours["pred_logits"]).all() and np.isfinite(ours["pred_masks"]).all()
        scale_l, scale_m = np.abs(g_logits).max(), np.abs(g_masks).max()
        np.testing.assert_allclose(ours["pred_logits"], g_logits, rtol=1e-4, atol=1e-5 * scale_l,
                                   err_msg=f"d/d pred_logits, layer {layer}")
        np.testing.assert_allclose(ours["pred_masks"], g_masks, rtol=1e-4, atol=1e-5 * scale_m,
                                   err_msg=f"d/d pred_masks, layer {layer}")


@pytest.mark.parametrize("batch,queries,classes,hw,target_hw,counts", [
    (1, 10, 5, (12, 16), (48, 64), (3,)),
    (4, 12, 7, (10, 14), (40, 56), (2, 12, 1, 5)),  # N = Q in one image
    (2, 100, 133, (16, 16), (64, 64), (25, 7)),  # real Q and K
])
def test_terms_and_matches_equal_hf(batch, queries, classes, hw, target_hw, counts):
    rng = np.random.default_rng(sum(counts) + queries)
    outputs, targets = _random_problem(rng, batch, queries, classes, hw, target_hw, counts, 2)
    _check(outputs, targets, classes, counts, with_gradients=False)


def test_compiled_loss_and_gradients_equal_hf():
    """The whole criterion XLA-compiled with its gradients; odd sizes, targets not a multiple."""
    rng = np.random.default_rng(5)
    outputs, targets = _random_problem(rng, 3, 20, 7, (13, 17), (50, 69), (2, 6, 1), 2)
    _check(outputs, targets, 7, (2, 6, 1), with_gradients=True)
