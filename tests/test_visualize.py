"""Overlays: enlarged small pictures, outlines at segment boundaries, labels inside their
segment that neither overlap nor leave the picture nor hide other segments, a legend for the
rest, and image | ground truth | prediction."""

from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from maskformer import visualize

CATEGORIES = [{"name": "circle", "isthing": 1, "color": [220, 20, 60]},
              {"name": "pebble", "isthing": 1, "color": [0, 130, 200]},
              {"name": "sky", "isthing": 0, "color": [135, 206, 235]},
              {"name": "a rather long category name", "isthing": 0}]


def _box_size(factor_short: int = 384):
    font = visualize.label_font(factor_short)
    return lambda text: visualize.text_box(font, text)[:2]


def _voronoi(size: int, count: int, seed: int = 0) -> np.ndarray:
    """[size, size] ids 1..count: the nearest of `count` random points."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(0, size, (count, 2))
    yy, xx = np.mgrid[:size, :size]
    distance = (yy[..., None] - points[:, 0]) ** 2 + (xx[..., None] - points[:, 1]) ** 2
    return distance.argmin(-1) + 1


def _overlaps(a, b, margin: int) -> bool:
    return (a[0] < b[2] + margin and b[0] < a[2] + margin and a[1] < b[3] + margin
            and b[1] < a[3] + margin)


def _check_layout(panoptic, labels, factor, margin=2):
    big = visualize.enlarge(panoptic, factor)
    height, width = big.shape
    boxes = [b for label in labels for b in (label.box, label.marker) if b is not None]
    assert boxes, "nothing was placed: the checks below would pass vacuously"
    for box in boxes:
        assert 0 <= box[0] < box[2] <= width and 0 <= box[1] < box[3] <= height, box
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not _overlaps(a, b, margin), (a, b)
    ids, areas = np.unique(big, return_counts=True)
    area = dict(zip(ids.tolist(), areas.tolist(), strict=True))
    for label in labels:
        for box, own in ((label.box, 0.75), (label.marker, 0.75)):
            if box is None:
                continue
            window = big[box[1]:box[3], box[0]:box[2]]
            for i, count in zip(*np.unique(window, return_counts=True), strict=True):
                limit = own if i == label.segment_id else 0.2
                if i != 0:
                    assert count / area[int(i)] <= limit + 1e-9, (label, int(i))
        if label.box is not None:  # its point inside the segment, and inside the box
            x, y = label.anchor
            assert big[int(y), int(x)] == label.segment_id
            assert label.box[0] <= x <= label.box[2] and label.box[1] <= y <= label.box[3]


def test_labels_of_a_crowded_map_stay_inside_apart_and_off_other_segments():
    panoptic = _voronoi(64, 40)
    texts = {i: CATEGORIES[i % 4]["name"] for i in range(1, 41)}
    labels = visualize.layout_labels(panoptic, texts, _box_size(), factor=6)
    assert sorted(label.segment_id for label in labels) == list(range(1, 41))
    _check_layout(panoptic, labels, 6)
    placed = [label for label in labels if label.box is not None]
    homeless = [label for label in labels if label.box is None]
    assert placed and homeless  # both paths ran
    assert sorted(label.number for label in homeless if label.marker is not None) == list(
        range(1, 1 + sum(label.marker is not None for label in homeless)))
    assert all(label.number is None for label in homeless if label.marker is None)


def test_a_ring_is_labelled_on_the_ring_not_at_its_centroid():
    yy, xx = np.mgrid[:96, :96]
    radius = np.hypot(yy - 48, xx - 48)
    panoptic = np.where((radius > 20) & (radius < 34), 1, 2)
    ys, xs = np.nonzero(panoptic == 1)
    assert panoptic[int(ys.mean()), int(xs.mean())] == 2  # the centroid is in the hole
    labels = visualize.layout_labels(panoptic, {1: "ring", 2: "sky"}, _box_size(), factor=4)
    ring = next(label for label in labels if label.segment_id == 1)
    x, y = ring.anchor
    assert ring.box is not None and 20 * 4 < np.hypot(y - 48 * 4, x - 48 * 4) < 34 * 4
    _check_layout(panoptic, labels, 4)


def test_labels_at_the_border_are_moved_inside():
    panoptic = np.ones((96, 96), int)
    panoptic[:, 90:] = 2  # a strip at the right border, much narrower than its name
    panoptic[:6, :] = 3
    labels = visualize.layout_labels(
        panoptic, {1: "sky", 2: "a rather long category name", 3: "circle"}, _box_size(), 4)
    _check_layout(panoptic, labels, 4)
    strip = next(label for label in labels if label.segment_id == 2)
    assert strip.box is not None and strip.box[2] == 96 * 4  # pushed in, against the border


def test_outlines_mark_boundaries_between_different_ids():
    panoptic = np.zeros((6, 6), int)
    panoptic[:, 3:] = 2
    panoptic[:2, :3] = 1
    edge = visualize.outlines(panoptic)
    expected = np.zeros((6, 6), bool)
    expected[:, 2] = True  # left of the vertical boundary
    expected[1, :3] = True  # above the horizontal one (1 over void)
    np.testing.assert_array_equal(edge, expected)
    assert visualize.outlines(panoptic, width=2).sum() > edge.sum()
    assert not visualize.outlines(np.ones((5, 5), int)).any()


def _halves(size=96, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(40, 200, (size, size, 3)).astype(np.uint8)
    panoptic = np.ones((size, size), np.int32)
    panoptic[:, size // 2:] = 2
    segments = [{"id": 1, "category_id": 0}, {"id": 2, "category_id": 2}]
    return image, panoptic, segments


def test_overlay_enlarges_small_pictures_and_outlines_segments():
    image, panoptic, segments = _halves()
    picture = visualize.overlay(image, panoptic, segments, CATEGORIES)  # predict.py's call
    assert isinstance(picture, Image.Image) and picture.size == (384, 384)
    pixels = np.asarray(picture)
    # Column 4 * 48 - 1 is the boundary's outline; labels sit at the halves' centres.
    assert (pixels[:, 191] == 255).all()
    assert not (pixels[:, 150] == 255).all(-1).any() and not (pixels[:, 192] == 255).all(-1).any()
    # Nearest-neighbour: every map pixel is a 4 x 4 block (away from outlines and labels).
    block = pixels[:4, :4].reshape(-1, 3)
    assert (block == block[0]).all()
    # A label: its dark box with light text, where layout_labels puts it.
    labels = visualize.layout_labels(panoptic, {1: "circle", 2: "sky"}, _box_size(), 4)
    for label in labels:
        x0, y0, x1, y1 = label.box
        region = pixels[y0:y1, x0:x1].astype(int).sum(-1)
        assert (region < 250).mean() > 0.5 and (region > 600).any()  # box, text

    assert visualize.enlargement(64, 64) == 6 and visualize.enlargement(50, 80) == 8
    assert visualize.enlargement(400, 600) == 1
    small = visualize.overlay(image[:50, :80], panoptic[:50, :80], segments, CATEGORIES)
    assert small.size == (640, 400)
    big_image = np.zeros((400, 600, 3), np.uint8)
    big = visualize.overlay(big_image, np.ones((400, 600), np.int32), segments[:1], CATEGORIES)
    assert big.size == (600, 400)


def test_overlay_darkens_void_and_unlisted_ids():
    image, panoptic, segments = _halves()
    panoptic[:10] = 0
    panoptic[-10:] = 7  # not in segments
    pixels = np.asarray(visualize.overlay(image, panoptic, segments, CATEGORIES, factor=1))
    expected = (visualize.VOID_BRIGHTNESS * image[20:30, 60:70].astype(np.float32))
    np.testing.assert_allclose(pixels[:9, 60:70], (visualize.VOID_BRIGHTNESS
                                                   * image[:9, 60:70]).astype(np.uint8), atol=1)
    np.testing.assert_allclose(pixels[-9:, 60:70], (visualize.VOID_BRIGHTNESS
                                                    * image[-9:, 60:70]).astype(np.uint8), atol=1)
    assert not np.allclose(pixels[20:30, 60:70], expected, atol=1)

    # Nothing predicted: the darkened image, with a note in the middle.
    empty = np.asarray(visualize.overlay(image, np.zeros_like(panoptic), [], CATEGORIES))
    centre = empty[182:202, 160:224].astype(int).sum(-1)
    assert (centre > 600).any()  # the note's text
    np.testing.assert_allclose(empty[:40:4, :40:4], (visualize.VOID_BRIGHTNESS
                                                     * image[:10, :10]).astype(np.uint8), atol=1)


def test_names_that_find_no_place_go_to_a_legend():
    image = np.full((48, 48, 3), 120, np.uint8)
    panoptic = np.full((48, 48), 1, np.int32)
    segments = [{"id": 1, "category_id": 2}]
    for k in range(12):  # 2 x 2 pebbles, too small for their name
        y, x = 30 + 4 * (k // 6), 4 + 7 * (k % 6)
        panoptic[y:y + 2, x:x + 2] = k + 2
        segments.append({"id": k + 2, "category_id": 1})
    picture = visualize.overlay(image, panoptic, segments, CATEGORIES)
    assert picture.width == 384 and picture.height > 384  # the legend strip below
    legend = np.asarray(picture)[384:]
    assert (legend.sum(-1) < 100).any()  # its text
    labels = visualize.layout_labels(panoptic, {s["id"]: CATEGORIES[s["category_id"]]["name"]
                                                for s in segments}, _box_size(), 8)
    pebbles = [label for label in labels if label.segment_id > 1]
    assert all(label.box is None for label in pebbles)
    assert any(label.marker is not None for label in pebbles)
    _check_layout(panoptic, labels, 8)
    assert visualize._legend_text("pebble", [1, 2, 3, 5]) == "1-3, 5 pebble"
    assert visualize._legend_text("pebble", [1, 2, None]) == "1, 2 pebble, 1 unmarked"
    assert visualize._legend_text("pebble", [None, None]) == "pebble x2"


def test_categories_without_colours_get_distinct_ones():
    categories = [{"name": f"c{i}", "isthing": 0} for i in range(6)]
    colours = {tuple(visualize.category_colour(categories, i).astype(int)) for i in range(6)}
    assert len(colours) == 6


def test_compare_is_image_ground_truth_prediction_with_titles():
    image, panoptic, segments = _halves()
    predicted = np.ones_like(panoptic)
    picture = visualize.compare(image, panoptic, segments, predicted, segments[:1], CATEGORIES)
    title = visualize.text_box(visualize.label_font(384), "image")[1]
    assert picture.size == (3 * 384 + 2 * 8, 384 + title)
    pixels = np.asarray(picture)
    strip = pixels[:title].sum(-1)
    for x0 in (0, 392, 784):  # each panel has its title: dark text on white
        assert (strip[:, x0:x0 + 120] < 200).any() and (strip[:, x0:x0 + 120] == 765).mean() > 0.7
    # The first panel is the image itself, enlarged.
    np.testing.assert_array_equal(pixels[title:title + 384:4, :384:4], image)


@pytest.mark.parametrize("scale", [1, 8])
def test_overlay_collector_keeps_the_first_pictures(scale):
    image, panoptic, segments = _halves(64)
    targets = {"image_size": np.array([[64, 64]] * 3), "original_size": np.array([[64, 64]] * 3),
               "segment_map": np.stack([panoptic] * 3),
               "semantic_map": np.stack([np.where(panoptic == 1, 0, 2)] * 3),
               "crowd_map": np.zeros((3, 64, 64), bool), "image_id": np.array([7, 8, 9])}
    predictions = [SimpleNamespace(panoptic_map=panoptic, segments=segments)] * 3
    collect = visualize.OverlayCollector(CATEGORIES, count=2, scale=scale)
    collect(np.stack([image] * 3).astype(np.float32), targets, predictions)
    assert [image_id for image_id, _ in collect.pictures] == [7, 8]
    side = 64 * max(scale, 6)
    title = visualize.text_box(visualize.label_font(side), "image")[1]
    assert collect.pictures[0][1].shape == (side + title, 3 * side + 16, 3)
