"""Shared test harness.

The original code's reference vectors live outside the repository; tests find them through
MASKFORMER_REFERENCE_DATA (set by .ci/run) and skip with a reason where it is absent, except in
CI, where such a skip is a failure.
"""

import os
from pathlib import Path

import numpy as np
import pytest

REFERENCE_ENV = "MASKFORMER_REFERENCE_DATA"

# Test folders whose code never runs through Keras (the TensorFlow data pipeline, NumPy
# metrics): the same on every Keras backend, so the second backend's pass leaves them out.
BACKEND_INDEPENDENT = ("data", "evaluation")
# Test files of the TensorFlow-side training tooling around Keras `fit` (command line, demo,
# TensorBoard summaries, checkpoint resume): the Keras code they drive (model, losses, train
# step, post-processing) has tests of its own that run on both backends.
TENSORFLOW_TOOLING = ("test_cli.py", "test_demo.py", "test_summaries.py", "test_resume.py",
                      "test_init_checkpoint.py", "test_fine_tuning.py")


# In CI (`CI` set, as .ci/run runs) a test that would skip because a reference is missing (the
# original's vectors, PyTorch / transformers, panopticapi, pycocotools) fails instead: CI has
# them all, and a comparison that silently stopped running must not pass.
MISSING_REFERENCE = ("could not import", REFERENCE_ENV)


def _fail_missing_reference_in_ci(report) -> None:
    if not (os.environ.get("CI") and report.skipped and isinstance(report.longrepr, tuple)):
        return
    reason = str(report.longrepr[2])
    if any(marker in reason for marker in MISSING_REFERENCE):
        report.outcome = "failed"
        report.longrepr = f"a reference is missing in CI, where every one must be present: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_missing_reference_in_ci(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    # A module-level `pytest.importorskip` skips the whole file at collection.
    outcome = yield
    _fail_missing_reference_in_ci(outcome.get_result())


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = Path(str(item.fspath))
        if path.parent.name in BACKEND_INDEPENDENT or path.name in TENSORFLOW_TOOLING:
            item.add_marker(pytest.mark.backend_independent)


def reference_file(name: str) -> Path:
    """Path of one of the original's reference files, or a skip if the folder is not set."""
    root = os.environ.get(REFERENCE_ENV)
    if not root:
        pytest.skip(f"{REFERENCE_ENV} is not set: the original's reference vectors are not available")
    path = Path(root) / name
    if not path.is_file():
        pytest.fail(f"{REFERENCE_ENV}={root} does not contain {name}")
    return path


@pytest.fixture
def official():
    """Loads an npz of the original's reference vectors by file name."""

    def load(name: str):
        return np.load(reference_file(name))

    return load


@pytest.fixture(autouse=True)
def _seed():
    import keras

    keras.utils.set_random_seed(0)
    yield


def backend() -> str:
    import keras

    return keras.backend.backend()


@pytest.fixture(scope="session")
def shapes_records(tmp_path_factory):
    """A tiny shapes dataset converted to TFRecords: {"train", "val", "info"} paths."""
    from maskformer.data import coco_panoptic, shapes

    root = tmp_path_factory.mktemp("shapes")
    paths = shapes.generate(root, num_train=16, num_val=4, size=64, seed=0, progress=False)
    for split, p in paths.items():
        coco_panoptic.convert(p.images, p.annotations, p.masks, root / "records" / split,
                              strict=True, progress=False)
    return {"train": str(root / "records" / "train-*.tfrecord"),
            "val": str(root / "records" / "val-*.tfrecord"),
            "info": str(root / "records" / "dataset.json")}
