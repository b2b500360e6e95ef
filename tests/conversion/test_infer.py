"""Which experiment a checkpoint belongs to, from its tensors (`maskformer.conversion.infer`)."""

import numpy as np
import pytest

from maskformer.conversion import infer
from maskformer.conversion.detectron2 import normalize_names
from maskformer.errors import CheckpointError
from maskformer.experiments import ZOO, get_experiment
from tests.modeling.test_official import FILES, config_from_reference, load_reference, to_old_names


@pytest.mark.parametrize("name", FILES)
def test_signature_of_the_original_checkpoints_is_their_configs(official, name):
    """The original's own state dicts (new and old head names) read as the config that made
    them: backbone blocks and widths, pixel decoder, predictor input, queries, layers."""
    _, ref, params = load_reference(official, name)
    expected = infer.config_signature(config_from_reference(ref))
    for state in (params, to_old_names(params)):
        assert infer.checkpoint_signature(normalize_names(state)) == expected
    assert expected["pixel_decoder"] == ("fpn" if "fpn" in name else "transformer_encoder")
    assert expected["predictor_in_channels"] == (256 if "fpn" in name else
                                                 ref["sem_seg_head"]["convs_dim"])


def _fake_state(model_config):
    """A state dict with the original names and shapes of a (tiny) model, drawn from the
    Keras model's own weight map (the layouts inverted), to test the round trip."""
    from maskformer.conversion.detectron2 import weight_map
    from maskformer.modeling.maskformer import build_model
    from tests.conversion.test_zoo_conversion import _source_shape

    model = build_model(model_config)
    model(np.zeros((1, 64, 64, 3), np.float32))
    return {t.sources[0]: np.zeros(_source_shape(t), np.float32) for t in weight_map(model)}


@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_released_model_is_recognised_from_its_signature(name):
    """Each released model's architecture names it alone (the full-size round trip through a
    checkpoint is tests/conversion/test_zoo_conversion.py, one model per backbone)."""
    assert infer.infer_experiment(infer.config_signature(get_experiment(name).model)) == name


@pytest.mark.parametrize("experiment", ["maskformer_smoke", "maskformer_smoke_fpn"])
def test_registered_experiments_are_recognised(experiment):
    config = get_experiment(experiment)
    state = _fake_state(config.model)
    signature = infer.checkpoint_signature(state)
    assert signature == infer.config_signature(config.model)
    assert infer.infer_experiment(signature) == experiment


def test_ambiguous_and_unknown_checkpoints_are_errors_naming_the_experiments():
    config = get_experiment("maskformer_smoke")
    signature = infer.config_signature(config.model)
    with pytest.raises(CheckpointError, match="several experiments fit.*maskformer_smoke, "
                                              "maskformer_smoke"):
        infer.infer_experiment(signature, names=["maskformer_smoke", "maskformer_smoke"])
    signature["num_classes"] = 3
    with pytest.raises(CheckpointError, match="no registered experiment fits.*closest: "
                                              "maskformer_smoke differs in num_classes"):
        infer.infer_experiment(signature)


def test_a_checkpoint_without_the_heads_is_named():
    with pytest.raises(CheckpointError, match="query_embed.weight"):
        infer.checkpoint_signature({"backbone.stem.conv1.weight": np.zeros((8, 3, 7, 7)),
                                    **{f"backbone.res{s}.0.conv3.weight": np.zeros((8, 8, 1, 1))
                                       for s in range(2, 6)}})


def test_convert_without_experiment_infers_it(tmp_path, capsys):
    """`maskformer convert --from detectron2` with no --experiment picks the registered
    experiment of the checkpoint's architecture and says which."""
    import pickle

    from maskformer.cli import main
    from maskformer.model_dir import load_config

    config = get_experiment("maskformer_smoke_fpn")
    state = _fake_state(config.model)
    path = tmp_path / "model_final.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": state}, f)
    assert main(["convert", "--from", "detectron2", str(path), "--out", str(tmp_path / "m")]) == 0
    assert "experiment: maskformer_smoke_fpn" in capsys.readouterr().out
    assert load_config(tmp_path / "m").name == "maskformer_smoke_fpn"
