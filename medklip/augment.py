"""Train-time augmentation for a whole batch at once: one affine warp does crop, resize and rotation.

Per-sample pipelines (PIL -> RandomResizedCrop -> RandomRotation -> ColorJitter -> ToTensor) spend most of their time
in Python and in separate resampling passes. Here each image gets a random crop box and angle, all images of the batch
are laid on one canvas, and a single `grid_sample` produces the (B, 1, S, S) batch; brightness and contrast are two
vectorised ops. No horizontal flip: it would swap the patient's left and right, and with them the position labels.

Randomness is a pure function of (seed, epoch, row), so a batch is the same whichever worker builds it and after a
resume mid-epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


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


def warp_batch(images: list[np.ndarray], params: list[WarpParams], size: int) -> torch.Tensor:
    """Crops, rotates and resizes a list of (H_i, W_i) uint8 images into one (B, 1, size, size) float batch in [0, 1].

    Args:
        images: grayscale images of any (possibly different) sizes.
        params: one `WarpParams` per image.
        size: output side in pixels.
    """
    batch = len(images)
    canvas_height = max(image.shape[0] for image in images)
    canvas_width = max(image.shape[1] for image in images)
    canvas = np.zeros((batch, 1, canvas_height, canvas_width), dtype=np.uint8)
    for i, image in enumerate(images):
        canvas[i, 0, : image.shape[0], : image.shape[1]] = image
    canvas = torch.from_numpy(canvas).float().div_(255.0)  # (B, 1, Hc, Wc)

    # theta maps output coordinates in [-1, 1] to canvas coordinates in [-1, 1] (align_corners=False: pixel edges).
    theta = torch.zeros(batch, 2, 3)
    for i, p in enumerate(params):
        angle = math.radians(p.angle)
        cos, sin = math.cos(angle), math.sin(angle)
        half_width, half_height = p.width / 2, p.height / 2
        center_x, center_y = p.x0 + half_width, p.y0 + half_height
        # Rotate the crop's half-extents in pixel units, then scale to the canvas's normalised coordinates.
        theta[i, 0] = torch.tensor([cos * half_width, -sin * half_height, center_x]) * (2 / canvas_width)
        theta[i, 1] = torch.tensor([sin * half_width, cos * half_height, center_y]) * (2 / canvas_height)
        theta[i, :, 2] -= 1
    grid = F.affine_grid(theta, [batch, 1, size, size], align_corners=False)  # (B, S, S, 2)
    output = F.grid_sample(canvas, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # (B, 1, S, S)

    brightness = torch.tensor([p.brightness for p in params]).view(batch, 1, 1, 1)
    contrast = torch.tensor([p.contrast for p in params]).view(batch, 1, 1, 1)
    if bool((brightness != 1).any() or (contrast != 1).any()):
        mean = output.mean(dim=(1, 2, 3), keepdim=True)
        output = ((output - mean) * contrast + mean).mul_(brightness).clamp_(0.0, 1.0)
    return output
