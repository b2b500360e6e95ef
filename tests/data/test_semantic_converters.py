"""Semantic label converters: the general one and the dataset presets, on tiny fixtures written
in each dataset's own layout. Expected class maps are computed here from the datasets' rules,
not through the converters' lookup tables."""

import json
import pickle
import signal
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import tensorflow as tf
from PIL import Image

from maskformer.cli import main
from maskformer.data import records, semantic, semantic_datasets
from maskformer.data.categories import builtin_categories
from maskformer.data.records import DataError

H, W = 24, 32
VOID = 255


def _image(path: Path, seed: int, size=(H, W)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)


def _labels(values, seed: int, size=(H, W)) -> np.ndarray:
    """A label map using every value of `values` at least once."""
    rng = np.random.default_rng(seed)
    label = rng.choice(np.array(values), size=size)
    label.flat[: len(values)] = values
    return label


def _save(array: np.ndarray, path: Path, mode=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path) if mode else Image.fromarray(array).save(path)


def _semantic_maps(prefix: Path) -> list[tuple[str, np.ndarray, dict]]:
    """(file name, class map with VOID, decoded record) for every record, in record order."""
    files = sorted(tf.io.gfile.glob(str(prefix) + "-*.tfrecord"))
    assert files, prefix
    out = []
    for raw in tf.data.TFRecordDataset(files):
        ex = records.parse_record(raw)
        name = tf.train.Example.FromString(raw.numpy()).features.feature[
            "image/filename"].bytes_list.value[0].decode()
        cats = ex["categories"].numpy()
        assert cats.tolist() == sorted(cats.tolist())  # one segment per class, class order
        sem = np.concatenate([[VOID], cats])[ex["segment_map"].numpy()]
        areas = ex["areas"].numpy().tolist()
        assert areas == [int((sem == c).sum()) for c in cats]
        out.append((name, sem, ex))
    return out


def _info(prefix: Path) -> dict:
    return records.read_dataset_info(prefix.parent / "dataset.json")


# --- the general converter ------------------------------------------------------------------


def _write_generic(root: Path, values, n=3):
    labels = {}
    for i in range(n):
        _image(root / "images" / f"im{i}.jpg", i)
        label = _labels(values, 10 + i).astype(np.uint8)
        _save(label, root / "labels" / f"im{i}.png")
        labels[f"im{i}.jpg"] = label
    return labels


def test_semantic_class_list_ignore_value_and_bad_inputs(tmp_path):
    root = tmp_path / "d"
    labels = _write_generic(root, [0, 1, 2, 255], n=5)
    (root / "classes.txt").write_text("sky\nroad\n\ncar\n")
    _image(root / "images/im3.jpg", 3, size=(H + 1, W))  # size mismatch
    bad = labels["im4.jpg"].copy()
    bad[0, 0] = 9
    _save(bad, root / "labels/im4.png")  # unknown value
    _image(root / "images/im5.jpg", 5)  # missing label
    lines = []
    report = semantic.convert(root / "images", root / "labels", tmp_path / "rec/train",
                              root / "classes.txt", progress=False, log=lines.append)
    assert report.written == 3
    assert dict(report.skipped) == {"size mismatch": 1, "unknown category": 1,
                                    "missing label": 1}
    for name in ("im3.png", "im4.png", "im5.png"):
        assert any(name in line for line in lines), lines
    assert any("[9]" in line for line in lines)
    decoded = _semantic_maps(tmp_path / "rec/train")
    assert [d[0] for d in decoded] == ["im0.jpg", "im1.jpg", "im2.jpg"]
    for name, sem, ex in decoded:
        np.testing.assert_array_equal(sem, labels[name].astype(int))
        assert ex["segment_ids"].numpy().tolist() == [0, 1, 2]
    info = _info(tmp_path / "rec/train")
    assert info["dataset"] == "semantic"
    assert [(c["id"], c["original_id"], c["name"]) for c in info["categories"]] == [
        (0, 0, "sky"), (1, 1, "road"), (2, 2, "car")]


def test_semantic_reduce_labels_and_json_classes(tmp_path):
    root = tmp_path / "d"
    labels = _write_generic(root, [0, 1, 3, 200], n=2)
    (root / "classes.json").write_text(json.dumps(
        ["a", {"name": "b", "color": [1, 2, 3]}, "c"]))
    report = semantic.convert(root / "images", root / "labels", tmp_path / "rec/train",
                              root / "classes.json", ignore_value=200, reduce_labels=True,
                              progress=False)
    assert report.written == 2 and not report.skipped
    for name, sem, _ in _semantic_maps(tmp_path / "rec/train"):
        label = labels[name].astype(int)
        np.testing.assert_array_equal(sem, np.where((label == 0) | (label == 200), VOID,
                                                    label - 1))
    cats = _info(tmp_path / "rec/train")["categories"]
    assert cats[1]["color"] == [1, 2, 3] and [c["original_id"] for c in cats] == [1, 2, 3]


def test_semantic_palette_and_unknown_colour(tmp_path):
    root = tmp_path / "d"
    colours = {(255, 0, 0): 0, (0, 255, 0): 1, (0, 0, 0): VOID}
    (root / "classes.json").parent.mkdir(parents=True)
    (root / "classes.json").write_text(json.dumps(["red", "green"]))
    (root / "palette.json").write_text(json.dumps([
        {"color": [255, 0, 0], "class": 0}, {"color": [0, 255, 0], "class": "green"},
        {"color": [0, 0, 0], "class": None}]))
    expected = {}
    palette = np.array(list(colours), np.uint8)
    for i in range(3):
        _image(root / "images" / f"p{i}.jpg", i)
        index = _labels([0, 1, 2], 20 + i)
        rgb = palette[index]
        if i == 2:
            rgb[3, 4] = (1, 2, 3)
        _save(rgb, root / "labels" / f"p{i}.png")
        expected[f"p{i}.jpg"] = np.array([colours[tuple(c)] for c in palette])[index]
    lines = []
    report = semantic.convert(root / "images", root / "labels", tmp_path / "rec/train",
                              root / "classes.json", palette=root / "palette.json",
                              progress=False, log=lines.append)
    assert report.written == 2 and report.skipped == {"unknown colour": 1}
    assert "p2.png" in lines[0] and "(1, 2, 3)" in lines[0]
    for name, sem, _ in _semantic_maps(tmp_path / "rec/train"):
        np.testing.assert_array_equal(sem, expected[name])


def test_semantic_strict_names_the_file_and_leaves_nothing(tmp_path):
    root = tmp_path / "d"
    _write_generic(root, [0, 1], n=2)
    (root / "classes.txt").write_text("a\nb\n")
    (root / "labels/im1.png").unlink()
    with pytest.raises(DataError, match=r"im1\.png: label PNG not found"):
        semantic.convert(root / "images", root / "labels", tmp_path / "rec/train",
                         root / "classes.txt", strict=True, num_shards=2, progress=False)
    assert not list((tmp_path / "rec").glob("*"))


# --- dataset presets ------------------------------------------------------------------------


def _voc_palette() -> list[int]:
    """The VOC colour map (bit-interleaved), flattened for PIL."""
    flat = []
    for i in range(256):
        r = g = b = 0
        c = i
        for bit in range(8):
            r |= (c & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        flat += [r, g, b]
    return flat


def _write_voc(root: Path) -> dict[str, np.ndarray]:
    voc = root / "VOCdevkit/VOC2012"
    names = ["2007_000032", "2007_000039", "2008_000001"]
    (voc / "ImageSets/Segmentation").mkdir(parents=True)
    (voc / "ImageSets/Segmentation/train.txt").write_text("\n".join(names) + "\n")
    labels = {}
    for i, n in enumerate(names):
        _image(voc / "JPEGImages" / f"{n}.jpg", i)
        label = _labels([0, 1, 15, 20, 255], 30 + i).astype(np.uint8)
        png = Image.fromarray(label, "P")
        png.putpalette(_voc_palette())
        (voc / "SegmentationClass").mkdir(exist_ok=True)
        png.save(voc / "SegmentationClass" / f"{n}.png")
        labels[f"{n}.jpg"] = label
    return labels


def test_voc(tmp_path):
    labels = _write_voc(tmp_path)
    seg = tmp_path / "VOCdevkit/VOC2012/SegmentationClass/2008_000001.png"
    bad = np.array(Image.open(seg))
    bad[0, 0] = 30
    png = Image.fromarray(bad, "P")
    png.putpalette(_voc_palette())
    png.save(seg)
    lines = []
    report = semantic_datasets.convert_voc(tmp_path, "train", tmp_path / "rec/train",
                                           progress=False, log=lines.append)
    assert report.written == 2 and report.skipped == {"unknown category": 1}
    assert "2008_000001.png" in lines[0] and "30" in lines[0]
    decoded = _semantic_maps(tmp_path / "rec/train")
    assert len(decoded) == 2
    for name, sem, ex in decoded:
        np.testing.assert_array_equal(sem, labels[name])  # VOC values are the class ids
        assert ex["segment_ids"].numpy().tolist() == [0, 1, 15, 20]
    cats = _info(tmp_path / "rec/train")["categories"]
    assert cats == builtin_categories("voc_21") and len(cats) == 21
    assert cats[15]["name"] == "person" and cats[1]["color"] == [128, 0, 0]


def test_cityscapes_nested_cities(tmp_path):
    # Label id -> train id (cityscapesScripts' table) for the ids used here; others are void.
    train_id = {7: 0, 8: 1, 24: 11, 26: 13, 33: 18}
    labels = {}
    for city, frames in (("aachen", ["aachen_000000_000019", "aachen_000001_000019"]),
                         ("bochum", ["bochum_000000_000313"])):
        for i, frame in enumerate(frames):
            _image(tmp_path / "leftImg8bit/train" / city / f"{frame}_leftImg8bit.png", i)
            label = _labels([0, 1, 7, 8, 24, 26, 33, 4], 40 + i).astype(np.uint8)
            _save(label, tmp_path / "gtFine/train" / city / f"{frame}_gtFine_labelIds.png")
            labels[f"{frame}_leftImg8bit.png"] = label
    report = semantic_datasets.convert_cityscapes(tmp_path, "train", tmp_path / "rec/train",
                                                  num_workers=2, progress=False)
    assert report.written == 3 and not report.skipped
    decoded = _semantic_maps(tmp_path / "rec/train")
    assert [d[0] for d in decoded] == sorted(labels)
    for name, sem, _ in decoded:
        expected = np.vectorize(lambda v: train_id.get(int(v), VOID))(labels[name])
        np.testing.assert_array_equal(sem, expected)
    assert _info(tmp_path / "rec/train")["categories"] == builtin_categories("cityscapes_19")


def test_mapillary_vistas(tmp_path):
    labels = {}
    for i in range(3):
        _image(tmp_path / "training/images" / f"m{i}.jpg", i)
        label = _labels([0, 10, 64, 65], 50 + i).astype(np.uint8)
        if i == 2:
            label[1, 1] = 70
        _save(label, tmp_path / "training/labels" / f"m{i}.png")
        labels[f"m{i}.jpg"] = label
    report = semantic_datasets.convert_mapillary_vistas(tmp_path, "training",
                                                        tmp_path / "rec/training",
                                                        progress=False)
    assert report.written == 2 and report.skipped == {"unknown category": 1}
    for name, sem, _ in _semantic_maps(tmp_path / "rec/training"):
        np.testing.assert_array_equal(sem, np.where(labels[name] == 65, VOID, labels[name]))


def test_coco_stuff_10k_v1_1_mat_files(tmp_path):
    unused = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91}  # COCO ids with no class
    names = ["COCO_train2014_000000000077", "COCO_train2014_000000000078",
             "COCO_train2014_000000000079"]
    (tmp_path / "imageLists").mkdir()
    (tmp_path / "imageLists/train.txt").write_text("\n".join(names) + "\n")
    (tmp_path / "annotations").mkdir()
    labels = {}
    for i, n in enumerate(names):
        _image(tmp_path / "images" / f"{n}.jpg", i)
        s = _labels([0, 1, 12, 92, 182], 60 + i).astype(np.uint8)
        labels[f"{n}.jpg"] = s
        if i < 2:  # v1.1 files are MATLAB v5 files naming 1 + 91 + 91 classes
            scipy.io.savemat(tmp_path / "annotations" / f"{n}.mat",
                             {"S": s, "names": np.array([f"c{k}" for k in range(183)],
                                                        dtype=object)})
    lines = []
    report = semantic_datasets.convert_coco_stuff_10k(tmp_path, "train", tmp_path / "rec/train",
                                                      version="1.1", progress=False,
                                                      log=lines.append)
    assert report.written == 2 and report.skipped == {"missing label": 1}
    assert names[2] + ".mat" in lines[0]
    for name, sem, _ in _semantic_maps(tmp_path / "rec/train"):
        s = labels[name].astype(int)
        shift = np.vectorize(lambda v: sum(u < v for u in unused))(s)
        expected = np.where((s == 0) | np.isin(s, list(unused)), VOID, s - 1 - shift)
        np.testing.assert_array_equal(sem, expected)
        assert {0, 80, 170} <= set(np.unique(sem).tolist())  # person, banner, wood
    cats = _info(tmp_path / "rec/train")["categories"]
    assert len(cats) == 171 and cats[80]["name"] == "banner"


def _write_mat_v73(path: Path, s: np.ndarray, num_names: int | None = 172) -> None:
    """A MATLAB v7.3 file as MATLAB writes one: HDF5 behind a 512-byte header, arrays stored
    transposed (column-major)."""
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w", userblock_size=512) as f:
        f["S"] = np.ascontiguousarray(s.T)
        if num_names is not None:  # a cell array: one object reference per name
            f.create_dataset("names", (1, num_names), dtype=h5py.ref_dtype)
    with open(path, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64".ljust(116))


def test_coco_stuff_10k_v1_0_as_maskformer_prepares_it(tmp_path):
    names = ["COCO_train2014_000000000077", "COCO_train2014_000000000078",
             "COCO_train2014_000000000079", "COCO_train2014_000000000080"]
    (tmp_path / "imageLists").mkdir()
    (tmp_path / "imageLists/test.txt").write_text("\n".join(names) + "\n")
    labels = {}
    for i, n in enumerate(names):
        _image(tmp_path / "images" / f"{n}.jpg", i)
        # v1.0: 1 unlabeled, 2..81 things, 82..172 stuff; MATLAB stores doubles.
        s = _labels([1, 2, 81, 82, 172], 80 + i).astype(np.float64)
        labels[f"{n}.jpg"] = s
        if i == 2:
            s = s.copy()
            s[2, 3] = 173
        _write_mat_v73(tmp_path / "annotations" / f"{n}.mat", s)
    # A v1.1 file (183 names) among v1.0 ones is reported, not misread.
    scipy.io.savemat(tmp_path / "annotations" / f"{names[3]}.mat",
                     {"S": labels[f"{names[3]}.jpg"].astype(np.uint8),
                      "names": np.array([f"c{k}" for k in range(183)], dtype=object)})
    lines = []
    report = semantic_datasets.convert_coco_stuff_10k(tmp_path, "test", tmp_path / "rec/test",
                                                      progress=False, log=lines.append)
    assert report.written == 2
    assert report.skipped == {"unknown category": 1, "corrupt label": 1}
    assert names[2] + ".mat" in lines[0] and "[173]" in lines[0]
    assert names[3] + ".mat" in lines[1] and "names 183 classes" in lines[1]
    cats = builtin_categories("coco_stuff_171")
    for name, sem, ex in _semantic_maps(tmp_path / "rec/test"):
        s = labels[name].astype(int)
        # MaskFormer's preparation: S - 2 as uint8, so 1 (unlabeled) wraps to 255.
        np.testing.assert_array_equal(sem, (s - 2) % 256)
        assert ex["segment_ids"].numpy().tolist() == [
            cats[c]["original_id"] for c in (0, 79, 80, 170)]  # person, toothbrush, banner, wood
    assert _info(tmp_path / "rec/test")["splits"]["test"]["source"]["version"] == "1.0"


def test_workers_report_bad_inputs_without_hanging(tmp_path):
    """A bad input found in a worker process comes back to the parent as a report (a
    BadInput that cannot be unpickled would leave the pool waiting forever)."""
    root = tmp_path / "d"
    labels = _write_generic(root, [0, 1, 2], n=6)
    (root / "classes.txt").write_text("a\nb\nc\n")
    (root / "labels/im1.png").unlink()
    bad = labels["im4.jpg"].copy()
    bad[5, 5] = 7
    _save(bad, root / "labels/im4.png")

    def _hung(*_):
        raise TimeoutError("the conversion with 2 workers hung")

    previous = signal.signal(signal.SIGALRM, _hung)
    signal.alarm(60)
    try:
        lines = []
        report = semantic.convert(root / "images", root / "labels", tmp_path / "a/train",
                                  root / "classes.txt", num_workers=2, num_shards=2,
                                  progress=False, log=lines.append)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert report.written == 4
    assert report.skipped == {"missing label": 1, "unknown category": 1}
    assert "im1.png" in lines[0] and "im4.png" in lines[1] and "[7]" in lines[1]
    semantic.convert(root / "images", root / "labels", tmp_path / "b/train",
                     root / "classes.txt", num_shards=2, progress=False, log=[].append)
    for name in records.shard_paths("train", 2):  # the output does not depend on --workers
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_semantic_recursive_with_suffixes(tmp_path):
    root = tmp_path / "d"
    labels = {}
    for i, (city, frame) in enumerate([("b", "b_1"), ("a", "a_2"), ("a", "a_1")]):
        _image(root / "img" / city / f"{frame}_rgb.png", i)
        label = _labels([0, 1, 255], 90 + i).astype(np.uint8)
        _save(label, root / "lab" / city / f"{frame}_label.png")
        labels[f"{frame}_rgb.png"] = label
    _image(root / "img/a/notes.png", 9)  # no "_rgb": not an image of the set
    (root / "classes.txt").write_text("x\ny\n")
    report = semantic.convert(root / "img", root / "lab", tmp_path / "rec/train",
                              root / "classes.txt", recursive=True, image_suffix="_rgb",
                              label_suffix="_label", progress=False)
    assert report.written == 3 and not report.skipped
    decoded = _semantic_maps(tmp_path / "rec/train")
    assert [d[0] for d in decoded] == ["a_1_rgb.png", "a_2_rgb.png", "b_1_rgb.png"]
    for name, sem, _ in decoded:
        np.testing.assert_array_equal(sem, labels[name])


def _ade20k_full_index(root: Path, entries) -> None:
    """index_ade20k.pkl as the dataset ships it: a dict of per-image lists and arrays, the
    folders starting with the dataset folder's name."""
    index = {
        "filename": [f for _, f in entries],
        "folder": [f"ADE20K_2021_17_01/images/ADE/{d}" for d, _ in entries],
        "scene": [d.split("/")[-1] for d, _ in entries],
        "objectnames": ["wall", "building, edifice"],
        "objectPresence": np.zeros((2, len(entries)), np.uint8),
    }
    (root / "index_ade20k.pkl").write_bytes(pickle.dumps(index))


class _Evil:
    def __reduce__(self):
        return (print, ("unsafe",))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_ade20k_full_index_reader_takes_numpy_pickles(tmp_path, protocol):
    index = {"folder": np.array(["ADE20K_2021_17_01/images/ADE/training/a"], dtype=object),
             "filename": ["ADE_train_00000001.jpg"], "objectPresence": np.ones((3, 1), np.int16)}
    (tmp_path / "index_ade20k.pkl").write_bytes(pickle.dumps(index, protocol=protocol))
    assert semantic_datasets._ade20k_full_files(tmp_path, "training") == [
        tmp_path / "images/ADE/training/a/ADE_train_00000001.jpg"]
    assert semantic_datasets._ade20k_full_files(tmp_path, "validation") == []


def test_ade20k_full_index_pickle(tmp_path, capsys):
    root = tmp_path / "ade_full_renamed"  # the index names ADE20K_2021_17_01; ROOT replaces it
    listed = {2978: 0, 312: 1, 3148: 846}
    entries = [("validation/urban/street", "ADE_val_00000002.jpg"),
               ("training/urban/street", "ADE_train_00000001.jpg"),
               ("validation/home/bedroom", "ADE_val_00000001.jpg"),
               ("training/home/bedroom", "ADE_frame_00000001.jpg")]
    labels = {}
    for i, (folder, name) in enumerate(entries):
        _image(root / "images/ADE" / folder / name, i)
        cls = _labels([0, 7, *listed], 100 + i)
        rgb = np.stack([cls // 256 * 10 + 3, cls % 256, np.zeros_like(cls)], -1)
        _save(rgb.astype(np.uint8), root / "images/ADE" / folder / name.replace(".jpg", "_seg.png"))
        labels[name] = cls
    _ade20k_full_index(root, entries)
    report = semantic_datasets.convert_ade20k_full(root, "validation", tmp_path / "rec/val",
                                                   progress=False)
    assert report.written == 2 and not report.skipped
    decoded = _semantic_maps(tmp_path / "rec/val")
    # The index's order; a "_val_" file name is validation (MaskFormer's rule).
    assert [d[0] for d in decoded] == ["ADE_val_00000002.jpg", "ADE_val_00000001.jpg"]
    for name, sem, _ in decoded:
        np.testing.assert_array_equal(
            sem, np.vectorize(lambda v: listed.get(int(v), VOID))(labels[name]))
    report = semantic_datasets.convert_ade20k_full(root, "training", tmp_path / "rec/train",
                                                   progress=False)
    assert report.written == 2  # ADE_train_... and ADE_frame_...
    (root / "index_ade20k.pkl").write_bytes(pickle.dumps({"folder": [_Evil()], "filename": []}))
    with pytest.raises(DataError, match="index_ade20k.pkl: cannot read the image index.*print"):
        semantic_datasets.convert_ade20k_full(root, "training", tmp_path / "rec2/train",
                                              progress=False)
    assert "unsafe" not in capsys.readouterr().out


def test_ade20k_full_seg_png(tmp_path):
    listed = {2978: 0, 312: 1, 3148: 846}  # wall, building, adding machine (MaskFormer's)
    all_ids = {c["original_id"] for c in builtin_categories("ade20k_full_847")}
    unlisted = next(i for i in range(1, 4000) if i not in all_ids)
    values = [0, unlisted, *listed]
    labels = {}
    folders = {"training": ["ADE_train_00000001", "ADE_train_00000002"],
               "validation": ["ADE_val_00000001"]}
    for split, stems in folders.items():
        for i, stem in enumerate(stems):
            folder = tmp_path / "images/ADE" / split / ("home/bedroom" if i else "urban/street")
            _image(folder / f"{stem}.jpg", i)
            cls = _labels(values, 70 + i)
            # The dataset's encoding: class = R / 10 * 256 + G (R keeps a remainder below 10).
            rgb = np.stack([cls // 256 * 10 + 7, cls % 256, np.full_like(cls, 5)], -1)
            _save(rgb.astype(np.uint8), folder / f"{stem}_seg.png")
            labels[f"{stem}.jpg"] = cls
    report = semantic_datasets.convert_ade20k_full(tmp_path, "training",
                                                   tmp_path / "rec/training", progress=False)
    assert report.written == 2 and not report.skipped
    decoded = _semantic_maps(tmp_path / "rec/training")
    # Records follow the sorted paths: home/bedroom/..02 before urban/street/..01.
    assert [d[0] for d in decoded] == ["ADE_train_00000002.jpg", "ADE_train_00000001.jpg"]
    for name, sem, ex in decoded:
        expected = np.vectorize(lambda v: listed.get(int(v), VOID))(labels[name])
        np.testing.assert_array_equal(sem, expected)
        assert ex["segment_ids"].numpy().tolist() == [2978, 312, 3148]


# --- command line ---------------------------------------------------------------------------


def test_cli_voc_ok_then_errors(tmp_path, capsys):
    _write_voc(tmp_path)
    assert main(["data", "voc", "--root", str(tmp_path / "VOCdevkit"), "--split", "train",
                 "--out", str(tmp_path / "rec/train"), "--shards", "2", "--no-progress"]) == 0
    assert "wrote 3 records to 2 shard(s)" in capsys.readouterr().out
    (tmp_path / "VOCdevkit/VOC2012/SegmentationClass/2007_000039.png").unlink()
    assert main(["data", "voc", "--root", str(tmp_path), "--out", str(tmp_path / "r2/train"),
                 "--strict", "--no-progress"]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "2007_000039.png" in errors[0] and "Traceback" not in err
    assert main(["data", "cityscapes", "--root", str(tmp_path / "nope"),
                 "--out", str(tmp_path / "r3/train")]) == 2
    assert "leftImg8bit/train: images folder not found" in capsys.readouterr().err
    (tmp_path / "c.txt").write_text("x\ny\n")
    assert main(["data", "semantic", "--images", str(tmp_path), "--labels", str(tmp_path),
                 "--classes", str(tmp_path / "c.txt"), "--ignore-value", "1",
                 "--out", str(tmp_path / "r4/train")]) == 2
    assert "ignore value 1 is also the label of class 'y'" in capsys.readouterr().err


def test_cli_coco_stuff_10k_version_and_semantic_recursive(tmp_path, capsys):
    (tmp_path / "cs/imageLists").mkdir(parents=True)
    (tmp_path / "cs/annotations").mkdir()
    (tmp_path / "cs/imageLists/train.txt").write_text("COCO_train2014_000000000077\n")
    _image(tmp_path / "cs/images/COCO_train2014_000000000077.jpg", 0)
    scipy.io.savemat(tmp_path / "cs/annotations/COCO_train2014_000000000077.mat",
                     {"S": _labels([0, 1, 182], 0).astype(np.uint8)})
    args = ["data", "coco-stuff-10k", "--root", str(tmp_path / "cs"), "--out",
            str(tmp_path / "r/train"), "--no-progress", "--strict"]
    # Read as v1.0 (the default), 182 is above 172: one error line naming the file.
    assert main(args) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "000000000077.mat" in errors[0] and "[182]" in errors[0]
    assert main([*args, "--version", "1.1"]) == 0
    assert "wrote 1 records" in capsys.readouterr().out
    (_, sem, _), = _semantic_maps(tmp_path / "r/train")
    assert set(np.unique(sem).tolist()) == {0, 170, VOID}
    _image(tmp_path / "g/img/x/f_rgb.png", 1)
    _save(np.ones((H, W), np.uint8), tmp_path / "g/lab/x/f.png")
    (tmp_path / "g/c.txt").write_text("a\nb\n")
    assert main(["data", "semantic", "--images", str(tmp_path / "g/img"), "--labels",
                 str(tmp_path / "g/lab"), "--classes", str(tmp_path / "g/c.txt"),
                 "--recursive", "--image-suffix", "_rgb", "--out", str(tmp_path / "g/r/train"),
                 "--no-progress"]) == 0
    assert "wrote 1 records" in capsys.readouterr().out
