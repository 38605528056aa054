"""Train-time augmentation for a whole batch at once: one affine warp does crop, resize and rotation.

The usual per-sample pipeline (decode PNG -> RandomResizedCrop -> RandomRotation -> ColorJitter -> ToTensor) decodes
every time and resamples twice. Here the image is already a uint8 array in a memory-mapped shard; crop, rotation and
resize are one affine resampling (OpenCV's warpAffine), brightness and contrast one 256-entry lookup table, and the
batch is delivered as uint8. No horizontal flip: it would swap the patient's left and right, and with them the
position labels.

Randomness is a pure function of (seed, epoch, row), so a batch is the same whichever worker builds it and after a
resume mid-epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch


@dataclass
class AugmentConfig:
    """Ranges of the random train-time transforms (all off for evaluation)."""

    scale: tuple[float, float] = (0.6, 1.0)  # crop area / image area (MedKLIP: 0.2-1.0; CXRs need context)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # crop aspect ratio (width / height), sampled log-uniformly
    max_rotation: float = 10.0  # degrees, uniform in [-max, max]
    brightness: float = 0.2  # multiplicative factor in [1 - b, 1 + b]
    contrast: float = 0.2  # factor in [1 - c, 1 + c] around the image mean


@dataclass
class WarpParams:
    """Per-image transform: crop box in source pixels, rotation, and intensity factors."""

    x0: float
    y0: float
    width: float
    height: float
    angle: float = 0.0  # degrees
    brightness: float = 1.0
    contrast: float = 1.0


def full_view(height: int, width: int) -> WarpParams:
    """The evaluation transform: the whole image, squashed to a square (as MedKLIP's Resize(224, 224))."""
    return WarpParams(0.0, 0.0, float(width), float(height))


def sample_params(rng: np.random.Generator, height: int, width: int, config: AugmentConfig) -> WarpParams:
    """Draws a RandomResizedCrop box (torchvision's algorithm), a rotation and intensity factors."""
    area = height * width
    log_ratio = (math.log(config.ratio[0]), math.log(config.ratio[1]))
    box = None
    for _ in range(10):
        target_area = area * rng.uniform(*config.scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        crop_width = math.sqrt(target_area * aspect)
        crop_height = math.sqrt(target_area / aspect)
        if crop_width <= width and crop_height <= height:
            box = (rng.uniform(0, width - crop_width), rng.uniform(0, height - crop_height), crop_width, crop_height)
            break
    if box is None:  # fall back to the largest centred crop within the ratio range
        side = min(height, width)
        box = ((width - side) / 2, (height - side) / 2, float(side), float(side))
    return WarpParams(
        *box,
        angle=rng.uniform(-config.max_rotation, config.max_rotation),
        brightness=rng.uniform(1 - config.brightness, 1 + config.brightness),
        contrast=rng.uniform(1 - config.contrast, 1 + config.contrast),
    )


def _color_table(image: np.ndarray, p: WarpParams) -> np.ndarray | None:
    """A 256-entry lookup table for brightness and contrast (torchvision's definitions), or None if both are 1."""
    if p.brightness == 1 and p.contrast == 1:
        return None
    mean = float(image.mean())
    levels = (np.arange(256, dtype=np.float32) - mean) * p.contrast + mean
    return np.clip(np.rint(levels * p.brightness), 0, 255).astype(np.uint8)


def output_to_input(p: WarpParams, size: int) -> np.ndarray:
    """(2, 3) affine map from an output pixel index (x, y) of the (size, size) view to an input pixel index."""
    angle = math.radians(p.angle)
    cos, sin = math.cos(angle), math.sin(angle)
    half_width, half_height = p.width / 2, p.height / 2
    # Output pixel index -> [-1, 1] (pixel centres at (i + 0.5) / size), then -> input pixel index: the crop centre
    # plus the crop's half-extents rotated by `angle` (-0.5 turns edge coordinates back into pixel indices).
    to_unit = np.array([[2 / size, 0, 1 / size - 1], [0, 2 / size, 1 / size - 1], [0, 0, 1]])
    to_input = np.array(
        [
            [cos * half_width, -sin * half_height, p.x0 + half_width - 0.5],
            [sin * half_width, cos * half_height, p.y0 + half_height - 0.5],
            [0, 0, 1],
        ]
    )
    return (to_input @ to_unit)[:2]


def warp(image: np.ndarray, p: WarpParams, size: int) -> np.ndarray:
    """Crops, rotates and resizes one (H, W) uint8 image to (size, size) uint8 with a single bilinear resampling."""
    matrix = output_to_input(p, size)
    output = cv2.warpAffine(
        image, matrix, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT
    )
    table = _color_table(output, p)
    return output if table is None else cv2.LUT(output, table)


def warp_batch(images: list[np.ndarray], params: list[WarpParams], size: int) -> torch.Tensor:
    """Warps a list of (H_i, W_i) uint8 images of any sizes into one (B, 1, size, size) uint8 batch.

    The batch stays uint8 (a quarter of the bytes of float32 through the DataLoader's queues and to the GPU); the
    model scales it to [0, 1] on its device.
    """
    batch = np.empty((len(images), 1, size, size), dtype=np.uint8)
    for i, (image, p) in enumerate(zip(images, params, strict=True)):
        batch[i, 0] = warp(image, p, size)
    return torch.from_numpy(batch)
