"""Checkpoint conversion entry points: a PyTorch checkpoint in, a model with every weight set out."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from maskformer.config import ExperimentConfig, ModelConfig
from maskformer.conversion import detectron2, huggingface, infer
from maskformer.conversion.safe_pickle import load_state_dict
from maskformer.errors import CheckpointError

HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def checkpoint_file(source: str, checkpoint: str | Path) -> Path:
    """The weights file of `checkpoint`: the path itself, or for "hf" the weights file in the
    folder `save_pretrained` writes (model.safetensors, else pytorch_model.bin)."""
    checkpoint = Path(checkpoint)
    if not checkpoint.exists():
        raise CheckpointError(f"{checkpoint}: no such file or folder")
    if not checkpoint.is_dir():
        return checkpoint
    if source != "hf":
        raise CheckpointError(f"{checkpoint}: is a folder; give the checkpoint file (.pkl, .pth)")
    found = hf_weights_file(checkpoint)
    if found is None:
        raise CheckpointError(f"{checkpoint}: no {' or '.join(HF_WEIGHT_FILES)} in this folder")
    return found


def hf_weights_file(folder: Path) -> Path | None:
    """The weights file `save_pretrained` writes in `folder` (model.safetensors, else
    pytorch_model.bin), or None.

    Raises:
        CheckpointError: for a sharded checkpoint (an *.index.json beside the shards).
    """
    for name in HF_WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    if any(folder.glob("*.index.json")):
        raise CheckpointError(f"{folder}: sharded checkpoints are not supported; save the "
                              "model unsharded (save_pretrained(..., max_shard_size='10GB'))")
    return None


def convert_checkpoint(source: str, checkpoint: str | Path, config: ExperimentConfig | None,
                       hf_config: str | Path | None = None, naming: str = "auto",
                       customize: Callable[[ExperimentConfig], ExperimentConfig] | None = None):
    """Reads a PyTorch checkpoint and returns (model, config) with every weight set.

    Args:
        source: "detectron2" (original names, `.pkl` / `.pth`) or "hf" (`.safetensors` /
            `pytorch_model.bin`, or the folder `save_pretrained` writes).
        checkpoint: the file (or, for "hf", the folder).
        config: the experiment the weights belong to; for "hf" its model part is replaced by
            the one read from `hf_config` (default: `config.json` beside the checkpoint).
            None: the registered experiment whose architecture the checkpoint has
            (`infer.infer_experiment`; for "hf" the default experiment when none fits; when
            several fit, a CheckpointError names them), then
            `customize` (for example the command line's overrides) applied to it.
        naming: detectron2 head naming, "auto", "old" or "new".
    """
    from maskformer.experiments import get_experiment
    from maskformer.modeling.maskformer import build_model

    if source not in ("hf", "detectron2"):
        raise ValueError(f"source must be 'hf' or 'detectron2', got {source!r}")
    checkpoint = checkpoint_file(source, checkpoint)
    model_config: ModelConfig | None = None
    if source == "hf":
        hf_config = Path(hf_config) if hf_config else checkpoint.parent / "config.json"
        model_config = huggingface.model_config_from_hf(hf_config)
        state = huggingface.rename_state_dict(load_state_dict(checkpoint))
    else:
        state = detectron2.normalize_names(load_state_dict(checkpoint), naming)
    if config is None:
        if model_config is not None:
            # A model of no registered experiment (fine-tuned on other data, say) gets the
            # default experiment's other settings; several that fit are told apart by the
            # user, as for detectron2 files (semantic or panoptic output, for one).
            signature = infer.config_signature(model_config)
            matches, _ = infer.matching_experiments(signature)
            name = (infer.infer_experiment(signature, str(checkpoint)) if len(matches) > 1
                    else matches[0] if matches else None)
        else:
            name = infer.infer_experiment(infer.checkpoint_signature(state), str(checkpoint))
        config = get_experiment(name) if name else ExperimentConfig()
        if customize is not None:
            config = customize(config)
    if model_config is not None:
        model_config.size_divisibility = config.model.size_divisibility
        config.model = model_config
    model = build_model(config.model)
    detectron2.assign_weights(model, state, source=str(checkpoint))
    return model, config


def convert_to_model_dir(source: str, checkpoint: str | Path, config: ExperimentConfig | None,
                         out: str | Path, hf_config: str | Path | None = None,
                         naming: str = "auto",
                         customize: Callable[[ExperimentConfig], ExperimentConfig] | None = None):
    """`convert_checkpoint`, then the model directory `out` with its categories: for "hf" the
    names of `id2label` (thing/stuff split and colours from the built-in list they match),
    else those of the experiment (`model_dir.config_categories`).

    Returns:
        (model, config, categories or None, where the categories come from).
    """
    from maskformer.model_dir import config_categories, save_model

    model, config = convert_checkpoint(source, checkpoint, config, hf_config, naming,
                                       customize)
    found = None
    if source == "hf":
        weights = checkpoint_file(source, checkpoint)
        hf_config = Path(hf_config) if hf_config else weights.parent / "config.json"
        found = huggingface.categories_from_hf(hf_config, config)
    found = found or config_categories(config)
    categories, where = found if found else (None, "")
    save_model(model, config, out, categories)
    return model, config, categories, where


def max_relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max |b|, the parity measure used throughout the tests."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))
