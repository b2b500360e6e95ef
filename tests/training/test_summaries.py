"""TensorBoard output of training: every loss term and the learning rate at the global step,
and periodic evaluation (metrics, prediction pictures) that agrees with a separate evaluation
of the saved model."""

import json

import numpy as np
import pytest

from maskformer.config import apply_overrides
from maskformer.experiments import get_experiment
from maskformer.inference import evaluate
from maskformer.model_dir import load_model
from maskformer.training.summaries import metric_scalars, read_summaries
from maskformer.training.trainer import train
from tests.training.conftest import smoke_overrides

STEPS = 4


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shapes_records):
    config = apply_overrides(get_experiment("maskformer_smoke"), smoke_overrides(
        shapes_records, **{"loss.matcher": "scipy", "train.log_every": 1,
                           "train.eval_every": 2, "train.checkpoint_every": STEPS,
                           "eval.object_mask_threshold": 0.0, "eval.overlap_threshold": 0.0,
                           "data.eval_output_size": "[64, 64]"}))
    model_dir = tmp_path_factory.mktemp("run")
    result = train(config, model_dir, steps=STEPS, verbose=0)
    return config, model_dir, result


def test_loss_terms_and_learning_rate_at_every_step(trained):
    config, model_dir, result = trained
    scalars = read_summaries(model_dir / "logs" / "train")
    for tag in ("loss", "loss_ce", "loss_mask", "loss_dice", "loss_ce_0", "loss_mask_1",
                "loss_dice_1", "learning_rate"):
        assert sorted(scalars[tag]) == list(range(1, STEPS + 1)), tag
    for entry in result["history"]:
        np.testing.assert_allclose(scalars["loss_ce"][entry["step"]], entry["loss_ce"],
                                   rtol=1e-6)
        np.testing.assert_allclose(scalars["learning_rate"][entry["step"]],
                                   config.train.learning_rate, rtol=1e-6)


def test_periodic_evaluation_matches_evaluating_the_saved_model(trained):
    config, model_dir, _ = trained
    scalars = read_summaries(model_dir / "logs" / "validation")
    assert sorted(scalars["panoptic/PQ_All"]) == [2, 4]
    assert sorted(scalars["semantic/mIoU"]) == [2, 4]
    logged = [json.loads(line) for line in (model_dir / "eval_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in logged] == [2, 4]
    # The last evaluation ran on the final weights: evaluating the saved model gives its numbers.
    final = metric_scalars(evaluate(load_model(model_dir), config, progress=False))
    for name, value in final.items():
        np.testing.assert_allclose(scalars[name][STEPS], value, atol=1e-4, err_msg=name)
        np.testing.assert_allclose(logged[-1][name], value, atol=1e-4, err_msg=name)
    # Ground truth | prediction pictures of the first validation images, at each evaluation.
    images = read_summaries(model_dir / "logs" / "validation", plugin="images")
    assert len(images) == 4
    for steps in images.values():
        assert sorted(steps) == [2, 4]
        width, height = (int(v) for v in steps[4][:2])
        # image | ground truth | prediction, 64 px upscaled 6x (to at least 384), titled
        assert width == 3 * 6 * 64 + 2 * 8 and height > 6 * 64
