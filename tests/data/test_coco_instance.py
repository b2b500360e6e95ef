"""COCO instance segmentation converter: masks exactly as pycocotools decodes them, the overlap
rule and what it costs, crowd flags, categories, determinism across workers, bad inputs and the
targets the pipeline builds from the records."""

import json
import shutil

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from pycocotools import mask as mask_utils

from maskformer.config import DataConfig
from maskformer.data import coco_instance, coco_panoptic, pipeline, records
from maskformer.data.records import DataError
from tests.data.conftest import rename_image_ids

H, W = 40, 56
# Original category ids, deliberately unsorted and not contiguous: 1 -> 0, 3 -> 1, 7 -> 2.
CATEGORIES = [{"id": 7, "name": "kite", "supercategory": "sports"},
              {"id": 1, "name": "person", "supercategory": "person"},
              {"id": 3, "name": "car", "supercategory": "vehicle"}]
TO_CONTIGUOUS = {1: 0, 3: 1, 7: 2}
TWO_POINTS = [[2, 35, 50, 38]]  # encloses nothing; pycocotools alone takes it for a box


def _box(y0, y1, x0, x1, h=H, w=W):
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def _compressed(m):
    rle = mask_utils.encode(np.asfortranarray(m))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def _uncompressed(m):
    """COCO's crowd format, written here without pycocotools: run lengths over the
    column-major pixels, starting with background."""
    flat = np.asarray(m, np.uint8).ravel(order="F")
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0] + counts
    return {"size": list(m.shape), "counts": counts}


def _ann(ann_id, image_id, category_id, segmentation, iscrowd=0):
    return {"id": ann_id, "image_id": image_id, "category_id": category_id,
            "segmentation": segmentation, "iscrowd": iscrowd, "area": 0.0, "bbox": [0, 0, 1, 1]}


ANNOTATIONS = [
    # Image 10: a polygon person; a small car (compressed RLE) inside it stays whole; a crowd
    # kite (uncompressed RLE) smaller than the person but below it: it keeps only what no
    # instance covers; a two-point polygon, which has no pixel.
    _ann(101, 10, 1, [[5, 5, 40, 5, 40, 30, 5, 30]]),
    _ann(102, 10, 3, _compressed(_box(10, 18, 12, 22))),
    _ann(103, 10, 7, _uncompressed(_box(20, 34, 34, 48)), iscrowd=1),
    _ann(104, 10, 1, TWO_POINTS),
    # Image 20: the car 201 is covered by the smaller 202 and 203 together (hidden); 204
    # repeats 202 and loses the tie to the earlier annotation (hidden); 205 is two polygons.
    _ann(201, 20, 3, _compressed(_box(10, 21, 10, 31))),
    _ann(202, 20, 1, _compressed(_box(10, 21, 10, 20))),
    _ann(203, 20, 7, _uncompressed(_box(10, 21, 20, 31))),
    _ann(204, 20, 1, _compressed(_box(10, 21, 10, 20))),
    _ann(205, 20, 7, [[40, 30, 50, 30, 50, 38, 40, 38], [0, 0, 6, 0, 6, 6, 0, 6]]),
    # Image 30 has no annotation. Image 40 (bad input): an RLE sized for another image.
    _ann(401, 40, 1, _compressed(_box(0, 5, 0, 5, H, W - 6))),
]
IMAGE_NAMES = {10: "000000000010.jpg", 20: "000000000020.png", 30: "000000000030.jpg",
               40: "000000000040.png"}


def _write_fixture(root):
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = []
    for image_id, name in IMAGE_NAMES.items():
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(
            root / "images" / name)
        images.append({"id": image_id, "file_name": name, "height": H, "width": W})
    path = root / "instances_train.json"
    path.write_text(json.dumps({"info": {}, "licenses": [], "images": images[::-1],
                                "annotations": ANNOTATIONS, "categories": CATEGORIES}))


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco_instance")
    _write_fixture(root)
    return root


@pytest.fixture
def coco_copy(coco_dir, tmp_path):
    dst = tmp_path / "coco"
    shutil.copytree(coco_dir, dst)
    return dst


def _convert(root, out, **kw):
    return coco_instance.convert(root / "images", root / "instances_train.json", out,
                                 progress=False, **kw)


@pytest.fixture(scope="module")
def converted(coco_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("rec") / "train"
    lines = []
    report = _convert(coco_dir, out, log=lines.append)
    return out, report, lines


def _read(prefix):
    files = sorted(tf.io.gfile.glob(records.shard_pattern(prefix)))
    assert files, prefix
    return {int(ex["image_id"]): ex
            for ex in map(records.parse_record, tf.data.TFRecordDataset(files))}


def _reference_mask(segmentation):
    """The mask as `COCO.annToMask` decodes it, with polygons of < 3 points left out."""
    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if len(p) >= 6]
        if not polygons:
            return np.zeros((H, W), bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, H, W))
    elif isinstance(segmentation["counts"], list):
        rle = mask_utils.frPyObjects(segmentation, H, W)
    else:
        rle = segmentation
    return mask_utils.decode(rle).astype(bool)


def _reference_resolution(masks, iscrowd):
    """Pixel by pixel: the covering instance with the smallest (crowd, own pixels, index)."""
    keys = [(c, int(m.sum()), k) for k, (m, c) in enumerate(zip(masks, iscrowd, strict=True))]
    expected = np.zeros((H, W), np.int64)
    for y in range(H):
        for x in range(W):
            covering = [keys[k] for k in range(len(masks)) if masks[k][y, x]]
            if covering:
                expected[y, x] = min(covering)[2] + 1
    return expected


def test_records_match_pycocotools_masks_after_the_overlap_rule(coco_dir, converted):
    out, report, _ = converted
    assert report.written == 3 and dict(report.skipped) == {"size mismatch": 1}
    examples = _read(out)
    assert sorted(examples) == [10, 20, 30]
    total_overlap = 0
    for image_id, ex in examples.items():
        anns = [a for a in ANNOTATIONS if a["image_id"] == image_id]
        masks = [_reference_mask(a["segmentation"]) for a in anns]
        crowd = [a["iscrowd"] for a in anns]
        expected = _reference_resolution(masks, crowd)
        np.testing.assert_array_equal(ex["segment_map"].numpy(), expected)
        assert ex["segment_ids"].numpy().tolist() == [a["id"] for a in anns]
        assert ex["categories"].numpy().tolist() == [TO_CONTIGUOUS[a["category_id"]]
                                                     for a in anns]
        assert ex["iscrowd"].numpy().tolist() == [bool(c) for c in crowd]
        assert ex["areas"].numpy().tolist() == [int((expected == k + 1).sum())
                                                for k in range(len(anns))]
        overlap = int((sum(m.astype(int) for m in masks) > 1).sum()) if masks else 0
        assert report.images[image_id].overlap_pixels == overlap
        total_overlap += overlap
        image = np.array(Image.open(coco_dir / "images" / IMAGE_NAMES[image_id]))
        np.testing.assert_array_equal(ex["image"].numpy(), image)
    # The rule, by hand.
    smap = examples[10]["segment_map"].numpy()
    assert (smap[10:18, 12:22] == 2).all()  # the car inside the person stays whole
    assert smap[25, 37] == 1 and smap[25, 45] == 3  # the crowd region only where no one is
    assert (_reference_mask(ANNOTATIONS[2]["segmentation"]).sum()
            < _reference_mask(ANNOTATIONS[0]["segmentation"]).sum())  # ... though smaller
    with pytest.raises(TypeError):  # pycocotools alone takes 4 numbers for a box
        mask_utils.frPyObjects(TWO_POINTS, H, W)
    assert examples[10]["areas"].numpy().tolist()[3] == 0  # the two-point polygon: no pixel
    assert examples[20]["areas"].numpy().tolist() == [0, 110, 121, 0, 80 + 36]
    assert not examples[30]["segment_map"].numpy().any()
    assert examples[30]["segment_ids"].numpy().tolist() == []
    assert report.overlap_pixels == total_overlap > 0
    assert report.images_with_overlap == 2
    assert report.hidden_ids == [201, 204] and report.hidden_crowd_ids == []
    assert report.empty_ids == [104]
    assert report.images_without_annotations == 1


def test_summary_log_and_dataset_info(converted):
    out, report, lines = converted
    assert lines[0].startswith("skipped ") and IMAGE_NAMES[40] in lines[0]
    assert "annotation 401" in lines[0] and "RLE size is 50x40" in lines[0]
    assert any(IMAGE_NAMES[20] in line and "201, 204 lost every pixel" in line
               for line in lines)
    assert any(IMAGE_NAMES[10] in line and "104 have no pixel" in line for line in lines)
    summary = report.summary().splitlines()
    assert summary[:3] == ["wrote 3 records to 1 shard(s)", "skipped 1 image(s):",
                           "  size mismatch: 1"]
    assert summary[3] == (f"overlap: {report.overlap_pixels} pixel(s) in 2 image(s) covered by "
                          "more than one instance (smallest first, crowd last)")
    assert summary[4].startswith("hidden: 2 instance(s) and 0 crowd region(s)")
    assert summary[5].startswith("empty: 1 instance(s)")
    assert summary[6].startswith("without annotations: 1 image(s)")

    info = records.read_dataset_info(out.parent / "dataset.json")
    assert info["dataset"] == "coco_instance"
    assert [(c["id"], c["original_id"], c["name"], c["isthing"]) for c in info["categories"]] \
        == [(0, 1, "person", 1), (1, 3, "car", 1), (2, 7, "kite", 1)]
    # Colours as the panoptic converter derives them (from the original id).
    assert [c["color"] for c in info["categories"]] == [
        c["color"] for c in coco_panoptic.categories_from_annotations(CATEGORIES)]
    split = info["splits"]["train"]
    assert split["num_records"] == 3 and split["skipped"] == {"size mismatch": 1}
    assert split["overlap_pixels"] == report.overlap_pixels
    assert (split["hidden_instances"], split["hidden_crowd"], split["empty_instances"]) \
        == (2, 0, 1)
    assert split["hidden_annotation_ids"] == [201, 204]
    assert split["empty_annotation_ids"] == [104]
    assert split["images_without_annotations"] == 1


def test_resolve_overlaps_rule():
    big, left, right = _box(0, 4, 0, 8, 4, 8), _box(0, 4, 0, 4, 4, 8), _box(0, 4, 4, 8, 4, 8)
    crowd = _box(0, 2, 0, 2, 4, 8)
    smap, overlap = coco_instance.resolve_overlaps(
        [m.astype(bool) for m in (big, crowd, right, left, left)], [0, 1, 0, 0, 0], 4, 8)
    # The big one is covered by two smaller ones; the crowd region, the smallest mask, comes
    # last all the same; the repeated `left` (index 5) loses the tie to index 4.
    np.testing.assert_array_equal(smap, np.where(right, 3, 4))
    assert overlap == 32
    smap, overlap = coco_instance.resolve_overlaps([], [], 4, 8)
    assert smap.shape == (4, 8) and not smap.any() and overlap == 0


def test_decode_segmentation_edge_cases():
    decode = coco_instance.decode_segmentation
    mask = _box(3, 9, 4, 7)
    for segmentation in (_compressed(mask), _uncompressed(mask)):
        np.testing.assert_array_equal(decode(segmentation, H, W), mask.astype(bool))
    # Compressed RLEs whose runs stop short of or run past the image, found every time
    # (pycocotools leaves the pixels past short runs uninitialised).
    short = mask_utils.frPyObjects({"counts": [5, 10], "size": [H, W]}, H, W)["counts"]
    too_long = mask_utils.frPyObjects({"counts": [5, H * W], "size": [H, W]}, H, W)["counts"]
    bad = [({"counts": short.decode(), "size": [H, W]}, "corrupt annotation"),
           ({"counts": too_long, "size": [H, W]}, "corrupt annotation"),
           ({"counts": [5, 10], "size": [H, W]}, "corrupt annotation"),  # must add up to H*W
           ({"counts": [H * W], "size": [H, W + 1]}, "size mismatch"),
           ([[0, 0, 4, 0, 4]], "corrupt annotation"),  # odd length
           ({"size": [H, W]}, "corrupt annotation")]
    for segmentation, kind in bad * 3:
        with pytest.raises(coco_instance._Malformed) as e:
            decode(segmentation, H, W)
        assert e.value.kind == kind, segmentation
    assert not decode([], H, W).any()


def test_shards_identical_with_one_and_two_workers(coco_dir, tmp_path):
    # Image 40 is a bad input: it also crosses from a worker process to this one.
    reports = [_convert(coco_dir, tmp_path / f"{w}/train", num_shards=2, num_workers=w,
                        log=lambda line: None) for w in (1, 2)]
    for name in records.shard_paths("train", 2):
        assert (tmp_path / "1" / name).read_bytes() == (tmp_path / "2" / name).read_bytes()
    assert reports[0].as_dict() == reports[1].as_dict()
    assert reports[0].images == reports[1].images
    assert reports[1].skipped == {"size mismatch": 1}
    assert (tmp_path / "1/dataset.json").read_text() == (tmp_path / "2/dataset.json").read_text()


def _break_inputs(root):
    """Adds one bad input of each kind; returns {kind: text expected in its report line}."""
    path = root / "instances_train.json"
    ann = json.loads(path.read_text())
    (root / "images" / IMAGE_NAMES[10]).unlink()
    (root / "images" / IMAGE_NAMES[30]).write_bytes(b"\xff\xd8\xffnot a jpeg")
    ann["annotations"][5]["category_id"] = 99  # image 20
    ann["annotations"].append(_ann(999, 77, 1, [[0, 0, 4, 0, 4, 4]]))
    for image_id, height in ((50, H), (60, H + 1)):
        name = f"{image_id:012d}.jpg"
        ann["images"].append({"id": image_id, "file_name": name, "height": height, "width": W})
        Image.new("RGB", (W, H)).save(root / "images" / name)
    ann["annotations"].append(_ann(501, 50, 1, [[0, 0, 4]]))  # a polygon of odd length
    path.write_text(json.dumps(ann))
    return {"missing image": IMAGE_NAMES[10], "corrupt image": IMAGE_NAMES[30],
            "unknown category": "category_id 99", "unknown image": "image_id 77",
            "corrupt annotation": "annotation 501", "size mismatch": "000000000060.jpg"}


def test_bad_inputs_are_counted_and_strict_stops(coco_copy, tmp_path):
    expected = _break_inputs(coco_copy)
    lines = []
    report = _convert(coco_copy, tmp_path / "rec/train", num_workers=2, log=lines.append)
    assert report.written == 0
    # Two size mismatches: image 40's RLE and image 60 against its JSON height.
    assert dict(report.skipped) == {**{k: 1 for k in expected}, "size mismatch": 2}
    for kind, text in expected.items():
        assert any(line.startswith("skipped ") and text in line for line in lines), (kind, lines)
    assert "skipped 6 image(s):" in report.summary()
    assert "skipped 1 annotation(s):\n  unknown image: 1" in report.summary()
    with pytest.raises(DataError, match="image_id 77.*--strict"):
        _convert(coco_copy, tmp_path / "strict/train", strict=True)


def test_strict_leaves_no_shards_and_wrong_files_are_named(coco_copy, tmp_path):
    path = coco_copy / "instances_train.json"
    (coco_copy / "images" / IMAGE_NAMES[20]).unlink()
    with pytest.raises(DataError, match="000000000020.png: image file not found"):
        _convert(coco_copy, tmp_path / "r/train", strict=True, num_shards=2)
    assert not list((tmp_path / "r").glob("*")), "partial output left behind"
    ann = json.loads(path.read_text())
    path.write_text(json.dumps({**ann, "annotations": [
        {"image_id": 10, "file_name": "x.png", "segments_info": []}]}))
    with pytest.raises(DataError, match="a COCO panoptic file"):
        _convert(coco_copy, tmp_path / "r/train")
    path.write_text(json.dumps({**ann, "annotations": [
        {"id": 1, "image_id": 10, "category_id": 1, "bbox": [0, 0, 2, 2]}]}))
    with pytest.raises(DataError, match="no 'segmentation' .a detection-only file"):
        _convert(coco_copy, tmp_path / "r/train")


def test_pipeline_targets_are_the_non_crowd_instances(converted):
    out, _, _ = converted
    examples = _read(out)
    config = DataConfig(dataset="coco_instance", augmentation="none", output_size=[48, 64],
                        max_instances=8, deterministic=True, seed=0, shuffle_buffer=1)
    ds = pipeline.build_dataset(config, str(out) + "-*", training=True, batch_size=1)
    # One target per non-crowd instance in annotation order (segment index, label); hidden and
    # empty instances (no pixel in the map) give no target. Image 10's crowd region 103 is no
    # target.
    expected = {10: ([1, 2, 4], [0, 1, 0]), 20: ([1, 2, 3, 4, 5], [1, 0, 2, 0, 2]),
                30: ([], [])}
    seen = set()
    for _, t in ds.take(3):
        image_id = int(t["image_id"][0])
        seen.add(image_id)
        index, labels = expected[image_id]
        smap = examples[image_id]["segment_map"].numpy()
        kept = [(k, c) for k, c in zip(index, labels, strict=True) if (smap == k).any()]
        assert image_id != 20 or len(kept) < len(index)  # a hidden instance is dropped
        index, labels = [k for k, _ in kept], [c for _, c in kept]
        valid = t["valid"][0].numpy()
        assert valid.tolist() == [True] * len(index) + [False] * (8 - len(index))
        assert t["labels"][0].numpy()[: len(index)].tolist() == labels
        masks = t["masks"][0].numpy()
        assert not masks[:, H:].any() and not masks[:, :, W:].any()
        for slot, k in enumerate(index):
            np.testing.assert_array_equal(masks[slot, :H, :W] > 0, smap == k)
        assert not masks[~valid].any()
        np.testing.assert_array_equal(t["crowd_map"][0].numpy()[:H, :W],
                                      smap == 3 if image_id == 10 else np.zeros_like(smap, bool))
    assert seen == {10, 20, 30}


def test_string_image_ids_give_the_same_records(coco_copy, converted, tmp_path):
    """ADE20K's instance export (Mask2Former's prepare_ade20k_ins_seg.py) names images by file
    stem: the records are numbered 1..N in string order and equal those of integer ids."""
    name = {image_id: f"ADE_{image_id:04d}" for image_id in IMAGE_NAMES}
    rename_image_ids(coco_copy / "instances_train.json", name)
    _convert(coco_copy, tmp_path / "named/train")
    split = records.read_dataset_info(tmp_path / "named/dataset.json")["splits"]["train"]
    assert split["image_ids"] == {str(i): name[k] for i, k in enumerate(sorted(name), 1)}
    plain, named = _read(converted[0]), _read(tmp_path / "named/train")
    assert sorted(named) == [i for i, k in enumerate(sorted(name), 1) if k in plain]
    for i, k in enumerate(sorted(name), 1):
        if k in plain:
            for key in ("segment_map", "categories", "image"):
                np.testing.assert_array_equal(named[i][key].numpy(), plain[k][key].numpy())
