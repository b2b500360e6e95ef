"""The tf.data pipeline: augmentation alignment (eager and in tf.data), targets, eval path,
sharding. Model Garden records: tests/data/test_model_garden.py."""


import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from maskformer.config import DataConfig
from maskformer.data import augment, coco_panoptic, pipeline, records
from tests.data.conftest import sample_from_arrays, write_records

# Segment k is painted with red level CODE[k]; the layout is asymmetric so that a flip, a
# transpose or an offset crop of one but not the other is visible.
CODE = np.array([0, 60, 120, 180, 240])


def _coded_example(h=48, w=64):
    smap = np.zeros((h, w), np.int32)
    smap[:, : w // 3] = 1
    smap[: h // 2, w // 3:] = 2
    smap[h // 2:, w // 3: 3 * w // 4] = 3
    smap[h // 2 + 4: h - 4, 3 * w // 4 + 2: w - 2] = 4  # leaves a void frame around segment 4
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = CODE[smap]
    image[..., 1] = 30
    return image, smap


def _small_config(**kw):
    base = dict(output_size=[64, 64], min_scale_sizes=[32, 48, 64], max_size=96,
                crop_short_edges=[40, 56], crop_range=[24, 40], max_instances=8,
                deterministic=True, seed=0, eval_short_edge=32, eval_max_size=64, eval_output_size=[64, 64],
                shuffle_buffer=4)
    base.update(kw)
    return DataConfig(**base)


def _check_aligned(image, smap):
    """Where the image is flat (a 5 x 5 neighbourhood of one red level, i.e. away from the
    colour ramps that resizing makes at borders) its red level is the code of the map's segment
    there: image and map moved together. Codes are 60 levels apart; the tolerance of 5 allows
    for the flat tails of ramps made by two successive resizes. Returns the fraction of pixels
    checked."""
    red, smap = np.asarray(image)[..., 0], np.asarray(smap)
    h, w = red.shape
    padded = np.pad(red, 2, mode="edge")
    flat = np.ones_like(red, bool)
    for dy in range(5):
        for dx in range(5):
            flat &= padded[dy:dy + h, dx:dx + w] == red
    np.testing.assert_allclose(red[flat], CODE[smap[flat]], atol=5)
    return flat.mean()


def test_coco_augmentation_keeps_image_and_map_aligned_eager_and_in_tf_data():
    image, smap = _coded_example()
    seeds = [tf.constant([s, 7], tf.int64) for s in range(12)]
    eager = [augment.coco_panoptic_augment(image, smap, s, [32, 48, 64], 96, [40, 56], [24, 40])
             for s in seeds]
    shapes = set()
    for im, sm in eager:
        assert _check_aligned(im, sm) > 0.2
        shapes.add(tuple(sm.shape))
    assert len(shapes) > 2, "augmentation did not vary the size"
    ds = tf.data.Dataset.from_tensor_slices(tf.stack(seeds)).map(
        lambda s: augment.coco_panoptic_augment(image, smap, s, [32, 48, 64], 96, [40, 56],
                                                [24, 40]), num_parallel_calls=2)
    for (im, sm), (im_e, sm_e) in zip(ds, eager, strict=True):
        np.testing.assert_array_equal(im.numpy(), im_e.numpy())
        np.testing.assert_array_equal(sm.numpy(), sm_e.numpy())
    flipped = [np.asarray(sm)[:, 0].max() == 4 or np.asarray(sm)[:, -1].max() == 1
               for _, sm in eager]
    assert any(flipped) and not all(flipped)


def test_ade20k_augmentation_aligned_and_cropped():
    image, smap = _coded_example()
    for s in range(6):
        im, sm = augment.ade20k_augment(image, smap, tf.constant([s, 1], tf.int64), [40, 64],
                                        128, [32, 32], color_jitter=False)
        assert sm.shape[0] <= 32 and sm.shape[1] <= 32
        assert _check_aligned(im, sm) > 0.2


def test_lsj_is_detectron2_resize_scale_then_fixed_size_crop():
    """Flip, ResizeScale and FixedSizeCrop as detectron2 computes their sizes and offsets
    (float64, np.round) from the same draws; the resize itself is tested against PIL below."""
    image, smap = _coded_example()  # 48 x 64
    crop, low, high = (32, 40), 0.3, 2.0
    cut = padded = 0
    for s in range(16):
        seed = tf.constant([s, 3], tf.int64)
        im, sm = augment.lsj_augment(image, smap, seed, (low, high), crop)
        flip, scale_u, offset_u = (float(augment._uniform(seed, k)) for k in range(3))
        ref_im, ref_sm = (image[:, ::-1], smap[:, ::-1]) if flip < 0.5 else (image, smap)
        scale = low + (high - low) * scale_u
        output_scale = min(crop[0] * scale / 48, crop[1] * scale / 64)
        size = np.round(np.multiply((48, 64), output_scale)).astype(int)
        ref_im, ref_sm = augment.resize(tf.cast(ref_im, tf.float32), ref_sm, *size)
        top, left = np.round(np.maximum(size - crop, 0) * offset_u).astype(int)
        np.testing.assert_array_equal(
            im.numpy(), ref_im.numpy()[top:top + crop[0], left:left + crop[1]])
        np.testing.assert_array_equal(
            sm.numpy(), ref_sm.numpy()[top:top + crop[0], left:left + crop[1]])
        assert _check_aligned(im, sm) > 0.1
        cut += bool(size[0] > crop[0] or size[1] > crop[1])
        padded += bool(size[0] < crop[0] or size[1] < crop[1])
    assert cut and padded


def test_lsj_pipeline_pads_to_the_crop_size_with_128(tmp_path):
    image, smap = _coded_example()
    path = write_records(tmp_path / "r.tfrecord", [sample_from_arrays(image, smap, [5, 6, 7, 8])])
    cfg = _small_config(augmentation="lsj", scale_range=[0.25, 0.25], crop_size=[32, 32],
                        output_size=[32, 32])
    images, t = next(iter(pipeline.build_dataset(cfg, path, training=True, batch_size=1)))
    im = images[0].numpy()
    # Scale 0.25 of a 32 square: 48 x 64 fits as 6 x 8, padded with 128 (void labels) to 32.
    assert (im[6:] == 128).all() and (im[:, 8:] == 128).all() and not (im[:6, :8] == 128).all()
    assert (t["segment_map"][0].numpy()[6:] == 0).all()
    assert t["pixel_valid"][0].numpy().all()


def test_shortest_edge_size_matches_detectron2_formula():
    def reference(h, w, short, max_size):  # detectron2 ResizeShortestEdge.get_output_shape
        scale = short * 1.0 / min(h, w)
        newh, neww = (short, scale * w) if h < w else (scale * h, short)
        if max(newh, neww) > max_size:
            scale = max_size * 1.0 / max(newh, neww)
            newh, neww = newh * scale, neww * scale
        return int(newh + 0.5), int(neww + 0.5)

    for h, w, s, m in [(480, 640, 800, 1333), (427, 640, 512, 1333), (200, 900, 800, 1333),
                       (640, 480, 613, 2048), (333, 500, 480, 1333), (48, 64, 32, 64)]:
        got = augment.shortest_edge_size(h, w, s, m)
        assert (int(got[0]), int(got[1])) == reference(h, w, s, m)


def test_training_targets_from_records_are_aligned_and_static(tmp_path):
    image, smap = _coded_example()
    path = write_records(tmp_path / "r.tfrecord", [
        sample_from_arrays(image, smap, [3, 1, 0, 2], iscrowd=[0, 0, 1, 0], image_id=i)
        for i in range(4)])
    ds = pipeline.build_dataset(_small_config(), path, training=True, batch_size=2)
    for spec in tf.nest.flatten(ds.element_spec):
        assert spec.shape.is_fully_defined(), spec
    for images, t in ds.take(3):
        assert images.shape == (2, 64, 64, 3) and t["masks"].shape == (2, 8, 64, 64)
        for b in range(2):
            valid = t["valid"][b].numpy()
            assert valid.sum() == 3  # the crowd segment (category 0) is dropped
            assert t["labels"][b].numpy()[:3].tolist() == [3, 1, 2]
            masks = t["masks"][b].numpy()
            assert not masks[~valid].any()
            pix = t["pixel_valid"][b].numpy()
            h, w = t["image_size"][b].numpy()
            assert pix[:h, :w].all() and pix.sum() == h * w
            assert not images[b].numpy()[~pix].any()  # padding is 0
            # The target masks, the crowd map and the segment map agree with the image.
            smap = t["segment_map"][b].numpy()
            for slot, k in enumerate([1, 2, 4]):  # segment indices of the non-crowd targets
                np.testing.assert_array_equal(masks[slot] > 0, smap == k)
            np.testing.assert_array_equal(t["crowd_map"][b].numpy(), smap == 3)
            assert _check_aligned(images[b], smap) > 0.2


def test_eval_path_keeps_aspect_ratio_and_maps(tmp_path):
    image, smap = _coded_example(h=64, w=48)
    path = write_records(tmp_path / "r.tfrecord", [sample_from_arrays(image, smap, [0, 1, 2, 3],
                                                                      image_id=9)])
    cfg = _small_config()
    images, t = next(iter(pipeline.build_dataset(cfg, path, training=False, batch_size=2)))
    assert images.shape[0] == 1  # evaluation keeps the last, smaller batch
    assert t["original_size"][0].numpy().tolist() == [64, 48]
    assert t["image_size"][0].numpy().tolist() == [43, 32]  # 64 * 32 / 48 = 42.67 -> 43
    assert not t["pixel_valid"][0].numpy()[43:].any()
    # The ground-truth maps stay at the original resolution (predictions are compared there),
    # padded to the batch's largest image ...
    sem = t["semantic_map"][0].numpy()
    np.testing.assert_array_equal(sem, np.array([255, 0, 1, 2, 3])[smap])
    assert int(t["image_id"][0]) == 9
    # ... or to data.eval_map_size.
    cfg = _small_config(eval_map_size=[80, 80])
    _, t = next(iter(pipeline.build_dataset(cfg, path, training=False, batch_size=1)))
    sem = t["semantic_map"][0].numpy()
    np.testing.assert_array_equal(sem[:64, :48], np.array([255, 0, 1, 2, 3])[smap])
    assert (sem[64:] == 255).all()


def test_image_without_segments_and_truncation(tmp_path, capfd):
    image, smap = _coded_example()
    empty = sample_from_arrays(image, np.zeros_like(smap), [], image_id=1)
    full = sample_from_arrays(image, smap, [0, 1, 2, 3], image_id=2)
    path = write_records(tmp_path / "r.tfrecord", [empty, full])
    cfg = _small_config(max_instances=2)
    _, t = next(iter(pipeline.build_dataset(cfg, path, training=False, batch_size=2)))
    assert t["valid"].numpy().tolist() == [[False, False], [True, True]]
    assert not t["masks"][0].numpy().any()
    assert t["num_segments"].numpy().tolist() == [0, 4]
    assert t["num_truncated"].numpy().tolist() == [0, 2]
    assert "dropped 2" in capfd.readouterr().err


def test_input_context_shards_between_pipelines(tmp_path):
    image, smap = _coded_example()
    paths = [write_records(tmp_path / f"r{j}.tfrecord",
                           [sample_from_arrays(image, smap, [0, 1, 2, 3], image_id=10 * j + i)
                            for i in range(2)]) for j in range(3)]
    seen = []
    for pid in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pid,
                                         num_replicas_in_sync=2)
        ds = pipeline.build_dataset(_small_config(), paths, training=False, batch_size=4,
                                    input_context=ctx)
        ids = [int(i) for _, t in ds for i in t["image_id"].numpy()]
        assert all(len(t["image_id"]) <= 2 for _, t in ds)  # per-replica batch: 4 / 2
        seen.append(set(ids))
    assert not seen[0] & seen[1] and seen[0] | seen[1] == {0, 1, 10, 11, 20, 21}


def test_deterministic_mode_repeats_exactly(shapes_dir, tmp_path):
    root = shapes_dir
    coco_panoptic.convert(root / "images/train", root / "annotations/panoptic_train.json",
                          root / "annotations/panoptic_train", tmp_path / "rec/train",
                          num_shards=2, progress=False)
    files = str(tmp_path / "rec/train-*")

    def first_batches():
        ds = pipeline.build_dataset(_small_config(), files, training=True, batch_size=2)
        return [(im.numpy(), t["masks"].numpy()) for im, t in ds.take(2)]

    for (a, ma), (b, mb) in zip(first_batches(), first_batches(), strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ma, mb)


def test_ade20k_pipeline_pads_crop_with_128_and_drops_absent_classes(tmp_path):
    image, smap = _coded_example()
    path = write_records(tmp_path / "r.tfrecord", [sample_from_arrays(image, smap, [5, 6, 7, 8])])
    cfg = _small_config(dataset="ade20k_semantic", augmentation="ade20k", output_size=[40, 40],
                        crop_size=[32, 32], min_scale_sizes=[24], max_size=128,
                        color_jitter=False)
    images, t = next(iter(pipeline.build_dataset(cfg, path, training=True, batch_size=1)))
    im, sm = images[0].numpy(), t["segment_map"][0].numpy()
    # Short edge 24 -> 24 x 32: the crop is 24 x 32, padded with 128 to 32 x 32.
    assert (im[24:32, :32] == 128).all() and (im[32:] == 0).all() and (im[:, 32:] == 0).all()
    assert t["pixel_valid"][0].numpy()[:32, :32].all() and t["pixel_valid"][0].numpy().sum() == 1024
    present = sorted(set(np.unique(sm)) - {0})
    labels = t["labels"][0].numpy()[t["valid"][0].numpy()]
    assert labels.tolist() == [[5, 6, 7, 8][k - 1] for k in present]


def test_bad_record_format_and_missing_files_are_clear(tmp_path):
    with pytest.raises(records.DataError, match="no files match"):
        pipeline.build_dataset(_small_config(), str(tmp_path / "nothing-*"), True, 2)
    image, smap = _coded_example()
    path = write_records(tmp_path / "r.tfrecord", [sample_from_arrays(image, smap, [0])])
    with pytest.raises(records.DataError, match="needs data.dataset_info"):
        pipeline.build_dataset(_small_config(record_format="model_garden"), path, True, 2)


def test_resize_matches_pil_bilinear_like_detectron2():
    """detectron2 resizes uint8 images with PIL's bilinear filter (antialiased when shrinking);
    PIL works in fixed point, so values agree to one level."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (37, 53, 3), dtype=np.uint8)
    for h, w in [(80, 113), (20, 29), (37, 90)]:
        ours, _ = augment.resize(image, np.zeros((37, 53), np.int32), h, w)
        pil = np.array(Image.fromarray(image).resize((w, h), Image.BILINEAR))
        assert np.abs(ours.numpy() - pil).max() <= 1
