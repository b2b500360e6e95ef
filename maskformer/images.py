"""Image files as the model takes them: RGB uint8 [H, W, 3], whatever the file holds, and the
image files among the files and folders a user names.

`read_image` brings every kind of file Pillow opens to the one form, with these rules:

- EXIF orientation is applied (`PIL.ImageOps.exif_transpose`), so a phone's portrait photo is
  segmented upright and the results line up with what a viewer shows.
- Transparency (an alpha channel, or a palette / grayscale / RGB colour marked transparent) is
  composited on black: rgb * alpha / 255. Black is the zero the model's inputs are padded with,
  and the value most files already store under fully transparent pixels, so a transparent area
  reads as "no image there" and an opaque one is unchanged. (White, what viewers draw, would be
  a bright colour the model saw only as content.)
- 16-bit grayscale ("I;16", "I;16B", ...) is scaled by its type's range, round(v / 257), so that
  0 -> 0 and 65535 -> 255 and an 8-bit image stored as 16 bits (v = 257 * x) comes back as x;
  Pillow's own conversion clips at 255 instead, which makes almost every pixel white.
- 16-bit RGB / RGBA PNGs are opened by Pillow as 8-bit RGB / RGBA keeping each value's high
  byte, v // 256 (what libpng's png_set_strip_16 and TensorFlow's `decode_png` to uint8 do).
  That is within one level of v / 257 and equal to it for v = 257 * x; Pillow gives no access
  to the full 16 bits of a colour PNG, so it is taken as it comes.
- 32-bit integer images ("I") are read as 16-bit when their values lie in 0..65535 (how 16-bit
  data is often stored in that mode); other values have no 8-bit reading and are an error.
- Float images ("F") are read as 0..1 (x 255) when their values lie in [0, 1], else as 0..255
  clipped; NaN is 0.
- CMYK (TIFF, and JPEG, where Pillow undoes the inverted Adobe CMYK of Photoshop's files) goes
  through Pillow's CMYK -> RGB conversion, without colour management (ICC profiles are not
  applied, to RGB images either).
- Of a file with several frames (GIF, multi-page TIFF, animated WebP) the first is read.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from maskformer.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")

_MODES_16 = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def read_image(path: str | Path) -> np.ndarray:
    """An image file as RGB uint8 [H, W, 3], by the rules of this module's docstring.

    Raises:
        DataError: the file is missing, not an image, corrupt or truncated, or its pixels have
            no RGB reading; one line, "PATH: cannot read the image: REASON".
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: cannot read the image: it is a folder")
    if not path.exists():
        raise DataError(f"{path}: cannot read the image: no such file")
    if path.is_file() and path.stat().st_size == 0:
        raise DataError(f"{path}: cannot read the image: the file is empty")
    try:
        with Image.open(path) as im:
            im.load()
            return _to_rgb(ImageOps.exif_transpose(im))
    except UnidentifiedImageError:
        reason = "not an image, or in a format Pillow cannot read"
    except DataError as e:
        reason = str(e)
    # Pillow reports broken files through many types (OSError, SyntaxError, ValueError,
    # EOFError, zlib.error, struct.error, DecompressionBombError); each is this file's fault.
    except Exception as e:  # noqa: BLE001
        reason = " ".join(str(e).split()) or type(e).__name__
    raise DataError(f"{path}: cannot read the image: {reason}")


def _to_rgb(im) -> np.ndarray:
    """A loaded PIL image as RGB uint8 [H, W, 3] (raises DataError with the reason only)."""
    mode = im.mode
    transparency = im.info.get("transparency")
    if mode in _MODES_16 or mode == "I":
        values = np.asarray(im).astype(np.int64)  # [H, W]; "I;16B" is big-endian uint16
        if mode == "I" and values.size and (values.min() < 0 or values.max() > 65535):
            raise DataError(f"32-bit integer pixels ({values.min()}..{values.max()}) outside "
                            "0..65535 have no 8-bit reading; save the image with 8 or 16 bits")
        gray = ((values * 2 + 257) // 514).astype(np.uint8)  # round(v / 257), halves up
        if isinstance(transparency, int):
            gray[values == transparency] = 0
        return np.repeat(gray[..., None], 3, axis=-1)
    if mode == "F":
        values = np.nan_to_num(np.asarray(im, np.float64), nan=0.0)
        if values.size and values.min() >= 0 and values.max() <= 1:
            values = values * 255
        gray = np.round(np.clip(values, 0, 255)).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if mode in _ALPHA_MODES or transparency is not None:
        rgba = np.asarray(_convert(im, "RGBA"), np.uint16)  # [H, W, 4]
        alpha = rgba[..., 3:]
        # round(rgb * alpha / 255), halves up: composited on black (see the module docstring)
        return ((rgba[..., :3] * alpha + 127) // 255).astype(np.uint8)
    return np.asarray(_convert(im, "RGB"), np.uint8)


def _convert(im, mode: str):
    try:
        return im.convert(mode)
    except ValueError as e:
        raise DataError(f"mode {im.mode} has no {mode} conversion ({e})") from None


# ---------------------------------------------------------------------------------------------
# Finding the image files among inputs
# ---------------------------------------------------------------------------------------------


def is_image_file(path: Path) -> bool:
    """Whether a folder's entry counts as an image: a file with one of `IMAGE_SUFFIXES` (any
    case) whose name does not start with "." (hidden files, such as the "._x.jpg" metadata
    files that macOS leaves on shared drives, are no images)."""
    return (path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
            and path.is_file())


def find_images(inputs: Iterable[str | Path], recursive: bool = False) -> list[Path]:
    """The image files among `inputs`, in order.

    A file given is taken as it is, whatever its suffix (reading it tells whether it is an
    image). A folder gives its image files (`is_image_file`) sorted by name, and with
    `recursive` those of its sub-folders too, sorted by their path below it (hidden sub-folders
    are left out). A file found twice (a file and its folder, or nested folders) is kept once,
    where it came first.

    Returns:
        The paths, as given or joined to the folder given (not resolved).

    Raises:
        DataError: no inputs; an input does not exist ("PATH: no such image or folder"); a
            folder has no image file ("PATH: no image files (.jpg, ...) in the folder", with
            "; its sub-folders have some, use --recursive" when that would find some).
    """
    inputs = [Path(p) for p in inputs]
    if not inputs:
        raise DataError("no images or folders given")
    found: list[Path] = []
    seen: set[Path] = set()
    for path in inputs:
        if path.is_dir():
            files = _walk(path) if recursive else sorted(
                p for p in path.iterdir() if is_image_file(p))
            if not files:
                raise DataError(_no_images_message(path, recursive))
        elif path.exists():
            files = [path]
        else:
            raise DataError(f"{path}: no such image or folder")
        for file in files:
            key = file.resolve()
            if key not in seen:
                seen.add(key)
                found.append(file)
    return found


def _walk(folder: Path) -> list[Path]:
    """The image files below `folder`, sorted by their relative path (symbolic links to
    folders are not followed, so a link cycle cannot loop)."""
    files = []
    for parent, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        files += [Path(parent) / n for n in names if is_image_file(Path(parent) / n)]
    return sorted(files, key=lambda p: p.relative_to(folder).parts)


def _no_images_message(folder: Path, recursive: bool) -> str:
    if not any(folder.iterdir()):
        return f"{folder}: the folder is empty"
    where = "the folder or its sub-folders" if recursive else "the folder"
    message = f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) in {where}"
    if not recursive and _walk(folder):
        message += "; its sub-folders have some, use --recursive"
    return message
