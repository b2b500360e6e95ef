"""Training augmentation of the original (REFERENCE.md section 10), in TensorFlow.

Every function takes an image (uint8 or float32 with integer values 0..255, [h, w, 3]), the
per-pixel segment-index map (int32 [h, w], 0 = void) and a stateless seed (int64 [2]), and
transforms both the same way: the image bilinearly (with antialiasing when shrinking, as PIL
does for detectron2), the map by nearest neighbour. Randomness is stateless, so the result is a
function of the seed and is the same eagerly and inside `tf.data`, in any parallel order.

The geometry follows detectron2 exactly: `ResizeShortestEdge` (choice of short edge, long edge
capped, sizes rounded with ``int(x + 0.5)``), `RandomCrop("absolute_range")` and
`RandomCrop("absolute")`, `ResizeScale` and `FixedSizeCrop` (large-scale jitter), `RandomFlip`
(horizontal, p 0.5). Images are rounded to integers after every resize, like detectron2's uint8
images.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf


def _seed(seed, k: int):
    """An independent sub-seed for the k-th random decision."""
    return tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), k)


def _uniform(seed, k: int):
    return tf.random.stateless_uniform([], _seed(seed, k), dtype=tf.float32)


def _randint(seed, k: int, low, high_inclusive):
    """Uniform integer in [low, high_inclusive] (np.random.randint(low, high + 1))."""
    return tf.random.stateless_uniform([], _seed(seed, k), minval=low, maxval=high_inclusive + 1,
                                       dtype=tf.int32)


def _choice(seed, k: int, values: Sequence[int]):
    values = tf.constant(list(values), tf.int32)
    return values[_randint(seed, k, 0, tf.shape(values)[0] - 1)]


def shortest_edge_size(height, width, short_edge, max_size):
    """detectron2 `ResizeShortestEdge.get_output_shape` (float64, then ``int(x + 0.5)``).

    Returns:
      (new_height, new_width) int32 scalars.
    """
    h = tf.cast(height, tf.float64)
    w = tf.cast(width, tf.float64)
    size = tf.cast(short_edge, tf.float64)
    scale = size / tf.minimum(h, w)
    new_h = tf.where(h < w, size, scale * h)
    new_w = tf.where(h < w, scale * w, size)
    longest = tf.maximum(new_h, new_w)
    cap = tf.cast(max_size, tf.float64) / longest
    new_h = tf.where(longest > tf.cast(max_size, tf.float64), new_h * cap, new_h)
    new_w = tf.where(longest > tf.cast(max_size, tf.float64), new_w * cap, new_w)
    return (tf.cast(tf.floor(new_h + 0.5), tf.int32), tf.cast(tf.floor(new_w + 0.5), tf.int32))


def resize(image, segment_map, new_h, new_w):
    """Resizes the image (bilinear, antialiased when shrinking, rounded) and the map (nearest).

    PIL's bilinear filter widens its support when shrinking (antialiasing) and is plain
    half-pixel bilinear when enlarging; `tf.image.resize(antialias=True)` does the same but is
    several times slower, so it is used only when an axis shrinks.
    """
    size = tf.stack([new_h, new_w])
    segment_map = tf.image.resize(segment_map[..., None], size, method="nearest")[..., 0]
    return resize_image(image, new_h, new_w), segment_map


def resize_image(image, new_h, new_w):
    """The image part of `resize`: [..., H, W, 3] (one image or a batch) -> float32 [..., new_h,
    new_w, 3], bilinear, antialiased when an axis shrinks, rounded to integers 0..255."""
    image = tf.cast(image, tf.float32)
    size = tf.stack([new_h, new_w])
    shrinks = tf.reduce_any(size < tf.shape(image)[-3:-1])
    image = tf.cond(shrinks,
                    lambda: tf.image.resize(image, size, method="bilinear", antialias=True),
                    lambda: tf.image.resize(image, size, method="bilinear"))
    return tf.clip_by_value(tf.round(image), 0.0, 255.0)


def resize_shortest_edge(image, segment_map, seed, k: int, short_edges: Sequence[int],
                         max_size: int):
    """detectron2 ``ResizeShortestEdge(short_edges, max_size, "choice")``."""
    shape = tf.shape(segment_map)
    new_h, new_w = shortest_edge_size(shape[0], shape[1], _choice(seed, k, short_edges), max_size)
    return resize(image, segment_map, new_h, new_w)


def crop(image, segment_map, top, left, crop_h, crop_w):
    return (image[top:top + crop_h, left:left + crop_w],
            segment_map[top:top + crop_h, left:left + crop_w])


def random_crop_absolute_range(image, segment_map, seed, k: int, min_size: int, max_size: int):
    """detectron2 ``RandomCrop("absolute_range", (min_size, max_size))``: height and width each
    uniform in [min(dim, min_size), min(dim, max_size)], then a uniform position."""
    shape = tf.shape(segment_map)
    h, w = shape[0], shape[1]
    crop_h = _randint(seed, k, tf.minimum(h, min_size), tf.minimum(h, max_size))
    crop_w = _randint(seed, k + 1, tf.minimum(w, min_size), tf.minimum(w, max_size))
    top = _randint(seed, k + 2, 0, h - crop_h)
    left = _randint(seed, k + 3, 0, w - crop_w)
    return crop(image, segment_map, top, left, crop_h, crop_w)


def random_crop_absolute(image, segment_map, seed, k: int, crop_size: Sequence[int]):
    """detectron2 ``RandomCrop("absolute", crop_size)``: (min(h, ch), min(w, cw)) at a uniform
    position. (With the original's single_category_max_area 1.0 the category-area constraint
    never rejects a crop, so this is `RandomCrop_CategoryAreaConstraint` as configured.)"""
    shape = tf.shape(segment_map)
    h, w = shape[0], shape[1]
    crop_h, crop_w = tf.minimum(h, crop_size[0]), tf.minimum(w, crop_size[1])
    top = _randint(seed, k, 0, h - crop_h)
    left = _randint(seed, k + 1, 0, w - crop_w)
    return crop(image, segment_map, top, left, crop_h, crop_w)


def random_flip(image, segment_map, seed, k: int):
    """Horizontal flip with probability 0.5."""
    flip = _uniform(seed, k) < 0.5
    image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
    segment_map = tf.cond(flip, lambda: tf.reverse(segment_map, [1]), lambda: segment_map)
    return image, segment_map


def coco_panoptic_augment(image, segment_map, seed, min_scale_sizes: Sequence[int] = tuple(
        range(480, 801, 32)), max_size: int = 1333, crop_short_edges: Sequence[int] = (400, 500,
                                                                                  600),
                          crop_range: Sequence[int] = (384, 600)):
    """The COCO panoptic training augmentation (DETR's panoptic mapper, used by MaskFormer).

    Flip (p 0.5); then with p 0.5 resize the shortest edge to a choice of `min_scale_sizes`
    (long edge <= `max_size`); otherwise resize the shortest edge to a choice of
    `crop_short_edges` (no cap), crop a random box with sides uniform in `crop_range` (capped by
    the image), and do the same `min_scale_sizes` resize.

    Args:
      image: [h, w, 3] uint8 or float32. segment_map: [h, w] int32. seed: int64 [2].

    Returns:
      (image float32 [h', w', 3] with integer values, segment_map int32 [h', w']).
    """
    image = tf.cast(image, tf.float32)
    image, segment_map = random_flip(image, segment_map, seed, 0)

    def plain():
        return image, segment_map

    def cropped():
        im, sm = resize_shortest_edge(image, segment_map, seed, 2, crop_short_edges, 2 ** 30)
        return random_crop_absolute_range(im, sm, seed, 3, crop_range[0], crop_range[1])

    image, segment_map = tf.cond(_uniform(seed, 1) < 0.5, plain, cropped)
    return resize_shortest_edge(image, segment_map, seed, 10, min_scale_sizes, max_size)


def color_aug_ssd(image, seed, k: int, brightness_delta: float = 32.0,
                  contrast: Sequence[float] = (0.5, 1.5), saturation: Sequence[float] = (0.5, 1.5),
                  hue_delta: float = 18.0):
    """The original's `ColorAugSSDTransform`: brightness, then contrast before or after
    saturation and hue, each applied with probability 0.5, values clipped and truncated to
    integers like its uint8 arithmetic. Hue and saturation go through `tf.image.rgb_to_hsv`
    (hue in [0, 1) rather than OpenCV's uint8 0..180), so they are equivalent in distribution,
    not bit-exact, to the OpenCV version.

    Args:
      image: float32 [h, w, 3], integer values 0..255.
    """

    def convert(x, alpha=1.0, beta=0.0):
        return tf.floor(tf.clip_by_value(x * alpha + beta, 0.0, 255.0))

    def maybe(j, fn, x):
        return tf.cond(_uniform(seed, k + j) < 0.5, lambda: fn(x), lambda: x)

    def brightness(x):
        beta = tf.random.stateless_uniform([], _seed(seed, k + 10), -brightness_delta,
                                           brightness_delta)
        return convert(x, beta=beta)

    def contrast_fn(x):
        alpha = tf.random.stateless_uniform([], _seed(seed, k + 11), contrast[0], contrast[1])
        return convert(x, alpha=alpha)

    def saturation_fn(x):
        alpha = tf.random.stateless_uniform([], _seed(seed, k + 12), saturation[0],
                                            saturation[1])
        hsv = tf.image.rgb_to_hsv(x / 255.0)
        s = tf.floor(tf.clip_by_value(hsv[..., 1] * 255.0 * alpha, 0.0, 255.0)) / 255.0
        return tf.round(tf.image.hsv_to_rgb(tf.stack([hsv[..., 0], s, hsv[..., 2]], -1)) * 255.0)

    def hue_fn(x):
        delta = tf.cast(_randint(seed, k + 13, -int(hue_delta), int(hue_delta)), tf.float32)
        hsv = tf.image.rgb_to_hsv(x / 255.0)
        h = tf.math.floormod(hsv[..., 0] + delta / 180.0, 1.0)
        return tf.round(tf.image.hsv_to_rgb(tf.stack([h, hsv[..., 1], hsv[..., 2]], -1)) * 255.0)

    image = maybe(0, brightness, image)

    def contrast_first():
        x = maybe(1, contrast_fn, image)
        return maybe(3, hue_fn, maybe(2, saturation_fn, x))

    def contrast_last():
        x = maybe(3, hue_fn, maybe(2, saturation_fn, image))
        return maybe(1, contrast_fn, x)

    return tf.cond(_uniform(seed, k + 4) < 0.5, contrast_first, contrast_last)


def ade20k_augment(image, segment_map, seed, min_scale_sizes: Sequence[int] = tuple(
        int(x * 0.1 * 512) for x in range(5, 21)), max_size: int = 2048,
                   crop_size: Sequence[int] = (512, 512), color_jitter: bool = True):
    """The ADE20K semantic training augmentation: resize shortest edge (choice, long edge <=
    `max_size`), crop `crop_size` ("absolute"), SSD colour jitter, flip (that order, as the
    original's semantic mapper builds it).

    Returns:
      (image float32 [h', w', 3], segment_map int32 [h', w']), h' <= crop height.
    """
    image = tf.cast(image, tf.float32)
    image, segment_map = resize_shortest_edge(image, segment_map, seed, 0, min_scale_sizes,
                                              max_size)
    image, segment_map = random_crop_absolute(image, segment_map, seed, 1, crop_size)
    if color_jitter:
        image = color_aug_ssd(image, seed, 20)
    return random_flip(image, segment_map, seed, 3)


def resize_scale(image, segment_map, seed, k: int, min_scale: float, max_scale: float,
                 target_height: int, target_width: int):
    """detectron2 ``ResizeScale``: fit the image, aspect kept, in the target box times
    s ~ U[min_scale, max_scale] (float64, sizes rounded half to even as ``np.round``)."""
    shape = tf.cast(tf.shape(segment_map), tf.float64)
    h, w = shape[0], shape[1]
    scale = min_scale + (max_scale - min_scale) * tf.cast(_uniform(seed, k), tf.float64)
    output_scale = tf.minimum(target_height * scale / h, target_width * scale / w)
    new_h = tf.maximum(tf.cast(tf.round(h * output_scale), tf.int32), 1)
    new_w = tf.maximum(tf.cast(tf.round(w * output_scale), tf.int32), 1)
    return resize(image, segment_map, new_h, new_w)


def fixed_size_crop(image, segment_map, seed, k: int, crop_size: Sequence[int]):
    """The crop of detectron2 ``FixedSizeCrop``: at most `crop_size`, at an offset of
    ``round(max(size - crop, 0) * u)`` along both axes with one u ~ U[0, 1] (the padding to
    `crop_size` is the caller's)."""
    shape = tf.shape(segment_map)
    h, w = shape[0], shape[1]
    u = tf.cast(_uniform(seed, k), tf.float64)
    top = tf.cast(tf.round(tf.cast(tf.maximum(h - crop_size[0], 0), tf.float64) * u), tf.int32)
    left = tf.cast(tf.round(tf.cast(tf.maximum(w - crop_size[1], 0), tf.float64) * u), tf.int32)
    return crop(image, segment_map, top, left, tf.minimum(h, crop_size[0]),
                tf.minimum(w, crop_size[1]))


def lsj_augment(image, segment_map, seed, scale_range: Sequence[float] = (0.1, 2.0),
                crop_size: Sequence[int] = (1024, 1024)):
    """Large-scale jitter, Mask2Former's COCO training augmentation ("coco_panoptic_lsj",
    "coco_instance_lsj"): flip, ``ResizeScale(scale_range, crop_size)``, then the crop of
    ``FixedSizeCrop(crop_size)`` (that order, as its mapper builds them). The caller pads to
    `crop_size` (the original pads the image with 128 and the label with ignore).

    Returns:
      (image float32 [h', w', 3], segment_map int32 [h', w']), h', w' <= crop_size.
    """
    image = tf.cast(image, tf.float32)
    image, segment_map = random_flip(image, segment_map, seed, 0)
    image, segment_map = resize_scale(image, segment_map, seed, 1, scale_range[0],
                                      scale_range[1], crop_size[0], crop_size[1])
    return fixed_size_crop(image, segment_map, seed, 2, crop_size)
