"""What the commands share: how a command is declared (help with defaults, --verbose), the
experiment options, and reading a model directory with overrides."""

from __future__ import annotations

import argparse
from pathlib import Path


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none to show."""

    def _get_help_string(self, action):
        if action.default in (None, False, [], argparse.SUPPRESS) or action.required:
            return action.help
        return super()._get_help_string(action)


def add_command(sub, name: str, help: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand with its defaults shown in --help, `--verbose`, and its name (`prog`) kept
    for the error line."""
    parser = sub.add_parser(name, help=help, description=kwargs.pop("description", help),
                            formatter_class=HelpFormatter, **kwargs)
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's start-up and C++ log messages")
    parser.set_defaults(prog=parser.prog)
    return parser


def add_override_args(parser: argparse.ArgumentParser) -> None:
    """--config, --set and --params_override: changes to the experiment, applied in that order."""
    parser.add_argument("--config", type=Path, help="YAML file merged into the experiment")
    parser.add_argument("--set", nargs="+", action="extend", metavar="KEY=VALUE", default=[],
                        help="overrides, e.g. model.num_queries=50 (repeatable)")
    parser.add_argument("--params_override", "--params-override", dest="params_override",
                        help="TF Model Garden syntax: 'a.b=1,c.d=[1,2]' or a YAML mapping")


def add_experiment_args(parser: argparse.ArgumentParser, default: str | None,
                        help: str = "a registered experiment (maskformer experiments)") -> None:
    """--experiment and the override options."""
    parser.add_argument("--experiment", default=default, help=help)
    add_override_args(parser)


def override_list(args) -> list[str]:
    """--set, then --params_override, as KEY=VALUE strings."""
    from maskformer.config import split_params_override

    overrides = list(getattr(args, "set", None) or [])
    if getattr(args, "params_override", None):
        overrides += split_params_override(args.params_override)
    return overrides


def apply_override_args(config, args):
    """`config` with --config, then --set, then --params_override applied, validated."""
    from maskformer.config import apply_overrides, load_yaml

    if getattr(args, "config", None):
        load_yaml(config, args.config)
    apply_overrides(config, override_list(args))
    return config.validate()


def experiment_from_args(args):
    """The experiment named by --experiment, with the override options applied."""
    from maskformer.experiments import get_experiment

    return apply_override_args(get_experiment(args.experiment), args)


def model_from_args(args):
    """(model, config, categories) of --model-dir.

    The config is the directory's config.yaml, or the experiment --experiment names instead,
    with the override options applied; the network is built from that config (so `model.*`
    overrides take effect) and loaded strictly from the directory's weights. The categories are
    the directory's (`model_dir.model_categories`).
    """
    from maskformer.model_dir import load_config, load_model, model_categories

    base = experiment_from_args(args) if args.experiment else None
    config = base or apply_override_args(load_config(args.model_dir), args)
    model = load_model(args.model_dir, config)
    return model, config, model_categories(args.model_dir, config)
