"""`maskformer export`."""

from __future__ import annotations

from pathlib import Path

from maskformer.cli.common import add_command, add_experiment_args, model_from_args


def add_subcommands(sub) -> None:
    from maskformer.export import FORMATS, QUANTIZATIONS, TASKS

    p = add_command(sub, "export", "a model directory as a SavedModel, LiteRT or ONNX model "
                    "with the test-time resize and post-processing inside")
    p.add_argument("--model-dir", type=Path, required=True, help="a trained or converted model")
    p.add_argument("--format", default="saved_model", choices=FORMATS, help="what to write")
    p.add_argument("--task", choices=TASKS,
                   help="the outputs (default: panoptic for a panoptic model, else semantic; "
                        "logits: the network's outputs without post-processing)")
    p.add_argument("--out", type=Path, required=True,
                   help="the SavedModel folder, or the .tflite / .onnx file")
    p.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"),
                   help="fixed input size (required for litert and onnx; a SavedModel takes "
                        "any size without it)")
    p.add_argument("--batch-size", type=int,
                   help="images per call (default: any for a SavedModel, 1 for litert and onnx)")
    p.add_argument("--quantize", default="none", choices=QUANTIZATIONS,
                   help="LiteRT weights: float16, or int8 dynamic range")
    p.add_argument("--with-semantic", action="store_true",
                   help="panoptic / instance task: also output the semantic map")
    p.add_argument("--no-xla", action="store_true",
                   help="SavedModel: run the forward pass without XLA compilation")
    add_experiment_args(p, default=None, help="a registered experiment to use instead of "
                        "MODEL_DIR/config.yaml (default: the directory's)")
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    from maskformer.export import check_image_size, export_model

    check_image_size(args.image_size)  # before the model: fail fast
    model, config, categories = model_from_args(args)
    export_model(model, config, categories, args.out, format=args.format, task=args.task,
                 image_size=args.image_size, batch_size=args.batch_size,
                 quantize=args.quantize, xla=not args.no_xla,
                 include_semantic=args.with_semantic)
    return 0
