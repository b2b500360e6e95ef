"""Model directories: what training and conversion write and what `load_model`, `evaluate`,
`predict` and export read.

    MODEL_DIR/config.yaml          the resolved experiment
    MODEL_DIR/model.weights.npz    the network's weights, by name

Weights are stored by name, the same way as in training checkpoints (`ckpt-STEP.npz`, which
add the optimizer's variables): one array per variable, keyed `network/<key>`. A variable's key
is its path below the network (`backbone/stem/conv/kernel`), which every layer with weights
names explicitly, so it does not depend on how many layers the process built before. Keras'
random seed states are auto-named (`seed_generator_7`); they are keyed by the attribute path of
the layer that owns them (`.../dropout1/seed_generator/state`). Loading is strict: a missing,
unexpected or mis-shaped name fails with all of them listed. Directories written before this
format (`model.weights.h5`, Keras' own) are still read, with Keras' checks.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import yaml

from maskformer.config import ExperimentConfig, merge_dict, to_yaml
from maskformer.errors import CheckpointError, ConfigError

CONFIG_NAME = "config.yaml"
WEIGHTS_NAME = "model.weights.npz"
LEGACY_WEIGHTS_NAME = "model.weights.h5"  # Keras' format, read only
NETWORK = "network/"  # the key prefix of the network's variables


def _seed_states(layer, prefix: str, found: dict[int, str], seen: set[int]) -> None:
    """Keys the state of every SeedGenerator below `layer` by its attribute path."""
    import keras

    for attr, value in vars(layer).items():
        if attr.startswith("_"):
            continue
        if isinstance(value, Mapping):
            items = [(f"{attr}/{k}", v) for k, v in value.items()]
        elif isinstance(value, list | tuple):
            items = [(f"{attr}/{i}", v) for i, v in enumerate(value)]
        else:
            items = [(attr, value)]
        for path, item in items:
            if id(item) in seen:
                continue
            if isinstance(item, keras.random.SeedGenerator):
                seen.add(id(item))
                found[id(item.state)] = f"{prefix}{path}/state"
            elif isinstance(item, keras.layers.Layer):
                seen.add(id(item))
                _seed_states(item, f"{prefix}{path}/", found, seen)


def variable_keys(layer) -> dict[str, object]:
    """Every variable of `layer` (a built network) by its stable key.

    Returns:
        {key: variable}, keys like "backbone/stem/conv/kernel", in `layer.variables` order.
    """
    seeds: dict[int, str] = {}
    _seed_states(layer, "", seeds, {id(layer)})
    keys: dict[str, object] = {}
    for variable in layer.variables:
        parts = variable.path.split("/")
        if id(variable) in seeds:
            key = seeds[id(variable)]
        elif layer.name in parts:
            key = "/".join(parts[parts.index(layer.name) + 1:])
        else:
            raise CheckpointError(f"{variable.path}: a variable outside {layer.name!r} has no "
                                  "stable name")
        if key in keys:
            raise CheckpointError(f"two variables of {layer.name!r} have the key {key!r}")
        keys[key] = variable
    return keys


def _listing(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return f"{len(names)} ({shown}{', ...' if len(names) > limit else ''})"


def name_problems(variables: Mapping[str, object],
                  arrays: Mapping[str, np.ndarray]) -> list[str]:
    """The missing, unexpected and mis-shaped keys of `arrays` for `variables`, as lines."""
    missing = [k for k in variables if k not in arrays]
    unexpected = [k for k in arrays if k not in variables]
    misshaped = [f"{k} {tuple(arrays[k].shape)} for {tuple(v.shape)}"
                 for k, v in variables.items()
                 if k in arrays and tuple(arrays[k].shape) != tuple(v.shape)]
    return [f"{what}: {_listing(names)}" for what, names in
            (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped))
            if names]


def assign_by_name(variables: Mapping[str, object], arrays: Mapping[str, np.ndarray],
                   source: str | Path) -> None:
    """Assigns `arrays[key]` to `variables[key]` for every key, after checking that the two
    hold the same names and shapes (nothing is assigned if they do not).

    Raises:
        CheckpointError: naming the missing, unexpected and mis-shaped keys.
    """
    problems = name_problems(variables, arrays)
    if problems:
        raise CheckpointError(f"{source}: does not fit this model; " + "; ".join(problems))
    for key, variable in variables.items():
        variable.assign(arrays[key])


def read_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of a weights file or checkpoint (.npz, no pickles), by key."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot be read ({e})") from None


def write_arrays(path: str | Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """Writes `arrays` to `path` (.npz) atomically: a temporary name, then a rename, so that a
    killed process never leaves a partial file under the final name."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)
    return path


def network_arrays(network) -> dict[str, np.ndarray]:
    """The network's variables as arrays, keyed `network/<key>`."""
    import keras

    return {k: np.asarray(keras.ops.convert_to_numpy(v))
            for k, v in network_variables(network).items()}


def network_variables(network) -> dict[str, object]:
    """The network's variables keyed as in weights files: `network/<key>`."""
    return {NETWORK + k: v for k, v in variable_keys(network).items()}


def load_network_arrays(network, arrays: Mapping[str, np.ndarray], source: str | Path) -> None:
    """Sets every network variable from `arrays` (strict: every key used, every shape fits)."""
    assign_by_name(network_variables(network), arrays, source)


def save_model(model, config: ExperimentConfig, directory: str | Path) -> Path:
    """Writes the resolved config and the weights into `directory`, each atomically."""
    from maskformer.modeling.maskformer import MaskFormer  # noqa: F401 (keras import cost)

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=directory, suffix=".tmp", delete=False) as f:
        f.write(to_yaml(config))
    os.replace(f.name, directory / CONFIG_NAME)
    write_arrays(directory / WEIGHTS_NAME, network_arrays(model))
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
    legacy = directory / LEGACY_WEIGHTS_NAME
    if not weights.is_file() and not legacy.is_file():
        raise CheckpointError(f"{weights}: no weights file")
    model = build_model(config.model)
    if weights.is_file():
        load_network_arrays(model, read_arrays(weights), weights)
    else:
        model.load_weights(legacy)
    return model
