"""Model directories (config.yaml + model.weights.h5) and checkpoint conversion entry points."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import yaml

from maskformer.config import ConfigError, ExperimentConfig, ModelConfig, merge_dict, to_yaml
from maskformer.conversion import detectron2, huggingface
from maskformer.conversion.safe_pickle import CheckpointError, load_state_dict

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


def convert_checkpoint(source: str, checkpoint: str | Path, config: ExperimentConfig,
                       hf_config: str | Path | None = None, naming: str = "auto"):
    """Reads a PyTorch checkpoint and returns (model, config) with every weight set.

    Args:
        source: "detectron2" (original names, `.pkl` / `.pth`) or "hf" (`.safetensors` /
            `pytorch_model.bin`).
        checkpoint: the file.
        config: the experiment the weights belong to; for "hf" its model part is replaced by
            the one read from `hf_config` (default: `config.json` beside the checkpoint).
        naming: detectron2 head naming, "auto", "old" or "new".
    """
    from maskformer.modeling.maskformer import build_model

    checkpoint = Path(checkpoint)
    state = load_state_dict(checkpoint)
    if source == "hf":
        hf_config = Path(hf_config) if hf_config else checkpoint.parent / "config.json"
        model_config: ModelConfig = huggingface.model_config_from_hf(hf_config)
        config.model = model_config
        state = huggingface.rename_state_dict(state)
    elif source == "detectron2":
        state = detectron2.normalize_names(state, naming)
    else:
        raise ValueError(f"source must be 'hf' or 'detectron2', got {source!r}")
    model = build_model(config.model)
    detectron2.assign_weights(model, state, source=str(checkpoint))
    return model, config


def max_relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max |b|, the parity measure used throughout the tests."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))
