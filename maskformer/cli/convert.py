"""`maskformer convert` and `maskformer experiments`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from maskformer.cli.common import (
    add_command,
    add_experiment_args,
    apply_override_args,
    experiment_from_args,
)


def add_subcommands(sub) -> None:
    p = add_command(sub, "convert", "convert a MaskFormer or Mask2Former PyTorch checkpoint "
                                    "(detectron2 or HF) to a model directory")
    p.add_argument("checkpoint", type=Path,
                   help=".pkl / .pth (detectron2); .safetensors / .bin or the folder "
                        "save_pretrained writes (HF MaskFormerForInstanceSegmentation or "
                        "Mask2FormerForUniversalSegmentation)")
    p.add_argument("--from", dest="source", required=True, choices=["hf", "detectron2"],
                   help="where the checkpoint comes from")
    p.add_argument("--hf-config", type=Path, help="HF config.json (default: beside the checkpoint)")
    p.add_argument("--naming", default="auto", choices=["auto", "old", "new"],
                   help="detectron2 head names: old (released checkpoints) or new")
    p.add_argument("--out", type=Path, required=True, help="output model directory")
    add_experiment_args(p, default=None,
                        help="the experiment the weights belong to (default: the registered "
                             "experiment with the checkpoint's architecture, read from its "
                             "tensors or, for HF, its config.json)")
    p.set_defaults(func=cmd_convert)

    p = add_command(sub, "experiments", "list the registered experiments")
    p.set_defaults(func=cmd_experiments)


def cmd_convert(args) -> int:
    from maskformer.conversion.io import convert_to_model_dir

    config = experiment_from_args(args) if args.experiment else None
    model, config, categories, where = convert_to_model_dir(
        args.source, args.checkpoint, config, args.out, hf_config=args.hf_config,
        naming=args.naming, customize=lambda c: apply_override_args(c, args))
    n = sum(int(np.prod(v.shape)) for v in model.weights)
    print(f"converted {args.checkpoint} ({len(model.weights)} variables, {n:,} values) -> "
          f"{args.out}")
    if not args.experiment:
        print(f"experiment: {config.name} (the registered one with this architecture)"
              if config.name else "experiment: none registered has this architecture; the "
              "model is the checkpoint's, the data and test-time settings the defaults")
    if categories:
        print(f"{len(categories)} classes from {where}")
    else:
        print("no class names found: give --experiment (a built-in dataset), or "
              "--set data.dataset_info=PATH/dataset.json, before predicting")
    return 0


def cmd_experiments(args) -> int:
    from maskformer.experiments import describe, list_experiments

    for name in list_experiments():
        print(f"{name:36s} {describe(name)}")
    return 0
