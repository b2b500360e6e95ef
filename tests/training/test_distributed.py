"""tf.distribute: the same global batch on two replicas gives the one-device loss trajectory.

The per-replica losses are normalised by the number of masks averaged over replicas, so the
mask terms add up to the global ones; the cross-entropy is a weighted mean per replica, which
equals the global one when every replica has the same total weight, so the test sets the
no-object weight to 1 (with 0.1 the replicas' means are weighted differently, as in the
original's DistributedDataParallel training). Dropout is off and augmentation is off so that
both runs see identical computations; the records are dealt to replicas in stream order.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import backend
from tests.training.conftest import smoke_overrides

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(backend() != "tensorflow", reason="tf.distribute")]

STEPS = 3


def _overrides(records):
    return smoke_overrides(records, **{"model.dropout": 0.0, "loss.no_object_weight": 1.0,
                                       "data.augmentation": "none", "data.shuffle_buffer": 1,
                                       "train.global_batch_size": 4, "train.steps": STEPS,
                                       "train.checkpoint_every": STEPS,
                                       # compiles in seconds, unlike the XLA step
                                       "loss.matcher": "scipy"})


def _run(tmp_path, name, strategy, logical, records, env=None):
    out = tmp_path / f"{name}.json"
    command = [sys.executable, "-m", "tests.training.distributed_run", str(out),
               str(tmp_path / name), strategy, str(logical), *_overrides(records)]
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(Path.cwd()),
                   **(env or {})}
    return command, environment, out


def _trajectory(tmp_path, name, strategy, logical, records, extra=()):
    command, env, out = _run(tmp_path, name, strategy, logical, records)
    command += list(extra)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def single(tmp_path_factory, shapes_records):
    """The one-device trajectory both tests compare with."""
    return _trajectory(tmp_path_factory.mktemp("single"), "single", "default", 1, shapes_records)


def test_mirrored_two_devices_match_one_device(tmp_path, shapes_records, single):
    mirrored = _trajectory(tmp_path, "mirrored", "mirrored", 2, shapes_records)
    assert len(single) == len(mirrored) == STEPS
    np.testing.assert_allclose(mirrored, single, rtol=1e-4)
    assert single[0] != single[-1]  # the weights really changed


def test_sync_batch_norm_on_two_devices_matches_one_device(tmp_path, shapes_records):
    """backbone.norm=sync_bn: the batch statistics of two replicas' halves, synchronised, are
    the global batch's, so two devices follow one device's trajectory (unsynchronised
    per-replica statistics would not)."""
    sync = ["model.backbone.norm=sync_bn"]
    single = _trajectory(tmp_path, "single", "default", 1, shapes_records, sync)
    mirrored = _trajectory(tmp_path, "mirrored", "mirrored", 2, shapes_records, sync)
    assert len(single) == len(mirrored) == STEPS
    np.testing.assert_allclose(mirrored, single, rtol=1e-4)


def _free_ports(count):
    import socket

    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_worker_processes_match_one_device(tmp_path, shapes_records, single):
    """MultiWorkerMirroredStrategy over two processes on localhost (TF_CONFIG), one shared
    model dir: the workers follow the one-device trajectory and only the chief writes."""
    workers = [f"localhost:{port}" for port in _free_ports(2)]
    processes, outputs = [], []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        command, env, _ = _run(tmp_path, "shared", "multi_worker_mirrored", 1, shapes_records,
                               env={"TF_CONFIG": json.dumps(tf_config)})
        out = tmp_path / f"worker{index}.json"
        command[3] = str(out)
        outputs.append(out)
        processes.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True))
    try:
        logs = [p.communicate(timeout=900)[0] for p in processes]
    finally:
        for p in processes:
            p.kill()
    for p, log in zip(processes, logs, strict=True):
        assert p.returncode == 0, log[-3000:]
    trajectories = [json.loads(out.read_text()) for out in outputs]
    for trajectory in trajectories:
        assert len(trajectory) == STEPS
        np.testing.assert_allclose(trajectory, single, rtol=1e-4)
    model_dir = tmp_path / "shared"
    assert (model_dir / "model.weights.npz").exists()
    assert [p.name for p in (model_dir / "checkpoints").iterdir()] == [f"ckpt-{STEPS}.npz"]
    assert len((model_dir / "train_log.jsonl").read_text().splitlines()) == STEPS
