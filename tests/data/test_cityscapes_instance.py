"""Cityscapes instance converter (``*_gtFine_instanceIds.png``): a tiny tree in the dataset's own
layout, 16-bit label PNGs, and records checked against segments written out by hand here from
Cityscapes' value rules (v >= 1000: instance of label v // 1000; v < 1000: the label's group,
a crowd region; only the 8 evaluated instance labels give segments)."""

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from maskformer.cli import main
from maskformer.config import DataConfig
from maskformer.data import cityscapes_instance, pipeline, records
from maskformer.data.categories import builtin_categories
from maskformer.data.records import DataError

H, W = 24, 32
# Contiguous ids of cityscapes_instance_8: 24 person 0, 25 rider 1, 26 car 2, 27 truck 3,
# 28 bus 4, 31 train 5, 32 motorcycle 6, 33 bicycle 7.
# Per image: (city, stem, label values used, expected segments (value, category, iscrowd) in
# increasing value order). Void: 0 unlabeled, 1 ego vehicle, 7 road, 8 sidewalk, 11 building,
# 23 sky, 29001 a caravan instance, 30 a trailer group, 30000 a trailer instance, 7001 a
# road "instance" (a label without instances); the crowd regions are 24 and 26.
IMAGES = [
    ("aachen", "aachen_000000_000019",
     [0, 1, 7, 23, 24, 26, 24000, 24001, 25003, 26000, 27001, 29001, 33002],
     [(24, 0, 1), (26, 2, 1), (24000, 0, 0), (24001, 0, 0), (25003, 1, 0), (26000, 2, 0),
      (27001, 3, 0), (33002, 7, 0)]),
    ("aachen", "aachen_000001_000019",
     [8, 30, 7001, 26001, 26002, 28000, 31000, 32000, 33000],
     [(26001, 2, 0), (26002, 2, 0), (28000, 4, 0), (31000, 5, 0), (32000, 6, 0),
      (33000, 7, 0)]),
    ("bochum", "bochum_000000_000313", [0, 7, 11, 23, 29001, 30000], []),  # no instance
]
IMAGE_IDS = {"1": "aachen_000000_000019", "2": "aachen_000001_000019",
             "3": "bochum_000000_000313"}


def _paths(root: Path, city: str, stem: str, split: str = "train") -> tuple[Path, Path]:
    return (root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
            root / "gtFine" / split / city / f"{stem}_gtFine_instanceIds.png")


def _save_ids(values: np.ndarray, path: Path) -> None:
    """A 16-bit single-channel PNG, as cityscapesScripts writes the instanceIds files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint16)).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I") and np.array(im).max() == values.max()


def _write_tree(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Writes the images and labels of `IMAGES`; returns stem -> (image, label values)."""
    arrays = {}
    for i, (city, stem, values, _) in enumerate(IMAGES):
        rng = np.random.default_rng(i)
        image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        label = rng.choice(np.array(values), size=(H, W))
        label.flat[: len(values)] = values  # every value at least once
        image_path, label_path = _paths(root, city, stem)
        image_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(image_path)
        _save_ids(label, label_path)
        arrays[stem] = (image, label)
    return arrays


def _read(prefix: Path) -> dict[int, dict]:
    files = sorted(tf.io.gfile.glob(records.shard_pattern(prefix)))
    assert files, prefix
    out = {}
    for raw in tf.data.TFRecordDataset(files):
        ex = {k: v.numpy() for k, v in records.parse_record(raw).items()}
        ex["filename"] = tf.train.Example.FromString(raw.numpy()).features.feature[
            "image/filename"].bytes_list.value[0].decode()
        out[int(ex["image_id"])] = ex
    return out


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("cityscapes")
    arrays = _write_tree(root)
    out = root / "rec" / "train"
    report = cityscapes_instance.convert(root, "train", out, num_shards=2, num_workers=2,
                                         progress=False)
    return root, arrays, out, report


def test_records_hold_the_instances_and_crowd_regions(converted):
    _, arrays, out, report = converted
    assert report.written == 3 and not report.skipped
    assert len(report.shards) == 2
    decoded = _read(out)
    assert sorted(decoded) == [1, 2, 3]
    for image_id, (_, stem, _, segments) in zip((1, 2, 3), IMAGES, strict=True):
        ex = decoded[image_id]
        image, label = arrays[stem]
        assert ex["filename"] == f"{stem}_leftImg8bit.png"
        np.testing.assert_array_equal(ex["image"], image)  # the label went with its image
        expected_map = np.zeros((H, W), np.int64)
        for k, (value, _, _) in enumerate(segments, start=1):
            expected_map[label == value] = k
        np.testing.assert_array_equal(ex["segment_map"], expected_map)
        assert ex["segment_ids"].tolist() == [v for v, _, _ in segments]
        assert ex["categories"].tolist() == [c for _, c, _ in segments]
        assert ex["iscrowd"].astype(int).tolist() == [z for _, _, z in segments]
        assert ex["areas"].tolist() == [int((label == v).sum()) for v, _, _ in segments]
        assert (ex["height"], ex["width"]) == (H, W)
    # The caravan instance, the trailer and every stuff label are void.
    smap, label = decoded[1]["segment_map"], arrays["aachen_000000_000019"][1]
    assert not smap[np.isin(label, [0, 1, 7, 23, 29001])].any()
    assert not decoded[3]["segment_map"].any() and decoded[3]["categories"].size == 0


def test_dataset_info(converted):
    root, _, out, _ = converted
    info = records.read_dataset_info(out.parent / "dataset.json")
    assert info["dataset"] == "coco_instance"
    assert info["categories"] == builtin_categories("cityscapes_instance_8")
    assert [(c["id"], c["original_id"]) for c in info["categories"]] == [
        (0, 24), (1, 25), (2, 26), (3, 27), (4, 28), (5, 31), (6, 32), (7, 33)]
    split = info["splits"]["train"]
    assert split["num_records"] == 3 and split["skipped"] == {}
    assert split["image_ids"] == IMAGE_IDS
    assert split["source"] == {"root": str(root), "split": "train"}


def test_pipeline_targets_are_the_instances(converted):
    _, arrays, out, _ = converted
    config = DataConfig(dataset="coco_instance", augmentation="none", output_size=[H, W],
                        max_instances=8, deterministic=True, seed=0, shuffle_buffer=1)
    ds = pipeline.build_dataset(config, str(out) + "-*", training=True, batch_size=1)
    seen = set()
    for _, t in ds.take(3):
        image_id = int(t["image_id"][0])
        seen.add(image_id)
        _, stem, _, segments = IMAGES[image_id - 1]
        label = arrays[stem][1]
        instances = [(v, c) for v, c, crowd in segments if not crowd]
        valid = t["valid"][0].numpy()
        assert valid.tolist() == [True] * len(instances) + [False] * (8 - len(instances))
        assert t["labels"][0].numpy()[: len(instances)].tolist() == [c for _, c in instances]
        for slot, (value, _) in enumerate(instances):
            np.testing.assert_array_equal(t["masks"][0, slot].numpy() > 0, label == value)
        crowd_values = [v for v, _, crowd in segments if crowd]
        np.testing.assert_array_equal(t["crowd_map"][0].numpy(), np.isin(label, crowd_values))
    assert seen == {1, 2, 3}


def test_unknown_values_and_missing_labels_are_skipped(tmp_path):
    arrays = _write_tree(tmp_path)
    for (city, stem, _, _), bad in zip(IMAGES[1:], (40001, 40), strict=True):
        label = arrays[stem][1].copy()
        label[3, 5] = bad  # label id 40 / value 40: no Cityscapes label id
        _save_ids(label, _paths(tmp_path, city, stem)[1])
    orphan, _ = _paths(tmp_path, "bochum", "bochum_000001_000100")
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(orphan)
    lines = []
    report = cityscapes_instance.convert(tmp_path, "train", tmp_path / "rec/train",
                                         progress=False, log=lines.append)
    assert report.written == 1
    assert dict(report.skipped) == {"unknown category": 2, "missing label": 1}
    assert any("aachen_000001_000019_gtFine_instanceIds.png" in line and "[40001]" in line
               for line in lines), lines
    assert any("bochum_000000_000313_gtFine_instanceIds.png" in line and "[40]" in line
               for line in lines), lines
    assert any("bochum_000001_000100_gtFine_instanceIds.png" in line for line in lines), lines
    assert list(_read(tmp_path / "rec/train")) == [1]
    split = records.read_dataset_info(tmp_path / "rec/dataset.json")["splits"]["train"]
    # Ids number every image found, skipped ones included (stem order).
    assert split["image_ids"] == {**IMAGE_IDS, "4": "bochum_000001_000100"}
    with pytest.raises(DataError, match=r"aachen_000001_000019_gtFine_instanceIds.png.*"
                                        r"\[40001\].*--strict"):
        cityscapes_instance.convert(tmp_path, "train", tmp_path / "strict/train",
                                    strict=True, progress=False)
    assert not (tmp_path / "strict").exists() or not list((tmp_path / "strict").glob("*"))


def test_missing_folders_and_no_images(tmp_path):
    with pytest.raises(DataError, match="leftImg8bit/train: images folder not found"):
        cityscapes_instance.convert(tmp_path, "train", tmp_path / "r/train", progress=False)
    (tmp_path / "leftImg8bit/val/aachen").mkdir(parents=True)
    with pytest.raises(DataError, match="gtFine/val: labels folder not found"):
        cityscapes_instance.convert(tmp_path, "val", tmp_path / "r/val", progress=False)
    (tmp_path / "gtFine/val").mkdir(parents=True)
    with pytest.raises(DataError, match="no .jpg/.png images ending in _leftImg8bit"):
        cityscapes_instance.convert(tmp_path, "val", tmp_path / "r/val", progress=False)


def test_cli(tmp_path, capsys):
    _write_tree(tmp_path / "cs")
    args = ["data", "cityscapes-instance", "--root", str(tmp_path / "cs"), "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "rec/train")]) == 0
    assert "wrote 3 records to 1 shard(s)\nskipped 0 image(s)" in capsys.readouterr().out
    assert (tmp_path / "rec/train-00000-of-00001.tfrecord").is_file()
    info = json.loads((tmp_path / "rec/dataset.json").read_text())
    assert info["dataset"] == "coco_instance" and info["splits"]["train"]["image_ids"] \
        == IMAGE_IDS

    assert main(["data", "cityscapes-instance", "--root", str(tmp_path / "nope"),
                 "--out", str(tmp_path / "r2/train")]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in err
    assert "nope/leftImg8bit/train: images folder not found" in errors[0]

    city, stem, _, _ = IMAGES[0]
    label_path = _paths(tmp_path / "cs", city, stem)[1]
    label = np.array(Image.open(label_path))
    label[0, 0] = 40
    _save_ids(label, label_path)
    assert main([*args, "--out", str(tmp_path / "r3/train"), "--strict"]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in err
    assert f"{stem}_gtFine_instanceIds.png" in errors[0] and "[40]" in errors[0]
    assert main([*args, "--out", str(tmp_path / "r4/train")]) == 0
    assert "wrote 2 records" in capsys.readouterr().out
