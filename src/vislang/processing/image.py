"""One safe image loader for every entry point: limits first, decoding second.

Images come from users and from the network, so the loader treats them as hostile input:
the byte size is checked before anything is opened, the pixel count is read from the header
and checked before a single pixel is decoded, only a fixed set of raster formats is parsed,
and every failure surfaces as an ImageError instead of a Pillow traceback.
"""

from __future__ import annotations

import io
import logging
import os
import re
import struct
import warnings
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from vislang.errors import ImageError, ImageTooLargeError

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024

# Real raster formats only. Passing this list to Image.open also stops Pillow from trying its
# other plugins, some of which (EPS through Ghostscript, WMF, PSD) are attack surface we never need.
OPEN_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF", "PPM")
# Pillow's JPEG opener reports the multi-picture JPEGs written by most phone cameras as MPO.
ALLOWED_FORMATS = (*OPEN_FORMATS, "MPO")

ImageSource = str | os.PathLike | bytes | bytearray | memoryview | Image.Image | np.ndarray

_PIL_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


def load_image(
    source: ImageSource,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Image.Image:
    """Load `source` as a fully decoded RGB image with EXIF orientation applied and no metadata.

    Accepts a file path, encoded bytes, a PIL image, or a numpy array (HxW, HxWx1, HxWx3 or HxWx4;
    uint8, or float in [0, 1]). Raises ImageTooLargeError over `max_pixels` or `max_bytes`, and
    ImageError for anything that is not a readable image of an allowed format.
    """
    if isinstance(source, Image.Image):
        _check_pixels(source.width, source.height, max_pixels)
        if source.format is not None and source.format not in ALLOWED_FORMATS:
            raise ImageError(
                f"image format {source.format} is not allowed; allowed: {', '.join(ALLOWED_FORMATS)}"
            )
        return _decode(source, max_pixels, what="the given PIL image")
    if isinstance(source, np.ndarray):
        return _from_array(source, max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        _check_bytes(len(data), max_bytes)
        return _open_and_decode(io.BytesIO(data), max_pixels, what=f"image bytes ({len(data)} bytes)")
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        try:
            size = os.stat(path).st_size
        except OSError as e:
            raise ImageError(f"cannot read image file {path!r}: {e.strerror or e}") from e
        if not os.path.isfile(path):
            raise ImageError(f"{path!r} is not a regular file")
        _check_bytes(size, max_bytes)
        try:
            with open(path, "rb") as f:
                return _open_and_decode(f, max_pixels, what=f"image file {path!r}")
        except OSError as e:
            raise ImageError(f"cannot read image file {path!r}: {e.strerror or e}") from e
    raise ImageError(
        f"cannot load an image from a {type(source).__name__}; pass a path, bytes, PIL image or array"
    )


def image_header(source: str | os.PathLike | bytes | bytearray | memoryview) -> tuple[str, int, int]:
    """Return (format, width, height) from the header alone, without decoding any pixels."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        with _open_header(io.BytesIO(bytes(source)), "image bytes") as image:
            return image.format, image.width, image.height
    path = os.fspath(source)
    try:
        with open(path, "rb") as f, _open_header(f, f"image file {path!r}") as image:
            return image.format, image.width, image.height
    except OSError as e:
        raise ImageError(f"cannot read image file {path!r}: {e.strerror or e}") from e


def _check_bytes(num_bytes: int, max_bytes: int) -> None:
    if num_bytes > max_bytes:
        raise ImageTooLargeError(f"image is {num_bytes} bytes, over the limit of {max_bytes} bytes")


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels} pixels"
        )


def _open_header(fp: BinaryIO, what: str, max_pixels: int | None = None) -> Image.Image:
    """Image.open parses only the header; translate its failures into ImageError."""
    try:
        with warnings.catch_warnings():
            # Our own pixel check decides; Pillow's bomb warning would only add noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(fp, formats=OPEN_FORMATS)
    except Image.DecompressionBombError as e:
        raise _bomb_error(e, what, max_pixels) from e
    except UnidentifiedImageError as e:
        raise ImageError(f"{what} is not an image in an allowed format ({', '.join(ALLOWED_FORMATS)})") from e
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as e:
        raise ImageError(f"{what} has a corrupt header: {e}") from e


def _bomb_error(error: Exception, what: str, max_pixels: int | None = None) -> ImageTooLargeError:
    # Pillow refuses anything over 2 * Image.MAX_IMAGE_PIXELS on its own, whatever our limit is;
    # name both numbers so the caller knows which limit to raise.
    found = _PIL_BOMB_PIXELS.search(str(error))
    pixels = found.group(1) if found else "too many"
    hard_limit = 2 * Image.MAX_IMAGE_PIXELS if Image.MAX_IMAGE_PIXELS else None
    ours = f"our limit is {max_pixels} pixels, " if max_pixels is not None else ""
    return ImageTooLargeError(
        f"{what} is {pixels} pixels, over the limit: {ours}Pillow's hard limit is {hard_limit} pixels "
        "(2 x PIL.Image.MAX_IMAGE_PIXELS)"
    )


def _open_and_decode(fp: BinaryIO, max_pixels: int, what: str) -> Image.Image:
    with _open_header(fp, what, max_pixels) as image:
        _check_pixels(image.width, image.height, max_pixels)
        return _decode(image, max_pixels, what)


def _decode(image: Image.Image, max_pixels: int, what: str) -> Image.Image:
    """Decode pixels (first frame only), apply EXIF orientation, flatten to RGB, drop metadata."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        logger.warning(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set: truncated images may load as partial images"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if getattr(image, "n_frames", 1) > 1:
                image.seek(0)
            image.load()
    except Image.DecompressionBombError as e:
        raise _bomb_error(e, what, max_pixels) from e
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as e:
        raise ImageError(f"{what} is corrupt or truncated: {e}") from e
    try:
        upright = ImageOps.exif_transpose(image)
    except Exception as e:  # a broken EXIF block should not cost an otherwise good image
        logger.warning("ignoring unreadable EXIF orientation in %s: %s", what, e)
        upright = image
    rgb = _to_rgb(upright)
    # A fresh image from the raw pixels carries no EXIF, ICC profile or text chunks, so nothing
    # about the source (camera, GPS, software) travels further into the pipeline.
    return Image.fromarray(np.array(rgb, dtype=np.uint8))


def _to_rgb(image: Image.Image) -> Image.Image:
    """Flatten any mode to 8-bit RGB.

    Transparent pixels are composited on white rather than dropped: converting RGBA straight to RGB
    keeps whatever colour hides under alpha = 0 (often black or garbage), while the image as a person
    sees it on a page is on white. This is also what transformers' convert_to_rgb does, so a model
    sees the same pixels through either library.
    """
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        image = _widen_to_8bit(image)
    if "A" in image.getbands() or "a" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _widen_to_8bit(image: Image.Image) -> Image.Image:
    # Pillow's convert("RGB") clips 16-bit grey at 255, turning most such images white; scale instead.
    values = np.asarray(image, dtype=np.float64)
    if image.mode != "I" or values.max(initial=0) > 255:
        values = values / 257.0
    return Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8))


def _from_array(array: np.ndarray, max_pixels: int) -> Image.Image:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ImageError(f"array image must be HxW, HxWx1, HxWx3 or HxWx4, got shape {tuple(array.shape)}")
    height, width = array.shape[:2]
    if height == 0 or width == 0:
        raise ImageError(f"array image is empty, shape {tuple(array.shape)}")
    _check_pixels(width, height, max_pixels)
    array = _array_to_uint8(array)
    # fromarray picks L, RGB or RGBA from the shape of a uint8 array.
    return _to_rgb(Image.fromarray(np.ascontiguousarray(array)))


def _array_to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or array.min(initial=0.0) < 0.0 or array.max(initial=0.0) > 1.0:
            raise ImageError("float array images must hold finite values in [0, 1]")
        return np.round(array * 255.0).astype(np.uint8)
    raise ImageError(f"array images must be uint8 or float in [0, 1], got dtype {array.dtype}")
