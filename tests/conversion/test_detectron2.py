"""detectron2 checkpoints: safe loading, strict mapping, the command line, model directories.

Checkpoint files are made here from the original's reference parameters (new names) renamed
to the old names that released model-zoo files use.
"""

import json
import os
import pickle

import numpy as np
import pytest

import maskformer
from maskformer.cli import main
from maskformer.conversion.detectron2 import assign_weights, normalize_names
from maskformer.conversion.safe_pickle import (
    CheckpointError,
    UnsafePickleError,
    load_pickle,
    load_state_dict,
)
from maskformer.modeling.maskformer import MaskFormer
from tests.modeling.test_official import config_from_reference, load_reference, to_old_names


class Exploit:
    """Unpickling this would run a shell command."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/maskformer-pwned",))


def test_malicious_pickle_is_refused(tmp_path):
    path = tmp_path / "model_final.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {"w": np.zeros(3)}, "payload": Exploit()}, f)
    with pytest.raises(UnsafePickleError, match=r"model_final.pkl: refusing to load global "
                                                r"'(posix|os)\.system'"):
        load_state_dict(path)
    assert not os.path.exists("/tmp/maskformer-pwned")


def test_malicious_pickle_inside_pth_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "model.pth"
    torch.save({"w": torch.zeros(2), "payload": Exploit()}, path)
    with pytest.raises(UnsafePickleError, match="refusing to load global"):
        load_state_dict(path)
    assert not os.path.exists("/tmp/maskformer-pwned")


def test_numpy_pickle_loads(tmp_path):
    path = tmp_path / "m.pkl"
    data = {"model": {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.int64(3)},
            "__author__": "x"}
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=2)
    loaded = load_pickle(path)
    np.testing.assert_array_equal(loaded["model"]["a"], data["model"]["a"])
    assert load_state_dict(path)["b"] == 3


def test_torch_zip_reader_matches_torch(tmp_path):
    torch = pytest.importorskip("torch")
    state = {"f": torch.randn(3, 4), "t": torch.randn(4, 3).t(), "h": torch.randn(5).half(),
             "bf": torch.randn(2, 2).bfloat16(), "i": torch.arange(7),
             "view": torch.arange(10.0)[2:6]}
    torch.save(state, tmp_path / "x.pth")
    loaded = load_state_dict(tmp_path / "x.pth")
    for k, v in state.items():
        np.testing.assert_array_equal(loaded[k], v.float().numpy() if k == "bf" else v.numpy())


@pytest.fixture
def tenc(official):
    return load_reference(official, "maskformer_tenc_tiny.npz")


def _tiny_model(ref):
    model = MaskFormer(config_from_reference(ref))
    model(np.zeros((1, 32, 32, 3), np.float32))
    return model


def test_missing_unexpected_and_misshaped_keys_are_named(tenc):
    _, ref, params = tenc
    state = dict(params)
    del state["backbone.res3.0.conv2.weight"]
    state["sem_seg_head.predictor.extra.weight"] = np.zeros(3)
    with pytest.raises(CheckpointError) as info:
        assign_weights(_tiny_model(ref), state)
    message = str(info.value)
    assert "1 missing: backbone.res3.0.conv2.weight" in message
    assert "1 unexpected: sem_seg_head.predictor.extra.weight" in message

    state = dict(params)
    state["sem_seg_head.predictor.class_embed.weight"] = np.zeros((9, 32), np.float32)
    with pytest.raises(CheckpointError, match=r"mis-shaped: sem_seg_head.predictor.class_embed"
                                              r".weight: checkpoint \(9, 32\)"):
        assign_weights(_tiny_model(ref), state)


def test_mixed_naming_is_refused(tenc):
    _, _, params = tenc
    state = to_old_names(params)
    state["sem_seg_head.pixel_decoder.layer_1.weight"] = params[
        "sem_seg_head.pixel_decoder.layer_1.weight"]
    with pytest.raises(CheckpointError, match="mixes old head names"):
        normalize_names(state)


@pytest.mark.parametrize("fmt", ["pkl", "pth"])
def test_convert_command_and_load_model(tenc, tmp_path, fmt, capsys):
    z, ref, params = tenc
    old = to_old_names(params)
    path = tmp_path / f"model_final.{fmt}"
    if fmt == "pkl":  # the released format: a pickled dict of numpy arrays
        with open(path, "wb") as f:
            pickle.dump({"model": old, "__author__": "test", "matching_heuristics": True}, f)
    else:
        torch = pytest.importorskip("torch")
        torch.save({"model": {k: torch.from_numpy(v) for k, v in old.items()}}, path)
    config_yaml = tmp_path / "tiny.yaml"
    config_yaml.write_text(json.dumps({"model": _model_dict(ref)}))
    out = tmp_path / "converted"
    code = main(["convert", "--from", "detectron2", str(path), "--experiment", "maskformer_smoke",
                 "--config", str(config_yaml), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert (out / "config.yaml").is_file() and (out / "model.weights.npz").is_file()
    model = maskformer.load_model(out)
    result = model(z["input/images_raw"], training=False)
    ref_logits = z["output/pred_logits"]
    assert np.max(np.abs(np.asarray(result["pred_logits"]) - ref_logits)) <= 1e-4


def test_convert_command_reports_user_errors(tmp_path, capsys):
    bad = tmp_path / "broken.pkl"
    bad.write_bytes(b"not a pickle")
    code = main(["convert", "--from", "detectron2", str(bad), "--experiment", "maskformer_smoke",
                 "--out", str(tmp_path / "o")])
    assert code == 2
    assert "broken.pkl: not a readable pickle" in capsys.readouterr().err


def _model_dict(ref):
    import dataclasses

    return dataclasses.asdict(config_from_reference(ref))
