"""`maskformer data inspect`: the statistics against counts made here from the arrays the records
were written from, the contact sheet, the inconsistencies it finds and the errors it reports."""

import json
import statistics
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from maskformer.data import coco_panoptic, records
from maskformer.data import inspect as data_inspect
from maskformer.data.inspect import inspect_records
from maskformer.errors import DataError
from tests.data.conftest import encode_png, write_records

MODEL_GARDEN = Path(__file__).resolve().parents[1] / "testdata" / "model_garden"

CATEGORIES = [
    {"id": 0, "original_id": 1, "name": "cat", "isthing": 1, "color": [220, 20, 60]},
    {"id": 1, "original_id": 2, "name": "dog", "isthing": 1, "color": [0, 0, 142]},
    {"id": 2, "original_id": 5, "name": "grass", "isthing": 0, "color": [200, 0, 0]},
    {"id": 3, "original_id": 7, "name": "unused", "isthing": 0, "color": [0, 200, 0]},
]
SIZES = [(24, 32), (24, 32), (40, 16), (16, 16), (24, 32), (32, 24)]
GREY = 100  # the first image: grey, its left quarter grass, the rest void


def _sample(image_id, image, segment_map, categories, iscrowd, **override) -> bytes:
    n = len(categories)
    fields = dict(
        image_bytes=encode_png(image), image_format="png", height=image.shape[0],
        width=image.shape[1], image_id=image_id, filename=f"{image_id:06d}.png",
        segment_map=segment_map.astype(np.uint16), segment_ids=[1000 + k for k in range(n)],
        categories=list(categories), iscrowd=list(iscrowd),
        areas=[int((segment_map == k + 1).sum()) for k in range(n)])
    fields.update(override)
    return records.serialize_sample(records.Sample(**fields))


def _examples():
    """Six images: (image_id, image, segment_map, categories, iscrowd)."""
    rng = np.random.default_rng(0)
    out = []
    for i, (h, w) in enumerate(SIZES):
        if i == 0:
            image = np.full((h, w, 3), GREY, np.uint8)
            segment_map = np.zeros((h, w), np.int64)
            segment_map[:, : w // 4] = 1
            categories, iscrowd = [2], [0]
        else:
            image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            num = int(rng.integers(1, 5))
            segment_map = rng.integers(0, num + 1, (h, w))
            categories = rng.choice([0, 1, 2], num).tolist()
            iscrowd = (rng.random(num) < 0.3).astype(int).tolist()
        out.append((i + 1, image, segment_map, categories, iscrowd))
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Two record files of three images each and their dataset.json: (pattern, examples)."""
    root = tmp_path_factory.mktemp("inspect")
    examples = _examples()
    for shard in range(2):
        write_records(root / f"train-{shard:05d}-of-00002.tfrecord",
                      [_sample(*e) for e in examples[3 * shard:3 * shard + 3]])
    (root / "dataset.json").write_text(json.dumps({"categories": CATEGORIES}))
    return str(root / "train-*.tfrecord"), examples


def _expected_classes(examples, num_classes):
    total = sum(m.size for _, _, m, _, _ in examples)
    out = []
    for c in range(num_classes):
        segments = crowd = images = pixels = 0
        for _, _, segment_map, categories, iscrowd in examples:
            images += c in categories
            for k, (category, is_crowd) in enumerate(zip(categories, iscrowd, strict=True)):
                if category == c:
                    segments += 1
                    crowd += is_crowd
                    pixels += int((segment_map == k + 1).sum())
        out.append({"id": c, "name": CATEGORIES[c]["name"], "segments": segments,
                    "crowd_segments": crowd, "images": images, "pixels": pixels,
                    "pixel_share": pixels / total})
    return out


@pytest.fixture(scope="module")
def inspected(dataset, tmp_path_factory):
    pattern, _ = dataset
    out = tmp_path_factory.mktemp("inspect_out")
    text = inspect_records(pattern, out_dir=out, num_images=4, progress=False)
    return text, json.loads((out / "stats.json").read_text()), out


def test_statistics_match_an_independent_count(dataset, inspected):
    _, examples = dataset
    text, stats, out = inspected
    assert stats["num_images"] == 6
    assert stats["classes"] == _expected_classes(examples, 4)
    assert stats["classes"][3]["segments"] == 0 and stats["classes_never_seen"] == [3]
    assert stats["classes"][2]["segments"] > 0 and stats["crowd_segments"] > 0

    per_image = [len(e[3]) for e in examples]
    assert stats["segments_per_image"] == {
        "min": min(per_image), "median": statistics.median(per_image),
        "mean": pytest.approx(statistics.mean(per_image)), "max": max(per_image)}
    assert stats["segments"] == sum(per_image)
    assert stats["crowd_segments"] == sum(sum(e[4]) for e in examples)

    heights, widths = [h for h, _ in SIZES], [w for _, w in SIZES]
    assert stats["image_height"] == {"min": 16, "median": statistics.median(heights), "max": 40}
    assert stats["image_width"] == {"min": 16, "median": statistics.median(widths), "max": 32}
    assert stats["most_common_sizes"][0] == {"height": 24, "width": 32, "images": 3}
    assert sum(s["images"] for s in stats["most_common_sizes"]) == 6

    void = [(m == 0).sum() / m.size for _, _, m, _, _ in examples]
    assert stats["void_share"] == pytest.approx(
        sum((m == 0).sum() for _, _, m, _, _ in examples) / sum(h * w for h, w in SIZES))
    assert stats["most_void"][0]["image_id"] == int(np.argmax(void)) + 1 == 1
    assert stats["most_void"][0]["share"] == pytest.approx(0.75)
    assert [e["share"] for e in stats["most_void"]] == sorted(
        [e["share"] for e in stats["most_void"]], reverse=True)
    assert stats["inconsistencies"] == {}

    assert "classes that never occur (1): 3 unused" in text
    assert "inconsistencies: none" in text
    assert "most void: 75.0% image id 1 (000001.png)" in text
    assert text.splitlines()[-2:] == [f"wrote {out / 'contact_sheet.png'}",
                                      f"wrote {out / 'stats.json'}"]
    # The table is sorted by pixels; the unused class is its last row.
    rows = [line.split() for line in text.splitlines() if line.strip().startswith(("0 ", "1 ",
                                                                                    "2 ", "3 "))]
    assert [int(r[0]) for r in rows] == sorted(range(4), key=lambda c: -stats["classes"][c][
        "pixels"])
    assert rows[-1][:3] == ["3", "unused", "0"]


def test_contact_sheet_has_the_grid_and_the_class_colours(inspected):
    _, stats, out = inspected
    sheet = np.asarray(Image.open(out / "contact_sheet.png").convert("RGB"))
    geometry = stats["contact_sheet"]
    assert (geometry["images"], geometry["rows"], geometry["columns"]) == (4, 2, 2)
    t, g, cell_h = data_inspect.TILE, data_inspect.GAP, geometry["cell_height"]
    assert cell_h > t
    assert sheet.shape == (2 * cell_h + 3 * g, 2 * t + 3 * g, 3)
    for row in range(2):
        for col in range(2):
            y, x = g + row * (cell_h + g), g + col * (t + g)
            assert sheet[y:y + t, x:x + t].std() > 20, (row, col)
    # The first image, grey 100: grass (stuff, [200, 0, 0]) blended over it, void darkened.
    first = sheet[g:g + t, g:g + t].astype(int)
    alpha = data_inspect.ALPHA
    grass = np.array([(1 - alpha) * GREY + alpha * 200, (1 - alpha) * GREY, (1 - alpha) * GREY])
    void = data_inspect.VOID_BRIGHTNESS * GREY
    # 24 x 32 is enlarged 8 times: 192 x 256, of which the left quarter is grass.
    assert (np.abs(first - grass).max(-1) <= 1).sum() > 0.7 * 192 * 64
    assert (np.abs(first - void).max(-1) <= 1).sum() > 0.9 * 192 * 192


def test_inconsistencies_are_counted_and_named(tmp_path):
    rng = np.random.default_rng(1)

    def arrays(h=20, w=20, num=2):
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8), rng.integers(1, num + 1, (h, w))

    image, smap = arrays()
    good = _sample(11, image, smap, [0, 1], [0, 0])
    image, smap = arrays()
    wrong_area = _sample(12, image, smap, [0, 1], [0, 0],
                         areas=[int((smap == 1).sum()) + 1, int((smap == 2).sum())])
    image, smap = arrays()
    map_size = _sample(13, image, np.pad(smap, ((0, 0), (0, 4)), constant_values=1), [0, 1],
                       [0, 0])
    image, smap = arrays()
    unlisted = _sample(14, image, np.where(smap == 2, 3, smap), [0, 1], [0, 0])
    image, smap = arrays()
    negative = _sample(15, image, smap, [-1, 1], [0, 0])
    image, smap = arrays()
    declared = _sample(16, image, smap, [0, 4], [0, 1], height=99)
    path = write_records(tmp_path / "bad.tfrecord",
                         [good, wrong_area, map_size, unlisted, negative, declared])
    text = inspect_records(path, out_dir=tmp_path / "out", num_images=6, progress=False)
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    problems = stats["inconsistencies"]
    assert {kind: p["count"] for kind, p in problems.items()} == {
        data_inspect.AREA: 1, data_inspect.MAP_SIZE: 1, data_inspect.UNLISTED: 1,
        data_inspect.OUTSIDE_TABLE: 1, data_inspect.DECLARED_SIZE: 1}
    for kind, image_id in [(data_inspect.AREA, 12), (data_inspect.MAP_SIZE, 13),
                           (data_inspect.UNLISTED, 14), (data_inspect.OUTSIDE_TABLE, 15),
                           (data_inspect.DECLARED_SIZE, 16)]:
        [example] = problems[kind]["examples"]
        assert example.startswith(f"image id {image_id} ({image_id:06d}.png), bad.tfrecord "
                                  f"record {image_id - 10}:"), example
        assert example in text
    assert "inconsistencies: 5" in text
    # No dataset.json: classes are named by their index, up to the largest one used.
    assert stats["dataset_info"] is None and "named by their index" in text
    assert [c["name"] for c in stats["classes"]] == [f"class {k}" for k in range(5)]
    assert stats["classes_never_seen"] == [2, 3]
    assert stats["classes"][4]["crowd_segments"] == 1


def test_model_garden_records_give_our_records_statistics(tmp_path):
    source = MODEL_GARDEN / "source"
    report = coco_panoptic.convert(source / "images", source / "panoptic.json",
                                   source / "panoptic", tmp_path / "ours/train", progress=False)
    inspect_records(str(report.shards[0]), out_dir=tmp_path / "a", num_images=0, progress=False)
    inspect_records(str(MODEL_GARDEN / "panoptic-00000-of-00001.tfrecord"),
                    dataset_info=source / "panoptic.json", out_dir=tmp_path / "b",
                    num_images=2, progress=False, record_format="model_garden")
    ours, theirs = (json.loads((tmp_path / d / "stats.json").read_text()) for d in "ab")
    assert not (tmp_path / "a" / "contact_sheet.png").exists()
    assert (tmp_path / "b" / "contact_sheet.png").exists()
    # The format carries no crowd flag: the one crowd segment reads as an ordinary one.
    assert ours["crowd_segments"] == 1 and theirs["crowd_segments"] == 0
    for c in ours["classes"] + theirs["classes"]:
        c.pop("crowd_segments")
    for e in ours["most_void"] + theirs["most_void"]:
        e.pop("file")
    for key in ("classes", "segments_per_image", "void_share", "image_height", "most_void"):
        assert ours[key] == theirs[key], key
    with pytest.raises(DataError, match="need the class table"):
        inspect_records(str(MODEL_GARDEN / "panoptic-00000-of-00001.tfrecord"),
                        out_dir=tmp_path / "c", progress=False, record_format="model_garden")


def _one_line_error(match: str, *args, **kwargs) -> str:
    with pytest.raises(DataError, match=match) as info:
        inspect_records(*args, progress=False, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_no_matching_files(tmp_path):
    _one_line_error(r"nothing-\*\.tfrecord: no files match", str(tmp_path / "nothing-*.tfrecord"))
    _one_line_error("no record files given", " , ")


def test_a_converter_prefix_names_its_shards(dataset, tmp_path):
    pattern, _ = dataset
    prefix = pattern.replace("train-*.tfrecord", "train")
    text = inspect_records(prefix, out_dir=tmp_path, num_images=0, progress=False)
    assert text.startswith("6 images in 2 file(s): ")
    assert data_inspect.resolve_records(prefix) == sorted(tf.io.gfile.glob(pattern))


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_an_unreadable_file_is_named(dataset, tmp_path, damage):
    pattern, _ = dataset
    good = sorted(tf.io.gfile.glob(pattern))[0]
    bad = tmp_path / "b.tfrecord"
    data = Path(good).read_bytes()
    bad.write_bytes(b"not a record file at all" * 10 if damage == "garbage" else data[:-30])
    (tmp_path / "a.tfrecord").write_bytes(data)
    message = _one_line_error(str(bad), str(tmp_path / "*.tfrecord"), out_dir=tmp_path / "o")
    assert "a.tfrecord" not in message


def test_a_record_whose_image_does_not_decode_is_named(tmp_path):
    image = np.zeros((8, 8, 3), np.uint8)
    smap = np.ones((8, 8), int)
    path = write_records(tmp_path / "x.tfrecord", [
        _sample(1, image, smap, [0], [0]),
        _sample(2, image, smap, [0], [0], image_bytes=b"\x89PNG\r\n\x1a\n broken")])
    _one_line_error(f"{path}: record 2: ", path, out_dir=tmp_path / "o")


def test_a_class_table_smaller_than_the_records_is_named(dataset, tmp_path):
    pattern, _ = dataset
    info = tmp_path / "two.json"
    info.write_text(json.dumps({"categories": CATEGORIES[:2]}))
    message = _one_line_error(f"{info}: lists 2 classes, but the records use category 2",
                              pattern, dataset_info=info, out_dir=tmp_path / "o")
    assert "image id" in message


def test_command_line(dataset, tmp_path, capsys):
    from maskformer.cli import main

    pattern, _ = dataset
    out = tmp_path / "out"
    assert main(["data", "inspect", pattern, "--out", str(out), "--num-images", "2"]) == 0
    assert "classes that never occur (1): 3 unused" in capsys.readouterr().out
    assert (out / "contact_sheet.png").is_file() and (out / "stats.json").is_file()
    garden = tmp_path / "garden"
    assert main(["data", "inspect", str(MODEL_GARDEN / "panoptic-00000-of-00001.tfrecord"),
                 "--record-format", "model_garden", "--no-progress", "--num-images", "0",
                 "--dataset-info", str(MODEL_GARDEN / "source" / "panoptic.json"),
                 "--out", str(garden)]) == 0
    captured = capsys.readouterr()
    assert "images" in captured.out and "inspect" not in captured.err  # no progress bar
    assert json.loads((garden / "stats.json").read_text())["crowd_segments"] == 0
