"""Inference on images, in one place: the experiment's test-time resize, padding, the forward
pass, post-processing, and the results cropped and resized back to each image's original size.

`predict`, `evaluate`, the periodic evaluation during training and export all go through
`Predictor`, so one image gets one prediction whichever way it comes in:

    image [H, W, 3] uint8
      -> `resize_for_inference`: the shortest-edge rule of `data.eval_short_edge` /
         `data.eval_max_size` (detectron2's ResizeShortestEdge), the evaluation pipeline's own
         resize (bilinear, antialiased when shrinking, rounded to integers)
      -> `pad_batch`: zero padding to `data.eval_output_size` if set, else to the batch's largest
         image rounded up to `data.size_divisibility` (what the evaluation pipeline pads to)
      -> the model (compiled: XLA on TensorFlow, jit on JAX)
      -> `PostProcessor` (semantic / panoptic / instance at the original size)
      -> per-image `ImagePrediction`s cropped to each original size.

The model pads to its own size divisibility inside; how far a batch is padded beyond an image
changes what the transformer attends to (the original does not mask padding), so a fixed
`data.eval_output_size` makes predictions independent of the batch's other images.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from maskformer.config import ExperimentConfig
from maskformer.errors import ConfigError, DataError
from maskformer.postprocess import build_postprocessor, crop_to_output, panoptic_segments_info


def read_categories(config: ExperimentConfig) -> list[dict[str, Any]]:
    """The categories of `data.dataset_info` (dataset.json), in contiguous-id order."""
    from maskformer.data.records import read_dataset_info

    info = read_dataset_info(config.data.dataset_info)
    categories = sorted(info["categories"], key=lambda c: c["id"])
    if len(categories) != config.model.num_classes:
        raise ConfigError(f"{config.data.dataset_info}: {len(categories)} categories, but "
                          f"model.num_classes is {config.model.num_classes}")
    return categories


# ---------------------------------------------------------------------------------------------
# Test-time resize and padding
# ---------------------------------------------------------------------------------------------


def resize_for_inference(image: np.ndarray, data_config) -> np.ndarray:
    """An RGB image [H, W, 3] (uint8 or float, 0..255) resized by the experiment's test-time rule.

    The same TensorFlow ops as the evaluation pipeline (`data.augment.shortest_edge_size` and
    `data.augment.resize`), so a file and its TFRecord give the same model input.

    Returns:
        float32 [h, w, 3], integers 0..255.
    """
    import tensorflow as tf

    from maskformer.data import augment

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise DataError(f"expected an RGB image [H, W, 3], got shape {image.shape}")
    new_h, new_w = augment.shortest_edge_size(image.shape[0], image.shape[1],
                                              data_config.eval_short_edge,
                                              data_config.eval_max_size)
    resized, _ = augment.resize(tf.convert_to_tensor(image), tf.zeros(image.shape[:2], tf.int32),
                                new_h, new_w)
    return resized.numpy()


def padded_shape(sizes: Sequence[Sequence[int]], data_config) -> tuple[int, int]:
    """The padded (H, W) of a batch of images of the given (h, w): `data.eval_output_size` if set,
    else the largest rounded up to `data.size_divisibility`."""
    sizes = np.asarray(sizes, np.int64).reshape(-1, 2)
    if data_config.eval_output_size:
        height, width = (int(v) for v in data_config.eval_output_size)
        if (sizes[:, 0] > height).any() or (sizes[:, 1] > width).any():
            raise DataError(f"an image resized to {sizes.max(0).tolist()} does not fit "
                            f"data.eval_output_size {[height, width]}; inference never cuts "
                            "images, enlarge it")
        return height, width
    d = max(int(data_config.size_divisibility), 1)
    return (int(-(-sizes[:, 0].max() // d) * d), int(-(-sizes[:, 1].max() // d) * d))


def pad_batch(images: Sequence[np.ndarray], data_config) -> tuple[np.ndarray, np.ndarray]:
    """Stacks resized images [h_i, w_i, 3] into a zero-padded batch.

    Returns:
        (images [B, H, W, 3] float32, image_sizes [B, 2] int32 (h_i, w_i)).
    """
    sizes = np.array([im.shape[:2] for im in images], np.int32)
    height, width = padded_shape(sizes, data_config)
    batch = np.zeros((len(images), height, width, 3), np.float32)
    for i, im in enumerate(images):
        batch[i, : im.shape[0], : im.shape[1]] = im
    return batch, sizes


# ---------------------------------------------------------------------------------------------
# The forward pass and post-processing
# ---------------------------------------------------------------------------------------------


INFERENCE_OUTPUTS = ("pred_logits", "pred_masks")


def _final(outputs: dict[str, Any]) -> dict[str, Any]:
    # Only the last decoder layer's outputs leave the compiled function, so the compiler drops
    # the earlier layers' heads (deep supervision's aux_outputs), which inference never reads.
    return {k: outputs[k] for k in INFERENCE_OUTPUTS}


def make_predict_fn(model: keras.Model):
    """The model's forward pass for inference, compiled (tf.function with XLA on TensorFlow,
    jit on JAX): {"pred_logits", "pred_masks"} of the last decoder layer.

    On TensorFlow the function is traced once, for images [B, H, W, 3] of any size, as an
    exported SavedModel runs it (`maskformer.export`): XLA compiles that one graph for each
    size it meets, so `predict` and the SavedModel run the same program. (A graph traced for
    a known size lets XLA fold more into constants and rounds some values differently: mask
    logits about 1e-5 apart.)
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(lambda x: _final(model(x, training=False)), jit_compile=True,
                           input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    if keras.backend.backend() == "jax":
        import jax

        forward = jax.jit(lambda t, f, x: _final(
            model.stateless_call(t, f, x, training=False)[0]))
        # The variables' values are read at each call: the function follows training.
        return lambda x: forward([v.value for v in model.trainable_variables],
                                 [v.value for v in model.non_trainable_variables], x)
    return lambda x: _final(model(x, training=False))


@dataclass
class ImagePrediction:
    """One image's results at its original size (those the experiment's `eval` enables).

    Attributes:
        panoptic_map: [H, W] int32 segment ids, 0 where no segment.
        segments: `segments_info` of the panoptic map (id, category_id, isthing, score, area).
        semantic_map: [H, W] int32 contiguous class per pixel (argmax of the class scores).
        instances: {"masks" [N, H, W] bool, "scores" [N], "labels" [N]} of the kept instances.
    """

    original_size: tuple[int, int]
    panoptic_map: np.ndarray | None = None
    segments: list[dict[str, Any]] = field(default_factory=list)
    semantic_map: np.ndarray | None = None
    instances: dict[str, np.ndarray] | None = None


class Predictor:
    """A model with its experiment's test-time pipeline.

    Args:
        model: a MaskFormer (its variables are read at each call, so a predictor made once
            follows the weights of a network that is training).
        config: the experiment; `data` gives the resize and padding rule, `eval` the
            post-processing.
        categories: the dataset's categories in contiguous order (default: `read_categories`).
    """

    def __init__(self, model: keras.Model, config: ExperimentConfig,
                 categories: list[dict[str, Any]] | None = None):
        self.model = model
        self.config = config
        self.categories = categories if categories is not None else read_categories(config)
        self.isthing = [bool(c["isthing"]) for c in self.categories]
        self.postprocess = build_postprocessor(config.eval, self.isthing,
                                               panoptic_rule=config.model.architecture)
        self.forward = make_predict_fn(model)

    def run(self, images: np.ndarray, image_sizes, original_sizes) -> list[ImagePrediction]:
        """Forward pass and post-processing of a padded batch.

        Args:
            images: [B, H, W, 3] float32, resized and padded (`resize_for_inference`,
                `pad_batch`, or the evaluation pipeline, which applies the same rule).
            image_sizes: [B, 2] int (h, w) of each resized image inside the padding.
            original_sizes: [B, 2] int (height, width) to give the results at.
        """
        images = np.asarray(images, np.float32)
        image_sizes = np.asarray(image_sizes, np.int32)
        original_sizes = np.asarray(original_sizes, np.int32)
        outputs = self.forward(images)
        # float32 also for a network trained in mixed precision
        outputs = {k: keras.ops.cast(outputs[k], "float32") for k in INFERENCE_OUTPUTS}
        # The semantic map is the argmax of the K score maps; the maps themselves (K x H x W
        # per image) are never kept.
        results = self.postprocess(outputs, images.shape[1:3], image_sizes, original_sizes,
                                   semantic_scores=False)
        predictions = [ImagePrediction(tuple(int(v) for v in size)) for size in original_sizes]
        if "panoptic" in results:
            maps = crop_to_output(results["panoptic"]["panoptic_seg"], original_sizes)
            for b, p in enumerate(predictions):
                p.panoptic_map = maps[b].astype(np.int32)
                p.segments = panoptic_segments_info(results["panoptic"], b)
        if "sem_seg_labels" in results:
            labels = crop_to_output(results["sem_seg_labels"], original_sizes)
            for b, p in enumerate(predictions):
                p.semantic_map = labels[b].astype(np.int32)
        if "instance" in results:
            found = {k: np.asarray(keras.ops.convert_to_numpy(v))
                     for k, v in results["instance"].items()}
            masks = crop_to_output(found["masks"], original_sizes)
            for b, p in enumerate(predictions):
                keep = found["valid"][b].astype(bool)
                p.instances = {"masks": masks[b][keep].astype(bool),
                               "scores": found["scores"][b][keep],
                               "labels": found["labels"][b][keep]}
        return predictions

    def predict_images(self, images: Sequence[np.ndarray]) -> list[ImagePrediction]:
        """Segments RGB images [H_i, W_i, 3] (0..255) given at their original size."""
        resized = [resize_for_inference(im, self.config.data) for im in images]
        batch, sizes = pad_batch(resized, self.config.data)
        return self.run(batch, sizes, [im.shape[:2] for im in images])


# ---------------------------------------------------------------------------------------------
# Inference over a dataset, evaluated
# ---------------------------------------------------------------------------------------------


def predict_dataset(predictor: Predictor, dataset: Iterable, max_batches: int | None = None,
                    progress: bool = True):
    """Runs `predictor` over the evaluation pipeline's batches.

    Yields:
        (images [B, H, W, 3] numpy, targets dict of numpy, list of `ImagePrediction`).
    """
    from tqdm import tqdm

    for i, (images, targets) in enumerate(tqdm(dataset, desc="evaluate", unit="batch",
                                               disable=not progress)):
        if max_batches is not None and i >= max_batches:
            break
        images = np.asarray(images)
        targets = {k: np.asarray(v) for k, v in targets.items()}
        yield images, targets, predictor.run(images, targets["image_size"],
                                             targets["original_size"])


def evaluate(model: keras.Model, config: ExperimentConfig, files: str | None = None,
             max_batches: int | None = None, progress: bool = True, on_batch=None,
             predictor: Predictor | None = None) -> dict[str, Any]:
    """Evaluates `model` on `files` (default `data.val_files`): PQ, mIoU and, with
    `eval.instance`, mask AP, accumulated over the whole dataset.

    Args:
        on_batch: optional callback(images, targets, predictions) per batch (visualisation).
        predictor: a `Predictor` of `model` to reuse across evaluations (its forward pass is
            compiled once); default: made here.

    Returns:
        `Evaluator.result()` with each printable table ("panoptic_table", ...).
    """
    from maskformer.data.pipeline import build_dataset
    from maskformer.evaluation.evaluator import Evaluator

    config.check_input_pipeline()
    predictor = predictor or Predictor(model, config)
    evaluator = Evaluator(predictor.categories, panoptic=config.eval.panoptic,
                          semantic=config.eval.semantic, instance=config.eval.instance,
                          instance_things_only=config.eval.instance_things_only,
                          ignore_label=config.eval.ignore_label)
    dataset = build_dataset(config.data, files or config.data.val_files, training=False,
                            batch_size=config.eval.batch_size)
    for images, targets, predictions in predict_dataset(predictor, dataset, max_batches,
                                                        progress):
        evaluator.update(targets, predictions)
        if on_batch is not None:
            on_batch(images, targets, predictions)
    return evaluator.result(tables=True)
