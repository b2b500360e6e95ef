"""MaskFormer for TensorFlow and Keras 3."""

from maskformer.config import ExperimentConfig
from maskformer.experiments import get_experiment, list_experiments

__version__ = "0.1.0"

__all__ = ["ExperimentConfig", "build_model", "get_experiment", "list_experiments", "load_model"]


def build_model(config):
    """Builds the MaskFormer model for an `ExperimentConfig` or `ModelConfig`."""
    from maskformer.modeling.maskformer import build_model as _build

    return _build(getattr(config, "model", config))


def load_model(directory):
    """Loads a model written by `maskformer convert` or by training (config.yaml + weights)."""
    from maskformer.model_dir import load_model as _load

    return _load(directory)
