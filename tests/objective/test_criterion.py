"""Behaviour of the criterion beyond the reference parity tests: options, errors, robustness."""

import numpy as np
import pytest

from maskformer.config import LossConfig
from maskformer.objective.criterion import SetCriterion, build_criterion
from tests.objective.helpers import quick, to_numpy


def _problem(rng, batch=2, queries=8, classes=4, hw=(6, 8), target_hw=(24, 32), counts=(2, 3)):
    nmax = max(counts) + 1
    outputs = {"pred_logits": rng.normal(0, 2, (batch, queries, classes + 1)).astype(np.float32),
               "pred_masks": rng.normal(0, 3, (batch, queries) + hw).astype(np.float32)}
    outputs["aux_outputs"] = [{k: v + rng.normal(0, 1, v.shape).astype(np.float32)
                               for k, v in outputs.items()}]
    targets = {"masks": (rng.random((batch, nmax) + target_hw) > 0.6).astype(np.float32),
               "labels": rng.integers(0, classes, (batch, nmax)).astype(np.int32),
               "valid": np.arange(nmax)[None, :] < np.asarray(counts)[:, None]}
    return outputs, targets


def test_build_from_config_and_round_trip():
    config = LossConfig(mask_weight=5.0, no_object_weight=0.2, matcher="scipy")
    criterion = build_criterion(config, num_classes=4)
    assert criterion.mask_weight == 5.0 and criterion.no_object_weight == 0.2
    again = SetCriterion.from_config(criterion.get_config())
    assert again.get_config() == criterion.get_config()
    with pytest.raises(ValueError, match="loss.matcher"):
        SetCriterion(4, matcher="greedy")


def test_total_is_the_weighted_sum_and_weights_apply():
    rng = np.random.default_rng(0)
    outputs, targets = _problem(rng)
    total, terms = to_numpy(quick(SetCriterion(4, mask_weight=3.0))(outputs, targets))
    names = ["loss_ce", "loss_mask", "loss_dice", "loss_ce_0", "loss_mask_0", "loss_dice_0"]
    assert set(terms) == set(names) | {"matcher_nonfinite_costs"}
    weights = {"loss_ce": 1.0, "loss_mask": 3.0, "loss_dice": 1.0}
    expected = sum(weights[n.removesuffix("_0")] * terms[n] for n in names)
    np.testing.assert_allclose(total, expected, rtol=1e-6)


def test_scipy_matcher_option_gives_the_same_losses():
    import keras

    rng = np.random.default_rng(1)
    outputs, targets = _problem(rng)
    in_graph = to_numpy(quick(SetCriterion(4))(outputs, targets))
    criterion = SetCriterion(4, matcher="scipy")
    if keras.backend.backend() == "jax":
        import jax

        host = to_numpy(jax.jit(criterion)(outputs, targets))
    else:
        import tensorflow as tf

        host = to_numpy(tf.function(criterion)(outputs, targets))  # graph mode, no XLA
    np.testing.assert_allclose(host[0], in_graph[0], rtol=1e-6)
    for name in in_graph[1]:
        np.testing.assert_allclose(host[1][name], in_graph[1][name], rtol=1e-6, err_msg=name)


def test_ignore_padding_excludes_padded_pixels():
    rng = np.random.default_rng(2)
    outputs, targets = _problem(rng)
    pixel_valid = np.zeros((2, 24, 32), bool)
    pixel_valid[0, :20, :27] = True
    pixel_valid[1, :24, :17] = True
    targets["pixel_valid"] = pixel_valid
    changed = dict(targets)
    changed["masks"] = np.where(pixel_valid[:, None], targets["masks"],
                                1.0 - targets["masks"]).astype(np.float32)

    ignoring = quick(SetCriterion(4, ignore_padding=True).compute)
    default = quick(SetCriterion(4).compute)
    a, b = to_numpy(ignoring(outputs, targets)), to_numpy(ignoring(outputs, changed))
    for name in a[1]:  # what lies in the padding does not matter with the option...
        np.testing.assert_allclose(a[1][name], b[1][name], rtol=1e-6, err_msg=name)
    c, d = to_numpy(default(outputs, targets)), to_numpy(default(outputs, changed))
    assert abs(c[1]["loss_mask"] - d[1]["loss_mask"]) > 1e-3  # ...and does without it

    # With every pixel valid the option changes nothing.
    targets["pixel_valid"] = np.ones((2, 24, 32), bool)
    e = to_numpy(ignoring(outputs, targets))
    for name in c[1]:
        np.testing.assert_allclose(e[1][name], c[1][name], rtol=1e-5, err_msg=name)

    with pytest.raises(KeyError, match="pixel_valid"):
        SetCriterion(4, ignore_padding=True)(outputs, {k: v for k, v in targets.items()
                                                       if k != "pixel_valid"})


def test_diverged_predictions_do_not_crash_and_are_reported():
    rng = np.random.default_rng(3)
    outputs, targets = _problem(rng)
    outputs["pred_masks"][0, 2] = np.nan  # one query of image 0 diverged
    outputs["pred_logits"][1, 5] = np.nan
    total, terms, matches = to_numpy(quick(SetCriterion(4).compute)(outputs, targets))
    # Image 0: the NaN query's costs against its 2 targets; image 1: NaN logits make the
    # softmax of query 5 NaN, against its 3 targets.
    assert terms["matcher_nonfinite_costs"] == 2 + 3
    assert matches[0][0, 2] == -1 and matches[0][1, 5] == -1  # avoided by the matcher
    for m in matches:
        for b, n in enumerate((2, 3)):
            assert sorted(m[b][m[b] >= 0].tolist()) == list(range(n))
    assert np.isfinite(terms["loss_dice_0"])


def test_missing_inputs_are_named():
    rng = np.random.default_rng(4)
    outputs, targets = _problem(rng)
    with pytest.raises(KeyError, match="valid"):
        SetCriterion(4)(outputs, {"masks": targets["masks"], "labels": targets["labels"]})
    with pytest.raises(KeyError, match=r"aux_outputs'\]\[0\]\['pred_masks'\]"):
        SetCriterion(4)({**outputs, "aux_outputs": [{"pred_logits": outputs["pred_logits"]}]},
                        targets)


def test_num_masks_is_averaged_inside_a_tf_distribute_strategy():
    """Inside a strategy the replica context's all-reduce runs (one CPU replica here)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("tf.distribute is TensorFlow's")
    import tensorflow as tf

    from maskformer.training.distribute import replica_mean

    rng = np.random.default_rng(5)
    outputs, targets = _problem(rng)
    criterion = SetCriterion(4, reduce_num_masks=replica_mean)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        total = strategy.run(tf.function(lambda o, t: criterion(o, t)[0]), (outputs, targets))
        averaged = strategy.run(tf.function(lambda: replica_mean(tf.constant(6.0))))
    np.testing.assert_allclose(to_numpy(total), to_numpy(criterion(outputs, targets)[0]), rtol=1e-6)
    assert float(averaged) == 6.0
