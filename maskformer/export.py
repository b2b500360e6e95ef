"""A model out of Python: SavedModel, LiteRT (`.tflite`) and ONNX, with the experiment's test-time
resize and padding, the forward pass and post-processing in one TensorFlow graph.

An exported model computes what `maskformer predict` computes (`inference.Predictor`): the same
shortest-edge resize (`data.augment`), the same zero padding, the network, and
`postprocess.PostProcessor` for one task, with the results at the input's size:

    task       outputs (B images, canvas Ho x Wo = the input's size)
    panoptic   panoptic_map int32 [B, Ho, Wo] (segment ids, 0 = no segment), num_segments int32
               [B], segment_category int32 [B, S], segment_isthing bool [B, S], segment_score
               float32 [B, S] (S = queries; slot s holds segment id s + 1 while s < num_segments)
    semantic   semantic_map int32 [B, Ho, Wo]: the class index per pixel (what predict writes in
               NAME_semantic.png)
    instance   instance_masks bool [B, k, Ho, Wo], instance_scores float32 [B, k],
               instance_classes int32 [B, k], instance_valid bool [B, k] (k = eval.instance_top_k)
    logits     pred_logits float32 [B, Q, K+1], pred_masks float32 [B, Q, h, w]: the network's
               outputs on the resized, padded input, without post-processing
    all        image_size int32 [B, 2]: each image's (height, width) inside the canvas

Class indices are the model's contiguous ones; the category list (names, dataset ids, thing
flags, colours) travels inside every artifact: as `assets/categories.json` and a `categories`
signature in the SavedModel, as the metadata entry "categories" of a `.tflite` (also written
beside it as `NAME.categories.json`; `litert_metadata` reads it), and as the metadata property
"categories" of an `.onnx` file.

- SavedModel: `serving_default` takes `images` uint8 [B, H, W, 3] of any size (one size per
  batch); `serving_bytes` takes `image_bytes` string [B] (JPEG, PNG, BMP or GIF files, each its
  own size; the canvas is the batch's largest and `image_size` says where each image is). The
  forward pass is XLA-compiled, as `predict`'s, unless `xla=False`.
- LiteRT and ONNX: a fixed input size and batch size (static shapes), uint8 `images` input.

Everything is TensorFlow: export runs on the TensorFlow backend.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from maskformer.errors import ConfigError

FORMATS = ("saved_model", "litert", "onnx")
# "logits": the network's outputs only, for callers with their own post-processing
TASKS = ("panoptic", "semantic", "instance", "logits")
QUANTIZATIONS = ("none", "float16", "int8")
ONNX_OPSET = 17
CATEGORIES_ASSET = "categories.json"


@dataclass
class ExportResult:
    """What `export_model` wrote.

    Attributes:
        path: the SavedModel folder, `.tflite` or `.onnx` file.
        format, task: as asked.
        size_bytes: the artifact's size on disk.
        input_shape: [B, H, W, 3] with None where any size is taken.
        outputs: output name -> shape (None where it follows the input).
        flex_ops: TensorFlow ops a `.tflite` needs from the Flex delegate (empty: none).
        opset: the ONNX opset.
    """

    path: Path
    format: str
    task: str
    size_bytes: int
    input_shape: list[int | None]
    outputs: dict[str, list[int | None]] = field(default_factory=dict)
    flex_ops: list[str] = field(default_factory=list)
    opset: int | None = None


def default_task(config) -> str:
    """The task an export gives when none is asked for: panoptic for a panoptic model, else
    semantic."""
    return "panoptic" if config.eval.panoptic else "semantic"


def _check_choice(value: str, choices: Sequence[str], what: str) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {what} {value!r}; one of: {', '.join(choices)}")


# ---------------------------------------------------------------------------------------------
# The graph
# ---------------------------------------------------------------------------------------------


class SegmentationGraph:
    """The test-time pipeline of a model for one task, as TensorFlow functions.

    Args:
        model: a MaskFormer (Keras, TensorFlow backend).
        config: its experiment (`data` for resize and padding, `eval` for post-processing).
        categories: the categories in contiguous order (`model_dir.model_categories`).
        task: "panoptic", "semantic" or "instance".
        xla: compile the forward pass with XLA (as `predict` does).
        portable: at a fixed input size, resize images with two matrix products holding
            TensorFlow's resize weights: LiteRT and ONNX lack the antialiased kernel, and
            ONNX's bilinear Resize computes its weights differently (up to 0.009 apart at
            640 -> 800, which moves 0.4% of the rounded pixel values by one). The sums' order
            still differs, so a value within 1e-5 of x.5 may round the other way.
        include_logits: also output the network's "pred_logits" [B, Q, K+1] and "pred_masks"
            [B, Q, h, w] (to check a runtime's arithmetic against the Keras model's).
        include_semantic: with the panoptic or instance task, also output "semantic_map" (as
            `predict` writes both for a panoptic model).
        sigmoid_by_exp: the post-processing's sigmoid as 1 / (1 + exp(-x)) (ONNX: see
            `PostProcessor`).
    """

    def __init__(self, model, config, categories: list[dict[str, Any]], task: str,
                 xla: bool = True, portable: bool = False, include_logits: bool = False,
                 include_semantic: bool = False, sigmoid_by_exp: bool = False):
        import keras
        import tensorflow as tf

        from maskformer.inference import make_predict_fn
        from maskformer.postprocess import PostProcessor

        if keras.backend.backend() != "tensorflow":
            raise ConfigError("export needs the TensorFlow backend (KERAS_BACKEND=tensorflow)")
        _check_choice(task, TASKS, "task")
        isthing = [bool(c.get("isthing", 0)) for c in categories]
        if task == "instance" and config.eval.instance_things_only and not any(isthing):
            raise ConfigError("task 'instance' needs thing classes; this model's categories "
                              "are all stuff (set eval.instance_things_only=false to keep them)")
        self.model, self.config, self.categories, self.task = model, config, categories, task
        self.portable = portable
        self.include_logits = include_logits
        ev = config.eval
        self.postprocess = PostProcessor(
            isthing, object_mask_threshold=ev.object_mask_threshold,
            overlap_threshold=ev.overlap_threshold,
            semantic=task == "semantic" or include_semantic,
            panoptic=task == "panoptic", instance=task == "instance",
            instance_top_k=ev.instance_top_k,
            # predict's semantic map of a panoptic model combines the resized masks
            semantic_before_inference=ev.sem_seg_postprocess_before_inference or ev.panoptic,
            instance_things_only=ev.instance_things_only,
            sigmoid_by_exp=sigmoid_by_exp, panoptic_rule=config.model.architecture)

        def forward(images):
            out = model(images, training=False)
            return {k: tf.cast(out[k], tf.float32) for k in ("pred_logits", "pred_masks")}

        # With XLA, predict's own compiled function (traced for any size): the same program.
        self.forward = _cast_outputs(make_predict_fn(model)) if xla else forward

    # -- resize and padding -------------------------------------------------------------------

    def _new_size(self, height, width):
        from maskformer.data import augment

        data = self.config.data
        return augment.shortest_edge_size(height, width, data.eval_short_edge,
                                          data.eval_max_size)

    def _padded(self, heights, widths):
        """The padded (H, W) of resized sizes (the largest, or `data.eval_output_size`)."""
        import tensorflow as tf

        data = self.config.data
        if data.eval_output_size:
            height, width = (int(v) for v in data.eval_output_size)
            check = tf.debugging.assert_less_equal(
                tf.stack([tf.reduce_max(heights), tf.reduce_max(widths)]),
                tf.constant([height, width], tf.int32),
                message=f"an image resized for the model exceeds data.eval_output_size "
                        f"{[height, width]}")
            with tf.control_dependencies([check]):
                return tf.identity(height), tf.identity(width)
        d = max(int(data.size_divisibility), 1)
        return ((tf.reduce_max(heights) + d - 1) // d * d,
                (tf.reduce_max(widths) + d - 1) // d * d)

    # -- the pipeline -------------------------------------------------------------------------

    def run(self, images, valid_sizes, original_sizes, canvas):
        """Forward pass and post-processing of a resized, padded batch.

        Args:
            images: float32 [B, H, W, 3].
            valid_sizes, original_sizes: int32 [B, 2].
            canvas: (Ho, Wo), ints or scalar tensors.
        """
        import tensorflow as tf

        outputs = self.forward(images)
        padded = tuple(images.shape[1:3]) if None not in images.shape[1:3] else (
            tf.shape(images)[1], tf.shape(images)[2])
        out = {"image_size": tf.cast(original_sizes, tf.int32)}
        if self.include_logits or self.task == "logits":
            out.update(outputs)
        if self.task == "logits":
            return out
        results = self.postprocess(outputs, padded, valid_sizes, original_sizes,
                                   output_shape=canvas, semantic_scores=False)
        if "sem_seg_labels" in results:
            out["semantic_map"] = tf.cast(results["sem_seg_labels"], tf.int32)
        if self.task == "panoptic":
            pan = results["panoptic"]
            out["panoptic_map"] = tf.cast(pan["panoptic_seg"], tf.int32)
            out["num_segments"] = tf.cast(pan["num_segments"], tf.int32)
            out["segment_category"] = tf.cast(pan["segment_category"], tf.int32)
            out["segment_isthing"] = tf.logical_and(pan["segment_isthing"], pan["segment_valid"])
            out["segment_score"] = _segment_scores(outputs["pred_logits"], pan)
        elif self.task == "instance":
            inst = results["instance"]
            out["instance_masks"] = inst["masks"]
            out["instance_scores"] = inst["scores"]
            out["instance_classes"] = tf.cast(inst["labels"], tf.int32)
            out["instance_valid"] = inst["valid"]
        return out

    def segment_images(self, images):
        """uint8 [B, H, W, 3] (one size, known or not) -> the task's outputs at H x W."""
        import tensorflow as tf

        from maskformer.data import augment
        from maskformer.inference import padded_shape

        static = None not in images.shape[1:3]
        shape = tf.shape(images)
        batch = images.shape[0] if images.shape[0] is not None else shape[0]
        height, width = (images.shape[1], images.shape[2]) if static else (shape[1], shape[2])
        if static:  # fixed size: the resize decided now, no conditional in the graph
            with tf.init_scope():  # eagerly, outside the graph being traced
                new_h, new_w = (int(v) for v in self._new_size(height, width))
            pad_h, pad_w = padded_shape([[new_h, new_w]], self.config.data)
            if (new_h, new_w) == (height, width):
                resized = tf.cast(images, tf.float32)
            elif self.portable:
                resized = _resize_by_matrices(images, (height, width), (new_h, new_w))
            else:
                shrinks = new_h < height or new_w < width
                resized = tf.clip_by_value(tf.round(tf.image.resize(
                    tf.cast(images, tf.float32), (new_h, new_w), method="bilinear",
                    antialias=shrinks)), 0.0, 255.0)
            padded = tf.pad(resized, [[0, 0], [0, pad_h - new_h], [0, pad_w - new_w], [0, 0]])
            # `batch` is an int or a tensor: tf.tile takes either.
            sizes = tf.tile(tf.constant([[new_h, new_w]], tf.int32), [batch, 1])
            originals = tf.tile(tf.constant([[height, width]], tf.int32), [batch, 1])
            return self.run(padded, sizes, originals, (height, width))
        new_h, new_w = self._new_size(height, width)
        resized = augment.resize_image(images, new_h, new_w)
        pad_h, pad_w = self._padded(new_h[None], new_w[None])
        padded = tf.pad(resized, [[0, 0], [0, pad_h - new_h], [0, pad_w - new_w], [0, 0]])
        padded = tf.ensure_shape(padded, [None, None, None, 3])
        sizes = tf.tile(tf.stack([new_h, new_w])[None], [batch, 1])
        originals = tf.tile(tf.stack([height, width])[None], [batch, 1])
        return self.run(padded, sizes, originals, (height, width))

    def segment_bytes(self, image_bytes):
        """string [B] (encoded images, each its own size) -> the task's outputs on a canvas of
        the batch's largest image; `image_size` gives each image's size."""
        import tensorflow as tf

        from maskformer.data import augment

        count = tf.shape(image_bytes)[0]
        resized = tf.TensorArray(tf.float32, size=count, infer_shape=False,
                                 element_shape=tf.TensorShape([None, None, 3]))
        valid = tf.TensorArray(tf.int32, size=count)
        original = tf.TensorArray(tf.int32, size=count)
        for i in tf.range(count):
            image = tf.io.decode_image(image_bytes[i], channels=3, dtype=tf.uint8,
                                       expand_animations=False)
            height, width = tf.shape(image)[0], tf.shape(image)[1]
            new_h, new_w = self._new_size(height, width)
            resized = resized.write(i, augment.resize_image(image, new_h, new_w))
            valid = valid.write(i, tf.stack([new_h, new_w]))
            original = original.write(i, tf.stack([height, width]))
        valid, original = valid.stack(), original.stack()
        valid = tf.reshape(valid, [-1, 2])
        original = tf.reshape(original, [-1, 2])
        pad_h, pad_w = self._padded(valid[:, 0], valid[:, 1])
        batch = tf.TensorArray(tf.float32, size=count,
                               element_shape=tf.TensorShape([None, None, 3]))
        for i in tf.range(count):
            image = resized.read(i)
            batch = batch.write(i, tf.pad(image, [[0, pad_h - tf.shape(image)[0]],
                                                  [0, pad_w - tf.shape(image)[1]], [0, 0]]))
        images = tf.ensure_shape(batch.stack(), [None, None, None, 3])
        canvas = (tf.reduce_max(original[:, 0]), tf.reduce_max(original[:, 1]))
        return self.run(images, valid, original, canvas)


def _cast_outputs(fn):
    import tensorflow as tf

    return lambda images: {k: tf.cast(v, tf.float32) for k, v in fn(images).items()}


def _resize_matrix(size: int, new_size: int, antialias: bool) -> np.ndarray:
    """[new_size, size] float32: the weights of TensorFlow's bilinear resize along one axis,
    read off by resizing the identity (each channel one source sample)."""
    import tensorflow as tf

    with tf.init_scope():  # eagerly, also while a graph is traced
        identity = tf.eye(size)[:, None, :]  # [size, 1, size]: sample h in channel h
        out = tf.image.resize(identity, (new_size, 1), method="bilinear", antialias=antialias)
        return out[:, 0, :].numpy()


def _resize_by_matrices(images, size, new_size):
    """`augment.resize_image` of a fixed-size batch [B, H, W, 3] as two matrix products."""
    import tensorflow as tf

    antialias = new_size[0] < size[0] or new_size[1] < size[1]  # as resize_image decides
    rows = tf.constant(_resize_matrix(size[0], new_size[0], antialias))  # [h, H]
    cols = tf.constant(_resize_matrix(size[1], new_size[1], antialias))  # [w, W]
    x = tf.cast(images, tf.float32)
    x = tf.einsum("ik,bkwc->biwc", rows, x)  # (ONNX Runtime's einsum ignores letter case)
    x = tf.einsum("jl,bilc->bijc", cols, x)
    return tf.clip_by_value(tf.round(x), 0.0, 255.0)


def _segment_scores(pred_logits, panoptic):
    """[B, S] float32: the score (top class probability) of the query that opened each segment
    slot; 0 for empty slots."""
    import tensorflow as tf

    probs = tf.nn.softmax(tf.cast(pred_logits, tf.float32), axis=-1)
    scores = tf.reduce_max(probs, axis=-1)  # [B, Q]
    query_ids = panoptic["query_segment_id"]  # [B, Q]
    slots = tf.range(1, tf.shape(query_ids)[1] + 1, dtype=tf.int32)
    match = tf.equal(query_ids[:, None, :], slots[None, :, None])  # [B, S, Q]
    first = tf.argmax(tf.cast(match, tf.int32), axis=-1, output_type=tf.int32)  # first query
    score = tf.gather(scores, first, batch_dims=1)
    return tf.where(panoptic["segment_valid"], score, 0.0)


def categories_json(categories: list[dict[str, Any]]) -> str:
    """The category list an artifact carries: contiguous index, dataset id, name, isthing,
    colour."""
    return json.dumps([{"index": i, "id": c.get("id", i), "name": c.get("name", str(i)),
                        "isthing": int(c.get("isthing", 0)), "color": c.get("color")}
                       for i, c in enumerate(categories)], indent=1)


# ---------------------------------------------------------------------------------------------
# The formats
# ---------------------------------------------------------------------------------------------


def _spec(batch_size, image_size):
    import tensorflow as tf

    height, width = image_size if image_size else (None, None)
    return tf.TensorSpec([batch_size, height, width, 3], tf.uint8, name="images")


def _output_shapes(fn) -> dict[str, list[int | None]]:
    return {k: v.shape.as_list() for k, v in fn.structured_outputs.items()}


def _save_saved_model(graph: SegmentationGraph, out: Path, batch_size, image_size,
                      log) -> ExportResult:
    import tensorflow as tf

    module = tf.Module()
    module.model = graph.model  # its variables, tracked
    asset_file = Path(tempfile.mkdtemp()) / CATEGORIES_ASSET
    asset_file.write_text(categories_json(graph.categories))
    module.categories_file = tf.saved_model.Asset(str(asset_file))
    names = [c.get("name", str(i)) for i, c in enumerate(graph.categories)]
    ids = [int(c.get("id", i)) for i, c in enumerate(graph.categories)]
    isthing = [bool(c.get("isthing", 0)) for c in graph.categories]

    # segment_images has no loop of its own: without AutoGraph, its Python ints stay ints.
    module.serve = tf.function(graph.segment_images, autograph=False,
                               input_signature=[_spec(batch_size, image_size)])
    module.serve_bytes = tf.function(
        graph.segment_bytes,
        input_signature=[tf.TensorSpec([batch_size], tf.string, name="image_bytes")])
    module.categories = tf.function(
        lambda: {"names": tf.constant(names), "ids": tf.constant(ids, tf.int32),
                 "isthing": tf.constant(isthing)}, input_signature=[])
    log("tracing the serving functions")
    serve = module.serve.get_concrete_function()
    signatures = {"serving_default": serve,
                  "serving_bytes": module.serve_bytes.get_concrete_function(),
                  "categories": module.categories.get_concrete_function()}
    log(f"writing {out}")
    partial = out.with_name(out.name + ".partial")  # complete or absent, never half-written
    shutil.rmtree(partial, ignore_errors=True)
    try:
        tf.saved_model.save(module, str(partial), signatures=signatures)
    finally:
        shutil.rmtree(asset_file.parent, ignore_errors=True)  # copied into assets/
    if out.exists():
        shutil.rmtree(out)
    os.replace(partial, out)
    return ExportResult(out, "saved_model", graph.task, _size(out),
                        _spec(batch_size, image_size).shape.as_list(), _output_shapes(serve))


def fixed_size_function(graph: SegmentationGraph, batch_size, image_size):
    """`graph.segment_images` traced for uint8 [batch_size (default 1), H, W, 3]: the concrete
    function the LiteRT and ONNX exports convert (and TensorFlow's answer to compare them
    with)."""
    import tensorflow as tf

    if not image_size:
        raise ConfigError("this format needs a fixed input size: give --image-size H W")
    return tf.function(graph.segment_images, autograph=False,
                       input_signature=[_spec(batch_size or 1, image_size)]
                       ).get_concrete_function()


def _flex_ops(tflite_bytes: bytes) -> list[str]:
    """The Flex (TensorFlow) ops a `.tflite` model calls."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(tflite_bytes, 0))
    names = set()
    for code in model.operatorCodes:
        custom = code.customCode.decode() if code.customCode else ""
        if custom.startswith("Flex"):
            names.add(custom[len("Flex"):])
    return sorted(names)


def _with_metadata(tflite_bytes: bytes, name: str, value: bytes) -> bytes:
    """The `.tflite` with a metadata entry (the schema's Model.metadata: a name and a buffer)."""
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(tflite_bytes, 0))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(value, np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = name, len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    builder = flatbuffers.Builder(len(tflite_bytes) + len(value) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def litert_metadata(path: str | Path, name: str = "categories") -> bytes | None:
    """A metadata entry of a `.tflite` file (the category list: "categories", JSON)."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(Path(path).read_bytes(), 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name().decode() == name:
            return model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
    return None


def _save_litert(graph: SegmentationGraph, out: Path, batch_size, image_size, quantize,
                 log) -> ExportResult:
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    fn = fixed_size_function(graph, batch_size, image_size)
    # The weights as constants: the converter would otherwise keep Keras 3's variables as
    # LiteRT resource variables, which nothing initialises.
    frozen = convert_variables_to_constants_v2(fn)
    module = tf.Module()  # for the named signature ("serving_default": images -> outputs)
    module.serve = tf.function(
        lambda images: tf.nest.pack_sequence_as(fn.structured_outputs,
                                                tf.nest.flatten(frozen(images))),
        input_signature=fn.structured_input_signature[0])
    log("converting to LiteRT" + (f" ({quantize})" if quantize != "none" else ""))
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.serve.get_concrete_function()], module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS,
                                           tf.lite.OpsSet.SELECT_TF_OPS]
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":  # dynamic range: int8 weights, float activations
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    tflite_bytes = _with_metadata(converter.convert(), "categories",
                                  categories_json(graph.categories).encode())
    flex = _flex_ops(tflite_bytes)
    if flex:
        log(f"needs the Flex delegate for: {', '.join(flex)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(out, tflite_bytes)
    _write_atomic(out.with_suffix(".categories.json"), categories_json(graph.categories).encode())
    return ExportResult(out, "litert", graph.task, out.stat().st_size,
                        list(fn.structured_input_signature[0][0].shape),
                        _output_shapes(fn), flex_ops=flex)


def _save_onnx(graph: SegmentationGraph, out: Path, batch_size, image_size, log
               ) -> ExportResult:
    import tensorflow as tf

    try:
        import tf2onnx
    except ImportError:
        raise ConfigError("ONNX export needs tf2onnx: pip install 'maskformer-tf[export]'"
                          ) from None
    fn = fixed_size_function(graph, batch_size, image_size)
    log(f"converting to ONNX (opset {ONNX_OPSET})")
    spec = fn.structured_input_signature[0][0]
    # tf2onnx traces the Python function itself; `fn` is the same trace, kept for its outputs.
    proto, _ = tf2onnx.convert.from_function(
        tf.function(graph.segment_images, autograph=False), input_signature=[spec], opset=ONNX_OPSET,
        output_path=None)
    entry = proto.metadata_props.add()
    entry.key, entry.value = "categories", categories_json(graph.categories)
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(out, proto.SerializeToString())
    return ExportResult(out, "onnx", graph.task, out.stat().st_size, spec.shape.as_list(),
                        _output_shapes(fn), opset=ONNX_OPSET)


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def export_model(model, config, categories: list[dict[str, Any]], out: str | Path,
                 format: str = "saved_model", task: str | None = None,
                 image_size: Sequence[int] | None = None, batch_size: int | None = None,
                 quantize: str = "none", xla: bool = True, include_logits: bool = False,
                 include_semantic: bool = False,
                 log: Callable[[str], None] = print) -> ExportResult:
    """Exports `model` with its test-time pipeline for `task`.

    Args:
        out: the SavedModel folder, or the `.tflite` / `.onnx` file (replaced if present).
        format: "saved_model", "litert" or "onnx".
        task: "panoptic", "semantic" or "instance" (default: `default_task`).
        image_size: (H, W) of the input. Required for LiteRT and ONNX; for a SavedModel it fixes
            the signature's size (default: any size).
        batch_size: images per call (default: any for a SavedModel, 1 otherwise).
        quantize: LiteRT only: "none", "float16" or "int8" (dynamic range).
        xla: SavedModel only: compile the forward pass with XLA.
        include_logits: also output the network's raw "pred_logits" and "pred_masks".
        include_semantic: also output "semantic_map" with the panoptic or instance task.
        log: called with one line per stage.
    """
    _check_choice(format, FORMATS, "format")
    _check_choice(quantize, QUANTIZATIONS, "quantisation")
    task = task or default_task(config)
    if quantize != "none" and format != "litert":
        raise ConfigError(f"quantisation is for LiteRT; {format} exports float32")
    if image_size is not None:
        image_size = [int(v) for v in image_size]
        check_image_size(image_size)
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    out = Path(out)
    start = time.perf_counter()
    graph = SegmentationGraph(model, config, categories, task,
                              xla=xla and format == "saved_model",
                              portable=format != "saved_model", include_logits=include_logits,
                              include_semantic=include_semantic,
                              sigmoid_by_exp=format == "onnx")
    if format == "saved_model":
        result = _save_saved_model(graph, out, batch_size, image_size, log)
    elif format == "litert":
        result = _save_litert(graph, out, batch_size, image_size, quantize, log)
    else:
        result = _save_onnx(graph, out, batch_size, image_size, log)
    log(f"exported {task} {format} to {out} ({result.size_bytes / 2**20:.1f} MiB) in "
        f"{time.perf_counter() - start:.0f} s")
    return result


def export(model_dir: str | Path, out: str | Path, **kwargs) -> ExportResult:
    """`export_model` for a model directory (its config, weights and categories)."""
    from maskformer.model_dir import load_config, load_model, model_categories

    config = load_config(model_dir)
    categories = model_categories(model_dir, config)
    model = load_model(model_dir, config)
    return export_model(model, config, categories, out, **kwargs)


def check_image_size(values: Sequence[int] | None) -> None:
    """A fixed input size, when given, is two positive integers (H W)."""
    if values is not None and (len(values) != 2 or min(values) < 1):
        raise ConfigError(f"--image-size takes two positive integers H W, got {list(values)}")
