"""`maskformer train | evaluate | predict | demo`."""

from __future__ import annotations

import os
from pathlib import Path

from maskformer.cli.common import (
    add_experiment_args,
    add_override_args,
    experiment_from_args,
    model_from_args,
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def add_subcommands(sub) -> None:
    p = sub.add_parser("train", help="train an experiment (resumes from --model-dir)")
    add_experiment_args(p, default="maskformer_coco_panoptic_r50")
    p.add_argument("--model-dir", type=Path, required=True,
                   help="checkpoints, config.yaml and logs go here; training resumes from it")
    p.add_argument("--steps", type=int, help="train until this step (default: train.steps)")
    p.add_argument("--strategy", default="default",
                   choices=["default", "mirrored", "multi_worker_mirrored", "tpu"],
                   help="tf.distribute strategy (TensorFlow backend; default: none)")
    p.add_argument("--tpu", default="", help="TPU address for --strategy tpu")
    p.add_argument("--steps-per-epoch", type=int, default=None,
                   help="steps between progress summaries (default: all)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="PQ / mIoU of a model directory on a dataset")
    p.add_argument("--model-dir", type=Path, required=True, help="a trained or converted model")
    p.add_argument("--files", help="TFRecord pattern (default: data.val_files of the model)")
    p.add_argument("--out", type=Path, help="metrics JSON (default: MODEL_DIR/metrics.json)")
    add_override_args(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="segment images; writes PNG/JSON results and overlays")
    p.add_argument("inputs", nargs="+", type=Path, help="image files or folders")
    p.add_argument("--model-dir", type=Path, required=True, help="a trained or converted model")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--batch-size", type=int, default=4, help="images per forward pass "
                                                            "(default: 4)")
    add_override_args(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("demo", help="generate the shapes dataset, train, evaluate, report")
    p.add_argument("--out", type=Path, default=Path("maskformer-demo"),
                   help="output folder (default: maskformer-demo)")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps (default: the experiment's)")
    p.add_argument("--num-train", type=int, default=512, help="training images (default: 512)")
    p.add_argument("--num-val", type=int, default=64, help="validation images (default: 64)")
    p.add_argument("--size", type=int, default=96, help="image side in pixels (default: 96)")
    p.add_argument("--seed", type=int, default=0, help="data and training seed (default: 0)")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="overrides of the demo experiment (repeatable)")
    p.set_defaults(func=cmd_demo)


def cmd_train(args) -> int:
    from maskformer.training.distribute import strategy_from_name
    from maskformer.training.trainer import train

    config = experiment_from_args(args)
    result = train(config, args.model_dir, steps=args.steps,
                   steps_per_epoch=args.steps_per_epoch,
                   strategy=strategy_from_name(args.strategy, args.tpu))
    print(f"trained to step {result['step']}; model in {args.model_dir}")
    return 0


def cmd_evaluate(args) -> int:
    from maskformer.evaluation.evaluator import print_results, write_results
    from maskformer.inference import evaluate

    model, config = model_from_args(args)
    results = evaluate(model, config, files=args.files)
    print_results(results)
    out = args.out or args.model_dir / "metrics.json"
    write_results(results, out)
    print(f"metrics written to {out}")
    return 0


def image_files(inputs: list[Path]) -> list[Path]:
    """The image files among `inputs` and in the folders among them."""
    files = []
    for path in inputs:
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(2, "no such image or folder", str(path))
    return files


def cmd_predict(args) -> int:
    from maskformer.predict import predict_files

    model, config = model_from_args(args)
    written = predict_files(model, config, image_files(args.inputs), args.out,
                            batch_size=args.batch_size)
    print(f"{len(written)} images segmented; results in {args.out}")
    return 0


def cmd_demo(args) -> int:
    from maskformer.demo import run_demo

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    run_demo(args.out, num_train=args.num_train, num_val=args.num_val, image_size=args.size,
             steps=args.steps, overrides=args.set, seed=args.seed)
    return 0
