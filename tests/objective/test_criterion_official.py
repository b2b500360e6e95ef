"""The criterion against the original code's SetCriterion / HungarianMatcher (README section C).

Six cases from criterion_cases.npz: an image without targets, N = Q, odd sizes, target sizes that
are not multiples of the prediction size. Every matching must be identical (final and each
auxiliary output), every term within 1e-5 relative, and the weighted total too.
"""

import json

import numpy as np
import pytest

from maskformer.objective.criterion import SetCriterion
from tests.objective.helpers import quick, to_numpy

FILE = "criterion_cases.npz"


def _case(z, key):
    b, nmax = z[f"{key}/target_labels"].shape
    counts = z[f"{key}/target_counts"]
    valid = np.arange(nmax)[None, :] < counts[:, None]
    outputs = {
        "pred_logits": z[f"{key}/pred_logits"],
        "pred_masks": z[f"{key}/pred_masks"],
        "aux_outputs": [
            {"pred_logits": z[f"{key}/aux_{i}/pred_logits"],
             "pred_masks": z[f"{key}/aux_{i}/pred_masks"]}
            for i in range(2)
        ],
    }
    targets = {
        "masks": z[f"{key}/target_masks"].astype(np.float32),
        "labels": z[f"{key}/target_labels"].astype(np.int32),
        "valid": valid,
    }
    return outputs, targets, counts


@pytest.fixture(scope="module")
def cases():
    from tests.conftest import reference_file

    z = np.load(reference_file(FILE))
    config = json.loads(str(z["config"]))
    return z, config


@pytest.mark.parametrize("case", range(6))
def test_matching_and_losses_equal_the_original(cases, case):
    z, config = cases
    key = f"case{case}"
    criterion = SetCriterion(config["num_classes"], no_object_weight=config["eos_coef"])
    outputs, targets, counts = _case(z, key)

    total, terms, matches = to_numpy(quick(criterion.compute)(outputs, targets))

    for layer, name in enumerate(["final", "aux_0", "aux_1"]):
        for b, count in enumerate(counts):
            src = z[f"{key}/match/{name}/b{b}/src"]
            tgt = z[f"{key}/match/{name}/b{b}/tgt"]
            expected = np.full(matches[layer].shape[1], -1)
            expected[src] = tgt
            np.testing.assert_array_equal(matches[layer][b], expected,
                                          err_msg=f"{key} {name} image {b} (N={count})")
    for name in config["cases"][case]["loss_keys"]:
        np.testing.assert_allclose(terms[name], z[f"{key}/loss/{name}"], rtol=1e-5, atol=1e-7,
                                   err_msg=f"{key} {name}")
        weight = config["weight_dict"][name]
        np.testing.assert_allclose(weight * terms[name], z[f"{key}/weighted_loss/{name}"],
                                   rtol=1e-5, atol=1e-7, err_msg=f"{key} weighted {name}")
    np.testing.assert_allclose(total, z[f"{key}/total_loss"], rtol=1e-5, err_msg=f"{key} total")
    assert terms["matcher_nonfinite_costs"] == 0


def test_cost_matrix_equals_the_original(cases):
    """The matcher's cost matrices (a debug aid in the file) to float32 rounding."""
    from maskformer.objective.matcher import compute_cost_matrix

    z, _ = cases
    for key in ("case3", "case5"):
        outputs, targets, counts = _case(z, key)
        cost = to_numpy(compute_cost_matrix(outputs["pred_logits"], outputs["pred_masks"],
                                            targets["labels"], targets["masks"]))
        for b, count in enumerate(counts):
            np.testing.assert_allclose(cost[b, :, :count], z[f"{key}/cost/final/b{b}"],
                                       rtol=1e-5, atol=1e-5, err_msg=f"{key} image {b}")
