"""Every user error of every command is one `error:` line naming the file, record or key, with
exit code 2: never a traceback. And TensorFlow's start-up noise stays hidden unless asked for."""

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from maskformer.cli import main
from maskformer.config import apply_overrides
from maskformer.experiments import get_experiment
from maskformer.model_dir import save_model
from maskformer.modeling.maskformer import build_model
from tests.training.conftest import smoke_overrides

pytestmark = pytest.mark.backend_independent


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo unsafe",))


@pytest.fixture(scope="module")
def files(tmp_path_factory, shapes_records):
    root = tmp_path_factory.mktemp("bad-inputs")
    config = apply_overrides(get_experiment("maskformer_smoke"), smoke_overrides(shapes_records))
    save_model(build_model(config.model), config, root / "model")
    (root / "evil.pkl").write_bytes(pickle.dumps({"model": {"w": _Evil()}}))
    (root / "noise.pkl").write_bytes(np.random.default_rng(0).bytes(256))
    (root / "instances.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "height": 4, "width": 4}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
                         "segmentation": [[0, 0, 2, 0, 2, 2]], "area": 2, "bbox": [0, 0, 2, 2]}],
        "categories": [{"id": 1, "name": "thing"}]}))
    (root / "broken.json").write_text("{not json")
    for folder in ("images", "empty", "texts"):
        (root / folder).mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "images" / "a.jpg")
    (root / "texts" / "notes.txt").write_text("no image here")
    return root


CASES = {
    "train unknown experiment": (["train", "--experiment", "nope", "--model-dir", "{r}/t"],
                                 "unknown experiment 'nope'"),
    "train unknown key": (["train", "--experiment", "maskformer_smoke", "--model-dir", "{r}/t",
                           "--set", "model.nope=1"], "model.nope: unknown key"),
    "train bad params_override": (["train", "--experiment", "maskformer_smoke", "--model-dir",
                                   "{r}/t", "--params_override", "a.b"], "'a.b'"),
    "train missing config": (["train", "--experiment", "maskformer_smoke", "--model-dir",
                              "{r}/t", "--config", "{r}/none.yaml"], "none.yaml"),
    "train without data": (["train", "--experiment", "maskformer_smoke", "--model-dir",
                            "{r}/t"], "data.train_files"),
    "convert unsafe pickle": (["convert", "--from", "detectron2", "{r}/evil.pkl", "--out",
                               "{r}/c"], "evil.pkl: refusing to load global"),
    "convert random bytes": (["convert", "--from", "detectron2", "{r}/noise.pkl", "--out",
                              "{r}/c"], "noise.pkl"),
    "convert missing file": (["convert", "--from", "detectron2", "{r}/none.pkl", "--out",
                              "{r}/c"], "none.pkl: no such file"),
    "convert folder for detectron2": (["convert", "--from", "detectron2", "{r}/empty",
                                       "--out", "{r}/c"], "empty: is a folder"),
    "coco-panoptic given instances": (["data", "coco-panoptic", "--images", "{r}/images",
                                       "--annotations", "{r}/instances.json", "--masks",
                                       "{r}/empty", "--out", "{r}/d/train"],
                                      "instances.json: a COCO instances file"),
    "coco-panoptic invalid json": (["data", "coco-panoptic", "--images", "{r}/images",
                                    "--annotations", "{r}/broken.json", "--masks", "{r}/empty",
                                    "--out", "{r}/d/train"], "broken.json: invalid JSON"),
    "ade20k missing labels": (["data", "ade20k-semantic", "--images", "{r}/images", "--labels",
                               "{r}/none", "--out", "{r}/d/train"], "labels folder not found"),
    "shapes too small": (["data", "shapes", "--out", "{r}/s", "--size", "4"], "--size"),
    "evaluate no model": (["evaluate", "--model-dir", "{r}/none"], "none/config.yaml"),
    "evaluate other class count": (["evaluate", "--model-dir", "{r}/model", "--set",
                                    "model.num_classes=7"], "model.num_classes"),
    "predict missing input": (["predict", "{r}/none.jpg", "--model-dir", "{r}/model", "--out",
                               "{r}/p"], "none.jpg"),
    "predict empty folder": (["predict", "{r}/empty", "--model-dir", "{r}/model", "--out",
                              "{r}/p"], "empty"),
    "predict folder without images": (["predict", "{r}/texts", "--model-dir", "{r}/model",
                                       "--out", "{r}/p"], "texts"),
    "predict other class count": (["predict", "{r}/images", "--model-dir", "{r}/model",
                                   "--out", "{r}/p", "--params_override",
                                   "model.num_classes=7"], "model.num_classes"),
    "predict unknown experiment": (["predict", "{r}/images", "--model-dir", "{r}/model",
                                    "--out", "{r}/p", "--experiment", "nope"], "'nope'"),
    "demo unknown key": (["demo", "--out", "{r}/demo", "--set", "train.nope=1",
                          "--num-train", "2", "--num-val", "1", "--size", "32"],
                         "train.nope: unknown key"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_user_errors_are_one_line(case, files, capsys):
    argv, expected = CASES[case]
    argv = [a.replace("{r}", str(files)) for a in argv]
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1, err
    command = " ".join(a for a in argv[:2] if not a.startswith("-") and "/" not in a)
    assert lines[0].startswith(f"maskformer {command}: error: "), lines[0]
    assert expected in lines[0], lines[0]


def _stderr_of(*args):
    env = {**os.environ}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          timeout=300).stderr


def test_tensorflow_start_up_noise_is_hidden_unless_verbose(tmp_path):
    command = ["-m", "maskformer", "data", "shapes", "--out", str(tmp_path / "s"),
               "--num-images", "1", "--num-val", "1", "--size", "16", "--no-progress"]
    quiet = _stderr_of(*command)
    assert quiet.strip() == "", quiet
    raw = _stderr_of("-c", "import tensorflow")
    if raw.strip():  # what this machine's TensorFlow prints at import, shown with --verbose
        verbose = _stderr_of(*command, "--verbose")
        assert raw.strip().splitlines()[0].split("]")[-1] in verbose


def _commands(parser, prefix=()):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*prefix, name))
    if prefix:
        yield prefix, parser


def test_every_option_has_help_and_shows_its_default():
    import argparse

    from maskformer.cli import build_parser

    commands = dict(_commands(build_parser()))
    assert {("train",), ("evaluate",), ("predict",), ("convert",), ("demo",),
            ("data", "shapes")} <= set(commands)
    for name, parser in commands.items():
        text = parser.format_help()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help, f"{' '.join(name)} {action.option_strings or action.dest}"
            if (action.option_strings and action.default not in (None, False, [])
                    and action.default is not argparse.SUPPRESS and not action.required):
                assert f"(default: {action.default})" in " ".join(text.split()), \
                    f"{' '.join(name)} {action.option_strings}"
    # Every command that builds a model takes the experiment options alike.
    for name in (("train",), ("evaluate",), ("predict",), ("convert",), ("demo",)):
        options = {o for a in commands[name]._actions for o in a.option_strings}
        assert {"--experiment", "--config", "--set", "--params_override",
                "--verbose"} <= options, name


def test_version(capsys):
    from maskformer import __version__

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"maskformer {__version__}"
