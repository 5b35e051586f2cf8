"""load_image: one safe loader for paths, bytes, PIL images and arrays."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, PngImagePlugin

from vislang.errors import ImageError, ImageTooLargeError
from vislang.processing import DEFAULT_MAX_PIXELS, image_header, load_image


def _rgb_array(height: int = 24, width: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _one_bit_png(width: int, height: int, rows: int | None = None) -> bytes:
    """A hand-made 1-bit greyscale PNG: a header claiming width x height, then `rows` rows of data."""
    rows = height if rows is None else rows
    row = b"\x00" + b"\xff" * ((width + 7) // 8)  # filter byte + packed white pixels
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(row * rows))
        + _png_chunk(b"IEND", b"")
    )


@pytest.fixture
def no_decoding(monkeypatch):
    """Make any pixel decoding fail loudly, to prove a refusal came from the header alone."""

    def refuse(self, *args, **kwargs):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


def test_every_source_kind_gives_the_same_rgb_image(tmp_path: Path):
    array = _rgb_array()
    png = _encode(Image.fromarray(array), "PNG")
    path = tmp_path / "picture.png"
    path.write_bytes(png)
    sources = [
        str(path),
        path,
        png,
        bytearray(png),
        memoryview(png),
        Image.open(path),
        Image.fromarray(array),
        array,
        array.astype(np.float32) / 255.0,
    ]
    for source in sources:
        image = load_image(source)
        assert image.mode == "RGB" and image.size == (40, 24), type(source)
        np.testing.assert_array_equal(np.asarray(image), array, err_msg=type(source).__name__)


def test_grey_arrays_become_rgb():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    for source in (grey, grey[..., None]):
        out = np.asarray(load_image(source))
        assert out.shape == (3, 4, 3)
        for channel in range(3):
            np.testing.assert_array_equal(out[..., channel], grey)


def test_exif_orientation_is_applied_and_metadata_dropped(tmp_path: Path):
    array = np.zeros((40, 80, 3), dtype=np.uint8)
    array[:, :40] = (255, 0, 0)  # left half red
    array[:, 40:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the camera was turned, display rotated 90 degrees clockwise
    jpeg = _encode(Image.fromarray(array), "JPEG", exif=exif, quality=95)
    assert Image.open(io.BytesIO(jpeg)).getexif()[0x0112] == 6

    image = load_image(jpeg)
    assert image.size == (40, 80)  # width and height swapped
    pixels = np.asarray(image).astype(int)
    assert pixels[5, 20, 0] > 200 and pixels[5, 20, 2] < 60  # top is the former left: red
    assert pixels[75, 20, 2] > 200 and pixels[75, 20, 0] < 60  # bottom is the former right: blue
    expected = Image.open(io.BytesIO(jpeg)).convert("RGB").transpose(Image.Transpose.ROTATE_270)
    np.testing.assert_array_equal(np.asarray(image), np.asarray(expected))
    assert len(image.getexif()) == 0
    assert image.info == {}


def test_png_text_and_icc_metadata_are_dropped():
    text = PngImagePlugin.PngInfo()
    text.add_text("Software", "secret camera")
    png = _encode(Image.fromarray(_rgb_array()), "PNG", pnginfo=text, icc_profile=b"not really a profile")
    assert "icc_profile" in Image.open(io.BytesIO(png)).info
    image = load_image(png)
    assert image.info == {} and len(image.getexif()) == 0


def test_alpha_is_composited_on_white():
    rgba = np.zeros((2, 3, 4), dtype=np.uint8)
    rgba[0, 0] = (10, 20, 30, 0)  # fully transparent: hidden colour must not leak
    rgba[0, 1] = (10, 20, 30, 255)  # opaque: unchanged
    rgba[0, 2] = (0, 0, 0, 128)  # half black over white: mid grey
    rgba[1] = (200, 100, 50, 64)
    for source in (rgba, _encode(Image.fromarray(rgba), "PNG")):
        out = np.asarray(load_image(source)).astype(int)
        alpha = rgba[..., 3:4] / 255.0
        expected = rgba[..., :3] * alpha + 255 * (1 - alpha)
        assert np.abs(out - expected).max() <= 1
        assert tuple(out[0, 0]) == (255, 255, 255)
        assert tuple(out[0, 1]) == (10, 20, 30)


def test_palette_transparency_is_composited_on_white():
    palette_image = Image.new("P", (4, 4), 1)
    palette_image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette_image.putpixel((0, 0), 0)
    gif = _encode(palette_image, "GIF", transparency=0)
    out = np.asarray(load_image(gif))
    assert tuple(out[0, 0]) == (255, 255, 255)
    assert tuple(out[1, 1]) == (255, 0, 0)


def test_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=10)
    assert Image.open(io.BytesIO(buffer.getvalue())).n_frames == 2
    assert tuple(np.asarray(load_image(buffer.getvalue()))[4, 4]) == (255, 0, 0)


def test_sixteen_bit_grey_is_scaled_not_clipped():
    grey16 = np.array([[0, 32896, 65535]], dtype=np.uint16)
    png = _encode(Image.fromarray(grey16), "PNG")
    out = np.asarray(load_image(png))
    np.testing.assert_array_equal(out[0, :, 0], [0, 128, 255])


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_files_are_refused(fmt: str, tmp_path: Path):
    data = _encode(Image.fromarray(_rgb_array(64, 64)), fmt)
    truncated = data[: len(data) // 2]
    with pytest.raises(ImageError, match="truncated") as bytes_error:
        load_image(truncated)
    assert bytes_error.value.__cause__ is not None  # chained to Pillow's error
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(truncated)
    with pytest.raises(ImageError, match="truncated"):
        load_image(path)


def test_garbage_text_missing_and_directories_are_refused(tmp_path: Path):
    with pytest.raises(ImageError, match="not an image"):
        load_image(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    notes = tmp_path / "notes.png"
    notes.write_text("definitely not a picture\n")
    with pytest.raises(ImageError, match="not an image"):
        load_image(notes)
    with pytest.raises(ImageError, match="No such file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="not a regular file"):
        load_image(tmp_path)
    with pytest.raises(ImageError):
        load_image(b"")


def test_formats_outside_the_allowed_set_are_refused():
    small = Image.fromarray(_rgb_array(16, 16))
    for fmt in ("ICO", "TGA", "PCX"):
        with pytest.raises(ImageError, match="allowed format"):
            load_image(_encode(small, fmt))
    with pytest.raises(ImageError, match="not allowed"):
        load_image(Image.open(io.BytesIO(_encode(small, "TGA"))))


def test_bad_arrays_and_types_are_refused():
    with pytest.raises(ImageError, match=r"\[0, 1\]"):
        load_image(np.full((4, 4, 3), 1.5, dtype=np.float32))
    with pytest.raises(ImageError, match=r"\[0, 1\]"):
        load_image(np.full((4, 4, 3), np.nan, dtype=np.float32))
    with pytest.raises(ImageError, match="shape"):
        load_image(np.zeros((4, 4, 5), dtype=np.uint8))
    with pytest.raises(ImageError, match="dtype"):
        load_image(np.zeros((4, 4, 3), dtype=np.int64))
    with pytest.raises(ImageError, match="int"):
        load_image(42)


def test_hand_made_png_is_valid_when_small():
    # The header-only files below are refused for their size, not for being malformed PNGs.
    out = np.asarray(load_image(_one_bit_png(16, 8)))
    assert out.shape == (8, 16, 3) and out.min() == 255
    assert image_header(_one_bit_png(16, 8)) == ("PNG", 16, 8)


def test_pixel_limit_is_checked_from_the_header_before_decoding(no_decoding, tmp_path: Path):
    over = _one_bit_png(8000, 6000, rows=1)  # 48 Mpx > 40 Mpx default, under Pillow's own limits
    with pytest.raises(ImageTooLargeError) as error:
        load_image(over)
    assert "8000x6000" in str(error.value) and str(DEFAULT_MAX_PIXELS) in str(error.value)
    path = tmp_path / "big.png"
    path.write_bytes(over)
    with pytest.raises(ImageTooLargeError, match="48000000"):
        load_image(path)
    with pytest.raises(ImageTooLargeError, match="over the limit of 1000 pixels"):
        load_image(Image.open(path), max_pixels=1000)
    with pytest.raises(ImageTooLargeError, match="100"):
        load_image(np.zeros((11, 10, 3), dtype=np.uint8), max_pixels=100)
    assert image_header(path) == ("PNG", 8000, 6000)


def test_huge_header_is_refused_by_us_not_by_pillow(no_decoding):
    # 30000 x 30000 would be 900 Mpx (2.7 GB as RGB); the file is a few hundred bytes.
    bomb = _one_bit_png(30000, 30000, rows=1)
    assert len(bomb) < 1000
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a DecompressionBombWarning escaping would fail here
        with pytest.raises(ImageTooLargeError) as error:
            load_image(bomb)
        assert "900000000" in str(error.value) and str(DEFAULT_MAX_PIXELS) in str(error.value)
        # Between Pillow's warning and error limits: only our check may speak.
        with pytest.raises(ImageTooLargeError, match="10000x10000"):
            load_image(_one_bit_png(10000, 10000, rows=1))


def test_byte_limit_is_checked_before_opening(tmp_path: Path, monkeypatch):
    png = _encode(Image.fromarray(_rgb_array()), "PNG")
    path = tmp_path / "picture.png"
    path.write_bytes(png)

    def refuse_open(*args, **kwargs):
        raise AssertionError("the image was opened")

    monkeypatch.setattr(Image, "open", refuse_open)
    for source in (png, path):
        with pytest.raises(ImageTooLargeError) as error:
            load_image(source, max_bytes=100)
        assert str(len(png)) in str(error.value) and "100 bytes" in str(error.value)
