"""``maskformer data ...``: the dataset converters and the synthetic dataset on the command line.

User errors (missing files, bad input under ``--strict``, bad arguments) print one ``error:``
line and return 2 (the main command's rule); they never end in a traceback. An interrupted
conversion renames nothing into place.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from maskformer.cli.common import add_command
from maskformer.errors import DataError


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True,
                   help="output prefix, e.g. data/coco/train -> data/coco/train-0000i-of-0000n"
                        ".tfrecord and data/coco/dataset.json")
    p.add_argument("--shards", type=int, default=1, help="number of output files")
    p.add_argument("--workers", type=int, default=1, help="worker processes")
    p.add_argument("--strict", action="store_true",
                   help="fail at the first bad input instead of skipping and counting it")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_subcommands(subparsers) -> argparse.ArgumentParser:
    """Registers ``data`` and its sub-subcommands on an argparse subparsers object."""
    data = subparsers.add_parser("data", help="convert datasets to TFRecords, make the "
                                              "synthetic shapes dataset")
    sub = data.add_subparsers(dest="data_command", metavar="{coco-panoptic,ade20k-semantic,"
                                                           "shapes}")
    sub.required = True

    coco = add_command(sub, "coco-panoptic", "COCO panoptic format -> TFRecords")
    coco.add_argument("--images", required=True, help="folder of the images")
    coco.add_argument("--annotations", required=True, help="panoptic_*.json")
    coco.add_argument("--masks", required=True, help="folder of the panoptic PNGs")
    _add_common(coco)
    coco.set_defaults(func=run_coco_panoptic)

    ade = add_command(sub, "ade20k-semantic", "ADE20K semantic labels -> TFRecords")
    ade.add_argument("--images", required=True, help="folder of the images (*.jpg)")
    ade.add_argument("--labels", required=True, help="folder of the label PNGs (same names)")
    ade.add_argument("--class-names", default=None,
                     help="objectInfo150.csv or a file with one class name per line")
    _add_common(ade)
    ade.set_defaults(func=run_ade20k_semantic)

    shapes = add_command(sub, "shapes", "write the synthetic shapes dataset (COCO panoptic "
                                        "format) and convert it to TFRecords")
    shapes.add_argument("--out", required=True, help="output folder")
    shapes.add_argument("--num-images", type=int, default=256,
                        help="training images")
    shapes.add_argument("--num-val", type=int, default=64, help="validation images")
    shapes.add_argument("--size", type=int, default=128,
                        help="image side in pixels")
    shapes.add_argument("--seed", type=int, default=0, help="generator seed")
    shapes.add_argument("--shards", type=int, default=1, help="files per split")
    shapes.add_argument("--workers", type=int, default=1, help="worker processes")
    shapes.add_argument("--no-records", action="store_true",
                        help="only write the COCO-format files, do not convert")
    shapes.add_argument("--no-progress", action="store_true", help="no progress bar")
    shapes.set_defaults(func=run_shapes)
    return data


def _finish(report) -> int:
    print(report.summary())
    return 0


def run_coco_panoptic(args) -> int:
    """``maskformer data coco-panoptic``."""
    from maskformer.data import coco_panoptic

    report = coco_panoptic.convert(args.images, args.annotations, args.masks, args.out,
                                   num_shards=args.shards, num_workers=args.workers,
                                   strict=args.strict, progress=not args.no_progress)
    return _finish(report)


def run_ade20k_semantic(args) -> int:
    """``maskformer data ade20k-semantic``."""
    from maskformer.data import ade20k

    report = ade20k.convert(args.images, args.labels, args.out, num_shards=args.shards,
                            num_workers=args.workers, strict=args.strict,
                            class_names=args.class_names, progress=not args.no_progress)
    return _finish(report)


def run_shapes(args) -> int:
    """``maskformer data shapes``: generate, then convert each split to ``OUT/records/``."""
    from maskformer.data import coco_panoptic, shapes

    if args.num_images < 0 or args.num_val < 0:
        raise DataError("--num-images and --num-val must not be negative")
    if args.size < 16:
        raise DataError(f"--size must be at least 16, got {args.size}")
    paths = shapes.generate(args.out, args.num_images, args.num_val, args.size, args.seed,
                            progress=not args.no_progress)
    for split, p in paths.items():
        print(f"{split}: images {p.images}, annotations {p.annotations}, masks {p.masks}")
    if args.no_records:
        return 0
    for split, p in paths.items():
        prefix = Path(args.out) / "records" / split
        report = coco_panoptic.convert(p.images, p.annotations, p.masks, prefix,
                                       num_shards=args.shards, num_workers=args.workers,
                                       strict=True, progress=not args.no_progress)
        print(f"{split}: {report.summary()}")
    print(f"dataset info: {Path(args.out) / 'records' / 'dataset.json'}")
    return 0
