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
    sub = data.add_subparsers(
        dest="data_command",
        metavar="{coco-panoptic,coco-instance,cityscapes-instance,ade20k-semantic,semantic,voc,"
                "cityscapes,mapillary-vistas,coco-stuff-10k,ade20k-full,shapes,inspect}")
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

    inst = add_command(sub, "coco-instance", "COCO instance format (instances_*.json) -> "
                                             "TFRecords")
    inst.add_argument("--images", required=True, help="folder of the images")
    inst.add_argument("--annotations", required=True, help="instances_*.json")
    _add_common(inst)
    inst.set_defaults(func=run_coco_instance)

    city = add_command(sub, "cityscapes-instance", "Cityscapes instance ground truth "
                                                   "(*_gtFine_instanceIds.png, 8 classes) -> "
                                                   "instance TFRecords")
    city.add_argument("--root", required=True, help="cityscapes folder (leftImg8bit/, gtFine/)")
    city.add_argument("--split", default="train", help="train or val")
    _add_common(city)
    city.set_defaults(func=run_cityscapes_instance)

    sem = add_command(sub, "semantic", "semantic label PNGs (any dataset) -> TFRecords")
    sem.add_argument("--images", required=True, help="folder of the images")
    sem.add_argument("--labels", required=True,
                     help="folder of the label PNGs (matched to the images by file stem)")
    sem.add_argument("--classes", required=True,
                     help="class list: .txt (one name per line) or a JSON list of names or of "
                          "{name, color} objects; class i has label value i")
    sem.add_argument("--ignore-value", type=int, default=255, help="label value that is void")
    sem.add_argument("--reduce-labels", action="store_true",
                     help="label 0 is void and label v is class v-1")
    sem.add_argument("--palette", default=None,
                     help="JSON list of {color: [r,g,b], class: index|name|null}; the label "
                          "PNGs are then RGB")
    sem.add_argument("--recursive", action="store_true",
                     help="also take images in subfolders (their labels in the same "
                          "subfolders of --labels)")
    sem.add_argument("--image-suffix", default="",
                     help="end of the image stems that the label names lack, e.g. "
                          "_leftImg8bit (images without it are left out)")
    sem.add_argument("--label-suffix", default="",
                     help="what follows the stem in the label names, e.g. _gtFine_labelIds "
                          "for X_gtFine_labelIds.png")
    _add_common(sem)
    sem.set_defaults(func=run_semantic)

    presets = {
        "voc": ("Pascal VOC 2012 segmentation -> TFRecords", "VOCdevkit/VOC2012", "train",
                "train, val or trainval (ImageSets/Segmentation/SPLIT.txt)"),
        "cityscapes": ("Cityscapes fine labels (19 train ids) -> TFRecords",
                       "cityscapes folder (leftImg8bit/, gtFine/)", "train",
                       "train, val or test"),
        "mapillary-vistas": ("Mapillary Vistas v1.2 (65 classes) -> TFRecords",
                             "mapillary_vistas folder (training/, validation/)", "training",
                             "training or validation"),
        "coco-stuff-10k": ("COCO-Stuff-10K (171 classes) -> TFRecords",
                           "coco_stuff_10k folder (images/, annotations/, imageLists/)",
                           "train", "train or test (imageLists/SPLIT.txt)"),
        "ade20k-full": ("ADE20K-Full (847 classes) -> TFRecords",
                        "ADE20K_2021_17_01 folder", "training", "training or validation"),
    }
    for name, (description, root_help, default_split, split_help) in presets.items():
        p = add_command(sub, name, description)
        p.add_argument("--root", required=True, help=root_help)
        p.add_argument("--split", default=default_split, help=split_help)
        _add_common(p)
        if name == "coco-stuff-10k":
            p.add_argument("--version", default="1.0", choices=("1.0", "1.1"),
                           help="release of the .mat annotations: 1.0 (MaskFormer's; S - 2 = "
                                "class) or 1.1 (S = COCO-Stuff id)")
        p.set_defaults(func=run_semantic_preset, preset=name)

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

    inspect = add_command(sub, "inspect", "summarise converted records and draw a few of them")
    inspect.add_argument("records", metavar="RECORDS",
                         help="record files: a glob, or comma-separated globs")
    inspect.add_argument("--dataset-info", default=None,
                         help="dataset.json (default: the one beside the first record file)")
    inspect.add_argument("--out", default=None,
                         help="folder for the report files (default: FOLDER/inspect, FOLDER "
                              "being that of the first record file)")
    inspect.add_argument("--num-images", type=int, default=16, help="images to draw")
    inspect.add_argument("--record-format", default="maskformer",
                         choices=("maskformer", "model_garden"),
                         help="records of `maskformer data` (default) or of the Model Garden's "
                              "create_coco_tf_record.py (then --dataset-info is the COCO "
                              "panoptic annotation file)")
    inspect.add_argument("--no-progress", action="store_true", help="no progress bar")
    inspect.set_defaults(func=run_inspect)
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


def _common_kwargs(args) -> dict:
    return {"num_shards": args.shards, "num_workers": args.workers, "strict": args.strict,
            "progress": not args.no_progress}


def run_coco_instance(args) -> int:
    """``maskformer data coco-instance``."""
    from maskformer.data import coco_instance

    return _finish(coco_instance.convert(args.images, args.annotations, args.out,
                                         **_common_kwargs(args)))


def run_cityscapes_instance(args) -> int:
    """``maskformer data cityscapes-instance``."""
    from maskformer.data import cityscapes_instance

    return _finish(cityscapes_instance.convert(args.root, args.split, args.out,
                                               **_common_kwargs(args)))


def run_semantic(args) -> int:
    """``maskformer data semantic``."""
    from maskformer.data import semantic

    return _finish(semantic.convert(args.images, args.labels, args.out, args.classes,
                                    ignore_value=args.ignore_value,
                                    reduce_labels=args.reduce_labels, palette=args.palette,
                                    recursive=args.recursive, image_suffix=args.image_suffix,
                                    label_suffix=args.label_suffix, **_common_kwargs(args)))


def run_semantic_preset(args) -> int:
    """``maskformer data voc|cityscapes|mapillary-vistas|coco-stuff-10k|ade20k-full``."""
    from maskformer.data import semantic_datasets

    convert = semantic_datasets.PRESETS[args.preset]
    extra = {"version": args.version} if args.preset == "coco-stuff-10k" else {}
    return _finish(convert(args.root, args.split, args.out, **extra, **_common_kwargs(args)))


def run_inspect(args) -> int:
    """``maskformer data inspect``."""
    from maskformer.data import inspect

    if args.num_images < 0:
        raise DataError(f"--num-images must not be negative, got {args.num_images}")
    print(inspect.inspect_records(args.records, dataset_info=args.dataset_info,
                                  out_dir=args.out, num_images=args.num_images,
                                  progress=not args.no_progress,
                                  record_format=args.record_format))
    return 0


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
