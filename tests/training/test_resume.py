"""Checkpoints and exact resume: a training process killed mid-run and restarted continues
the step counter, optimizer state, random state and loss trajectory of an uninterrupted run.

The runs use the host (scipy) matcher, whose train step compiles in seconds instead of the
XLA step's minute; checkpointing and the data stream do not depend on the matcher."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.training.conftest import smoke_overrides

STEPS = 8


def _command(model_dir, records):
    return [sys.executable, "-m", "maskformer", "train", "--experiment", "maskformer_smoke",
            "--model-dir", str(model_dir), "--steps", str(STEPS), "--set",
            *smoke_overrides(records, **{"train.checkpoint_every": 2, "loss.matcher": "scipy",
                                         "train.keep_checkpoints": 2})]


def _env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(Path.cwd())}


def _log(model_dir):
    """The last logged entry of every step (a restarted run logs re-run steps again)."""
    entries = {}
    for line in (Path(model_dir) / "train_log.jsonl").read_text().splitlines():
        entry = json.loads(line)
        entries[entry["step"]] = entry
    return entries


@pytest.mark.slow
def test_killed_and_restarted_training_continues_exactly(tmp_path, shapes_records):
    reference = tmp_path / "reference"
    subprocess.run(_command(reference, shapes_records), env=_env(), check=True,
                   capture_output=True, timeout=900)

    resumed = tmp_path / "resumed"
    process = subprocess.Popen(_command(resumed, shapes_records), env=_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = resumed / "checkpoints" / "ckpt-4.npz"
    deadline = time.time() + 900
    while not checkpoint.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert checkpoint.exists(), "the first run wrote no checkpoint at step 4"
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = max(_log(resumed))
    assert killed_at < STEPS, "the run finished before it could be killed"
    # No partially written checkpoint is ever taken for a complete one.
    assert not list((resumed / "checkpoints").glob("ckpt-*.tmp*"))

    result = subprocess.run(_command(resumed, shapes_records), env=_env(), check=True,
                            capture_output=True, text=True, timeout=900)
    assert "resumed from" in result.stdout and "at step" in result.stdout

    ref_log, res_log = _log(reference), _log(resumed)
    assert sorted(ref_log) == sorted(res_log) == list(range(1, STEPS + 1))
    # Every logged value is the step's own (not a running mean since the process started), so
    # the restarted run logs exactly what the uninterrupted one logged, key for key.
    for step in range(1, STEPS + 1):
        assert res_log[step].keys() == ref_log[step].keys()
        assert {"loss", "step_loss", "loss_ce", "loss_mask_1", "learning_rate"} <= set(
            ref_log[step])
        for key, value in ref_log[step].items():
            assert res_log[step][key] == value, f"step {step}, {key}"
        assert ref_log[step]["loss"] == ref_log[step]["step_loss"]
    # The final checkpoints hold the same network and optimizer state (step counter included).
    with np.load(reference / "checkpoints" / f"ckpt-{STEPS}.npz") as a, \
            np.load(resumed / "checkpoints" / f"ckpt-{STEPS}.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        assert int(a["optimizer/iteration"]) == int(b["optimizer/iteration"]) == STEPS
        assert any(k.startswith("network/") for k in a.files)
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # Only the last keep_checkpoints are kept.
    assert sorted(p.name for p in (resumed / "checkpoints").glob("ckpt-*.npz")) == [
        "ckpt-6.npz", "ckpt-8.npz"]
