"""Decoding radiographs of any format and bit depth into 8-bit grayscale arrays.

Used by `prepare` (once per image, when building shards) and by `predict` (per request). Every failure is a
`BadImage` with a short reason, so callers can skip and count instead of crashing.
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

MIN_SIDE = 64  # smaller images carry no usable anatomy
# One size policy for every open, in every process: an image over either cap is refused from its header, before a
# pixel is decoded. The pixel cap is Pillow's own decompression-bomb warning threshold (about 9459 x 9459; a 16-bit
# image that size decodes in well under 2 GB); radiographs are 2-4k on a side.
MAX_PIXELS = 89_478_485
MAX_BYTES = 256 * 2**20  # an encoded file larger than this is not read at all


@dataclass(frozen=True)
class ImageLimits:
    """The image-size policy (`medklip data prepare --max-pixels/--max-bytes`)."""

    max_pixels: int = MAX_PIXELS
    max_bytes: int = MAX_BYTES

    def check_bytes(self, size: int) -> None:
        if size > self.max_bytes:
            raise BadImage("too large", f"{size:,} bytes, above the limit of {self.max_bytes:,} (--max-bytes)")

    def check_pixels(self, width: int, height: int) -> None:
        if width * height > self.max_pixels:
            raise BadImage(
                "too large",
                f"{width} x {height} = {width * height:,} pixels, above the limit of {self.max_pixels:,} (--max-pixels)",
            )


class BadImage(ValueError):
    """An image that cannot be used; `reason` is a short machine-friendly phrase."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def _to_grayscale_uint8(image: Image.Image) -> np.ndarray:
    """Any PIL mode -> (H, W) uint8, windowing high-bit-depth images to their own intensity range."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # 12/16-bit radiographs rarely use the full range; stretch the 0.5-99.5 percentile window to 0..255.
        pixels = np.asarray(image, dtype=np.float32)
        lo, hi = np.percentile(pixels, [0.5, 99.5])
        if hi <= lo:
            hi = lo + 1.0
        return (np.clip((pixels - lo) / (hi - lo), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode == "CMYK":
        image = image.convert("RGB")
    if image.mode != "L":
        # RGB, RGBA, LA, P, 1, YCbCr, ...: the alpha channel is dropped; colour is luminance-weighted.
        image = image.convert("L")
    return np.asarray(image, dtype=np.uint8)


def decode_image(
    data: bytes, short_side: int | None = None, min_side: int = MIN_SIDE, limits: ImageLimits = ImageLimits()
) -> np.ndarray:
    """Decodes image bytes to an (H, W) uint8 grayscale array, optionally resized.

    Args:
        data: the encoded file (PNG, JPEG, TIFF, BMP, ...).
        short_side: if given, resize so the shorter side has this many pixels (aspect ratio kept).
        min_side: images whose shorter side is below this are rejected as "tiny".
        limits: the size policy; checked on the bytes and on the header's size before decoding.

    Returns:
        (H, W) uint8 array.

    Raises:
        BadImage: empty, not an image, truncated, tiny or too large.
    """
    return decode_with_source_size(data, short_side, min_side, limits)[0]


def decode_with_source_size(
    data: bytes, short_side: int | None = None, min_side: int = MIN_SIDE, limits: ImageLimits = ImageLimits()
) -> tuple[np.ndarray, tuple[int, int]]:
    """`decode_image`, and the source's (height, width) upright (EXIF orientation applied): what boxes refer to."""
    if not data:
        raise BadImage("empty file")
    limits.check_bytes(len(data))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            previous_limit = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None  # our check below replaces Pillow's (which would use its own limits)
            try:
                image = Image.open(io.BytesIO(data))  # reads the header only
                width, height = image.size
                limits.check_pixels(width, height)
                Image.MAX_IMAGE_PIXELS = limits.max_pixels  # and Pillow's check, at our limit, for what follows
                if min(width, height) < min_side:
                    raise BadImage("tiny image", f"{width}x{height} < {min_side} px")
                upright = (width, height) if image.getexif().get(0x0112) not in (5, 6, 7, 8) else (height, width)
                if short_side is not None and image.format == "JPEG":
                    # JPEG can decode at 1/2, 1/4, 1/8 scale directly: much faster for large radiographs.
                    scale = short_side / min(width, height)
                    image.draft("L", (round(width * scale), round(height * scale)))
                image.load()
            finally:
                Image.MAX_IMAGE_PIXELS = previous_limit
            image = ImageOps.exif_transpose(image)
    except BadImage:
        raise
    except UnidentifiedImageError as error:
        raise BadImage("not an image", "no decoder recognises the file (PNG, JPEG, TIFF, BMP, ...)") from error
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise BadImage("too large", str(error)) from error
    except (OSError, SyntaxError, ValueError) as error:  # truncated or corrupt streams
        raise BadImage("corrupt or truncated", str(error)) from error
    pixels = _to_grayscale_uint8(image)
    if short_side is not None:
        pixels = resize_short_side(pixels, short_side)
    return pixels, (upright[1], upright[0])


def pixels_from_array(array, short_side: int | None = None, min_side: int = MIN_SIDE) -> np.ndarray:
    """An in-memory image (H, W) or (H, W, 3|4) of uint8, uint16 or float -> (H, W) uint8, as `decode_image` would.

    Raises:
        BadImage: not a 2-D grayscale or 3-channel colour array, or tiny.
    """
    pixels = np.asarray(array)
    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4) and pixels.dtype == np.uint8:
        image = Image.fromarray(np.ascontiguousarray(pixels[..., :3]), mode="RGB")
    elif pixels.ndim == 2 and pixels.dtype == np.uint8:
        image = Image.fromarray(pixels, mode="L")
    elif pixels.ndim == 2 and (np.issubdtype(pixels.dtype, np.integer) or np.issubdtype(pixels.dtype, np.floating)):
        image = Image.fromarray(pixels.astype(np.float32), mode="F")  # windowed like a 16-bit file
    else:
        raise BadImage("not an image", f"array of shape {pixels.shape} and dtype {pixels.dtype}")
    if min(image.size) < min_side:
        raise BadImage("tiny image", f"{image.size[0]}x{image.size[1]} < {min_side} px")
    pixels = _to_grayscale_uint8(image)
    if short_side is not None:
        pixels = resize_short_side(pixels, short_side)
    return pixels


def resize_short_side(pixels: np.ndarray, short_side: int) -> np.ndarray:
    """Resizes an (H, W) uint8 array so its shorter side is `short_side` (bilinear with antialiasing)."""
    height, width = pixels.shape
    scale = short_side / min(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size == (width, height):
        return pixels
    resized = Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(resized, dtype=np.uint8)
