"""`maskformer train --set train.init_checkpoint=...`: a fresh run starts from the file and logs
what it loaded; a resumed run ignores it and says so.

The runs use the host (scipy) matcher, whose train step compiles in seconds; what is checked
does not depend on the matcher."""

import pickle

import numpy as np
import pytest

from maskformer.cli import main
from maskformer.experiments import get_experiment
from maskformer.model_dir import read_arrays
from maskformer.modeling.maskformer import build_model
from tests.conversion.test_pretrained import backbone_state
from tests.training.conftest import smoke_overrides


def imagenet_pickle(path):
    """An R-50.pkl-style file for the smoke experiment's backbone (detectron2's names without
    `backbone.`, torchvision's classifier as `stem.fc`), random values."""
    state = backbone_state(build_model(get_experiment("maskformer_smoke").model))
    state["stem.fc.weight"] = np.zeros((10, 256), np.float32)
    state["stem.fc.bias"] = np.zeros(10, np.float32)
    with open(path, "wb") as f:
        pickle.dump({"model": state, "__author__": "torchvision", "matching_heuristics": True}, f)
    return state


def _train(model_dir, records, steps, init):
    return main(["train", "--experiment", "maskformer_smoke", "--model-dir", str(model_dir),
                 "--steps", str(steps), "--set",
                 *smoke_overrides(records, **{"train.init_checkpoint": str(init),
                                              "loss.matcher": "scipy",
                                              "train.checkpoint_every": 1})])


def test_train_starts_from_init_checkpoint_and_resume_ignores_it(tmp_path, shapes_records,
                                                                 capsys):
    init = tmp_path / "R-50.pkl"
    state = imagenet_pickle(init)
    model_dir = tmp_path / "run"
    assert _train(model_dir, shapes_records, 1, init) == 0
    out = capsys.readouterr().out
    assert (f"init_checkpoint: loaded backbone from {init} (detectron2 ResNet, __author__ "
            "'torchvision'): 100 variables") in out
    assert ("init_checkpoint: dropped the ImageNet classifier: 2 (stem.fc.weight, "
            "stem.fc.bias)") in out
    assert ("init_checkpoint: left at their initialisation: pixel_decoder (57 variables), "
            "predictor (89 variables): not in train.init_checkpoint_modules") in out
    # The frozen batch norm does not train: after a step it still holds the file's values.
    weights = read_arrays(model_dir / "model.weights.npz")
    for ours, theirs in [("stem/norm/moving_variance", "stem.conv1.norm.running_var"),
                         ("res4_0/conv2/norm/gamma", "res4.0.conv2.norm.weight"),
                         ("res5_0/shortcut/norm/moving_mean", "res5.0.shortcut.norm.running_mean")]:
        np.testing.assert_array_equal(weights[f"network/backbone/{ours}"], state[theirs])

    # Resumed from its own checkpoint: the file is not read again.
    init.write_bytes(b"no longer a checkpoint")
    assert _train(model_dir, shapes_records, 1, init) == 0  # nothing left to train
    out = capsys.readouterr().out
    assert "resumed from" in out and "at step 1" in out
    assert (f"init_checkpoint: {init} not loaded: the run resumes from its own checkpoint"
            in out)
    assert "loaded backbone" not in out


def test_train_with_a_wrong_init_checkpoint_is_a_one_line_error(tmp_path, shapes_records,
                                                                capsys):
    init = tmp_path / "R-50.pkl"
    imagenet_pickle(init)
    code = main(["train", "--experiment", "maskformer_smoke", "--model-dir",
                 str(tmp_path / "run"), "--steps", "1", "--set",
                 *smoke_overrides(shapes_records, **{"train.init_checkpoint": str(init),
                                                     "train.init_checkpoint_modules": "all"})])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"maskformer train: error: {init}: the detectron2 ResNet checkpoint holds "
                   "backbone weights, not pixel_decoder, predictor; set "
                   "train.init_checkpoint_modules to backbone")


@pytest.mark.parametrize("modules", ["['backbone', 'predictor']", "all"])
def test_init_checkpoint_modules_from_the_command_line(tmp_path, modules):
    """The list and the string form of train.init_checkpoint_modules both parse and validate."""
    from maskformer.cli import build_parser
    from maskformer.cli.common import experiment_from_args
    from maskformer.conversion.pretrained import resolve_parts

    args = build_parser().parse_args([
        "train", "--experiment", "maskformer_smoke", "--model-dir", str(tmp_path), "--set",
        f"train.init_checkpoint_modules={modules}"])
    parts = resolve_parts(experiment_from_args(args).train.init_checkpoint_modules)
    assert parts == (["backbone", "predictor"] if modules != "all"
                     else ["backbone", "pixel_decoder", "predictor"])
