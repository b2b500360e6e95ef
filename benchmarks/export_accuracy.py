"""What LiteRT quantisation costs: a trained model exported at its evaluation size as LiteRT
float32, float16 and int8 (dynamic range), each run in `ai-edge-litert`'s interpreter over a
validation split, against the Keras model through `predict`'s path.

For each variant: the file size, the share of pixels whose panoptic and semantic maps equal
`predict`'s, and PQ (All / Things / Stuff) and mIoU from the package's evaluator.

    # a trained demo model: maskformer demo --out DEMO (DEMO/model, DEMO/data/records/val-*)
    KERAS_BACKEND=tensorflow python benchmarks/export_accuracy.py --model-dir DEMO/model \
        [--files 'DEMO/data/records/val-*.tfrecord'] [--image-size 96 96]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from maskformer.data.pipeline import build_dataset  # noqa: E402
from maskformer.evaluation.evaluator import Evaluator  # noqa: E402
from maskformer.export import export_model  # noqa: E402
from maskformer.inference import ImagePrediction, Predictor  # noqa: E402
from maskformer.model_dir import load_config, load_model, model_categories  # noqa: E402


def litert_predictions(runner, images: list[np.ndarray], categories) -> list[ImagePrediction]:
    """The panoptic and semantic results of a `.tflite` exported for the panoptic task with
    the semantic map added, as `ImagePrediction`s."""
    predictions = []
    for image in images:
        out = runner(images=image[None])
        count = int(out["num_segments"][0])
        segments = [{"id": s + 1, "category_id": int(out["segment_category"][0][s]),
                     "isthing": bool(out["segment_isthing"][0][s])} for s in range(count)]
        predictions.append(ImagePrediction(image.shape[:2], panoptic_map=out["panoptic_map"][0],
                                           segments=segments,
                                           semantic_map=out["semantic_map"][0]))
    return predictions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--files", help="validation records (default: the model's val_files)")
    parser.add_argument("--image-size", type=int, nargs=2, default=None,
                        help="export size (default: the first validation image's)")
    args = parser.parse_args()

    from ai_edge_litert.interpreter import Interpreter

    config = load_config(args.model_dir)
    categories = model_categories(args.model_dir, config)
    model = load_model(args.model_dir, config)
    files = args.files or config.data.val_files
    batches = [(np.asarray(x), {k: np.asarray(v) for k, v in t.items()})
               for x, t in build_dataset(config.data, files, training=False, batch_size=1)]
    images, targets = [], []
    for x, t in batches:  # the original image: the eval pipeline's resize leaves it unchanged
        height, width = (int(v) for v in t["original_size"][0])
        if tuple(int(v) for v in t["image_size"][0]) != (height, width):
            raise SystemExit("the validation images are resized for the model; give records at "
                             "the model's evaluation size")
        images.append(x[0, :height, :width].round().astype(np.uint8))
        targets.append(t)
    size = args.image_size or list(images[0].shape[:2])
    keep = [i for i, im in enumerate(images) if list(im.shape[:2]) == list(size)]
    print(f"{len(keep)} of {len(images)} validation images at {size[0]}x{size[1]}")

    predictor = Predictor(model, config, categories)
    reference = [predictor.predict_images([images[i]])[0] for i in keep]

    def evaluate(predictions):
        evaluator = Evaluator(categories, panoptic=True, semantic=True, instance=False,
                              ignore_label=config.eval.ignore_label)
        for i, prediction in zip(keep, predictions, strict=True):
            evaluator.update(targets[i], [prediction])
        result = evaluator.result()
        pq = result["panoptic"]
        return (pq["All"]["PQ"], pq["Things"]["PQ"], pq["Stuff"]["PQ"],
                result["semantic"]["mIoU"])

    rows = [("Keras (predict)", None, *evaluate(reference), 1.0, 1.0)]
    with tempfile.TemporaryDirectory() as tmp:
        for quantize in ("none", "float16", "int8"):
            path = Path(tmp) / f"model_{quantize}.tflite"
            result = export_model(model, config, categories, path, format="litert",
                                  task="panoptic", image_size=size, quantize=quantize,
                                  include_semantic=True, log=lambda _: None)
            runner = Interpreter(model_path=str(path)).get_signature_runner()
            found = litert_predictions(runner, [images[i] for i in keep], categories)
            panoptic_agree = np.mean([(f.panoptic_map == r.panoptic_map).mean()
                                      for f, r in zip(found, reference, strict=True)])
            semantic_agree = np.mean([(f.semantic_map == r.semantic_map).mean()
                                      for f, r in zip(found, reference, strict=True)])
            name = "LiteRT float32" if quantize == "none" else f"LiteRT {quantize}"
            rows.append((name, result.size_bytes / 2**20, *evaluate(found), panoptic_agree,
                         semantic_agree))

    print("| model | size MiB | PQ | PQ things | PQ stuff | mIoU | panoptic map = predict's "
          "| semantic map = predict's |")
    print("|---|---|---|---|---|---|---|---|")
    for name, mib, pq, things, stuff, miou, pan, sem in rows:
        size_text = "-" if mib is None else f"{mib:.2f}"
        print(f"| {name} | {size_text} | {pq:.1f} | {things:.1f} | {stuff:.1f} | {miou:.1f} | "
              f"{pan * 100:.2f}% | {sem * 100:.2f}% |")


if __name__ == "__main__":
    main()
