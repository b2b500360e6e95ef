"""Model directories: what training and conversion write and what `load_model`, `evaluate`,
`predict` and export read.

    MODEL_DIR/config.yaml          the resolved experiment
    MODEL_DIR/model.weights.h5     the network's weights
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import yaml

from maskformer.config import ExperimentConfig, merge_dict, to_yaml
from maskformer.errors import CheckpointError, ConfigError

CONFIG_NAME = "config.yaml"
WEIGHTS_NAME = "model.weights.h5"


def save_model(model, config: ExperimentConfig, directory: str | Path) -> Path:
    """Writes the resolved config and the weights into `directory`, each atomically."""
    from maskformer.modeling.maskformer import MaskFormer  # noqa: F401 (keras import cost)

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=directory, suffix=".tmp", delete=False) as f:
        f.write(to_yaml(config))
    os.replace(f.name, directory / CONFIG_NAME)
    tmp = directory / f".{WEIGHTS_NAME}.tmp.weights.h5"
    model.save_weights(tmp)
    os.replace(tmp, directory / WEIGHTS_NAME)
    return directory


def load_config(directory: str | Path) -> ExperimentConfig:
    path = Path(directory) / CONFIG_NAME
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except OSError:
        raise ConfigError(f"{path}: no model config here (expected {CONFIG_NAME})") from None
    return merge_dict(ExperimentConfig(), values).validate()


def load_model(directory: str | Path):
    """Builds the model described by `directory/config.yaml` and loads its weights."""
    from maskformer.modeling.maskformer import build_model

    directory = Path(directory)
    config = load_config(directory)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{weights}: no weights file")
    model = build_model(config.model)
    model.load_weights(weights)
    return model
