"""Overlays of panoptic maps with class names, for people to look at.

Every picture is legible at any input size: an image whose short side is under `min_size`
pixels is enlarged by a whole factor (the maps nearest-neighbour, so each segment keeps its
pixels), the font follows the picture's size, each segment gets a thin outline, and its name sits
on a dark box at a point deep inside it (the maximum of its distance transform: a ring's centroid
lies outside the ring). A name that would overlap another, or leave the picture, moves to another
point of its segment; one that finds no place goes to a legend under the picture, with a
number at its segment where that fits.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# The short side, in pixels, below which pictures are enlarged.
MIN_SIZE = 384
_GAP = 8  # pixels between the panels of `compare`
_OUTLINE = (255, 255, 255)
VOID_BRIGHTNESS = 0.4  # of the image where no segment is
_BOX = (0, 0, 0, 175)  # the label's box: dark, a little transparent
_CANDIDATES = 48  # points tried per segment, deepest first


def category_colour(categories: Sequence[Mapping[str, Any]], category_id: int) -> np.ndarray:
    """The category's "color", or a hue of its own (golden-ratio steps) when it has none."""
    colour = categories[category_id].get("color")
    if colour is not None:
        return np.array(colour, np.float64)
    hue = (category_id * 0.618034) % 1.0
    return np.array(colorsys.hsv_to_rgb(hue, 0.65, 0.9)) * 255


def colour_map(panoptic: np.ndarray, segments: list[dict[str, Any]],
               categories: list[dict[str, Any]]) -> np.ndarray:
    """RGB image [H, W, 3] uint8 of a panoptic map: stuff in its category colour, things in
    shades of it (the same shades for the same segment order); black where no segment."""
    out = np.zeros((*panoptic.shape, 3), np.uint8)
    rng = np.random.default_rng(0)
    for seg in segments:
        base = category_colour(categories, seg["category_id"])
        if seg.get("isthing", categories[seg["category_id"]]["isthing"]):
            base = np.clip(base + rng.integers(-60, 60, 3), 0, 255)
        out[panoptic == seg["id"]] = base.astype(np.uint8)
    return out


def enlargement(height: int, width: int, min_size: int = MIN_SIZE) -> int:
    """The whole factor that brings the short side to at least `min_size` (1 when it is)."""
    return max(1, math.ceil(min_size / max(min(height, width), 1)))


def enlarge(array: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement by a whole factor: [H, W, ...] -> [fH, fW, ...]."""
    if factor == 1:
        return array
    return np.repeat(np.repeat(array, factor, axis=0), factor, axis=1)


def outlines(panoptic: np.ndarray, width: int = 1) -> np.ndarray:
    """bool [H, W]: the pixels on a boundary between two different segment ids (void, 0,
    included), `width` pixels thick (a pixel differing from its right or lower neighbour)."""
    edge = np.zeros(panoptic.shape, bool)
    edge[:, :-1] |= panoptic[:, 1:] != panoptic[:, :-1]
    edge[:-1, :] |= panoptic[1:, :] != panoptic[:-1, :]
    if width > 1:
        from scipy import ndimage

        edge = ndimage.binary_dilation(edge, iterations=width - 1)
    return edge


def label_font(short_side: int):
    """Pillow's default (FreeType) font at a size readable on a picture of this short side."""
    from PIL import ImageFont

    # 14 px at 384, then growing with the square root: a large picture is looked at from
    # further away, but not proportionally further.
    return ImageFont.load_default(size=int(np.clip(round(14 * math.sqrt(short_side / 384)),
                                                   12, 40)))


def text_box(font, text: str) -> tuple[int, int, int]:
    """(width, height, padding) of `text`'s box; every box of a font has the same height."""
    ascent, descent = font.getmetrics()
    pad = max(2, round((ascent + descent) * 0.2))
    left, _, right, _ = font.getbbox(text)
    return int(right - left) + 2 * pad, ascent + descent + 2 * pad, pad


@dataclass
class Label:
    """Where a segment's name goes.

    Attributes:
        segment_id: the segment's id in the panoptic map.
        text: its name.
        anchor: (x, y), picture pixels, a point of the segment: the one the label's box is
            centred on (unless the picture's border moved the box, which still holds it), or
            for a label in the legend the segment's deepest point.
        box: (x0, y0, x1, y1), picture pixels, x1 and y1 exclusive: the label's box inside the
            segment, or None when the label is in the legend.
        marker: (x0, y0, x1, y1) of the numbered marker of a label in the legend, or None.
        number: the legend's number of a label in the legend (1, 2, ...), or None.
    """

    segment_id: int
    text: str
    anchor: tuple[float, float]
    box: tuple[int, int, int, int] | None = None
    marker: tuple[int, int, int, int] | None = None
    number: int | None = None


def _candidates(mask: np.ndarray, factor: int) -> tuple[float, list[tuple[float, float]]]:
    """The depth (inscribed radius, picture pixels) of a segment and up to `_CANDIDATES` points
    inside it, deepest first, as picture coordinates (x, y) of pixel centres."""
    from scipy import ndimage

    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    # Padded with background: the picture's border counts as the segment's edge.
    crop = np.pad(mask[y0:y1, x0:x1], 1)
    depth = ndimage.distance_transform_edt(crop)[1:-1, 1:-1]
    order = np.argsort(-depth, axis=None, kind="stable")
    order = order[depth.ravel()[order] > 0]
    if len(order) > _CANDIDATES:  # the deepest point, then others at evenly spaced depth ranks
        order = order[np.unique(np.linspace(0, len(order) - 1, _CANDIDATES).astype(int))]
    cy, cx = np.unravel_index(order, depth.shape)
    points = [((x0 + x + 0.5) * factor, (y0 + y + 0.5) * factor)
              for y, x in zip(cy.tolist(), cx.tolist(), strict=True)]
    return float(depth.max()) * factor, points


class _Layout:
    """Free places for boxes on a picture of a panoptic map enlarged by `factor`.

    A box is free when it lies inside the picture, keeps `margin` pixels from every box placed
    before, and hides at most `HIDE` of any other segment (and at most `own` of its own): a
    label must not cover the things it names.
    """

    HIDE, HIDE_OWN = 0.2, 0.75

    def __init__(self, panoptic: np.ndarray, factor: int, margin: int):
        self.panoptic, self.factor, self.margin = panoptic, factor, margin
        self.height, self.width = panoptic.shape[0] * factor, panoptic.shape[1] * factor
        ids, areas = np.unique(panoptic, return_counts=True)
        self.area = dict(zip(ids.tolist(), areas.tolist(), strict=True))
        self.placed: list[tuple[int, int, int, int]] = []

    def _hidden(self, box) -> dict[int, float]:
        """The fraction of each segment the box covers (at the map's resolution)."""
        f = self.factor
        window = self.panoptic[box[1] // f:-(-box[3] // f), box[0] // f:-(-box[2] // f)]
        ids, counts = np.unique(window, return_counts=True)
        return {i: c / self.area[i] for i, c in zip(ids.tolist(), counts.tolist(), strict=True)
                if i != 0}

    def free(self, box, segment_id: int, own: float) -> bool:
        m = self.margin
        if any(box[0] < b[2] + m and b[0] < box[2] + m and box[1] < b[3] + m and
               b[1] < box[3] + m for b in self.placed):
            return False
        return all(fraction <= (own if i == segment_id else self.HIDE)
                   for i, fraction in self._hidden(box).items())

    def place(self, size: tuple[int, int], points, segment_id: int, own: float):
        """The first free box of `size` centred on one of `points` (moved inside the
        picture, so that it still holds the point), now taken, and that point; None when
        there is none."""
        w, h = size
        if w > self.width or h > self.height:
            return None
        for x, y in points:
            x0 = int(np.clip(round(x - w / 2), 0, self.width - w))
            y0 = int(np.clip(round(y - h / 2), 0, self.height - h))
            box = (x0, y0, x0 + w, y0 + h)
            if self.free(box, segment_id, own):
                self.placed.append(box)
                return box, (x, y)
        return None

    def beside(self, mask: np.ndarray, size: tuple[int, int]) -> list[tuple[float, float]]:
        """Centres of a box of `size` just outside the segment's bounding box: right, left,
        below, above, then the corners."""
        ys, xs = np.nonzero(mask)
        f, (w, h), gap = self.factor, size, self.margin + 1
        x0, x1, y0, y1 = xs.min() * f, (xs.max() + 1) * f, ys.min() * f, (ys.max() + 1) * f
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        left, right = x0 - gap - w / 2, x1 + gap + w / 2
        top, bottom = y0 - gap - h / 2, y1 + gap + h / 2
        return [(right, cy), (left, cy), (cx, bottom), (cx, top), (right, top),
                (right, bottom), (left, top), (left, bottom)]


def layout_labels(panoptic: np.ndarray, texts: Mapping[int, str],
                  box_size: Callable[[str], tuple[int, int]], factor: int = 1,
                  margin: int = 2) -> list[Label]:
    """Places one label per segment inside the picture: no two within `margin` pixels, none
    hiding more than a fifth of another segment or three quarters of its own.

    Segments are served tightest first (the smallest inscribed radius), each at the deepest of
    its points where its box is free. A label with no free point goes to the legend, with a
    numbered marker (a box of `box_size(str(number))`) in its segment, or else just beside it,
    where one is free.

    Args:
        panoptic: [H, W] segment ids, at the map's own size.
        texts: the name to write, by segment id (ids absent from the map are left out).
        box_size: a text's box (width, height) in picture pixels.
        factor: the picture's enlargement over the map.

    Returns:
        Labels in the order served.
    """
    layout = _Layout(panoptic, factor, margin)
    found = []
    for segment_id, text in texts.items():
        mask = panoptic == segment_id
        if mask.any():
            depth, points = _candidates(mask, factor)
            found.append((depth, segment_id, text, points))
    found.sort(key=lambda f: (f[0], f[1]))
    labels, homeless = [], []
    for _, segment_id, text, points in found:
        label = Label(segment_id, text, points[0])
        found_place = layout.place(box_size(text), points, segment_id, layout.HIDE_OWN)
        if found_place is None:
            homeless.append((label, points))
        else:
            label.box, label.anchor = found_place
        labels.append(label)
    # Markers take the widest number's room; then those placed are numbered 1, 2, ... by name
    # (the legend lists each name once, with a run of numbers), each box shrunk to its number.
    homeless.sort(key=lambda h: h[0].text)
    widest = box_size(str(len(homeless)))
    marked = []
    for label, points in homeless:
        found_place = (layout.place(widest, points, label.segment_id, layout.HIDE_OWN)
                       or layout.place(widest, layout.beside(panoptic == label.segment_id,
                                                             widest), label.segment_id, 0.0))
        if found_place is not None:
            label.marker = found_place[0]
            marked.append(label)
    for number, label in enumerate(marked, 1):
        label.number = number
        w, h = box_size(str(number))
        x0 = label.marker[0] + (label.marker[2] - label.marker[0] - w) // 2
        label.marker = (x0, label.marker[1], x0 + w, label.marker[1] + h)
    return labels


def _draw_box(draw, box, text: str, font, pad: int) -> None:
    draw.rectangle([box[0], box[1], box[2] - 1, box[3] - 1], fill=_BOX)
    left, _, _, _ = font.getbbox(text)
    draw.text((box[0] + pad - left, box[1] + pad), text, font=font, fill=(255, 255, 255, 255))


def _legend(entries: list[tuple[str, np.ndarray]], width: int, font):
    """A white strip, `width` wide, listing (text, swatch colour) entries in rows; None when
    there are none."""
    from PIL import Image, ImageDraw

    if not entries:
        return None
    _, line, pad = text_box(font, "Ag")
    swatch = line - 2 * pad
    rows: list[list[tuple[int, str, np.ndarray]]] = [[]]
    x = pad
    for text, colour in entries:
        w = swatch + pad + text_box(font, text)[0]
        if rows[-1] and x + w > width:
            rows.append([])
            x = pad
        rows[-1].append((x, text, colour))
        x += w + 2 * pad
    strip = Image.new("RGB", (width, len(rows) * line + pad), "white")
    draw = ImageDraw.Draw(strip)
    for r, row in enumerate(rows):
        y = r * line + pad
        for x, text, colour in row:
            draw.rectangle([x, y + pad, x + swatch - 1, y + pad + swatch - 1],
                           fill=tuple(int(c) for c in colour), outline=(0, 0, 0))
            draw.text((x + swatch + pad, y + pad), text, font=font, fill=(0, 0, 0))
    return strip


def _stack(top, bottom):
    from PIL import Image

    if bottom is None:
        return top
    canvas = Image.new("RGB", (top.width, top.height + bottom.height), "white")
    canvas.paste(top, (0, 0))
    canvas.paste(bottom, (0, top.height))
    return canvas


def overlay(image: np.ndarray, panoptic: np.ndarray, segments: list[dict[str, Any]],
            categories: list[dict[str, Any]], alpha: float = 0.55, min_size: int = MIN_SIZE,
            factor: int | None = None):
    """The image blended with the coloured panoptic map, each segment outlined and labelled
    by name (see the module's docstring), a legend below for the names that found no place;
    void (0, or an id `segments` does not list) darkened.

    Args:
        image: [H, W, 3] uint8 RGB.
        panoptic: [H, W] segment ids, 0 where no segment.
        segments: `segments_info` of the map (id, category_id; isthing optional).
        categories: the dataset's categories in contiguous order (name, isthing; color
            optional).
        alpha: the colours' opacity.
        min_size: the short side the picture is enlarged to at least.
        factor: the enlargement, instead of the one `min_size` gives.

    Returns:
        A PIL RGB image, [factor H (+ the legend), factor W].
    """
    from PIL import Image, ImageDraw

    factor = factor or enlargement(*panoptic.shape, min_size)
    colours = colour_map(panoptic, segments, categories)
    listed = np.isin(panoptic, [s["id"] for s in segments])
    # Void (no segment) darkened: told apart from a segment whose colour is close to the image's.
    blended = np.where(listed[..., None],
                       (1 - alpha) * image.astype(np.float32) + alpha * colours,
                       VOID_BRIGHTNESS * image.astype(np.float32))
    big_map = enlarge(panoptic, factor)
    picture = enlarge(np.clip(blended, 0, 255).astype(np.uint8), factor).copy()
    short = min(big_map.shape)
    picture[outlines(big_map, max(1, short // 500))] = _OUTLINE
    font = label_font(short)

    def box_size(text: str) -> tuple[int, int]:
        return text_box(font, text)[:2]

    names = {s["id"]: categories[s["category_id"]]["name"] for s in segments}
    labels = layout_labels(panoptic, names, box_size, factor)
    layer = Image.new("RGBA", (big_map.shape[1], big_map.shape[0]), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    pad = text_box(font, "Ag")[2]
    legend: dict[str, list[int]] = {}
    swatches: dict[str, np.ndarray] = {}
    category_of = {s["id"]: s["category_id"] for s in segments}
    for label in labels:
        if label.box is not None:
            _draw_box(draw, label.box, label.text, font, pad)
            continue
        if label.marker is not None:
            _draw_box(draw, label.marker, str(label.number), font, pad)
        legend.setdefault(label.text, []).append(label.number)  # None: not marked
        swatches[label.text] = category_colour(categories, category_of[label.segment_id])
    if not listed.any():  # an empty prediction: say so rather than show a dark picture
        w, h = box_size("no segments")
        x0, y0 = (layer.width - w) // 2, (layer.height - h) // 2
        _draw_box(draw, (x0, y0, x0 + w, y0 + h), "no segments", font, pad)
    picture = Image.alpha_composite(Image.fromarray(picture).convert("RGBA"), layer)
    entries = [(_legend_text(text, numbers), swatches[text]) for text, numbers in legend.items()]
    return _stack(picture.convert("RGB"), _legend(entries, picture.width, font))


def _legend_text(text: str, numbers: list[int | None]) -> str:
    """"1-3, 5 circle", "circle" (none marked) or "1, 2 circle, 3 unmarked"."""
    marked = [n for n in numbers if n is not None]
    unmarked = len(numbers) - len(marked)
    words = [_runs(marked), text] if marked else [text]
    if unmarked and marked:
        words[-1] += ","
    if unmarked and (marked or unmarked > 1):
        words.append(f"{unmarked} unmarked" if marked else f"x{unmarked}")
    return " ".join(words)


def _runs(numbers: list[int]) -> str:
    """[1, 2, 3, 5] -> "1-3, 5"."""
    runs: list[list[int]] = []
    for n in sorted(numbers):
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 2 else ", ".join(map(str, r))
                     for r in runs)


def _titled(picture, title: str, font):
    from PIL import Image, ImageDraw

    _, line, pad = text_box(font, title)
    canvas = Image.new("RGB", (picture.width, picture.height + line), "white")
    ImageDraw.Draw(canvas).text((pad, pad), title, font=font, fill=(0, 0, 0))
    canvas.paste(picture, (0, line))
    return canvas


def side_by_side(pictures, gap: int = _GAP) -> Any:
    """PIL pictures in a row on white, `gap` pixels apart, top-aligned."""
    from PIL import Image

    width = sum(p.width for p in pictures) + gap * (len(pictures) - 1)
    canvas = Image.new("RGB", (width, max(p.height for p in pictures)), "white")
    x = 0
    for p in pictures:
        canvas.paste(p, (x, 0))
        x += p.width + gap
    return canvas


def compare(image: np.ndarray, truth_map: np.ndarray, truth_segments: list[dict[str, Any]],
            predicted_map: np.ndarray, predicted_segments: list[dict[str, Any]],
            categories: list[dict[str, Any]], min_size: int = MIN_SIZE,
            factor: int | None = None):
    """Image | ground truth | prediction, each titled, at one enlargement (see `overlay`).

    Args:
        image: [H, W, 3] uint8 RGB; truth_map, predicted_map: [H, W] segment ids.

    Returns:
        A PIL RGB image.
    """
    from PIL import Image

    factor = factor or enlargement(*truth_map.shape, min_size)
    plain = Image.fromarray(image.astype(np.uint8)).resize(
        (truth_map.shape[1] * factor, truth_map.shape[0] * factor), Image.Resampling.NEAREST)
    truth = overlay(image, truth_map, truth_segments, categories, factor=factor)
    predicted = overlay(image, predicted_map, predicted_segments, categories, factor=factor)
    font = label_font(min(plain.size))
    return side_by_side([_titled(plain, "image", font), _titled(truth, "ground truth", font),
                         _titled(predicted, "prediction", font)])


class OverlayCollector:
    """An `inference.evaluate(on_batch=...)` callback that keeps image | ground truth |
    prediction pictures (numpy RGB, see `compare`) of the first `count` images, as
    `(image_id, picture)` pairs.

    Args:
        scale: the least enlargement; the pictures are enlarged further where `min_size`
            asks for it.
    """

    def __init__(self, categories: list[dict[str, Any]], count: int = 8, scale: int = 1,
                 min_size: int = MIN_SIZE):
        self.categories, self.count, self.scale = categories, count, scale
        self.min_size = min_size
        self.pictures: list[tuple[int, np.ndarray]] = []

    def __call__(self, images, targets, predictions) -> None:
        from PIL import Image

        from maskformer.evaluation.evaluator import ground_truth_of

        for b, prediction in enumerate(predictions):
            if len(self.pictures) >= self.count:
                return
            gt = ground_truth_of(targets, b)
            h, w = (int(v) for v in targets["image_size"][b])
            image = images[b, :h, :w].astype(np.uint8)
            if image.shape[:2] != gt["segment_map"].shape:  # evaluation resized: show original
                image = np.asarray(Image.fromarray(image).resize(gt["segment_map"].shape[::-1]))
            factor = max(self.scale, enlargement(*image.shape[:2], self.min_size))
            picture = compare(image, gt["segment_map"], gt["segments"],
                              prediction.panoptic_map, prediction.segments, self.categories,
                              factor=factor)
            self.pictures.append((gt["image_id"], np.asarray(picture)))


def save_overlays(model, config, out_dir: str | Path, count: int = 8,
                  scale: int = 1) -> list[Path]:
    """Image | ground truth | prediction for the first `count` validation images."""
    from PIL import Image

    from maskformer.inference import evaluate, read_categories

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    collect = OverlayCollector(read_categories(config), count, scale)
    batches = -(-count // config.eval.batch_size)
    evaluate(model, config, max_batches=batches, progress=False, on_batch=collect)
    written = []
    for image_id, picture in collect.pictures:
        path = out_dir / f"{image_id:06d}.png"
        Image.fromarray(picture).save(path)
        written.append(path)
    return written
