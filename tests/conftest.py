"""Shared test harness.

The original code's reference vectors live outside the repository; tests find them through
MASKFORMER_REFERENCE_DATA (set by .ci/run) and skip with a reason where it is absent.
"""

import os
from pathlib import Path

import numpy as np
import pytest

REFERENCE_ENV = "MASKFORMER_REFERENCE_DATA"

# Test folders whose code never runs through Keras (the TensorFlow data pipeline, NumPy
# metrics): the same on every Keras backend, so the second backend's pass leaves them out.
BACKEND_INDEPENDENT = ("data", "evaluation")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if Path(str(item.fspath)).parent.name in BACKEND_INDEPENDENT:
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
