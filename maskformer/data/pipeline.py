"""The tf.data input pipeline: records -> decoded, augmented, padded images and set targets.

Element format (batched), the contract with the training and evaluation code:

``(images, targets)``; images float32 [B, H, W, 3], RGB 0..255, padding 0. targets:

==================  ===================  ======================================================
key                 shape, dtype         meaning
==================  ===================  ======================================================
masks               [B, N, H, W] uint8   one binary mask per target segment (N = max_instances),
                    (or float32)         zero for padding entries
labels              [B, N] int32         contiguous category of each target (0 where not valid)
valid               [B, N] bool          which of the N entries are real targets
pixel_valid         [B, H, W] bool       pixels that are image, not padding
image_id            [B] int64            image id of the record
original_size       [B, 2] int32         (height, width) before resizing
image_size          [B, 2] int32         (height, width) of the valid region after resizing
num_segments        [B] int32            target segments before truncation to N
num_truncated       [B] int32            target segments dropped because N was too small
segment_map         [B, Hm, Wm] int32    per-pixel segment index (0 void), see below
semantic_map        [B, Hm, Wm] int32    per-pixel contiguous category, 255 for void/padding
crowd_map           [B, Hm, Wm] bool     pixels of crowd segments
==================  ===================  ======================================================

Targets are the non-crowd segments in record order (for ADE20K: the classes present after
augmentation, in class order, as the original's semantic mapper builds them). In training the
maps (Hm, Wm) are at the resized, padded size (H, W). In evaluation they are at the original
resolution, where predictions are compared: padded to `DataConfig.eval_map_size` if it is set
(static shapes), else to the largest original image of the batch. With a fixed `output_size` every shape is static in training (batches are
complete); evaluation keeps its last, smaller batch.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import tensorflow as tf

from maskformer.config import (
    AUGMENTATIONS,
    DATASETS,
    IGNORE_LABEL,
    SEMANTIC_DATASETS,
    DataConfig,
)
from maskformer.data import augment as aug
from maskformer.data import model_garden, records
from maskformer.data.records import DataError

AUTOTUNE = tf.data.AUTOTUNE


def resolve_files(files: str | Sequence[str]) -> list[str]:
    """Expands comma-separated glob patterns (or a list of them) into a sorted file list."""
    patterns = [p for p in files.split(",")] if isinstance(files, str) else list(files)
    patterns = [p.strip() for p in patterns if p.strip()]
    if not patterns:
        raise DataError("no input files given (data.train_files / data.val_files is empty)")
    out: list[str] = []
    for pattern in patterns:
        matched = sorted(tf.io.gfile.glob(pattern))
        if not matched:
            raise DataError(f"{pattern}: no files match")
        out.extend(matched)
    return out


def make_parser(config: DataConfig):
    """The record parser selected by `config.record_format` (serialized -> example dict)."""
    if config.record_format == "maskformer":
        return records.parse_record
    if config.record_format == "model_garden":
        if not config.dataset_info:
            raise DataError("data.record_format=model_garden needs data.dataset_info (a "
                            "dataset.json or COCO panoptic annotation file with the categories)")
        lookup = model_garden.category_lookup(config.dataset_info)
        return lambda serialized: model_garden.parse_record(serialized, lookup)
    raise DataError(f"data.record_format: {config.record_format!r} is not 'maskformer' or "
                    "'model_garden'")


def pad_or_cut(image, segment_map, height: int, width: int, pad_value: float = 0.0):
    """Cuts to at most [height, width] (bottom/right) and pads to exactly that size.

    Returns:
      image [height, width, 3], segment_map [height, width] (padding 0 = void),
      pixel_valid bool [height, width].
    """
    image = image[:height, :width]
    segment_map = segment_map[:height, :width]
    h, w = tf.shape(segment_map)[0], tf.shape(segment_map)[1]
    paddings = [[0, height - h], [0, width - w]]
    image = tf.pad(image, paddings + [[0, 0]], constant_values=pad_value)
    segment_map = tf.pad(segment_map, paddings)
    pixel_valid = tf.pad(tf.ones([h, w], tf.bool), paddings)
    if not (isinstance(height, int) and isinstance(width, int)):
        return image, segment_map, pixel_valid  # a size computed in the graph (dynamic padding)
    image = tf.ensure_shape(image, [height, width, 3])
    return image, tf.ensure_shape(segment_map, [height, width]), tf.ensure_shape(
        pixel_valid, [height, width])


def build_targets(segment_map, categories, iscrowd, max_instances: int, drop_empty: bool,
                  mask_dtype=tf.uint8, image_id=None, report: bool = True):
    """Per-segment binary masks from a segment-index map.

    Args:
      segment_map: int32 [H, W], 0 void, k = segment k (1-based).
      categories: int32 [S]. iscrowd: bool [S].
      max_instances: N, the number of target slots.
      drop_empty: drop segments with no pixel in `segment_map` (semantic datasets).

    Returns:
      dict with masks [N, H, W], labels int32 [N], valid bool [N], num_segments int32 [],
      num_truncated int32 [].
    """
    num = tf.shape(categories)[0]
    keep = tf.logical_not(iscrowd)
    if drop_empty:
        counts = tf.math.bincount(tf.reshape(segment_map, [-1]), minlength=num + 1,
                                  maxlength=num + 1)
        keep = tf.logical_and(keep, counts[1:] > 0)
    index = tf.cast(tf.where(keep)[:, 0], tf.int32) + 1  # [n] 1-based segment indices
    num_segments = tf.shape(index)[0]
    num_truncated = tf.maximum(num_segments - max_instances, 0)
    if report:
        tf.cond(num_truncated > 0,
                lambda: tf.print("maskformer data: image", image_id, "has", num_segments,
                                 "target segments; kept the first", max_instances,
                                 "(data.max_instances), dropped", num_truncated,
                                 output_stream=sys.stderr),
                tf.no_op)
    index = index[:max_instances]
    n = tf.shape(index)[0]
    # Padding slots get index -1, which no pixel has: the comparison builds all N masks at once.
    slots = tf.pad(index, [[0, max_instances - n]], constant_values=-1)
    masks = tf.cast(tf.equal(segment_map[None], slots[:, None, None]), mask_dtype)  # [N, H, W]
    masks = tf.ensure_shape(masks, [max_instances] + segment_map.shape.as_list())
    labels = tf.pad(tf.gather(categories, index - 1), [[0, max_instances - n]])
    labels = tf.ensure_shape(labels, [max_instances])
    valid = tf.range(max_instances) < n
    return {"masks": masks, "labels": labels, "valid": valid, "num_segments": num_segments,
            "num_truncated": num_truncated}


def _maps(segment_map, categories, iscrowd):
    """Per-pixel semantic category (255 void) and crowd flag from the segment-index map."""
    semantic = tf.gather(tf.concat([[IGNORE_LABEL], categories], 0), segment_map)
    crowd = tf.gather(tf.concat([[False], iscrowd], 0), segment_map)
    return semantic, crowd


class _Preprocessor:
    """Turns one parsed example into (image, targets) for training or evaluation."""

    def __init__(self, config: DataConfig, training: bool):
        self.config = config
        self.training = training
        if config.augmentation not in AUGMENTATIONS:
            raise DataError(f"data.augmentation: {config.augmentation!r} is not one of "
                            f"{', '.join(AUGMENTATIONS)}")
        if config.dataset not in DATASETS:
            raise DataError(f"data.dataset: {config.dataset!r} is not one of "
                            f"{', '.join(DATASETS)}")
        if config.mask_dtype not in ("uint8", "float32"):
            raise DataError(f"data.mask_dtype: {config.mask_dtype!r} is not uint8 or float32")
        # Evaluation pads to eval_output_size, or (empty) each batch to its largest image
        # rounded up to size_divisibility: never to the training crop size.
        size = config.output_size if training else config.eval_output_size
        if size and len(size) != 2:
            raise DataError(f"data.output_size: expected [height, width], got {size}")
        self.size = list(size) if size else None
        # Instance records: an instance with no pixel left (hidden by the converter's overlap
        # rule, or cropped away) gives no target, as detectron2's instance mapper filters them.
        self.drop_empty = config.dataset in (*SEMANTIC_DATASETS, "coco_instance")

    def _augment(self, image, segment_map, seed):
        c = self.config
        if c.augmentation == "coco_panoptic":
            return aug.coco_panoptic_augment(image, segment_map, seed, c.min_scale_sizes,
                                             c.max_size, c.crop_short_edges, c.crop_range)
        if c.augmentation == "ade20k":
            image, segment_map = aug.ade20k_augment(image, segment_map, seed, c.min_scale_sizes,
                                                    c.max_size, c.crop_size, c.color_jitter)
            # The original's semantic mapper pads the crop with 128 (image) / ignore (label) and
            # the model then sees those pixels as image: they count in pixel_valid.
            image, segment_map, _ = pad_or_cut(image, segment_map, c.crop_size[0],
                                               c.crop_size[1], c.crop_pad_value)
            return image, segment_map
        if c.augmentation == "lsj":
            image, segment_map = aug.lsj_augment(image, segment_map, seed, c.scale_range,
                                                 c.crop_size)
            # FixedSizeCrop pads the right and bottom to the crop size: 128 and ignore.
            image, segment_map, _ = pad_or_cut(image, segment_map, c.crop_size[0],
                                               c.crop_size[1], c.crop_pad_value)
            return image, segment_map
        return tf.cast(image, tf.float32), segment_map

    def _pad_dynamic(self, image, segment_map):
        h, w = tf.shape(segment_map)[0], tf.shape(segment_map)[1]
        d = max(self.config.size_divisibility, 1)
        return pad_or_cut(image, segment_map, (h + d - 1) // d * d, (w + d - 1) // d * d)

    def __call__(self, example, seed):
        c = self.config
        image, segment_map = example["image"], example["segment_map"]
        original_size = tf.shape(segment_map)[:2]
        if self.training:
            image, segment_map = self._augment(image, segment_map, seed)
        else:
            new_h, new_w = aug.shortest_edge_size(original_size[0], original_size[1],
                                                  c.eval_short_edge, c.eval_max_size)
            image, segment_map = aug.resize(image, segment_map, new_h, new_w)
            if self.size:
                tf.debugging.assert_less_equal(
                    tf.stack([new_h, new_w]), tf.constant(self.size, tf.int32),
                    message="evaluation image resized beyond data.eval_output_size "
                    "(or data.output_size); evaluation never cuts images, enlarge it")
        image_size = tf.minimum(tf.shape(segment_map)[:2],
                                tf.constant(self.size, tf.int32) if self.size else 2 ** 30)
        if self.size:
            image, segment_map, pixel_valid = pad_or_cut(image, segment_map, *self.size)
        else:
            image, segment_map, pixel_valid = self._pad_dynamic(image, segment_map)
        targets = build_targets(segment_map, example["categories"], example["iscrowd"],
                                c.max_instances, self.drop_empty,
                                tf.uint8 if c.mask_dtype == "uint8" else tf.float32,
                                example["image_id"], c.report_truncation)
        if c.eval_map_size and not self.training:
            _, map_source, _ = pad_or_cut(tf.zeros_like(example["image"], tf.float32),
                                          example["segment_map"], *c.eval_map_size)
            tf.debugging.assert_less_equal(
                original_size, tf.constant(c.eval_map_size, tf.int32),
                message="an original image is larger than data.eval_map_size")
        elif not self.training:
            # The ground truth stays at the original resolution, where predictions are
            # compared; batches pad it to their largest image.
            map_source = example["segment_map"]
        else:
            map_source = segment_map
        semantic, crowd = _maps(map_source, example["categories"], example["iscrowd"])
        targets.update({
            "pixel_valid": pixel_valid,
            "image_id": example["image_id"],
            "original_size": tf.ensure_shape(original_size, [2]),
            "image_size": tf.ensure_shape(image_size, [2]),
            "segment_map": map_source,
            "semantic_map": semantic,
            "crowd_map": crowd,
        })
        return image, targets


def preprocess(example, seed, config: DataConfig, training: bool):
    """One parsed example (from `records.parse_record`) -> (image [H, W, 3], targets dict).

    `seed` is an int64 [2] stateless seed (ignored when not training).
    """
    return _Preprocessor(config, training)(example, seed)


def _padding_values(element_spec):
    image_spec, target_spec = element_spec

    def value(key, spec):
        if key == "semantic_map":
            return tf.constant(IGNORE_LABEL, spec.dtype)
        return tf.zeros([], spec.dtype)

    return (tf.zeros([], image_spec.dtype), {k: value(k, s) for k, s in target_spec.items()})


def build_dataset(data_config: DataConfig, files: str | Sequence[str], training: bool,
                  batch_size: int, input_context: tf.distribute.InputContext | None = None,
                  skip: int = 0) -> tf.data.Dataset:
    """The input pipeline.

    Args:
      data_config: a `DataConfig`.
      files: comma-separated glob pattern(s) or a list of TFRecord files.
      training: augmentation, shuffling and repetition (otherwise one pass, no augmentation,
        aspect ratio kept).
      batch_size: the global batch size; with `input_context` each pipeline yields
        ``input_context.get_per_replica_batch_size(batch_size)``.
      input_context: from `tf.distribute.Strategy.distribute_datasets_from_function`; each
        input pipeline reads its own share of the files (of the records when there are fewer
        files than pipelines).
      skip: examples of this pipeline's stream to skip (resuming at a step); cheap, as it
        happens before decoding. Exact when `data.seed` is set or `deterministic` is on.

    Returns:
      A dataset of ``(images, targets)``, see the module docstring.
    """
    c = data_config
    file_list = resolve_files(files)
    parser = make_parser(c)
    if c.record_format == "model_garden":
        model_garden.check_records(file_list)
    preprocessor = _Preprocessor(c, training)
    seed = c.seed if c.seed is not None else (0 if c.deterministic else None)
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    if batch_size < 1:
        raise DataError(f"batch size must be at least 1, got {batch_size}")

    ds = tf.data.Dataset.from_tensor_slices(file_list)
    shard_records = False
    if input_context is not None and input_context.num_input_pipelines > 1:
        if len(file_list) >= input_context.num_input_pipelines:
            ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        else:
            shard_records = True
    if training:
        ds = ds.shuffle(len(file_list), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(file_list), 8),
                       num_parallel_calls=AUTOTUNE, deterministic=c.deterministic or None)
    if shard_records:
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    if training:
        ds = ds.shuffle(max(c.shuffle_buffer, 1), seed=seed, reshuffle_each_iteration=True)
        ds = ds.repeat()
    ds = tf.data.Dataset.zip((ds, tf.data.Dataset.random(seed=seed).batch(2)))
    if skip:
        # Resuming: skip the examples already trained on, before any decoding, so that the
        # stream (records and their augmentation seeds) continues exactly.
        ds = ds.skip(skip)

    def process(serialized, element_seed):
        return preprocessor(parser(serialized), element_seed)

    ds = ds.map(process, num_parallel_calls=AUTOTUNE, deterministic=c.deterministic or None)
    if preprocessor.size and (training or c.eval_map_size):
        ds = ds.batch(batch_size, drop_remainder=training)
    else:
        ds = ds.padded_batch(batch_size, padding_values=_padding_values(ds.element_spec),
                             drop_remainder=training)
    options = tf.data.Options()
    options.deterministic = bool(c.deterministic)
    return ds.with_options(options).prefetch(AUTOTUNE)
