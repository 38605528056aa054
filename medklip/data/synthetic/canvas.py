"""The pixel canvas: the coordinate grid, soft ramps, smooth noise, lung masks, boxes, polylines, vessels."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from medklip.data.synthetic.anatomy import costophrenic_y, diaphragm_y, to_x
from medklip.data.synthetic.case import Anatomy, Box

logger = logging.getLogger(__name__)


@lru_cache(maxsize=8)
def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres in image units [0, 1], as (x, y) arrays of shape (size, size)."""
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size
    return np.meshgrid(axis, axis)


def ramp(distance: np.ndarray, edge: float) -> np.ndarray:
    """Soft inside indicator: 0 outside, 1 inside, linear over `edge` across the boundary (distance > 0 inside)."""
    return np.clip(distance * (1.0 / edge) + 0.5, 0.0, 1.0)


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Zero-mean smooth random field of shape (size, size), about unit variance, with `cells` blobs across."""
    coarse = rng.standard_normal((cells + 3, cells + 3)).astype(np.float32)
    image = Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC, box=(1, 1, cells + 2, cells + 2))
    return np.asarray(image, dtype=np.float32)


class Canvas:
    """Anatomy-space coordinates of every pixel of one image, and the forward map for drawing in pixels."""

    def __init__(self, anatomy: Anatomy, size: int):
        self.size = size
        self.anatomy = anatomy
        self.edge = 1.3 / size / anatomy.scale  # soft edge width of about 1.3 pixels, in anatomy units
        px, py = _pixel_grid(size)
        cos, sin = math.cos(anatomy.rotation), math.sin(anatomy.rotation)
        dx = px - (0.5 + anatomy.shift[0])
        dy = py - (0.5 + anatomy.shift[1])
        self.x = 0.5 + (cos * dx + sin * dy) * (1.0 / (anatomy.scale * anatomy.width))  # (S, S)
        self.y = 0.5 + (-sin * dx + cos * dy) * (1.0 / anatomy.scale)
        self.u_side = (0.5 - self.x, self.x - 0.5)  # signed distance from the midline towards each lung
        self.u = np.abs(self.x - 0.5)
        self._lungs: dict[int, dict[str, np.ndarray]] = {}

    def to_pixels(self, points: np.ndarray) -> np.ndarray:
        """Anatomy (x, y) points (N, 2) to pixel coordinates (N, 2) (pixel centres at integers)."""
        anatomy = self.anatomy
        cos, sin = math.cos(anatomy.rotation), math.sin(anatomy.rotation)
        a = (points[:, 0] - 0.5) * anatomy.scale * anatomy.width
        b = (points[:, 1] - 0.5) * anatomy.scale
        px = 0.5 + anatomy.shift[0] + cos * a - sin * b
        py = 0.5 + anatomy.shift[1] + sin * a + cos * b
        return np.stack([px, py], axis=1) * self.size - 0.5

    def lung(self, side: int) -> dict[str, np.ndarray]:
        """Fields of lung `side`: soft `mask`, air thickness `profile`, relative height `t`, and the `medial`,
        `lateral` and `diaphragm` boundaries, all (S, S)."""
        cached = self._lungs.get(side)
        if cached is not None:
            return cached
        anatomy = self.anatomy
        edge = self.edge
        u = self.u_side[side]
        apex_y = anatomy.apex_y[side]
        apex_u = anatomy.apex_u[side]
        t = np.maximum((self.y - apex_y) * (1.0 / (costophrenic_y(anatomy, side) - apex_y)), 0.0)
        dome = np.sqrt(1.0 - (1.0 - np.minimum(t * (1 / 0.3), 1.0)) ** 2)
        dome_medial = np.sqrt(1.0 - (1.0 - np.minimum(t * (1 / 0.2), 1.0)) ** 2)
        lateral = apex_u + (anatomy.lateral_u[side] - apex_u) * (0.75 * dome + 0.25 * np.minimum(t, 1))
        medial = apex_u - (apex_u - anatomy.medial_u[side]) * dome_medial
        if side == 1:  # the aortic knob indents the left upper mediastinal border
            medial = medial + anatomy.knob * np.exp(-(((self.y - anatomy.knob_y) * (1 / 0.035)) ** 2))
        diaphragm = anatomy.dome_y[side] + anatomy.dome_curve[side] * (u - anatomy.dome_u[side]) ** 2
        mask = ramp(u - medial, edge) * ramp(lateral - u, edge) * ramp(diaphragm - self.y, edge)
        across = np.clip((u - medial) / np.maximum(lateral - medial, 1e-3), 0.0, 1.0)
        profile = (0.62 + 0.38 * np.sin(np.pi * across)) * (0.7 + 0.3 * np.minimum(t * 3.0, 1.0))
        fields = {
            "mask": mask,
            "profile": profile,
            "t": t,
            "medial": medial,
            "lateral": lateral,
            "diaphragm": diaphragm,
        }
        self._lungs[side] = fields
        return fields

    def collapsed_lung(self, side: int, gap: float, apical: bool) -> tuple[np.ndarray, np.ndarray]:
        """The lung edge pulled away from the chest wall by `gap`: (collapsed lung mask, visceral pleural line)."""
        fields = self.lung(side)
        anatomy = self.anatomy
        u = self.u_side[side]
        if apical:  # a cap of air over the apex
            cap = anatomy.apex_y[side] + gap + 2.5 * (u - anatomy.apex_u[side]) ** 2
            inner = ramp(self.y - cap, self.edge)
        else:  # a crescent along the lateral chest wall, widest at the top
            inner = ramp(fields["lateral"] - gap * (1 - 0.6 * np.minimum(fields["t"], 1)) - u, self.edge)
        inset = 2.5 * self.edge
        wall_inset = (
            ramp(u - fields["medial"] - inset, self.edge)
            * ramp(fields["lateral"] - u - inset, self.edge)
            * ramp(fields["diaphragm"] - self.y - inset, self.edge)
        )
        return inner * fields["mask"], 4 * inner * (1 - inner) * wall_inset


def box_from(mask: np.ndarray) -> Box | None:
    """Bounding box (x0, y0, x1, y1), exclusive ends, of the True pixels of a (S, S) mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def box_union(*boxes: Box | None) -> Box | None:
    boxes = [box for box in boxes if box is not None]
    if not boxes:
        return None
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def draw_polyline(
    target: np.ndarray, points: np.ndarray, half_width: float, intensity: float, hollow: bool = False
) -> Box | None:
    """Adds a bright line through pixel-space points (N, 2) to `target`; returns the box it touched."""
    size = target.shape[0]
    margin = half_width + 2
    x0 = max(int(math.floor(points[:, 0].min() - margin)), 0)
    x1 = min(int(math.ceil(points[:, 0].max() + margin)) + 1, size)
    y0 = max(int(math.floor(points[:, 1].min() - margin)), 0)
    y1 = min(int(math.ceil(points[:, 1].max() + margin)) + 1, size)
    if x0 >= x1 or y0 >= y1:
        return None
    gx, gy = np.meshgrid(np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32))
    start, end = points[:-1].astype(np.float32), points[1:].astype(np.float32)
    direction = end - start  # (M, 2)
    length2 = np.maximum((direction**2).sum(axis=1), 1e-6)
    px = gx.reshape(-1, 1) - start[:, 0]  # (P, M)
    py = gy.reshape(-1, 1) - start[:, 1]
    along = np.clip((px * direction[:, 0] + py * direction[:, 1]) / length2, 0.0, 1.0)
    distance = np.sqrt(((px - along * direction[:, 0]) ** 2 + (py - along * direction[:, 1]) ** 2).min(axis=1))
    distance = distance.reshape(gx.shape)  # (h, w)
    if hollow:  # a tube: two bright walls and a fainter lumen
        line = np.clip(half_width + 0.7 - distance, 0.0, 1.0) * (
            0.55 + 0.45 * np.clip(distance - half_width + 1.5, 0, 1)
        )
    else:
        line = np.clip(half_width + 0.5 - distance, 0.0, 1.0)
    target[y0:y1, x0:x1] += intensity * line
    box = box_from(line > 0.3)
    if box is None:
        return None
    return box[0] + x0, box[1] + y0, box[2] + x0, box[3] + y0


def curve(control: Sequence[tuple[float, float]], samples: int = 40) -> np.ndarray:
    """A smooth curve (samples, 2) through control points (Catmull-Rom)."""
    points = np.asarray(control, dtype=np.float64)
    padded = np.vstack([2 * points[0] - points[1], points, 2 * points[-1] - points[-2]])
    out = []
    segments = len(points) - 1
    per = max(samples // segments, 2)
    for i in range(segments):
        p0, p1, p2, p3 = padded[i : i + 4]
        t = np.linspace(0, 1, per, endpoint=i == segments - 1)[:, None]
        out.append(
            0.5
            * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2 + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3)
        )
    return np.vstack(out)


def _inside_lungs(anatomy: Anatomy, side: int, u: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Which points (u, y) lie inside lung `side` (vectorised `lung_span` and `diaphragm_y`)."""
    apex_y, apex_u = anatomy.apex_y[side], anatomy.apex_u[side]
    t = (y - apex_y) / (costophrenic_y(anatomy, side) - apex_y)
    dome = np.sqrt(np.clip(1 - (1 - np.clip(t / 0.3, 0, 1)) ** 2, 0, 1))
    dome_medial = np.sqrt(np.clip(1 - (1 - np.clip(t / 0.2, 0, 1)) ** 2, 0, 1))
    lateral = apex_u + (anatomy.lateral_u[side] - apex_u) * (0.75 * dome + 0.25 * np.clip(t, 0, 1))
    medial = apex_u - (apex_u - anatomy.medial_u[side]) * dome_medial
    return (t > 0) & (u > medial) & (u < lateral) & (y < diaphragm_y(anatomy, side, u))


def vessel_tree(canvas: Canvas, rng: np.random.Generator) -> np.ndarray:
    """Branching pulmonary vessels from each hilum, tapering towards the periphery, as a (S, S) field."""
    anatomy = canvas.anatomy
    layer = Image.new("L", (canvas.size, canvas.size), 0)
    draw = ImageDraw.Draw(layer)
    pixels_per_unit = canvas.size * anatomy.scale
    roots = np.radians(np.array([-105.0, -70, -40, -10, 20, 50, 80, 105]))
    for side in (0, 1):
        # One generation at a time: every branch forks in two, narrower and shorter, until it leaves the lung.
        direction = roots + np.radians(rng.uniform(-10, 10, roots.size))  # 0 = lateral, -pi/2 = up
        u = np.full(roots.size, 0.085)
        y = np.full(roots.size, anatomy.hilum_y[side])
        length = rng.uniform(0.05, 0.07, roots.size)
        width = 0.009
        for depth in range(5):
            u_end = u + length * np.cos(direction)
            y_end = y + length * np.sin(direction)
            if depth > 0:
                keep = _inside_lungs(anatomy, side, u_end, y_end)
                u, y, u_end, y_end, direction, length = (a[keep] for a in (u, y, u_end, y_end, direction, length))
            if u.size == 0:
                break
            starts = canvas.to_pixels(np.stack([to_x(side, u), y], axis=1))
            ends = canvas.to_pixels(np.stack([to_x(side, u_end), y_end], axis=1))
            pixel_width = max(1, int(round(width * pixels_per_unit)))
            strength = int(255 * min(1.0, 0.3 + width / 0.009))
            for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
                draw.line([tuple(start), tuple(end)], fill=strength, width=pixel_width)
            spread = rng.uniform(0.3, 0.6, (u.size, 2)) * np.array([-1.0, 1.0])  # (N, 2)
            direction = (direction[:, None] + spread).ravel()
            u, y = np.repeat(u_end, 2), np.repeat(y_end, 2)
            length = np.repeat(length, 2) * rng.uniform(0.68, 0.85, 2 * u_end.size)
            width *= 0.7
    layer = layer.filter(ImageFilter.GaussianBlur(max(0.8, 0.005 * pixels_per_unit)))
    return np.asarray(layer, dtype=np.float32) * (1 / 255)


def blur(image: np.ndarray, passes: int = 1) -> np.ndarray:
    """Separable [1, 2, 1] / 4 binomial blur, edges replicated."""
    for _ in range(passes):
        padded = np.pad(image, 1, mode="edge")
        image = 0.25 * padded[:-2, 1:-1] + 0.5 * padded[1:-1, 1:-1] + 0.25 * padded[2:, 1:-1]
        padded = np.pad(image, 1, mode="edge")
        image = 0.25 * padded[1:-1, :-2] + 0.5 * padded[1:-1, 1:-1] + 0.25 * padded[1:-1, 2:]
    return image
