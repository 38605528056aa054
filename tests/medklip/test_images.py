"""Decoding of every image format and bit depth, and every kind of bad file."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from medklip.data.images import BadImage, decode_image, resize_short_side
from tests.helpers import radiograph


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_grayscale_png_round_trips_exactly():
    pixels = radiograph(100, 90)
    assert np.array_equal(decode_image(encode(Image.fromarray(pixels))), pixels)


def test_sixteen_bit_is_windowed_to_full_8_bit_range():
    pixels = np.linspace(0, 4095, 200 * 100).reshape(200, 100).astype(np.uint16)  # 12-bit data
    decoded = decode_image(encode(Image.fromarray(pixels)))
    assert decoded.dtype == np.uint8 and decoded.shape == (200, 100)
    assert decoded.min() == 0 and decoded.max() == 255  # a plain >> 8 would give at most 15
    assert np.all(np.diff(decoded[:, 0].astype(int)) >= 0)  # monotone: windowing keeps the order of intensities


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "CMYK", "LA", "1"])
def test_colour_modes_become_grayscale(mode):
    base = Image.fromarray(radiograph(120, 100))
    image = base.convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    decoded = decode_image(encode(image, fmt))
    assert decoded.shape == (120, 100) and decoded.dtype == np.uint8
    if mode in ("RGB", "RGBA", "LA"):
        assert np.abs(decoded.astype(int) - np.asarray(base, dtype=int)).max() <= 1


def test_resize_keeps_aspect_ratio_on_short_side():
    decoded = decode_image(encode(Image.fromarray(radiograph(600, 400))), short_side=256)
    assert decoded.shape == (384, 256)
    assert resize_short_side(np.zeros((256, 300), np.uint8), 256).shape == (256, 300)


def test_large_jpeg_decodes_at_reduced_scale():
    decoded = decode_image(encode(Image.fromarray(radiograph(3000, 2500)), "JPEG"), short_side=256)
    assert decoded.shape == (307, 256)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"hello, not an image", "not an image"),
        (encode(Image.fromarray(radiograph(40, 200))), "tiny image"),
    ],
)
def test_bad_bytes_raise_with_reason(data, reason):
    with pytest.raises(BadImage) as caught:
        decode_image(data)
    assert caught.value.reason == reason


def test_truncated_png_is_rejected():
    data = encode(Image.fromarray(radiograph(200, 200)))
    with pytest.raises(BadImage) as caught:
        decode_image(data[: len(data) // 2])
    assert caught.value.reason == "corrupt or truncated"
