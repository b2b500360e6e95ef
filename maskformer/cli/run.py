"""`maskformer train | evaluate | predict | demo`."""

from __future__ import annotations

from pathlib import Path

from maskformer.cli.common import (
    add_command,
    add_experiment_args,
    experiment_from_args,
    model_from_args,
    override_list,
)
from maskformer.errors import DataError


def add_subcommands(sub) -> None:
    p = add_command(sub, "train", "train an experiment (resumes from --model-dir)")
    add_experiment_args(p, default="maskformer_coco_panoptic_r50")
    p.add_argument("--model-dir", type=Path, required=True,
                   help="checkpoints, config.yaml and logs go here; training resumes from it")
    p.add_argument("--steps", type=int, help="train until this step (default: train.steps)")
    p.add_argument("--strategy", default="default",
                   choices=["default", "mirrored", "multi_worker_mirrored", "tpu"],
                   help="tf.distribute strategy (TensorFlow backend; 'default': none)")
    p.add_argument("--tpu", default="", help="TPU address for --strategy tpu")
    p.add_argument("--steps-per-epoch", type=int, default=None,
                   help="steps between progress summaries (default: all)")
    p.set_defaults(func=cmd_train)

    p = add_command(sub, "evaluate", "PQ / mIoU of a model directory on a dataset")
    p.add_argument("--model-dir", type=Path, required=True, help="a trained or converted model")
    p.add_argument("--files", help="TFRecord pattern (default: data.val_files of the model)")
    p.add_argument("--out", type=Path, help="metrics JSON (default: MODEL_DIR/metrics.json)")
    add_experiment_args(p, default=None, help=_EXPERIMENT_INSTEAD)
    p.set_defaults(func=cmd_evaluate)

    p = add_command(sub, "predict", "segment images; writes PNG/JSON results and overlays")
    p.add_argument("inputs", nargs="+", type=Path, help="image files or folders")
    p.add_argument("--model-dir", type=Path, required=True, help="a trained or converted model")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--batch-size", type=int, default=4, help="images per forward pass")
    p.add_argument("--recursive", action="store_true", help="also read the folders' sub-folders")
    add_experiment_args(p, default=None, help=_EXPERIMENT_INSTEAD)
    p.set_defaults(func=cmd_predict)

    p = add_command(sub, "demo", "generate the shapes dataset, train, evaluate, report")
    p.add_argument("--out", type=Path, default=Path("maskformer-demo"), help="output folder")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps (default: the experiment's)")
    p.add_argument("--num-train", type=int, default=512, help="training images")
    p.add_argument("--num-val", type=int, default=64, help="validation images")
    p.add_argument("--size", type=int, default=96, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0, help="data and training seed")
    add_experiment_args(p, default="mask2former_demo")
    p.set_defaults(func=cmd_demo)


_EXPERIMENT_INSTEAD = ("a registered experiment to use instead of MODEL_DIR/config.yaml "
                       "(default: the directory's)")


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
    from maskformer.inference import Predictor, evaluate

    model, config, categories = model_from_args(args)
    results = evaluate(model, config, files=args.files,
                       predictor=Predictor(model, config, categories))
    print_results(results)
    out = args.out or args.model_dir / "metrics.json"
    write_results(results, out)
    print(f"metrics written to {out}")
    return 0


def cmd_predict(args) -> int:
    from maskformer.images import find_images
    from maskformer.predict import predict_files

    files = find_images(args.inputs, recursive=args.recursive)  # before the model: fail fast
    model, config, categories = model_from_args(args)
    result = predict_files(model, config, files, args.out, batch_size=args.batch_size,
                           roots=args.inputs, categories=categories)
    skipped = f", {len(result.skipped)} unreadable skipped" if result.skipped else ""
    print(f"{len(result.written)} images segmented{skipped}; results in {args.out}")
    return 0


def cmd_demo(args) -> int:
    from maskformer.demo import run_demo

    if args.size < 16:
        raise DataError(f"--size must be at least 16, got {args.size}")
    run_demo(args.out, num_train=args.num_train, num_val=args.num_val, image_size=args.size,
             steps=args.steps, overrides=override_list(args), seed=args.seed,
             experiment=args.experiment, config_file=args.config)
    return 0
