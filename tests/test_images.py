"""Image files of every kind come back as the RGB uint8 the model takes (each file written here
with Pillow, or TensorFlow for 16-bit colour PNGs), and the image files among inputs are found
as documented."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskformer.errors import DataError
from maskformer.images import IMAGE_SUFFIXES, find_images, read_image

RNG = np.random.default_rng(0)


def _write(path: Path, image: Image.Image, **options) -> Path:
    image.save(path, **options)
    return path


def _gray16(values) -> Image.Image:
    image = Image.fromarray(np.asarray(values, np.uint16))
    assert image.mode == "I;16"
    return image


def _as_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(np.asarray(gray, np.uint8)[..., None], 3, axis=-1)


def _read(path: Path) -> np.ndarray:
    image = read_image(path)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 3
    return image


# ---------------------------------------------------------------------------------------------
# 16-bit and other wide grayscale
# ---------------------------------------------------------------------------------------------


def test_16_bit_grayscale_png_is_scaled_by_its_range(tmp_path):
    values = np.arange(65536).reshape(256, 256)  # every 16-bit value once
    path = _write(tmp_path / "gray16.png", _gray16(values))
    assert Image.open(path).mode == "I;16"
    image = _read(path)
    np.testing.assert_array_equal(image, _as_rgb(np.floor(values / 257 + 0.5)))
    # 0 -> 0, 65535 -> 255, an 8-bit value stored as 16 bits comes back, and the mean is grey
    # (Pillow's own conversion clips at 255: an almost white image).
    assert image.min() == 0 and image.max() == 255
    eight = np.arange(256)
    np.testing.assert_array_equal(
        _read(_write(tmp_path / "x257.png", _gray16(eight[None] * 257))), _as_rgb(eight[None]))
    assert 126 < image.mean() < 129


def test_16_bit_grayscale_tiff_and_big_endian(tmp_path):
    values = np.array([[0, 257, 32768], [40000, 65278, 65535]])
    expected = _as_rgb([[0, 1, 128], [156, 254, 255]])
    np.testing.assert_array_equal(_read(_write(tmp_path / "g.tif", _gray16(values))), expected)
    big = Image.fromarray(values.astype(">u2"))
    assert big.mode == "I;16B"
    path = _write(tmp_path / "big.tif", big)
    np.testing.assert_array_equal(_read(path), expected)


def test_16_bit_grayscale_transparent_value_is_black(tmp_path):
    path = _write(tmp_path / "t.png", _gray16([[300, 65535]]), transparency=300)
    np.testing.assert_array_equal(_read(path), _as_rgb([[0, 255]]))


def test_32_bit_integer_images(tmp_path):
    values = np.array([[0, 257, 65535]], np.int32)
    path = _write(tmp_path / "i.tif", Image.fromarray(values))
    assert Image.open(path).mode == "I"
    np.testing.assert_array_equal(_read(path), _as_rgb([[0, 1, 255]]))
    wide = _write(tmp_path / "wide.tif", Image.fromarray(np.array([[0, 70000]], np.int32)))
    with pytest.raises(DataError, match=r"wide.tif: cannot read the image: 32-bit .*0\.\.70000"):
        read_image(wide)


def test_float_images(tmp_path):
    unit = np.array([[0.0, 0.5, 1.0, np.nan]], np.float32)
    path = _write(tmp_path / "unit.tif", Image.fromarray(unit))
    assert Image.open(path).mode == "F"
    np.testing.assert_array_equal(_read(path), _as_rgb([[0, 128, 255, 0]]))
    # beyond 1: taken as 0..255, clipped
    byte = np.array([[-3.0, 2.0, 100.4, 300.0]], np.float32)
    np.testing.assert_array_equal(_read(_write(tmp_path / "byte.tif", Image.fromarray(byte))),
                                  _as_rgb([[0, 2, 100, 255]]))


# ---------------------------------------------------------------------------------------------
# 16-bit colour PNGs (written by TensorFlow: Pillow writes no 16-bit colour)
# ---------------------------------------------------------------------------------------------


def _png16(path: Path, values: np.ndarray) -> Path:
    import tensorflow as tf

    path.write_bytes(tf.io.encode_png(values.astype(np.uint16)).numpy())
    assert path.read_bytes()[24] == 16  # IHDR bit depth
    return path


def test_16_bit_rgb_png(tmp_path):
    values = RNG.integers(0, 65536, (16, 16, 3))
    values[0, :3] = [[0, 0, 0], [65535, 65535, 65535], [257 * 10, 257 * 200, 257 * 255]]
    image = _read(_png16(tmp_path / "rgb16.png", values))
    # The high byte (what Pillow gives): within one level of v / 257, exact for v = 257 * x.
    np.testing.assert_array_equal(image, values // 256)
    assert np.abs(image - values / 257).max() < 1
    np.testing.assert_array_equal(image[0, :3], [[0, 0, 0], [255, 255, 255], [10, 200, 255]])


def test_16_bit_rgba_png_is_composited_on_black(tmp_path):
    values = np.array([[[65535, 257 * 100, 0, 65535], [65535, 65535, 65535, 0],
                        [257 * 200, 257 * 200, 257 * 200, 257 * 51]]])
    np.testing.assert_array_equal(_read(_png16(tmp_path / "rgba16.png", values)),
                                  [[[255, 100, 0], [0, 0, 0], [40, 40, 40]]])


# ---------------------------------------------------------------------------------------------
# Palette, grayscale, transparency, CMYK
# ---------------------------------------------------------------------------------------------

PALETTE = [255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9)


def _palette_image() -> Image.Image:
    image = Image.fromarray(np.array([[0, 1, 2], [2, 1, 0]], np.uint8), mode="P")
    image.putpalette(PALETTE)
    return image


def test_palette_png_without_and_with_transparency(tmp_path):
    opaque = _read(_write(tmp_path / "p.png", _palette_image()))
    red, green, blue, black = [255, 0, 0], [0, 255, 0], [0, 0, 255], [0, 0, 0]
    np.testing.assert_array_equal(opaque, [[red, green, blue], [blue, green, red]])
    transparent = _write(tmp_path / "pt.png", _palette_image(), transparency=1)
    assert Image.open(transparent).mode == "P"
    np.testing.assert_array_equal(_read(transparent), [[red, black, blue], [blue, black, red]])
    # per-entry alpha (a tRNS table): entry 0 half transparent
    table = _write(tmp_path / "ptable.png", _palette_image(), transparency=bytes([128, 255, 0]))
    np.testing.assert_array_equal(_read(table), [[[128, 0, 0], green, black],
                                                 [black, green, [128, 0, 0]]])


def test_palette_gif_with_transparency(tmp_path):
    path = _write(tmp_path / "p.gif", _palette_image(), transparency=2)
    np.testing.assert_array_equal(_read(path), [[[255, 0, 0], [0, 255, 0], [0, 0, 0]],
                                                [[0, 0, 0], [0, 255, 0], [255, 0, 0]]])


def test_grayscale_and_bilevel(tmp_path):
    gray = RNG.integers(0, 256, (5, 7), np.uint8)
    np.testing.assert_array_equal(_read(_write(tmp_path / "l.png", Image.fromarray(gray))),
                                  _as_rgb(gray))
    bits = np.array([[True, False]])
    np.testing.assert_array_equal(_read(_write(tmp_path / "1.png", Image.fromarray(bits))),
                                  _as_rgb([[255, 0]]))


def test_grayscale_with_alpha_and_rgba_are_composited_on_black(tmp_path):
    la = np.array([[[200, 255], [200, 128], [200, 0]]], np.uint8)
    path = _write(tmp_path / "la.png", Image.fromarray(la, mode="LA"))
    assert Image.open(path).mode == "LA"
    # round(200 * 128 / 255) = 100
    np.testing.assert_array_equal(_read(path), _as_rgb([[200, 100, 0]]))
    rgba = RNG.integers(0, 256, (6, 8, 4), np.uint8)
    rgba[0, 0, 3], rgba[0, 1, 3] = 255, 0
    image = _read(_write(tmp_path / "rgba.png", Image.fromarray(rgba, mode="RGBA")))
    expected = np.floor(rgba[..., :3] * (rgba[..., 3:] / 255) + 0.5)
    np.testing.assert_array_equal(image, expected)
    np.testing.assert_array_equal(image[0, 0], rgba[0, 0, :3])
    np.testing.assert_array_equal(image[0, 1], [0, 0, 0])


def test_rgb_with_a_transparent_colour(tmp_path):
    rgb = np.array([[[10, 20, 30], [40, 50, 60]]], np.uint8)
    path = _write(tmp_path / "t.png", Image.fromarray(rgb), transparency=(10, 20, 30))
    np.testing.assert_array_equal(_read(path), [[[0, 0, 0], [40, 50, 60]]])


# C, M, Y, K and the RGB they stand for: (255 - C) * (255 - K) / 255 and so on.
CMYK = [((0, 255, 255, 0), (255, 0, 0)), ((255, 0, 255, 0), (0, 255, 0)),
        ((0, 0, 0, 0), (255, 255, 255)), ((0, 0, 0, 255), (0, 0, 0)),
        ((0, 0, 0, 128), (127, 127, 127))]


def _cmyk_blocks(block: int) -> tuple[Image.Image, np.ndarray]:
    cmyk = np.concatenate([np.full((block, block, 4), c, np.uint8) for c, _ in CMYK], axis=1)
    rgb = np.concatenate([np.full((block, block, 3), r, np.uint8) for _, r in CMYK], axis=1)
    return Image.fromarray(cmyk, mode="CMYK"), rgb


def test_cmyk_tiff(tmp_path):
    image, expected = _cmyk_blocks(2)
    result = _read(_write(tmp_path / "cmyk.tif", image)).astype(int)
    assert np.abs(result - expected).max() <= 1


def test_cmyk_jpeg_with_adobe_inversion(tmp_path):
    image, expected = _cmyk_blocks(16)
    path = _write(tmp_path / "cmyk.jpg", image, quality=95)
    with Image.open(path) as opened:
        # libjpeg writes CMYK with Adobe's marker and the values inverted (as Photoshop does);
        # read without undoing that, red would come back cyan.
        assert opened.mode == "CMYK" and "adobe" in opened.info
    result = _read(path).astype(int)
    centres = result[8, 8::16]  # [5, 3], away from the blocks' edges
    assert np.abs(centres - expected[8, 8::16]).max() <= 6


# ---------------------------------------------------------------------------------------------
# EXIF orientation
# ---------------------------------------------------------------------------------------------


def _marked_jpeg(path: Path, orientation: int | None) -> Path:
    """A 48 x 32 (W x H) grey JPEG with a red 16 x 16 block at the stored top-left corner."""
    pixels = np.full((32, 48, 3), 128, np.uint8)
    pixels[:16, :16] = [255, 0, 0]
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    return _write(path, Image.fromarray(pixels), quality=95, exif=exif.tobytes())


def _red_corner(image: np.ndarray) -> str:
    h, w = image.shape[:2]
    corners = {"top-left": image[4, 4], "top-right": image[4, w - 5],
               "bottom-left": image[h - 5, 4], "bottom-right": image[h - 5, w - 5]}
    red = [name for name, px in corners.items() if px[0] > 200 and px[1] < 60 and px[2] < 60]
    assert len(red) == 1, corners
    return red[0]


@pytest.mark.parametrize(("orientation", "shape", "corner"), [
    (None, (32, 48), "top-left"),
    (1, (32, 48), "top-left"),
    # 6: the camera was turned clockwise; shown rotated 90 degrees clockwise
    (6, (48, 32), "top-right"),
    # 8: turned the other way; shown rotated 90 degrees counter-clockwise
    (8, (48, 32), "bottom-left"),
    (3, (32, 48), "bottom-right"),
])
def test_exif_orientation_is_applied(tmp_path, orientation, shape, corner):
    image = _read(_marked_jpeg(tmp_path / "photo.jpg", orientation))
    assert image.shape[:2] == shape
    assert _red_corner(image) == corner


# ---------------------------------------------------------------------------------------------
# Formats, and files that are not images
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("suffix", "options"), [
    (".png", {}), (".bmp", {}), (".tif", {}), (".webp", {"lossless": True}),
])
def test_lossless_formats_round_trip(tmp_path, suffix, options):
    rgb = RNG.integers(0, 256, (9, 11, 3), np.uint8)
    path = _write(tmp_path / f"x{suffix}", Image.fromarray(rgb), **options)
    np.testing.assert_array_equal(_read(path), rgb)


def _png_bytes() -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(("name", "content", "reason"), [
    ("notes.jpg", b"shopping list:\nmilk\n", "not an image"),
    ("cut.png", _png_bytes()[:3000], "truncated"),
    ("zeros.png", _png_bytes()[:40] + bytes(500), "not an image"),
    ("empty.jpg", b"", "the file is empty"),
])
def test_unreadable_files_name_the_file_and_the_reason_in_one_line(tmp_path, name, content,
                                                                    reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as error:
        read_image(path)
    message = str(error.value)
    assert message.startswith(f"{path}: cannot read the image: ") and reason in message
    assert "\n" not in message


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(DataError, match="nope.png: cannot read the image: no such file"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(DataError, match="it is a folder"):
        read_image(tmp_path)


# ---------------------------------------------------------------------------------------------
# find_images
# ---------------------------------------------------------------------------------------------


def _touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")


def test_a_folder_gives_its_image_files_sorted(tmp_path):
    _touch(tmp_path, "b.png", "a.JPG", "c.jpeg", "notes.txt", ".hidden.jpg", "sub/d.png",
           "e.Tiff", "f.webp", "g.gif", "h.bmp", "i.tif")
    found = find_images([tmp_path])
    assert [p.name for p in found] == ["a.JPG", "b.png", "c.jpeg", "e.Tiff", "f.webp", "g.gif",
                                       "h.bmp", "i.tif"]
    assert all(p.parent == tmp_path for p in found)
    assert {p.suffix.lower() for p in found} == set(IMAGE_SUFFIXES)


def test_recursive_walks_sub_folders(tmp_path):
    _touch(tmp_path, "z.png", "a/x.png", "a/b/y.jpg", "b/x.png", ".cache/w.png", "a/.x.png",
           "b/readme.md")
    parts = [p.relative_to(tmp_path).parts for p in find_images([tmp_path], recursive=True)]
    assert parts == [("a", "b", "y.jpg"), ("a", "x.png"), ("b", "x.png"), ("z.png",)]
    assert [p.name for p in find_images([tmp_path])] == ["z.png"]


def test_files_are_taken_as_given_and_duplicates_removed(tmp_path):
    _touch(tmp_path, "dir/a.png", "dir/b.png", "other.dat")
    found = find_images([tmp_path / "dir" / "b.png", tmp_path / "other.dat", tmp_path / "dir",
                         tmp_path / "dir" / ".." / "dir" / "a.png"])
    assert found == [tmp_path / "dir" / "b.png", tmp_path / "other.dat",
                     tmp_path / "dir" / "a.png"]


def test_inputs_that_give_no_image_are_errors(tmp_path):
    with pytest.raises(DataError, match="no images or folders given"):
        find_images([])
    with pytest.raises(DataError, match="nope.jpg: no such image or folder"):
        find_images([tmp_path / "nope.jpg"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="empty: the folder is empty"):
        find_images([empty])
    _touch(tmp_path, "texts/a.txt", "texts/b.md")
    with pytest.raises(DataError, match=r"texts: no image files \(.jpg, .*\) in the folder$"):
        find_images([tmp_path / "texts"])
    with pytest.raises(DataError, match="in the folder or its sub-folders$"):
        find_images([tmp_path / "texts"], recursive=True)
    _touch(tmp_path, "nested/a.txt", "nested/deeper/x.png")
    with pytest.raises(DataError, match="nested: .*; its sub-folders have some, use --recursive"):
        find_images([tmp_path / "nested"])
    assert find_images([tmp_path / "nested"], recursive=True) == [
        tmp_path / "nested" / "deeper" / "x.png"]
