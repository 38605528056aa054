"""The randomised anatomy of a case and its geometry: lung spans, diaphragm, heart, lung points and zones."""

from __future__ import annotations

import logging
import math

import numpy as np

from medklip.data.synthetic.case import SIDES, Anatomy, CaseSpec, pair, uniform

logger = logging.getLogger(__name__)


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    dome_right = uniform(rng, 0.66, 0.74)
    dome_left = dome_right + uniform(rng, 0.01, 0.04)  # the right hemidiaphragm sits higher (liver)
    lo = uniform(rng, 0.12, 0.2)
    return Anatomy(
        rotation=uniform(rng, -0.05, 0.05),
        scale=uniform(rng, 0.9, 1.04),
        width=uniform(rng, 0.95, 1.06),
        shift=(uniform(rng, -0.025, 0.025), uniform(rng, -0.03, 0.03)),
        body_half_width=uniform(rng, 0.44, 0.5),
        neck_half_width=uniform(rng, 0.1, 0.13),
        apex_y=pair(rng, 0.12, 0.16, 0.008),
        apex_u=pair(rng, 0.18, 0.21, 0.008),
        lateral_u=pair(rng, 0.36, 0.4, 0.008),
        medial_u=(uniform(rng, 0.045, 0.06), uniform(rng, 0.05, 0.065)),
        dome_y=(dome_right, dome_left),
        dome_u=pair(rng, 0.17, 0.21, 0.01),
        dome_curve=pair(rng, 2.0, 3.2, 0.2),
        hilum_y=(uniform(rng, 0.41, 0.45), uniform(rng, 0.39, 0.43)),
        knob=uniform(rng, 0.02, 0.04),
        knob_y=uniform(rng, 0.28, 0.32),
        carina_y=uniform(rng, 0.33, 0.37),
        heart_ctr=uniform(rng, 0.39, 0.47),
        heart_ratio=uniform(rng, 0.62, 0.72),
        heart_angle=uniform(rng, 0.4, 0.65),
        rib_start=pair(rng, 0.075, 0.095, 0.004),
        rib_spacing=pair(rng, 0.058, 0.066, 0.002),
        clavicle_y=(uniform(rng, 0.15, 0.18), uniform(rng, 0.09, 0.12)),
        gastric_bubble=uniform(rng, 0.0, 0.16) if rng.random() < 0.7 else 0.0,
        breast=uniform(rng, 0.03, 0.07) if rng.random() < 0.4 else 0.0,
        air_depth=uniform(rng, 0.33, 0.41),
        exposure_gain=uniform(rng, 1.9, 2.5),
        window=(lo, uniform(rng, 0.92, 0.99)),
        gamma=uniform(rng, 0.85, 1.15),
        noise=uniform(rng, 0.008, 0.022),
        texture_seed=int(rng.integers(2**31)),
    )


def lung_span(anatomy: Anatomy, side: int, t: float) -> tuple[float, float]:
    """Medial and lateral distance from the midline of lung `side` at relative height t (0 apex, 1 base)."""
    apex_u = anatomy.apex_u[side]
    dome = math.sqrt(max(0.0, 1 - (1 - min(t / 0.3, 1.0)) ** 2))
    dome_medial = math.sqrt(max(0.0, 1 - (1 - min(t / 0.2, 1.0)) ** 2))
    lateral = apex_u + (anatomy.lateral_u[side] - apex_u) * (0.75 * dome + 0.25 * min(max(t, 0.0), 1.0))
    medial = apex_u - (apex_u - anatomy.medial_u[side]) * dome_medial
    return medial, lateral


def costophrenic_y(anatomy: Anatomy, side: int) -> float:
    offset = anatomy.lateral_u[side] - anatomy.dome_u[side]
    return anatomy.dome_y[side] + anatomy.dome_curve[side] * offset**2


def diaphragm_y(anatomy: Anatomy, side: int, u: float) -> float:
    return anatomy.dome_y[side] + anatomy.dome_curve[side] * (u - anatomy.dome_u[side]) ** 2


def heart_geometry(anatomy: Anatomy, enlargement: float = 1.0) -> dict:
    """Heart ellipse (centre, semi-axes, tilt) for the patient's CTR times `enlargement`."""
    thorax = anatomy.lateral_u[0] + anatomy.lateral_u[1]
    ctr = anatomy.heart_ctr * enlargement
    angle = anatomy.heart_angle
    ratio = anatomy.heart_ratio
    half_width = ctr * thorax / 2
    long_axis = half_width / math.sqrt(math.cos(angle) ** 2 + (ratio * math.sin(angle)) ** 2)
    short_axis = long_axis * ratio
    half_height = math.sqrt((long_axis * math.sin(angle)) ** 2 + (short_axis * math.cos(angle)) ** 2)
    # An enlarged heart grows mostly to the patient's left (image right) and down onto the diaphragm.
    right_share = 0.32 - 0.06 * (enlargement - 1)
    centre_x = 0.5 - 2 * half_width * right_share + half_width
    centre_y = anatomy.dome_y[1] + 0.06 - half_height
    return {"x": centre_x, "y": centre_y, "a": long_axis, "b": short_axis, "angle": angle, "ctr": ctr}


def cardiothoracic_ratio(spec: CaseSpec) -> float:
    """Cardiothoracic ratio of a case as rendered (heart width / inner thoracic width)."""
    enlargement = next((f.geometry["enlargement"] for f in spec.findings if f.kind == "cardiomegaly"), 1.0)
    return heart_geometry(spec.anatomy, enlargement)["ctr"]


def lung_point(
    rng: np.random.Generator, anatomy: Anatomy, side: int, t_range: tuple[float, float], u_range: tuple[float, float]
) -> tuple[float, float]:
    """A point inside lung `side`: relative height in t_range, relative medial->lateral position in u_range."""
    apex = anatomy.apex_y[side]
    base = costophrenic_y(anatomy, side)
    for _ in range(20):
        t = uniform(rng, *t_range)
        medial, lateral = lung_span(anatomy, side, t)
        u = medial + (lateral - medial) * uniform(rng, *u_range)
        y = apex + t * (base - apex)
        if y < diaphragm_y(anatomy, side, u) - 0.04:
            return u, y
    return u, min(y, diaphragm_y(anatomy, side, u) - 0.05)


def to_x(side: int, u):
    """Image-x of a point at distance u from the midline on lung `side` (floats or arrays)."""
    return 0.5 - u if side == 0 else 0.5 + u


# Zones of a lung as (relative height range, relative medial->lateral range) for lesion centres.
_ZONES = {
    ("upper", False): ((0.12, 0.32), (0.3, 0.75)),
    ("mid", False): ((0.38, 0.55), (0.3, 0.75)),
    ("lower", False): ((0.64, 0.8), (0.35, 0.75)),
    ("apical", False): ((0.06, 0.14), (0.35, 0.65)),
    ("upper", True): ((0.14, 0.34), (0.3, 0.75)),
    ("mid", True): ((0.55, 0.7), (0.12, 0.3)),  # right middle lobe / lingula: beside the heart border
    ("lower", True): ((0.66, 0.82), (0.35, 0.8)),
}


def lesion_centre(rng: np.random.Generator, anatomy: Anatomy, side: int, level: str, lobe: bool) -> tuple[float, float]:
    t_range, u_range = _ZONES[(level, lobe and level in ("upper", "mid", "lower"))]
    u, y = lung_point(rng, anatomy, side, t_range, u_range)
    return to_x(side, u), y


def side_index(side: str) -> int:
    return SIDES.index(side)
