"""`maskformer convert` and `maskformer experiments`."""

from __future__ import annotations

from pathlib import Path

from maskformer.cli.common import add_experiment_args, experiment_from_args


def add_subcommands(sub) -> None:
    p = sub.add_parser("convert", help="convert a PyTorch checkpoint (detectron2 or HF)")
    p.add_argument("checkpoint", type=Path,
                   help=".pkl / .pth (detectron2), .safetensors / .bin (HF)")
    p.add_argument("--from", dest="source", required=True, choices=["hf", "detectron2"],
                   help="where the checkpoint comes from")
    p.add_argument("--hf-config", type=Path, help="HF config.json (default: beside the checkpoint)")
    p.add_argument("--naming", default="auto", choices=["auto", "old", "new"],
                   help="detectron2 head names: old (released checkpoints) or new "
                        "(default: auto)")
    p.add_argument("--out", type=Path, required=True, help="output model directory")
    add_experiment_args(p, default=None)
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("experiments", help="list the registered experiments")
    p.set_defaults(func=cmd_experiments)


def cmd_convert(args) -> int:
    from maskformer.config import ExperimentConfig
    from maskformer.conversion.io import convert_checkpoint
    from maskformer.model_dir import save_model

    config = experiment_from_args(args) if args.experiment else ExperimentConfig()
    model, config = convert_checkpoint(args.source, args.checkpoint, config,
                                       hf_config=args.hf_config, naming=args.naming)
    out = save_model(model, config, args.out)
    n = sum(int(v.numpy().size) if hasattr(v, "numpy") else 0 for v in model.weights)
    print(f"converted {args.checkpoint} ({len(model.weights)} variables, {n:,} values) -> {out}")
    return 0


def cmd_experiments(args) -> int:
    from maskformer.experiments import describe, list_experiments

    for name in list_experiments():
        print(f"{name:36s} {describe(name)}")
    return 0
