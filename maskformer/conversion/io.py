"""Checkpoint conversion entry points: a PyTorch checkpoint in, a model with every weight set out."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from maskformer.config import ExperimentConfig, ModelConfig
from maskformer.conversion import detectron2, huggingface
from maskformer.conversion.safe_pickle import load_state_dict


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
