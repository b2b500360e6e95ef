"""The `maskformer` command line. Each subcommand parses its arguments and calls the package."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _experiment_from_args(args):
    """The experiment named by --experiment, then --config YAML, then --set / --params_override."""
    from maskformer.config import apply_overrides, load_yaml, split_params_override
    from maskformer.experiments import get_experiment

    config = get_experiment(args.experiment)
    if getattr(args, "config", None):
        load_yaml(config, args.config)
    overrides = list(getattr(args, "set", None) or [])
    if getattr(args, "params_override", None):
        overrides += split_params_override(args.params_override)
    apply_overrides(config, overrides)
    return config.validate()


def add_experiment_args(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--experiment", default=default, help="a registered experiment name")
    parser.add_argument("--config", help="YAML file merged into the experiment")
    parser.add_argument("--set", nargs="+", action="extend", metavar="KEY=VALUE", default=[],
                        help="overrides, e.g. model.num_queries=50")
    parser.add_argument("--params_override", "--params-override", dest="params_override",
                        help="TF Model Garden syntax: 'a.b=1,c.d=[1,2]' or a YAML mapping")


def cmd_convert(args) -> int:
    from maskformer.config import ExperimentConfig
    from maskformer.conversion.io import convert_checkpoint
    from maskformer.model_dir import save_model

    config = _experiment_from_args(args) if args.experiment else ExperimentConfig()
    model, config = convert_checkpoint(args.source, args.checkpoint, config,
                                       hf_config=args.hf_config, naming=args.naming)
    out = save_model(model, config, args.out)
    n = sum(int(v.numpy().size) if hasattr(v, "numpy") else 0 for v in model.weights)
    print(f"converted {args.checkpoint} ({len(model.weights)} variables, {n:,} values) -> {out}")
    return 0


def cmd_experiments(args) -> int:
    from maskformer.experiments import _REGISTRY, list_experiments

    for name in list_experiments():
        doc = (_REGISTRY[name].__doc__ or "").strip().splitlines()[0]
        print(f"{name:36s} {doc}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maskformer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("convert", help="convert a PyTorch checkpoint (detectron2 or HF)")
    p.add_argument("checkpoint", type=Path, help=".pkl / .pth (detectron2), .safetensors / .bin (HF)")
    p.add_argument("--from", dest="source", required=True, choices=["hf", "detectron2"])
    p.add_argument("--hf-config", type=Path, help="HF config.json (default: beside the checkpoint)")
    p.add_argument("--naming", default="auto", choices=["auto", "old", "new"],
                   help="detectron2 head names: old (released checkpoints) or new")
    p.add_argument("--out", type=Path, required=True, help="output model directory")
    add_experiment_args(p, default=None)
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("experiments", help="list the registered experiments")
    p.set_defaults(func=cmd_experiments)

    from maskformer.data import cli as data_cli
    from maskformer.training import cli as training_cli

    data_cli.add_subcommands(sub)
    training_cli.add_subcommands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from maskformer.errors import MaskFormerError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (MaskFormerError, FileNotFoundError) as e:
        print(f"maskformer {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"maskformer {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
