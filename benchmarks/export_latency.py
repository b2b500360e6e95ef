"""Exported runtimes against Hugging Face PyTorch: latency and artifact size, in one process.

The Hugging Face-comparable model of `benchmarks/forward.py` (ResNet-50 + FPN pixel decoder,
150 classes, 100 queries, randomly initialised `MaskFormerForInstanceSegmentation`, converted
into ours as the `maskformer_ade20k_semantic_r50` experiment), at batch 1 and a fixed input size
(default 512x512, which that experiment's test-time resize keeps as it is), on the CPU.

Contenders, all timed interleaved (a, b, c, a, b, c, ...) after two warm-up calls each, medians
of `--runs`:

- HF PyTorch eager: the model's forward pass only (`torch.no_grad`), as Hugging Face users run
  it; no post-processing;
- ours Keras forward as a `tf.function` graph, and with `jit_compile` (XLA): forward only;
- the SavedModel's `serving_default` (`maskformer.export`, semantic task, fixed input size):
  the whole pipeline (uint8 image in, padding, forward pass with XLA, semantic post-processing,
  `semantic_map` out);
- LiteRT float32, float16 and int8 (dynamic range): the whole pipeline, `num_threads` = cores;
- onnxruntime: the whole pipeline, the default CPU provider, intra-op threads = cores;
- the SavedModel, LiteRT float32 / int8 and onnxruntime exported for the "logits" task: the
  forward pass only, to compare with PyTorch's forward pass;
- HF PyTorch eager with `post_process_semantic_segmentation` (its own semantic inference, which
  combines the masks at their stride-4 resolution, then upsamples): PyTorch's whole pipeline.

The size of each artifact is what `export_model` reports (the SavedModel folder, the `.tflite`
or `.onnx` file); PyTorch's is its `model.safetensors`, ours Keras' its `.weights.h5`.

Then the agreement of the exported semantic maps, on three photographs of scikit-image
(astronaut, coffee, chelsea; centre-cropped to a square and resized to the input size): the
share of pixels where LiteRT float16 / int8 agree with LiteRT float32, and LiteRT float32 /
onnxruntime with the SavedModel; also Hugging Face's own semantic post-processing of its
forward pass against the SavedModel. With random weights the maps need not look like anything.

Artifacts go to a temporary directory, deleted at the end. A `.tflite` whose weights are not
constants (resource variables that nothing initialises, `VAR_HANDLE` ops: what the LiteRT
converter makes of Keras 3 variables unless they are frozen first) is flagged: its outputs and
timing would not be the model's.

    KERAS_BACKEND=tensorflow python benchmarks/export_latency.py [--runs 7] [--size 512x512]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import torch  # noqa: E402

from benchmarks.forward import interleaved  # noqa: E402
from maskformer.conversion.io import convert_checkpoint, max_relative_difference  # noqa: E402
from maskformer.experiments import get_experiment  # noqa: E402
from maskformer.export import export_model  # noqa: E402
from tests.conversion.test_huggingface import MEAN, STD, hf_model  # noqa: E402

EXPERIMENT = "maskformer_ade20k_semantic_r50"
PHOTOS = ("astronaut", "coffee", "chelsea")
START = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - START:6.0f} s] {message}", flush=True)


def photo(name: str, size: tuple[int, int]) -> np.ndarray:
    """A scikit-image photograph, centre-cropped to the aspect of `size` and resized to it:
    uint8 [H, W, 3]."""
    import skimage.data
    from skimage.transform import resize

    image = getattr(skimage.data, name)()[..., :3]
    h, w = image.shape[:2]
    aspect = size[1] / size[0]
    if w / h > aspect:  # too wide: crop the width
        crop = round(h * aspect)
        image = image[:, (w - crop) // 2:(w - crop) // 2 + crop]
    else:
        crop = round(w / aspect)
        image = image[(h - crop) // 2:(h - crop) // 2 + crop]
    out = resize(image, size, order=1, anti_aliasing=True, preserve_range=True)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def has_variables(path: Path) -> bool:
    """Whether a `.tflite` reads resource variables (`VAR_HANDLE`): weights not folded in."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(path.read_bytes(), 0)
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        if max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) == \
                schema.BuiltinOperator.VAR_HANDLE:
            return True
    return False


def litert_runner(path: Path, threads: int, key: str = "semantic_map"):
    """LiteRT's signature runner of a `.tflite`: images uint8 [B, H, W, 3] -> output `key`."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    run = interpreter.get_signature_runner()
    return lambda images: run(images=images)[key]


def onnx_runner(path: Path, threads: int, key: str = "semantic_map"):
    """An onnxruntime session of an `.onnx`: images uint8 [B, H, W, 3] -> output `key`."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    outputs = [o.name for o in session.get_outputs()]
    named = [n for n in outputs if key in n]
    log(f"onnx input {input_name!r}, outputs {outputs}")
    if not named:
        raise RuntimeError(f"no {key} among the ONNX outputs {outputs}")
    return lambda images: session.run([named[0]], {input_name: images})[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="timed calls per contender")
    parser.add_argument("--size", default="512x512", help="input size HxW")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    threads = os.cpu_count() or 1
    log(f"cores {threads}, torch threads {torch.get_num_threads()}, tf {tf.__version__}, "
        f"torch {torch.__version__}")

    tmp = Path(tempfile.mkdtemp(prefix="export_latency_"))
    try:
        run(args, size, threads, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log("done")


def run(args, size: tuple[int, int], threads: int, tmp: Path) -> None:
    log("building the Hugging Face model and converting it")
    reference = hf_model(num_labels=150, num_queries=100)
    reference.save_pretrained(tmp / "hf")
    model, config = convert_checkpoint("hf", tmp / "hf" / "model.safetensors",
                                       get_experiment(EXPERIMENT))
    model.save_weights(str(tmp / "ours.weights.h5"))
    categories = [{"id": i, "name": f"class {i}", "isthing": 0}
                  for i in range(config.model.num_classes)]

    sizes = {"torch": (tmp / "hf" / "model.safetensors").stat().st_size,
             "graph": (tmp / "ours.weights.h5").stat().st_size}
    sizes["xla"] = sizes["graph"]
    exports = {"saved_model": dict(format="saved_model"),
               "litert f32": dict(format="litert"),
               "litert f16": dict(format="litert", quantize="float16"),
               "litert int8": dict(format="litert", quantize="int8"),
               "onnx": dict(format="onnx")}
    # the same exports without post-processing (task "logits"), against PyTorch's forward pass
    exports.update({f"{name} logits": {**kwargs, "task": "logits"}
                    for name, kwargs in list(exports.items()) if name != "litert f16"})
    suffix = {"saved_model": "", "litert": ".tflite", "onnx": ".onnx"}
    paths, export_seconds, failures = {}, {}, {}
    for name, kwargs in exports.items():
        out = tmp / (name.replace(" ", "_") + suffix[kwargs["format"]])
        start = time.perf_counter()
        try:
            kwargs = {"task": "semantic", **kwargs}
            result = export_model(model, config, categories, out, image_size=size,
                                  batch_size=1, log=log, **kwargs)
        except Exception as e:  # report and go on with the others
            failures[name] = f"export: {type(e).__name__}: {e}"
            log(f"{name}: export failed: {failures[name]}")
            continue
        export_seconds[name] = time.perf_counter() - start
        paths[name], sizes[name] = result.path, result.size_bytes
        if result.flex_ops:
            log(f"{name}: Flex ops {result.flex_ops}")
        if kwargs["format"] == "litert" and has_variables(result.path):
            failures[name] = ("export: the .tflite reads resource variables (VAR_HANDLE ops) that "
                              "nothing initialises: its weights are missing; its outputs and "
                              "timing are not the model's")
            log(f"{name}: {failures[name]}")

    # Runners: uint8 [1, H, W, 3] -> semantic_map as numpy.
    runners = {}
    for name, path in paths.items():
        key = "pred_masks" if name.endswith("logits") else "semantic_map"
        try:
            if name.startswith("saved_model"):
                serve = tf.saved_model.load(str(path)).signatures["serving_default"]
                runners[name] = lambda images, serve=serve, key=key: serve(
                    images=tf.constant(images))[key].numpy()
            elif name.startswith("litert"):
                runners[name] = litert_runner(path, threads, key)
            else:
                runners[name] = onnx_runner(path, threads, key)
        except Exception as e:
            failures[name] = f"load: {type(e).__name__}: {e}"
            log(f"{name}: could not be loaded: {failures[name]}")

    images = {p: photo(p, size)[None] for p in PHOTOS}
    timing_image = images[PHOTOS[0]]
    floats = timing_image.astype(np.float32)
    pixel_values = torch.from_numpy(((floats - MEAN) / STD).transpose(0, 3, 1, 2).copy())
    x = tf.constant(floats)

    def forward(x):
        return model(x, training=False)

    graph = tf.function(forward)
    xla = tf.function(forward, jit_compile=True)

    def run_torch():
        with torch.no_grad():
            return reference(pixel_values=pixel_values)

    # Check each runtime once before timing it; one that fails is reported and left out.
    maps = {}
    for name, fn in list(runners.items()):
        try:
            found = {p: np.asarray(fn(im)) for p, im in images.items()}
            if name.endswith("logits"):
                continue
            maps[name] = found
            log(f"{name}: semantic_map {maps[name][PHOTOS[0]].shape} "
                f"{maps[name][PHOTOS[0]].dtype}")
        except Exception as e:
            failures[name] = f"run: {type(e).__name__}: {e}"
            log(f"{name}: failed to run: {failures[name]}")
            del runners[name]
    err = max_relative_difference(xla(x)["pred_masks"].numpy(),
                                  run_torch().masks_queries_logits.numpy())
    log(f"ours XLA against PyTorch, pred_masks max rel. diff {err:.1e}")

    from transformers import MaskFormerImageProcessor

    processor = MaskFormerImageProcessor()

    def run_torch_pipeline():  # forward and Hugging Face's semantic post-processing
        return processor.post_process_semantic_segmentation(run_torch(), target_sizes=[size])

    contenders = {"torch": run_torch, "torch pipeline": run_torch_pipeline,
                  "graph": lambda: graph(x)["pred_masks"].numpy(),
                  "xla": lambda: xla(x)["pred_masks"].numpy()}
    for name, fn in runners.items():
        contenders[name] = lambda fn=fn: fn(timing_image)
    log(f"timing {list(contenders)}, {args.runs} runs each, interleaved")
    medians = interleaved(contenders, args.runs)

    labels = {"torch": "HF PyTorch eager, forward only (no post-processing)",
              "torch pipeline": "HF PyTorch eager + post_process_semantic_segmentation",
              "saved_model logits": "SavedModel (XLA), forward only",
              "litert f32 logits": "LiteRT float32, forward only",
              "litert int8 logits": "LiteRT int8 (dynamic range), forward only",
              "onnx logits": "onnxruntime (CPU), forward only",
              "graph": "ours Keras, tf.function graph, forward only",
              "xla": "ours Keras, tf.function + XLA, forward only",
              "saved_model": "SavedModel serving_default (XLA), whole pipeline",
              "litert f32": "LiteRT float32, whole pipeline",
              "litert f16": "LiteRT float16, whole pipeline",
              "litert int8": "LiteRT int8 (dynamic range), whole pipeline",
              "onnx": "onnxruntime (CPU), whole pipeline"}
    print(f"\nlatency, batch 1, {args.size}, median of {args.runs} interleaved runs")
    print("| contender | median (ms) | / PyTorch | artifact (MiB) |")
    print("|---|---|---|---|")
    for name, seconds in medians.items():
        mib = f"{sizes[name] / 2**20:.1f}" if name in sizes else "-"
        label = labels[name] + (" (weights missing)" if name in failures else "")
        print(f"| {label} | {seconds * 1e3:.0f} | {seconds / medians['torch']:.2f} "
              f"| {mib} |")
    print("\nexport time (s): " + ", ".join(f"{n} {s:.0f}" for n, s in export_seconds.items()))

    # Agreement of the semantic maps, share of pixels.
    try:
        maps["hf post-processing"] = hf_semantic_maps(reference, images)
    except Exception as e:
        failures["hf post-processing"] = f"{type(e).__name__}: {e}"
    pairs = [("litert f16", "litert f32"), ("litert int8", "litert f32"),
             ("litert f32", "saved_model"), ("onnx", "saved_model"),
             ("hf post-processing", "saved_model")]
    print("\nsemantic_map agreement (share of pixels)")
    print("| maps | " + " | ".join(PHOTOS) + " |")
    print("|---|" + "---|" * len(PHOTOS))
    for a, b in pairs:
        if a in maps and b in maps:
            shares = [float(np.mean(maps[a][p] == maps[b][p])) for p in PHOTOS]
            print(f"| {a} vs {b} | " + " | ".join(f"{s:.4f}" for s in shares) + " |")
    if "saved_model" in maps:
        print("\nSavedModel maps: classes present, largest class's share of pixels")
        for p in PHOTOS:
            labels_, counts = np.unique(maps["saved_model"][p], return_counts=True)
            print(f"- {p}: {len(labels_)} classes, largest {counts.max() / counts.sum():.3f}")
    if failures:
        print("\nfailures:")
        for name, message in failures.items():
            print(f"- {name}: {message}")


def hf_semantic_maps(reference, images: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Hugging Face's forward pass and `post_process_semantic_segmentation` at the input's size:
    int [1, H, W] per photograph."""
    from transformers import MaskFormerImageProcessor

    processor = MaskFormerImageProcessor()
    maps = {}
    for name, image in images.items():
        floats = image.astype(np.float32)
        pixel_values = torch.from_numpy(((floats - MEAN) / STD).transpose(0, 3, 1, 2).copy())
        with torch.no_grad():
            outputs = reference(pixel_values=pixel_values)
        (seg,) = processor.post_process_semantic_segmentation(
            outputs, target_sizes=[image.shape[1:3]])
        maps[name] = seg.numpy()[None].astype(np.int32)
    return maps


if __name__ == "__main__":
    main()
