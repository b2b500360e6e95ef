"""Records written by TF Model Garden's create_coco_tf_record.py (tests/testdata/model_garden,
see its README) read through data.record_format=model_garden like our own records of the same
COCO panoptic source."""

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from maskformer.config import DataConfig
from maskformer.data import coco_panoptic, model_garden, pipeline, records
from maskformer.errors import DataError

FIXTURE = Path(__file__).resolve().parents[1] / "testdata" / "model_garden"
SOURCE = FIXTURE / "source"
PANOPTIC = FIXTURE / "panoptic-00000-of-00001.tfrecord"
SKIP_CROWD = FIXTURE / "panoptic_skip_crowd-00000-of-00001.tfrecord"
NO_MASKS = FIXTURE / "no_panoptic_masks-00000-of-00001.tfrecord"
NUM_IMAGES = 4


@pytest.fixture(scope="module")
def ours(tmp_path_factory):
    """Our records of the fixture's source dataset: (record file, dataset.json)."""
    out = tmp_path_factory.mktemp("ours") / "train"
    report = coco_panoptic.convert(SOURCE / "images", SOURCE / "panoptic.json",
                                   SOURCE / "panoptic", out, progress=False)
    assert report.written == NUM_IMAGES and not report.skipped
    return str(report.shards[0]), str(out.parent / "dataset.json")


def _parsed(path, parser):
    out = []
    for serialized in tf.data.TFRecordDataset(str(path)):
        out.append({k: v.numpy() for k, v in parser(serialized).items()})
    assert len(out) == NUM_IMAGES
    return out


def _segments(example, crowd: bool | None = None):
    """{(category, area, mask bytes)} of an example's segments (crowd ones only / none / all)."""
    smap = example["segment_map"]
    return {(int(c), int(a), (smap == k + 1).tobytes())
            for k, (c, a, w) in enumerate(zip(example["categories"], example["areas"],
                                              example["iscrowd"], strict=True))
            if crowd is None or bool(w) == crowd}


def _crowd_pixels(example):
    return np.isin(example["segment_map"], np.flatnonzero(example["iscrowd"]) + 1)


def test_fixture_has_a_crowd_segment_void_pixels_and_all_three_record_kinds():
    ann = json.loads((SOURCE / "panoptic.json").read_text())
    assert sum(s["iscrowd"] for a in ann["annotations"] for s in a["segments_info"]) == 1
    for path in (PANOPTIC, SKIP_CROWD, NO_MASKS):
        assert sum(1 for _ in tf.data.TFRecordDataset(str(path))) == NUM_IMAGES


def test_parsed_records_match_ours(ours):
    files, info = ours
    lookup = model_garden.category_lookup(info)
    mine = _parsed(files, records.parse_record)
    kept = _parsed(PANOPTIC, lambda s: model_garden.parse_record(s, lookup))
    skipped = _parsed(SKIP_CROWD, lambda s: model_garden.parse_record(s, lookup))
    num_crowd = num_void = 0
    for a, b, c in zip(mine, kept, skipped, strict=True):
        for mg in (b, c):
            np.testing.assert_array_equal(a["image"], mg["image"])
            assert (a["image_id"], a["height"], a["width"]) == (
                mg["image_id"], mg["height"], mg["width"])
            assert not mg["iscrowd"].any()
        crowd = _crowd_pixels(a)
        num_crowd += crowd.any()
        num_void += (a["segment_map"] == 0).any()
        # Without --panoptic_skip_crowd a crowd segment is an ordinary one; void is void.
        assert _segments(b) == _segments(a)
        np.testing.assert_array_equal(b["segment_map"] == 0, a["segment_map"] == 0)
        # With it, the crowd segments are gone and their pixels are void.
        assert _segments(c) == _segments(a, crowd=False)
        np.testing.assert_array_equal(c["segment_map"] == 0, (a["segment_map"] == 0) | crowd)
    assert num_crowd == 1 and num_void == 1  # the fixture exercises both


def test_segments_are_things_in_annotation_order_then_stuff(ours):
    lookup = model_garden.category_lookup(ours[1])
    ann = json.loads((SOURCE / "panoptic.json").read_text())
    things = {c["id"] for c in ann["categories"] if c["isthing"]}
    for example, a in zip(_parsed(PANOPTIC, lambda s: model_garden.parse_record(s, lookup)),
                          ann["annotations"], strict=True):
        info = a["segments_info"]
        expected = ([s["category_id"] for s in info if s["category_id"] in things]
                    + sorted(s["category_id"] for s in info if s["category_id"] not in things))
        assert [int(i) // 256 for i in example["segment_ids"]] == expected
        assert example["areas"].tolist() == [
            s["area"] for s in info if s["category_id"] in things] + [
            s["area"] for s in sorted(info, key=lambda s: s["category_id"])
            if s["category_id"] not in things]


def _config(**kw):
    base = dict(output_size=[48, 48], min_scale_sizes=[32, 40, 48], max_size=80,
                crop_short_edges=[32, 40], crop_range=[24, 40], max_instances=12,
                deterministic=True, seed=0, eval_short_edge=40, eval_max_size=64,
                eval_output_size=[48, 48], shuffle_buffer=4)
    base.update(kw)
    return DataConfig(**base)


def _target_set(t, b):
    masks, labels, valid = t["masks"][b].numpy(), t["labels"][b].numpy(), t["valid"][b].numpy()
    return {(int(labels[n]), masks[n].tobytes()) for n in range(len(valid)) if valid[n]}


@pytest.mark.parametrize("training", [False, True])
def test_pipeline_targets_match_ours_with_skip_crowd(ours, training):
    files, info = ours
    mg_config = _config(record_format="model_garden", dataset_info=info)
    (im_a, t_a), = pipeline.build_dataset(_config(), files, training, NUM_IMAGES).take(1)
    (im_b, t_b), = pipeline.build_dataset(mg_config, str(SKIP_CROWD), training,
                                          NUM_IMAGES).take(1)
    np.testing.assert_array_equal(im_a.numpy(), im_b.numpy())
    for key in ("image_id", "pixel_valid", "original_size", "image_size", "num_segments"):
        np.testing.assert_array_equal(t_a[key].numpy(), t_b[key].numpy(), err_msg=key)
    for b in range(NUM_IMAGES):
        assert _target_set(t_a, b) == _target_set(t_b, b)
    # The maps agree except on the crowd region: crowd in ours, void in theirs.
    crowd = t_a["crowd_map"].numpy()
    assert crowd.any() or training  # a crop may cut the crowd region away
    assert not t_b["crowd_map"].numpy().any()
    semantic_a, semantic_b = t_a["semantic_map"].numpy(), t_b["semantic_map"].numpy()
    np.testing.assert_array_equal(semantic_a[~crowd], semantic_b[~crowd])
    assert (semantic_b[crowd] == pipeline.IGNORE_LABEL).all()
    assert (semantic_a[crowd] != pipeline.IGNORE_LABEL).all()


def test_records_without_panoptic_masks_fail_with_the_key_file_and_flag(ours):
    config = _config(record_format="model_garden", dataset_info=ours[1])
    with pytest.raises(DataError) as e:
        pipeline.build_dataset(config, str(NO_MASKS), True, 2)
    message = str(e.value)
    assert "\n" not in message
    assert str(NO_MASKS) in message and model_garden.CATEGORY_MASK_KEY in message
    assert "--include_panoptic_masks" in message


def test_our_records_read_as_model_garden_name_the_right_format(ours):
    config = _config(record_format="model_garden", dataset_info=ours[1])
    with pytest.raises(DataError, match="set data.record_format=maskformer"):
        pipeline.build_dataset(config, ours[0], True, 2)


def test_a_later_record_without_masks_fails_in_tf_data_naming_the_key(ours, tmp_path):
    path = tmp_path / "mixed.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as w:
        w.write(next(iter(tf.data.TFRecordDataset(str(PANOPTIC)))).numpy())
        w.write(next(iter(tf.data.TFRecordDataset(str(NO_MASKS)))).numpy())
    ds = pipeline.build_dataset(_config(record_format="model_garden", dataset_info=ours[1]),
                                str(path), False, 1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="--include_panoptic_masks"):
        list(ds)


def test_train_command_reports_missing_masks_as_one_line(ours, tmp_path, capsys):
    from maskformer.cli import main

    code = main(["train", "--experiment", "maskformer_smoke", "--model-dir",
                 str(tmp_path / "run"), "--steps", "1", "--set",
                 "data.record_format=model_garden", f"data.dataset_info={ours[1]}",
                 f"data.train_files={NO_MASKS}", "model.num_classes=5"])
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert [line for line in lines if "error:" in line] == lines[-1:]
    assert "Traceback" not in err and "--include_panoptic_masks" in lines[-1]
