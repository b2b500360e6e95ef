"""`maskformer train | evaluate | predict | demo` (registered by the main command line)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def _experiment_args(p: argparse.ArgumentParser, default: str | None) -> None:
    from maskformer.cli import add_experiment_args

    add_experiment_args(p, default)


def add_subcommands(sub) -> None:
    p = sub.add_parser("train", help="train an experiment (resumes from --model-dir)")
    _experiment_args(p, default="maskformer_coco_panoptic_r50")
    p.add_argument("--model-dir", type=Path, required=True,
                   help="checkpoints, config.yaml and logs go here; training resumes from it")
    p.add_argument("--steps", type=int, help="train until this step (default train.steps)")
    p.add_argument("--strategy", default="default",
                   choices=["default", "mirrored", "multi_worker_mirrored", "tpu"],
                   help="tf.distribute strategy (TensorFlow backend)")
    p.add_argument("--tpu", default="", help="TPU address for --strategy tpu")
    p.add_argument("--steps-per-epoch", type=int, default=None,
                   help="steps between progress summaries (default: all)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="PQ / mIoU of a model directory on a dataset")
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--files", help="TFRecord pattern (default: data.val_files of the model)")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="overrides (repeatable), e.g. eval.instance=true")
    p.add_argument("--out", type=Path, help="metrics JSON (default MODEL_DIR/metrics.json)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="segment images; writes PNG/JSON results and overlays")
    p.add_argument("inputs", nargs="+", type=Path, help="image files or folders")
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="overrides (repeatable), e.g. eval.instance=true")
    p.add_argument("--batch-size", type=int, default=4)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("demo", help="generate the shapes dataset, train, evaluate, report")
    p.add_argument("--out", type=Path, default=Path("maskformer-demo"))
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--num-train", type=int, default=512)
    p.add_argument("--num-val", type=int, default=64)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="overrides (repeatable), e.g. eval.instance=true")
    p.set_defaults(func=cmd_demo)


def _strategy(name: str, tpu: str = ""):
    if name == "default":
        return None
    import keras
    import tensorflow as tf

    if keras.backend.backend() != "tensorflow":
        raise SystemExit("--strategy needs KERAS_BACKEND=tensorflow")
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker_mirrored":
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def cmd_train(args) -> int:
    from maskformer.cli import _experiment_from_args
    from maskformer.training.trainer import train

    config = _experiment_from_args(args)
    result = train(config, args.model_dir, steps=args.steps,
                   steps_per_epoch=args.steps_per_epoch, strategy=_strategy(args.strategy,
                                                                             args.tpu))
    print(f"trained to step {result['step']}; model in {args.model_dir}")
    return 0


def _load(model_dir: Path, overrides: list[str]):
    from maskformer.config import apply_overrides
    from maskformer.model_dir import load_config, load_model

    config = apply_overrides(load_config(model_dir), overrides).validate()
    return load_model(model_dir), config


def cmd_evaluate(args) -> int:
    from maskformer.training.evaluate import evaluate, print_results, write_results

    model, config = _load(args.model_dir, args.set)
    results = evaluate(model, config, files=args.files)
    print_results(results)
    out = args.out or args.model_dir / "metrics.json"
    write_results(results, out)
    print(f"metrics written to {out}")
    return 0


def cmd_predict(args) -> int:
    from maskformer.training.predict import predict_files

    model, config = _load(args.model_dir, args.set)
    files = []
    for path in args.inputs:
        if path.is_dir():
            files += sorted(p for p in path.iterdir()
                            if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such image or folder")
    written = predict_files(model, config, files, args.out, batch_size=args.batch_size)
    print(f"{len(written)} images segmented; results in {args.out}")
    return 0


def cmd_demo(args) -> int:
    from maskformer.training.demo import run_demo

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    run_demo(args.out, num_train=args.num_train, num_val=args.num_val, image_size=args.size,
             steps=args.steps, overrides=args.set, seed=args.seed)
    return 0
