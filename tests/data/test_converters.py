"""Converters: exact round trips, determinism, atomic output and the bad-input reports."""

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from maskformer.cli import main
from maskformer.data import ade20k, coco_panoptic, records
from maskformer.data.converter import record_image_ids
from maskformer.data.records import DataError
from tests.data.conftest import rename_image_ids


def _read_all(pattern):
    files = sorted(tf.io.gfile.glob(pattern))
    assert files, pattern
    return [records.parse_record(s) for s in tf.data.TFRecordDataset(files)]


def _convert(root, out, **kw):
    return coco_panoptic.convert(root / "images/train", root / "annotations/panoptic_train.json",
                                 root / "annotations/panoptic_train", out, progress=False, **kw)


def test_coco_round_trip_reproduces_the_png_ids(shapes_dir, tmp_path):
    report = _convert(shapes_dir, tmp_path / "rec/train", num_shards=2)
    assert report.written == 6 and not report.skipped
    ann = json.loads((shapes_dir / "annotations/panoptic_train.json").read_text())
    info = records.read_dataset_info(tmp_path / "rec/dataset.json")
    to_contiguous = {c["original_id"]: c["id"] for c in info["categories"]}
    assert [c["original_id"] for c in info["categories"]] == [1, 2, 4, 7, 9]
    by_id = {a["image_id"]: a for a in ann["annotations"]}
    seen = set()
    for ex in _read_all(str(tmp_path / "rec/train-*")):
        image_id = int(ex["image_id"])
        seen.add(image_id)
        a = by_id[image_id]
        png = np.array(Image.open(shapes_dir / "annotations/panoptic_train" / a["file_name"]))
        expected = coco_panoptic.rgb_to_id(png)
        ids = np.concatenate([[0], ex["segment_ids"].numpy()])[ex["segment_map"].numpy()]
        np.testing.assert_array_equal(ids, expected)
        assert expected.max() > 255  # ids span more than one PNG channel
        segs = a["segments_info"]
        assert ex["segment_ids"].numpy().tolist() == [s["id"] for s in segs]
        assert ex["categories"].numpy().tolist() == [to_contiguous[s["category_id"]]
                                                     for s in segs]
        assert ex["areas"].numpy().tolist() == [s["area"] for s in segs]
        # The original decodes with PIL; the records must decode to the same pixels.
        jpeg = np.array(Image.open(shapes_dir / "images/train" / f"{image_id - 1:06d}.jpg"))
        np.testing.assert_array_equal(ex["image"].numpy(), jpeg)
    assert seen == set(by_id)


def test_string_image_ids_are_numbered_and_recorded(shapes_dir, shapes_copy, tmp_path):
    """Cityscapes' and ADE20K's panoptic exports name images by file stem: the records number
    them 1..N in the ids' string order and dataset.json maps the numbers back."""
    path = shapes_copy / "annotations/panoptic_train.json"
    name = {im["id"]: f"city_{7 - im['id']:02d}_x"
            for im in json.loads(path.read_text())["images"]}
    rename_image_ids(path, name)
    _convert(shapes_copy, tmp_path / "named/train")
    _convert(shapes_dir, tmp_path / "plain/train")
    split = records.read_dataset_info(tmp_path / "named/dataset.json")["splits"]["train"]
    assert split["image_ids"] == {str(i): n for i, n in enumerate(sorted(name.values()), 1)}
    plain = {int(ex["image_id"]): ex for ex in _read_all(str(tmp_path / "plain/train-*"))}
    named = _read_all(str(tmp_path / "named/train-*"))
    assert [int(ex["image_id"]) for ex in named] == list(range(1, len(name) + 1))
    original = {n: i for i, n in name.items()}
    for ex in named:
        twin = plain[original[split["image_ids"][str(int(ex["image_id"]))]]]
        np.testing.assert_array_equal(ex["segment_map"].numpy(), twin["segment_map"].numpy())
        np.testing.assert_array_equal(ex["image"].numpy(), twin["image"].numpy())
    assert "image_ids" not in records.read_dataset_info(
        tmp_path / "plain/dataset.json")["splits"]["train"]


def test_record_image_ids_keeps_integer_ids():
    images = [{"id": "12"}, {"id": 3}, {"id": 7}]
    ordered, ids, original = record_image_ids(images)
    assert [im["id"] for im in ordered] == [3, 7, "12"]
    assert ids == {"12": 12, 3: 3, 7: 7} and original == {}
    ordered, ids, original = record_image_ids([{"id": "b"}, {"id": 5}, {"id": "a"}])
    assert [im["id"] for im in ordered] == [5, "a", "b"]
    assert ids == {5: 1, "a": 2, "b": 3} and original == {"1": 5, "2": "a", "3": "b"}


def test_shards_are_deterministic_across_workers(shapes_dir, tmp_path):
    _convert(shapes_dir, tmp_path / "a/train", num_shards=3, num_workers=1)
    _convert(shapes_dir, tmp_path / "b/train", num_shards=3, num_workers=2)
    for name in records.shard_paths("train", 3):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_records_are_byte_identical_across_processes(tmp_path):
    """The feature map is written sorted, so two interpreters (different hash seeds) write the
    same bytes for the same sample."""
    import os
    import subprocess
    import sys

    code = ("import sys, numpy as np; from maskformer.data.records import Sample, "
            "serialize_sample; sys.stdout.buffer.write(serialize_sample(Sample(b'jpg', 'jpeg', "
            "2, 3, 7, 'a.jpg', np.ones((2, 3), np.int32), [1], [4], [0], [6])))")
    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "TF_CPP_MIN_LOG_LEVEL": "3"}
        outputs.append(subprocess.run([sys.executable, "-c", code], env=env, check=True,
                                      capture_output=True, cwd=Path(__file__).parents[2]).stdout)
    example = tf.train.Example.FromString(outputs[0])
    assert example.features.feature["image/id"].int64_list.value == [7]
    assert outputs[0] == outputs[1]


def test_shapes_generation_is_deterministic_per_seed(tmp_path):
    from maskformer.data import shapes

    p1 = shapes.generate(tmp_path / "a", 3, 0, 32, seed=5, progress=False)["train"]
    p2 = shapes.generate(tmp_path / "b", 3, 0, 32, seed=5, progress=False)["train"]
    p3 = shapes.generate(tmp_path / "c", 3, 0, 32, seed=6, progress=False)["train"]
    assert p1.annotations.read_bytes() == p2.annotations.read_bytes()
    assert (p1.images / "000002.jpg").read_bytes() == (p2.images / "000002.jpg").read_bytes()
    assert (p1.images / "000002.jpg").read_bytes() != (p3.images / "000002.jpg").read_bytes()


def _break_inputs(root):
    """Makes one image of each kind of bad input; returns {kind: file name}."""
    ann_path = root / "annotations/panoptic_train.json"
    ann = json.loads(ann_path.read_text())
    masks, images = root / "annotations/panoptic_train", root / "images/train"
    a = {x["image_id"]: x for x in ann["annotations"]}
    (images / "000000.jpg").unlink()  # image 1: missing image
    (images / "000001.jpg").write_bytes(b"\xff\xd8\xffnot really a jpeg")  # image 2: corrupt
    (masks / a[3]["file_name"]).unlink()  # image 3: missing PNG
    a[4]["segments_info"] = a[4]["segments_info"][1:]  # image 4: a PNG segment not in JSON
    a[5]["segments_info"][0]["category_id"] = 999  # image 5: unknown category
    png = Image.open(masks / a[6]["file_name"])  # image 6: size mismatch
    png.resize((png.width + 3, png.height)).save(masks / a[6]["file_name"])
    ann_path.write_text(json.dumps(ann))
    return {"missing image": "000000.jpg", "corrupt image": "000001.jpg",
            "missing mask": a[3]["file_name"], "segment not in annotation": a[4]["file_name"],
            "unknown category": a[5]["file_name"], "size mismatch": a[6]["file_name"]}


def test_bad_inputs_are_reported_skipped_and_counted(shapes_copy, tmp_path):
    expected = _break_inputs(shapes_copy)
    lines = []
    report = _convert(shapes_copy, tmp_path / "rec/train", log=lines.append)
    assert report.written == 0
    assert dict(report.skipped) == {k: 1 for k in expected}
    for kind, name in expected.items():
        assert any(name in line for line in lines), (kind, lines)
    assert "size mismatch: 1" in report.summary()


def test_segment_listed_but_absent_from_png(shapes_copy, tmp_path):
    ann_path = shapes_copy / "annotations/panoptic_train.json"
    ann = json.loads(ann_path.read_text())
    ann["annotations"][0]["segments_info"].append(
        {"id": 123456, "category_id": 1, "iscrowd": 0, "area": 5})
    ann_path.write_text(json.dumps(ann))
    report = _convert(shapes_copy, tmp_path / "rec/train")
    assert report.skipped == {"segment not in mask": 1} and report.written == 5
    assert "123456" in report.problems[0]


def test_strict_fails_and_leaves_no_shards(shapes_copy, tmp_path):
    _break_inputs(shapes_copy)
    with pytest.raises(DataError, match="000000.jpg: image file not found"):
        _convert(shapes_copy, tmp_path / "rec/train", strict=True, num_shards=2)
    assert not list((tmp_path / "rec").glob("*")), "partial output left behind"


def test_cli_shapes_then_strict_error_without_traceback(tmp_path, capsys):
    assert main(["data", "shapes", "--out", str(tmp_path / "s"), "--num-images", "3",
                 "--num-val", "1", "--size", "32", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "train: wrote 3 records" in out and "val: wrote 1 records" in out
    assert len(list((tmp_path / "s/records").glob("train-*.tfrecord"))) == 1
    (tmp_path / "s/images/train/000001.jpg").write_bytes(b"garbage")
    assert main([
        "data", "coco-panoptic", "--images", str(tmp_path / "s/images/train"),
        "--annotations", str(tmp_path / "s/annotations/panoptic_train.json"),
        "--masks", str(tmp_path / "s/annotations/panoptic_train"),
        "--out", str(tmp_path / "r/train"), "--strict", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "000001.jpg" in err and "Traceback" not in err
    assert main(["data", "coco-panoptic", "--images", str(tmp_path / "nope"),
                 "--annotations", "x.json", "--masks", str(tmp_path),
                 "--out", str(tmp_path / "r/x")]) == 2
    assert "nope: images folder not found" in capsys.readouterr().err


def _write_ade(root: Path):
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    labels = []
    for i in range(3):
        label = rng.choice(np.array([0, 1, 17, 150], np.uint8), size=(12, 10))
        Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).save(
            root / "images" / f"ADE_{i}.jpg")
        Image.fromarray(label).save(root / "labels" / f"ADE_{i}.png")
        labels.append(label)
    return labels


def test_ade20k_round_trip_and_unknown_label(tmp_path):
    labels = _write_ade(tmp_path / "ade")
    bad = labels[2].copy()
    bad[0, 0] = 151
    Image.fromarray(bad).save(tmp_path / "ade/labels/ADE_2.png")
    lines = []
    report = ade20k.convert(tmp_path / "ade/images", tmp_path / "ade/labels",
                            tmp_path / "rec/train", progress=False, log=lines.append)
    assert report.written == 2 and report.skipped == {"unknown category": 1}
    assert "ADE_2.png" in lines[0] and "151" in lines[0]
    for ex, label in zip(_read_all(str(tmp_path / "rec/train-*")), labels, strict=False):
        semantic = np.concatenate([[255], ex["categories"].numpy()])[ex["segment_map"].numpy()]
        np.testing.assert_array_equal(semantic, np.where(label == 0, 255, label.astype(int) - 1))
    info = records.read_dataset_info(tmp_path / "rec/dataset.json")
    assert len(info["categories"]) == 150 and info["categories"][149]["original_id"] == 150
