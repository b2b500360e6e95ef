"""Model directories: what training and conversion write and what `load_model`, `evaluate`,
`predict` and export read.

    MODEL_DIR/config.yaml          the resolved experiment
    MODEL_DIR/model.weights.npz    the network's weights, by name
    MODEL_DIR/categories.json      the classes: name, colour, thing or stuff, original id

`categories.json` makes a model directory self-contained: `predict`, `evaluate` and export
read the class names from it, whether the model was trained (the training data's
`dataset.json`), converted from Hugging Face (`id2label`) or converted for an experiment with
a built-in dataset (`maskformer.data.categories`). Directories without it fall back to those
sources (`model_categories`).

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

import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from maskformer.config import ExperimentConfig, merge_dict, to_yaml
from maskformer.errors import CheckpointError, ConfigError

CONFIG_NAME = "config.yaml"
CATEGORIES_NAME = "categories.json"
WEIGHTS_NAME = "model.weights.npz"
LEGACY_WEIGHTS_NAME = "model.weights.h5"  # Keras' format, read only
_CKPT = re.compile(r"ckpt-(\d+)\.npz$")


def checkpoint_paths(model_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete training checkpoints in `model_dir` (checkpoints/ckpt-STEP.npz), oldest first,
    as (step, path)."""
    found = []
    for path in (Path(model_dir) / "checkpoints").glob("ckpt-*.npz"):
        match = _CKPT.search(path.name)
        if match:
            found.append((int(match[1]), path))
    return sorted(found)
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


def _write_text(path: Path, text: str) -> None:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
        f.write(text)
    os.replace(f.name, path)


def save_model(model, config: ExperimentConfig, directory: str | Path,
               categories: list[dict[str, Any]] | None = None) -> Path:
    """Writes the resolved config, the weights and the categories into `directory`, each
    atomically.

    Args:
        categories: the classes in contiguous order (default: `config_categories(config)`;
            none is written when that finds none).
    """
    from maskformer.modeling.maskformer import MaskFormer  # noqa: F401 (keras import cost)

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if categories is None:
        found = config_categories(config)
        categories, source = found if found else (None, "")
    else:
        source = "given"
    if categories is not None:
        categories = check_categories(categories, config.model.num_classes, source)
    _write_text(directory / CONFIG_NAME, to_yaml(config))
    write_arrays(directory / WEIGHTS_NAME, network_arrays(model))
    if categories is not None:
        _write_text(directory / CATEGORIES_NAME,
                    json.dumps({"source": source, "categories": categories}, indent=1))
    return directory


# ---------------------------------------------------------------------------------------------
# Categories
# ---------------------------------------------------------------------------------------------


def check_categories(categories: list[dict[str, Any]], num_classes: int,
                     source: str | Path) -> list[dict[str, Any]]:
    """`categories` in the dataset.json form, checked against the model's class count.

    Every entry needs a "name"; "id" becomes the list index (contiguous), "isthing" defaults to
    0, "color" to a colour drawn from the index, "original_id" to the index.

    Raises:
        ConfigError: a count that is not `model.num_classes`, or an entry without a name.
    """
    if not isinstance(categories, list) or not all(isinstance(c, dict) for c in categories):
        raise ConfigError(f"{source}: categories must be a list of objects")
    if len(categories) != num_classes:
        raise ConfigError(f"{source}: {len(categories)} categories, but the model has "
                          f"{num_classes} classes (model.num_classes)")
    table = []
    for i, c in enumerate(categories):
        if "name" not in c:
            raise ConfigError(f"{source}: category {i} has no 'name'")
        rng = np.random.default_rng(i)
        table.append({**c, "id": i, "name": str(c["name"]),
                      "isthing": int(bool(c.get("isthing", 0))),
                      "color": [int(v) for v in c.get("color", rng.integers(0, 256, 3))],
                      "original_id": int(c.get("original_id", i))})
    return table


def config_categories(config: ExperimentConfig) -> tuple[list[dict[str, Any]], str] | None:
    """The categories an experiment names, and where they come from: the training data's
    `data.dataset_info` when that file is readable, else the built-in list of `data.dataset`
    when it has `model.num_classes` entries; None when neither gives them."""
    from maskformer.data.categories import builtin_for_dataset
    from maskformer.data.coco_panoptic import categories_from_annotations
    from maskformer.data.records import read_dataset_info
    from maskformer.errors import DataError

    if config.data.dataset_info:
        try:
            raw = read_dataset_info(config.data.dataset_info)["categories"]
        except DataError:
            raw = None  # a config from another machine: the built-in list may still fit
        if raw is not None:
            ids = sorted(c.get("id") for c in raw)
            if ids != list(range(len(raw))):  # a COCO annotation file (Model Garden records)
                raw = categories_from_annotations(raw)
            return sorted(raw, key=lambda c: c["id"]), str(config.data.dataset_info)
    builtin = builtin_for_dataset(config.data.dataset, config.model.num_classes)
    if builtin is not None:
        return builtin, f"built-in {config.data.dataset}"
    return None


def model_categories(directory: str | Path,
                     config: ExperimentConfig | None = None) -> list[dict[str, Any]]:
    """The categories of a model directory: `categories.json`, else those its config names
    (`config_categories`).

    Raises:
        ConfigError: none found, or a count that does not fit the model.
    """
    directory = Path(directory)
    config = config or load_config(directory)
    path = directory / CATEGORIES_NAME
    if path.is_file():
        try:
            categories = json.loads(path.read_text())["categories"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"{path}: cannot read the categories ({e})") from None
        return check_categories(categories, config.model.num_classes, path)
    found = config_categories(config)
    if found is None:
        raise ConfigError(
            f"{directory}: no class names: no {CATEGORIES_NAME}, and neither data.dataset_info "
            f"({config.data.dataset_info or 'not set'}) nor a built-in list for data.dataset "
            f"{config.data.dataset!r} gives {config.model.num_classes} categories; give the "
            "training data's dataset.json with --set data.dataset_info=PATH")
    return check_categories(found[0], config.model.num_classes, found[1])


def load_config(directory: str | Path) -> ExperimentConfig:
    path = Path(directory) / CONFIG_NAME
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except OSError:
        raise ConfigError(f"{path}: no model config here (expected {CONFIG_NAME})") from None
    return merge_dict(ExperimentConfig(), values).validate()


def load_model(directory: str | Path, config: ExperimentConfig | None = None):
    """Builds the model described by `directory/config.yaml` (or by `config`) and loads the
    directory's weights into it (strict)."""
    from maskformer.modeling.maskformer import build_model

    directory = Path(directory)
    config = config or load_config(directory)
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
