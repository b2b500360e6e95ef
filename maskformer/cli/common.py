"""What the commands share: the experiment options and reading a model directory with
overrides."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_override_args(parser: argparse.ArgumentParser) -> None:
    """--config, --set and --params_override: changes to the experiment, applied in that order."""
    parser.add_argument("--config", type=Path, help="YAML file merged into the experiment")
    parser.add_argument("--set", nargs="+", action="extend", metavar="KEY=VALUE", default=[],
                        help="overrides, e.g. model.num_queries=50 (repeatable)")
    parser.add_argument("--params_override", "--params-override", dest="params_override",
                        help="TF Model Garden syntax: 'a.b=1,c.d=[1,2]' or a YAML mapping")


def add_experiment_args(parser: argparse.ArgumentParser, default: str | None) -> None:
    """--experiment and the override options."""
    parser.add_argument("--experiment", default=default,
                        help=f"a registered experiment name (default: {default})")
    add_override_args(parser)


def apply_override_args(config, args):
    """`config` with --config, then --set, then --params_override applied, validated."""
    from maskformer.config import apply_overrides, load_yaml, split_params_override

    if getattr(args, "config", None):
        load_yaml(config, args.config)
    overrides = list(getattr(args, "set", None) or [])
    if getattr(args, "params_override", None):
        overrides += split_params_override(args.params_override)
    apply_overrides(config, overrides)
    return config.validate()


def experiment_from_args(args):
    """The experiment named by --experiment, with the override options applied."""
    from maskformer.experiments import get_experiment

    return apply_override_args(get_experiment(args.experiment), args)


def model_from_args(args):
    """(model, config) of --model-dir, the config with the override options applied."""
    from maskformer.model_dir import load_config, load_model

    return load_model(args.model_dir), apply_override_args(load_config(args.model_dir), args)
