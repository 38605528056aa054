"""Procedural synthetic chest radiographs with radiology reports and ground truth.

Each case is a frontal (PA) chest radiograph drawn from a randomised anatomy (lungs, heart, mediastinum, spine, ribs,
clavicles, diaphragm, soft tissue) with zero or more rendered findings, a free-text report that states every finding,
and a truth table that ties every statement of the report to an (entity, position, existence) triple and a box.
Radiological convention: the patient's left is on the image right.

Run it:

    python -m medklip.data.synthetic --out data/synth --n 1000 --seed 0 [--size 256] [--workers 4]
    medklip data synth --out data/synth --n 1000 --seed 0

or from Python: `generate("data/synth", n=1000, seed=0)`; one case without files: `make_case(seed=0, index=7)`.

Output layout:

    images/synth-000001.png   8-bit grayscale, size x size
    reports.csv               id,image,findings,impression (image relative to the folder, rows in id order)
    truth.csv                 id,entity,position,existence,x0,y0,x1,y1

Truth conventions (what a report extractor is scored against; they follow docs/extraction.md):

- One row per (entity, position) that a sentence of the findings or the impression states. Entities and positions
  are names from `medklip.vocabulary` (never `tail_abnorm_obs` / `excluded_obs`); severity and size words (small,
  mild, large, 2.1 cm) give no rows.
- existence 1: stated present (a rendered finding, or a normal statement); 0: stated absent; -1: stated with
  uncertainty ("possible", "possibly", "cannot be excluded", "may represent", "could reflect", "suggestive of",
  "concerning for", "suspicious for").
- Box `x0,y0,x1,y1` in pixels, `image[y0:y1, x0:x1]` (x1, y1 exclusive): on every row about a rendered lesion or
  device (existence 1 or -1), empty on absent rows and normal statements.
- Positions come from the anatomy words of the finding's own phrase:
  effusion: "left pleural effusion" / "left effusion" -> left_pleural; bilateral -> left_pleural + right_pleural;
  "a small effusion blunts the left costophrenic angle" -> effusion and blunt at left_costophrenic ("both
  costophrenic angles" -> left_ and right_costophrenic); "No pleural effusion." -> pleural_unspec, "No effusion."
  -> unspecified. Pneumothorax: "right apical" / "at the right apex" -> right_apical_lung, "small right
  pneumothorax" -> right_pleural (a bare side of a pleural finding), "in the right hemithorax" -> right_lung_unspec.
  Lung lesions: lobes -> lower_right_lobe, middle_right_lobe, upper_left_lobe (also "lingula"/"lingular"), ...;
  zones -> right_upper_lung, left_mid_lung, "left basilar" / "at the left base" / "left lower lung" ->
  left_lower_lung; "right hilar" -> right_hilar; "bibasilar" / "at the lung bases" -> lung_bases;
  "retrocardiac" -> retrocardiac. Edema: "pulmonary edema" -> pulmonary, "interstitial edema" -> interstitium,
  "perihilar opacities" -> opacity at hilar_unspec, "pulmonary vascular congestion" -> congestion at pulmonary,
  "interstitial markings" -> marking at interstitium. Heart: cardiomegaly, "the heart is enlarged", "enlargement
  of the cardiac silhouette" -> cardiomegaly at heart_size. Devices: endotracheal tube -> tube at trachea;
  central venous catheter -> catheter, central (venous) line -> line, PICC -> picc, each at its end: svc,
  cavoatrial_junction or right_atrium; pacemaker -> pacemaker at other ("left chest wall"); leads -> lead at
  right_atrium / right_ventricle.
- An interpretation or alternative takes the site of the lesion it interprets: "Patchy right basilar opacity may
  represent atelectasis or early pneumonia." -> opacity 1, atelectasis -1, pneumonia -1, all at right_lower_lung.
  A consolidation called pneumonia in the impression gives "Right lower lobe pneumonia." -> pneumonia 1.
- Negated lists give one row per noun, each with its own anatomy words: "No pneumothorax or pleural effusion." ->
  pneumothorax at unspecified 0, effusion at pleural_unspec 0.
- Normal statements give their normal entity and the zeros they imply: "Lungs are clear." -> clear 1,
  consolidation 0, opacity 0 (unspecified); "Heart size is normal." -> normal 1, cardiomegaly 0 (heart_size);
  "Costophrenic angles are sharp." -> sharp 1, effusion 0 (costophrenic_unspec); "Pulmonary vasculature is
  normal." -> normal 1, congestion 0 (pulmonary); "Osseous structures are intact." -> intact 1, fracture 0
  (other); "Cardiomediastinal silhouette is within normal limits." -> normal at mediastinal; "Mediastinal
  contours are unremarkable." -> unremarkable at mediastinal; "The hila are normal." -> normal at hilar_unspec;
  "Lung volumes are normal." -> normal at lung_volumes; "No acute cardiopulmonary process / abnormality /
  disease." -> process / abnormality / disease at cardiopulmonary, 0.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from medklip.vocabulary import ENTITIES

logger = logging.getLogger(__name__)

VERSION = 1  # bump when the images or reports of a given seed change; it keys cached synthetic sources
REPORT_COLUMNS = ("id", "image", "findings", "impression")
TRUTH_COLUMNS = ("id", "entity", "position", "existence", "x0", "y0", "x1", "y1")
NORMAL_FRACTION = 0.3  # share of cases with no finding and no device
SIDES = ("right", "left")  # index 0 = patient's right = image left
CM_PER_UNIT = 37.0  # anatomy units (image width before scaling) to centimetres, for stated lesion sizes

Box = tuple[int, int, int, int]


def case_id(index: int) -> str:
    """The id of case `index` (0-based): `synth-000001` for index 0."""
    return f"synth-{index + 1:06d}"


# ----------------------------------------------------------------------------------------------------------------
# Data model
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TruthRow:
    """One stated (entity, position, existence) of a report, with the lesion box when the lesion is rendered."""

    entity: str
    position: str
    existence: int  # 1 present, 0 absent, -1 uncertain
    box: Box | None = None  # (x0, y0, x1, y1) in pixels, x1/y1 exclusive


@dataclass(frozen=True)
class Anatomy:
    """Randomised normal anatomy in anatomy coordinates (x, y in [0, 1], x = 0.5 the midline, y down).

    Per-side tuples are (right, left) in the patient's frame; the right lung is on the image left.
    """

    rotation: float  # radians, patient rotation in the image plane
    scale: float  # zoom of the anatomy in the image
    width: float  # lateral stretch (body habitus)
    shift: tuple[float, float]  # (x, y) offset of the anatomy centre in image units
    body_half_width: float  # soft-tissue half width at the chest, from the midline
    neck_half_width: float
    apex_y: tuple[float, float]  # lung apex height
    apex_u: tuple[float, float]  # distance of the apex from the midline
    lateral_u: tuple[float, float]  # lateral lung margin at the base
    medial_u: tuple[float, float]  # medial lung margin (mediastinal edge)
    dome_y: tuple[float, float]  # hemidiaphragm dome height (right higher than left)
    dome_u: tuple[float, float]  # distance of the dome peak from the midline
    dome_curve: tuple[float, float]  # curvature of the dome (deeper costophrenic angles when larger)
    hilum_y: tuple[float, float]
    knob: float  # aortic knob bulge into the left lung
    knob_y: float
    carina_y: float
    heart_ctr: float  # normal cardiothoracic ratio of this patient
    heart_ratio: float  # short / long axis of the heart ellipse
    heart_angle: float  # tilt of the heart's long axis
    rib_start: tuple[float, float]  # height of the first posterior rib at the spine
    rib_spacing: tuple[float, float]
    clavicle_y: tuple[float, float]  # (medial end, lateral end) height
    gastric_bubble: float  # strength of the stomach gas bubble under the left hemidiaphragm, 0 = none
    breast: float  # strength of breast shadows, 0 = none
    air_depth: float  # lung lucency
    exposure_gain: float  # steepness of the attenuation -> film density curve
    window: tuple[float, float]  # film densities mapped to black and white
    gamma: float
    noise: float  # quantum noise standard deviation (0..1 intensity)
    texture_seed: int  # vessel pattern and lung texture


@dataclass
class Finding:
    """One rendered finding or device and the choices its report sentences follow."""

    kind: str  # cardiomegaly, effusion, pneumothorax, consolidation, opacity, atelectasis, edema, nodule, mass,
    # et_tube, central_line, picc, pacemaker
    side: str = ""  # right, left, bilateral or "" (midline / not lateralised)
    level: str = ""  # upper, mid, lower, apical, lateral, hilar, retrocardiac
    lobe: bool = False  # the report names a lobe rather than a lung zone
    severity: str = ""  # small / moderate / large, mild / moderate / severe
    certainty: int = 1  # 1 stated present, -1 stated with uncertainty
    size_cm: float = 0.0  # nodules, masses; tube distance above the carina
    options: dict = field(default_factory=dict)  # report choices (pneumonia interpretation, line noun, tip site)
    geometry: dict = field(default_factory=dict)  # render parameters in anatomy coordinates
    seed: int = 0  # texture of this finding, so removing another finding does not change it


@dataclass(frozen=True)
class CaseSpec:
    """Everything that determines a case's image: the anatomy, the findings and the noise seed."""

    anatomy: Anatomy
    findings: tuple[Finding, ...]
    noise_seed: int


@dataclass
class Case:
    """One generated case."""

    id: str
    image: np.ndarray  # (size, size) uint8
    findings: str
    impression: str
    truth: list[TruthRow]
    normal: bool  # no finding and no device rendered
    spec: CaseSpec


@dataclass
class SynthSummary:
    """What `generate` wrote."""

    out_dir: Path
    n_images: int
    n_normal: int
    entity_counts: dict[str, int]  # images with the entity stated present (existence 1), in ENTITIES order


# ----------------------------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------------------------


def _pick(rng: np.random.Generator, options: Sequence):
    return options[int(rng.integers(len(options)))]


def _uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


def _pair(rng: np.random.Generator, low: float, high: float, spread: float) -> tuple[float, float]:
    """A (right, left) pair: a shared value with a small independent difference per side."""
    base = _uniform(rng, low, high)
    return (base + _uniform(rng, -spread, spread), base + _uniform(rng, -spread, spread))


def _sample_anatomy(rng: np.random.Generator) -> Anatomy:
    dome_right = _uniform(rng, 0.66, 0.74)
    dome_left = dome_right + _uniform(rng, 0.01, 0.04)  # the right hemidiaphragm sits higher (liver)
    lo = _uniform(rng, 0.12, 0.2)
    return Anatomy(
        rotation=_uniform(rng, -0.05, 0.05),
        scale=_uniform(rng, 0.9, 1.04),
        width=_uniform(rng, 0.95, 1.06),
        shift=(_uniform(rng, -0.025, 0.025), _uniform(rng, -0.03, 0.03)),
        body_half_width=_uniform(rng, 0.44, 0.5),
        neck_half_width=_uniform(rng, 0.1, 0.13),
        apex_y=_pair(rng, 0.12, 0.16, 0.008),
        apex_u=_pair(rng, 0.18, 0.21, 0.008),
        lateral_u=_pair(rng, 0.36, 0.4, 0.008),
        medial_u=(_uniform(rng, 0.045, 0.06), _uniform(rng, 0.05, 0.065)),
        dome_y=(dome_right, dome_left),
        dome_u=_pair(rng, 0.17, 0.21, 0.01),
        dome_curve=_pair(rng, 2.0, 3.2, 0.2),
        hilum_y=(_uniform(rng, 0.41, 0.45), _uniform(rng, 0.39, 0.43)),
        knob=_uniform(rng, 0.02, 0.04),
        knob_y=_uniform(rng, 0.28, 0.32),
        carina_y=_uniform(rng, 0.33, 0.37),
        heart_ctr=_uniform(rng, 0.39, 0.47),
        heart_ratio=_uniform(rng, 0.62, 0.72),
        heart_angle=_uniform(rng, 0.4, 0.65),
        rib_start=_pair(rng, 0.075, 0.095, 0.004),
        rib_spacing=_pair(rng, 0.058, 0.066, 0.002),
        clavicle_y=(_uniform(rng, 0.15, 0.18), _uniform(rng, 0.09, 0.12)),
        gastric_bubble=_uniform(rng, 0.0, 0.16) if rng.random() < 0.7 else 0.0,
        breast=_uniform(rng, 0.03, 0.07) if rng.random() < 0.4 else 0.0,
        air_depth=_uniform(rng, 0.33, 0.41),
        exposure_gain=_uniform(rng, 1.9, 2.5),
        window=(lo, _uniform(rng, 0.92, 0.99)),
        gamma=_uniform(rng, 0.85, 1.15),
        noise=_uniform(rng, 0.008, 0.022),
        texture_seed=int(rng.integers(2**31)),
    )


def _lung_span(anatomy: Anatomy, side: int, t: float) -> tuple[float, float]:
    """Medial and lateral distance from the midline of lung `side` at relative height t (0 apex, 1 base)."""
    apex_u = anatomy.apex_u[side]
    dome = math.sqrt(max(0.0, 1 - (1 - min(t / 0.3, 1.0)) ** 2))
    dome_medial = math.sqrt(max(0.0, 1 - (1 - min(t / 0.2, 1.0)) ** 2))
    lateral = apex_u + (anatomy.lateral_u[side] - apex_u) * (0.75 * dome + 0.25 * min(max(t, 0.0), 1.0))
    medial = apex_u - (apex_u - anatomy.medial_u[side]) * dome_medial
    return medial, lateral


def _costophrenic_y(anatomy: Anatomy, side: int) -> float:
    offset = anatomy.lateral_u[side] - anatomy.dome_u[side]
    return anatomy.dome_y[side] + anatomy.dome_curve[side] * offset**2


def _diaphragm_y(anatomy: Anatomy, side: int, u: float) -> float:
    return anatomy.dome_y[side] + anatomy.dome_curve[side] * (u - anatomy.dome_u[side]) ** 2


def _heart_geometry(anatomy: Anatomy, enlargement: float = 1.0) -> dict:
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
    return _heart_geometry(spec.anatomy, enlargement)["ctr"]


def _lung_point(
    rng: np.random.Generator, anatomy: Anatomy, side: int, t_range: tuple[float, float], u_range: tuple[float, float]
) -> tuple[float, float]:
    """A point inside lung `side`: relative height in t_range, relative medial->lateral position in u_range."""
    apex = anatomy.apex_y[side]
    base = _costophrenic_y(anatomy, side)
    for _ in range(20):
        t = _uniform(rng, *t_range)
        medial, lateral = _lung_span(anatomy, side, t)
        u = medial + (lateral - medial) * _uniform(rng, *u_range)
        y = apex + t * (base - apex)
        if y < _diaphragm_y(anatomy, side, u) - 0.04:
            return u, y
    return u, min(y, _diaphragm_y(anatomy, side, u) - 0.05)


def _to_x(side: int, u):
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


def _lesion_centre(
    rng: np.random.Generator, anatomy: Anatomy, side: int, level: str, lobe: bool
) -> tuple[float, float]:
    t_range, u_range = _ZONES[(level, lobe and level in ("upper", "mid", "lower"))]
    u, y = _lung_point(rng, anatomy, side, t_range, u_range)
    return _to_x(side, u), y


class _Occupancy:
    """Lung zones already holding a finding, so that two findings never claim the same zone."""

    def __init__(self) -> None:
        self.taken: set[tuple[str, str]] = set()

    def free(self, *keys: tuple[str, str]) -> bool:
        return not any(key in self.taken for key in keys)

    def take(self, *keys: tuple[str, str]) -> None:
        self.taken.update(keys)


def _side_index(side: str) -> int:
    return SIDES.index(side)


def _new_cardiomegaly(rng: np.random.Generator, anatomy: Anatomy, occupancy: _Occupancy) -> Finding | None:
    certainty = -1 if rng.random() < 0.1 else 1
    if certainty == -1:
        severity, target = "mild", _uniform(rng, 0.52, 0.55)
    else:
        severity = _pick(rng, ("mild", "mild", "moderate", "moderate", "severe"))
        target = {"mild": (0.54, 0.58), "moderate": (0.58, 0.64), "severe": (0.64, 0.7)}[severity]
        target = _uniform(rng, *target)
    return Finding(
        "cardiomegaly",
        severity=severity,
        certainty=certainty,
        geometry={"enlargement": target / anatomy.heart_ctr},
        seed=int(rng.integers(2**31)),
    )


def _new_effusion(
    rng: np.random.Generator, anatomy: Anatomy, occupancy: _Occupancy, side: str | None = None
) -> Finding | None:
    side = side or _pick(rng, ("right", "left", "bilateral", "right", "left"))
    sides = ("right", "left") if side == "bilateral" else (side,)
    if not occupancy.free(*[(s, "pleural") for s in sides]):
        return None
    certainty = -1 if rng.random() < 0.12 else 1
    severity = "small" if certainty == -1 else _pick(rng, ("small", "small", "moderate", "large"))
    if side == "bilateral" and severity == "large":
        severity = "moderate"
    heights = {}
    for s in sides:
        scale = _uniform(rng, 0.7, 1.1) if side == "bilateral" else 1.0
        height = {"small": (0.02, 0.05), "moderate": (0.1, 0.16), "large": (0.22, 0.32)}[severity]
        heights[s] = _uniform(rng, *height) * scale
    occupancy.take(*[(s, "pleural") for s in sides])
    if severity == "large":
        occupancy.take(*[(s, "lower") for s in sides])
    return Finding(
        "effusion",
        side=side,
        severity=severity,
        certainty=certainty,
        geometry={"height": heights, "meniscus": _uniform(rng, 0.08, 0.14)},
        seed=int(rng.integers(2**31)),
    )


def _new_pneumothorax(rng: np.random.Generator, anatomy: Anatomy, occupancy: _Occupancy) -> Finding | None:
    side = _pick(rng, SIDES)
    level = _pick(rng, ("apical", "apical", "lateral"))
    keys = [(side, "upper")] + ([(side, "mid")] if level == "lateral" else [])
    if not occupancy.free(*keys):
        return None
    occupancy.take(*keys)
    certainty = -1 if rng.random() < 0.1 else 1
    severity = "small" if certainty == -1 else _pick(rng, ("small", "small", "moderate", "large"))
    gap = {"small": (0.035, 0.05), "moderate": (0.06, 0.09), "large": (0.1, 0.14)}[severity]
    return Finding(
        "pneumothorax",
        side=side,
        level=level,
        severity=severity,
        certainty=certainty,
        geometry={"gap": _uniform(rng, *gap)},
        seed=int(rng.integers(2**31)),
    )


def _free_zone(
    rng: np.random.Generator, occupancy: _Occupancy, levels: Sequence[str], sides: Sequence[str] = SIDES
) -> tuple[str, str] | None:
    options = [(side, level) for side in sides for level in levels if occupancy.free((side, level))]
    return _pick(rng, options) if options else None


def _new_consolidation(rng: np.random.Generator, anatomy: Anatomy, occupancy: _Occupancy) -> Finding | None:
    zone = _free_zone(rng, occupancy, ("upper", "mid", "lower", "lower"))
    if zone is None:
        return None
    occupancy.take(zone)
    side, level = zone
    lobe = rng.random() < 0.6
    certainty = -1 if rng.random() < 0.1 else 1
    pneumonia = None if certainty == -1 else _pick(rng, (None, None, 1, -1, -1))
    x, y = _lesion_centre(rng, anatomy, _side_index(side), level, lobe)
    return Finding(
        "consolidation",
        side=side,
        level=level,
        lobe=lobe,
        severity=_pick(rng, ("dense", "patchy", "focal")),
        certainty=certainty,
        options={"pneumonia": pneumonia, "bronchograms": bool(rng.random() < 0.5)},
        geometry={
            "x": x,
            "y": y,
            "rx": _uniform(rng, 0.1, 0.14) * (1.2 if lobe else 1.0),
            "ry": _uniform(rng, 0.08, 0.11) * (1.2 if lobe else 1.0),
            "density": _uniform(rng, 0.7, 0.88),
        },
        seed=int(rng.integers(2**31)),
    )


def _new_opacity(rng: np.random.Generator, anatomy: Anatomy, occupancy: _Occupancy) -> Finding | None:
    zone = _free_zone(rng, occupancy, ("upper", "mid", "lower", "lower"))
    if zone is None:
        return None
    occupancy.take(zone)
    side, level = zone
    lobe = rng.random() < 0.25
    interpretations = [None, None, "pneumonia", "atelectasis_or_pneumonia"]
    if level == "lower":
        interpretations.append("atelectasis")
    x, y = _lesion_centre(rng, anatomy, _side_index(side), level, lobe)
    return Finding(
        "opacity",
        side=side,
        level=level,
        lobe=lobe,
        severity=_pick(rng, ("patchy", "streaky", "ill-defined", "faint")),
        options={"interpretation": _pick(rng, interpretations)},
        geometry={
            "x": x,
            "y": y,
            "rx": _uniform(rng, 0.08, 0.13),
            "ry": _uniform(rng, 0.06, 0.1),
            "density": _uniform(rng, 0.35, 0.5),
        },
        seed=int(rng.integers(2**31)),
    )


def _new_atelectasis(rng: np.random.Generator, anatomy: Anatomy, occupancy: _Occupancy) -> Finding | None:
    style = _pick(rng, ("side", "side", "bilateral", "retrocardiac"))
    if style == "bilateral":
        if not occupancy.free(("right", "lower"), ("left", "lower")):
            return None
        occupancy.take(("right", "lower"), ("left", "lower"))
        side, level = "bilateral", "lower"
    elif style == "retrocardiac":
        if not occupancy.free(("left", "lower")):
            return None
        occupancy.take(("left", "lower"))
        side, level = "left", "retrocardiac"
    else:
        zone = _free_zone(rng, occupancy, ("lower",))
        if zone is None:
            return None
        occupancy.take(zone)
        side, level = zone
    bands = []
    for s in ("right", "left") if side == "bilateral" else (side,):
        index = _side_index(s)
        u, y = _lung_point(rng, anatomy, index, (0.68, 0.8), (0.3, 0.6))
        bands.append(
            {
                "x": _to_x(index, u),
                "y": y,
                "length": _uniform(rng, 0.07, 0.12),
                "thickness": _uniform(rng, 0.011, 0.018),
                "tilt": _uniform(rng, -0.25, 0.25),
            }
        )
    return Finding(
        "atelectasis",
        side=side,
        level=level,
        severity=_pick(rng, ("mild", "minimal", "plate-like", "linear", "subsegmental")),
        certainty=-1 if rng.random() < 0.08 else 1,
        geometry={"bands": bands, "density": _uniform(rng, 0.75, 0.95)},
        seed=int(rng.integers(2**31)),
    )


def _new_edema(rng: np.random.Generator, anatomy: Anatomy, occupancy: _Occupancy) -> Finding | None:
    if not occupancy.free(("right", "mid"), ("left", "mid")):
        return None
    occupancy.take(("right", "mid"), ("left", "mid"))
    certainty = -1 if rng.random() < 0.1 else 1
    severity = "mild" if certainty == -1 else _pick(rng, ("mild", "mild", "moderate", "severe"))
    strength = {"mild": 0.35, "moderate": 0.5, "severe": 0.65}[severity]
    return Finding(
        "edema",
        side="bilateral",
        severity=severity,
        certainty=certainty,
        options={"style": _pick(rng, ("pulmonary", "interstitial", "congestion", "perihilar", "markings"))},
        geometry={"strength": strength, "kerley": bool(rng.random() < 0.5), "spread": _uniform(rng, 0.1, 0.14)},
        seed=int(rng.integers(2**31)),
    )


def _new_round_lesion(rng: np.random.Generator, anatomy: Anatomy, occupancy: _Occupancy, kind: str) -> Finding | None:
    levels = ("upper", "mid", "lower", "upper") if kind == "nodule" else ("upper", "mid", "lower", "hilar")
    zone = _free_zone(rng, occupancy, levels)
    if zone is None:
        return None
    occupancy.take(zone)
    side, level = zone
    index = _side_index(side)
    lobe = level != "hilar" and rng.random() < (0.2 if kind == "nodule" else 0.35)
    if level == "hilar":
        u = _uniform(rng, 0.1, 0.13)
        x, y = _to_x(index, u), anatomy.hilum_y[index] + _uniform(rng, -0.02, 0.02)
    else:
        x, y = _lesion_centre(rng, anatomy, index, level, lobe)
    diameter_cm = _uniform(rng, 0.8, 2.6) if kind == "nodule" else _uniform(rng, 3.5, 6.5)
    radius = diameter_cm / CM_PER_UNIT / 2
    return Finding(
        kind,
        side=side,
        level=level,
        lobe=lobe,
        certainty=-1 if rng.random() < 0.1 else 1,
        size_cm=round(diameter_cm, 1),
        geometry={"x": x, "y": y, "r": radius, "lobulation": 0.0 if kind == "nodule" else _uniform(rng, 0.05, 0.12)},
        seed=int(rng.integers(2**31)),
    )


def _new_et_tube(rng: np.random.Generator, anatomy: Anatomy, occupancy: _Occupancy) -> Finding | None:
    above_carina = round(_uniform(rng, 2.5, 6.0), 1)
    return Finding(
        "et_tube",
        size_cm=above_carina,
        geometry={"tip_y": anatomy.carina_y - above_carina / CM_PER_UNIT, "x": 0.5 + _uniform(rng, -0.006, 0.006)},
        seed=int(rng.integers(2**31)),
    )


def _new_central_line(rng: np.random.Generator, anatomy: Anatomy, occupancy: _Occupancy, kind: str) -> Finding:
    tip = _pick(rng, ("svc", "svc", "cavoatrial_junction", "right_atrium"))
    tip_y = {"svc": (0.3, 0.38), "cavoatrial_junction": (0.42, 0.46), "right_atrium": (0.48, 0.54)}[tip]
    side = _pick(rng, ("right", "right", "left"))
    return Finding(
        kind,
        side=side,
        options={"tip": tip, "noun": _pick(rng, ("catheter", "line"))},
        geometry={"tip_y": anatomy.carina_y - 0.34 + _uniform(rng, *tip_y), "wobble": _uniform(rng, -0.01, 0.01)},
        seed=int(rng.integers(2**31)),
    )


def _new_pacemaker(rng: np.random.Generator, anatomy: Anatomy, occupancy: _Occupancy) -> Finding:
    leads = _pick(rng, (("right_atrium", "right_ventricle"), ("right_atrium", "right_ventricle"), ("right_ventricle",)))
    return Finding(
        "pacemaker",
        side="left",
        options={"leads": leads},
        geometry={
            "x": 0.5 + _uniform(rng, 0.2, 0.27),
            "y": _uniform(rng, 0.16, 0.21),
            "w": _uniform(rng, 0.05, 0.065),
            "h": _uniform(rng, 0.035, 0.045),
            "tilt": _uniform(rng, -0.3, 0.1),
        },
        seed=int(rng.integers(2**31)),
    )


def _new(kind: str, rng: np.random.Generator, anatomy: Anatomy, occupancy: _Occupancy) -> Finding | None:
    if kind in ("nodule", "mass"):
        return _new_round_lesion(rng, anatomy, occupancy, kind)
    if kind in ("central_line", "picc"):
        return _new_central_line(rng, anatomy, occupancy, kind)
    return {
        "cardiomegaly": _new_cardiomegaly,
        "effusion": _new_effusion,
        "pneumothorax": _new_pneumothorax,
        "consolidation": _new_consolidation,
        "opacity": _new_opacity,
        "atelectasis": _new_atelectasis,
        "edema": _new_edema,
        "et_tube": _new_et_tube,
        "pacemaker": _new_pacemaker,
    }[kind](rng, anatomy, occupancy)


# Plausible combinations: each scenario lists (kind, probability); "mixed" draws independent findings.
_SCENARIOS = {
    "heart_failure": [("cardiomegaly", 0.85), ("edema", 0.75), ("effusion", 0.55), ("pacemaker", 0.25)],
    "pneumonia": [("consolidation", 1.0), ("effusion", 0.25), ("opacity", 0.2)],
    "intensive_care": [
        ("et_tube", 0.8),
        ("central_line", 0.6),
        ("picc", 0.2),
        ("atelectasis", 0.5),
        ("effusion", 0.3),
        ("edema", 0.2),
        ("pneumothorax", 0.1),
        ("opacity", 0.25),
    ],
    "neoplasm": [("nodule", 0.55), ("mass", 0.55), ("effusion", 0.2), ("atelectasis", 0.15)],
    "pneumothorax": [("pneumothorax", 1.0), ("atelectasis", 0.15)],
}
_SCENARIO_WEIGHTS = {
    "heart_failure": 0.2,
    "pneumonia": 0.17,
    "intensive_care": 0.15,
    "neoplasm": 0.13,
    "pneumothorax": 0.08,
    "mixed": 0.27,
}
_MIXED_KINDS = (
    "cardiomegaly",
    "effusion",
    "pneumothorax",
    "consolidation",
    "opacity",
    "opacity",
    "atelectasis",
    "atelectasis",
    "edema",
    "nodule",
    "mass",
    "pacemaker",
    "central_line",
)


def _sample_findings(rng: np.random.Generator, anatomy: Anatomy) -> list[Finding]:
    names = list(_SCENARIO_WEIGHTS)
    weights = np.array([_SCENARIO_WEIGHTS[name] for name in names])
    scenario = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    if scenario == "mixed":
        count = int(rng.integers(1, 4))
        kinds = [str(k) for k in rng.choice(_MIXED_KINDS, size=count, replace=False)]
    else:
        kinds = [kind for kind, probability in _SCENARIOS[scenario] if rng.random() < probability]
    occupancy = _Occupancy()
    findings: list[Finding] = []
    for kind in dict.fromkeys(kinds):  # once per kind, in order
        finding = _new(kind, rng, anatomy, occupancy)
        if finding is not None:
            findings.append(finding)
    if not findings:
        findings.append(_new(_pick(rng, ("consolidation", "opacity", "effusion", "nodule")), rng, anatomy, occupancy))
    return findings


def sample_spec(rng: np.random.Generator) -> CaseSpec:
    """Draws a case: anatomy, findings (none in about NORMAL_FRACTION of cases) and a noise seed."""
    anatomy = _sample_anatomy(rng)
    findings = [] if rng.random() < NORMAL_FRACTION else _sample_findings(rng, anatomy)
    return CaseSpec(anatomy=anatomy, findings=tuple(findings), noise_seed=int(rng.integers(2**31)))


# ----------------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres in image units [0, 1], as (x, y) arrays of shape (size, size)."""
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size
    return np.meshgrid(axis, axis)


def _ramp(distance: np.ndarray, edge: float) -> np.ndarray:
    """Soft inside indicator: 0 outside, 1 inside, linear over `edge` across the boundary (distance > 0 inside)."""
    return np.clip(distance * (1.0 / edge) + 0.5, 0.0, 1.0)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Zero-mean smooth random field of shape (size, size), about unit variance, with `cells` blobs across."""
    coarse = rng.standard_normal((cells + 3, cells + 3)).astype(np.float32)
    image = Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC, box=(1, 1, cells + 2, cells + 2))
    return np.asarray(image, dtype=np.float32)


class _Canvas:
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
        t = np.maximum((self.y - apex_y) * (1.0 / (_costophrenic_y(anatomy, side) - apex_y)), 0.0)
        dome = np.sqrt(1.0 - (1.0 - np.minimum(t * (1 / 0.3), 1.0)) ** 2)
        dome_medial = np.sqrt(1.0 - (1.0 - np.minimum(t * (1 / 0.2), 1.0)) ** 2)
        lateral = apex_u + (anatomy.lateral_u[side] - apex_u) * (0.75 * dome + 0.25 * np.minimum(t, 1))
        medial = apex_u - (apex_u - anatomy.medial_u[side]) * dome_medial
        if side == 1:  # the aortic knob indents the left upper mediastinal border
            medial = medial + anatomy.knob * np.exp(-(((self.y - anatomy.knob_y) * (1 / 0.035)) ** 2))
        diaphragm = anatomy.dome_y[side] + anatomy.dome_curve[side] * (u - anatomy.dome_u[side]) ** 2
        mask = _ramp(u - medial, edge) * _ramp(lateral - u, edge) * _ramp(diaphragm - self.y, edge)
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
            inner = _ramp(self.y - cap, self.edge)
        else:  # a crescent along the lateral chest wall, widest at the top
            inner = _ramp(fields["lateral"] - gap * (1 - 0.6 * np.minimum(fields["t"], 1)) - u, self.edge)
        inset = 2.5 * self.edge
        wall_inset = (
            _ramp(u - fields["medial"] - inset, self.edge)
            * _ramp(fields["lateral"] - u - inset, self.edge)
            * _ramp(fields["diaphragm"] - self.y - inset, self.edge)
        )
        return inner * fields["mask"], 4 * inner * (1 - inner) * wall_inset


def _box_from(mask: np.ndarray) -> Box | None:
    """Bounding box (x0, y0, x1, y1), exclusive ends, of the True pixels of a (S, S) mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _box_union(*boxes: Box | None) -> Box | None:
    boxes = [box for box in boxes if box is not None]
    if not boxes:
        return None
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def _draw_polyline(
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
    box = _box_from(line > 0.3)
    if box is None:
        return None
    return box[0] + x0, box[1] + y0, box[2] + x0, box[3] + y0


def _curve(control: Sequence[tuple[float, float]], samples: int = 40) -> np.ndarray:
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
    """Which points (u, y) lie inside lung `side` (vectorised `_lung_span` and `_diaphragm_y`)."""
    apex_y, apex_u = anatomy.apex_y[side], anatomy.apex_u[side]
    t = (y - apex_y) / (_costophrenic_y(anatomy, side) - apex_y)
    dome = np.sqrt(np.clip(1 - (1 - np.clip(t / 0.3, 0, 1)) ** 2, 0, 1))
    dome_medial = np.sqrt(np.clip(1 - (1 - np.clip(t / 0.2, 0, 1)) ** 2, 0, 1))
    lateral = apex_u + (anatomy.lateral_u[side] - apex_u) * (0.75 * dome + 0.25 * np.clip(t, 0, 1))
    medial = apex_u - (apex_u - anatomy.medial_u[side]) * dome_medial
    return (t > 0) & (u > medial) & (u < lateral) & (y < _diaphragm_y(anatomy, side, u))


def _vessel_tree(canvas: _Canvas, rng: np.random.Generator) -> np.ndarray:
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
            starts = canvas.to_pixels(np.stack([_to_x(side, u), y], axis=1))
            ends = canvas.to_pixels(np.stack([_to_x(side, u_end), y_end], axis=1))
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


def render(spec: CaseSpec, size: int = 256) -> tuple[np.ndarray, dict[tuple[int, str], Box]]:
    """Draws a case.

    Args:
        spec: anatomy, findings and noise seed (from `sample_spec`).
        size: output width and height in pixels.

    Returns:
        The (size, size) uint8 image and the boxes of the rendered findings, keyed by (finding index, part):
        part "all" for every finding, plus "right"/"left" for bilateral findings and "generator", "lead_right_atrium",
        "lead_right_ventricle" for a pacemaker.
    """
    anatomy = spec.anatomy
    canvas = _Canvas(anatomy, size)
    x, y, u = canvas.x, canvas.y, canvas.u
    edge = canvas.edge
    texture = np.random.default_rng(anatomy.texture_seed)
    boxes: dict[tuple[int, str], Box] = {}
    by_kind = {finding.kind: (index, finding) for index, finding in enumerate(spec.findings)}

    # Soft tissue: an elliptical body section, sloping from the neck to the shoulders, over a dark (air) background.
    shoulders = np.clip((y + 0.02) * (1 / 0.2), 0.0, 1.0)
    half_width = anatomy.neck_half_width + (anatomy.body_half_width - anatomy.neck_half_width) * (
        shoulders * shoulders * (3 - 2 * shoulders)
    )
    body = _ramp(half_width - u, edge * 2)
    thickness = np.sqrt(np.clip(1 - (u / half_width) ** 2, 0.02, 1.0))
    tissue = 0.04 + body * (0.2 + 0.24 * thickness)
    if anatomy.breast > 0:
        for side in (0, 1):
            bx = _to_x(side, 0.26)
            by = anatomy.dome_y[side] - 0.02
            inside = ((x - bx) * (1 / 0.17)) ** 2 + ((y - by) * (1 / 0.12)) ** 2
            tissue += anatomy.breast * _ramp(1 - inside, 0.15) * np.clip((y - by + 0.06) * 20, 0, 1)

    # Heart (possibly enlarged) on the diaphragm, merging upwards into the mediastinum.
    cardiomegaly = by_kind.get("cardiomegaly")
    heart = _heart_geometry(anatomy, cardiomegaly[1].geometry["enlargement"] if cardiomegaly else 1.0)
    cos, sin = math.cos(heart["angle"]), math.sin(heart["angle"])
    hx, hy = x - heart["x"], y - heart["y"]
    ellipse = ((cos * hx + sin * hy) / heart["a"]) ** 2 + ((-sin * hx + cos * hy) / heart["b"]) ** 2
    diaphragm = np.where(
        x < 0.5,
        anatomy.dome_y[0] + anatomy.dome_curve[0] * (canvas.u_side[0] - anatomy.dome_u[0]) ** 2,
        anatomy.dome_y[1] + anatomy.dome_curve[1] * (canvas.u_side[1] - anatomy.dome_u[1]) ** 2,
    )
    heart_mask = _ramp(1 - ellipse, 2 * edge / heart["b"]) * _ramp(diaphragm + 0.01 - y, edge * 3)
    mediastinum = _ramp(0.075 + 0.02 * np.clip((y - 0.2) * 5, 0, 1) - u, edge * 3) * body
    tissue += 0.13 * np.maximum(mediastinum, heart_mask)
    below = _ramp(y - diaphragm, 0.03) * body  # liver, spleen and bowel below the diaphragm, thinner laterally
    tissue += below * (0.1 - 0.06 * np.clip((y - diaphragm) * 4, 0, 1) * np.clip(u * 3 - 0.3, 0, 1))
    if cardiomegaly:
        boxes[(cardiomegaly[0], "all")] = _box_from(heart_mask > 0.5)

    lungs = tuple(canvas.lung(side)["mask"] for side in (0, 1))
    profiles = tuple(canvas.lung(side)["profile"] for side in (0, 1))
    lung = lungs[0] + lungs[1]
    air = (lungs[0] * profiles[0] + lungs[1] * profiles[1]) * (1 - 0.72 * heart_mask)
    fill = np.zeros_like(x)  # 0..1: lung air replaced by fluid or tissue
    direct = np.zeros_like(x)  # attenuation added regardless of air (lesions overlying the mediastinum, devices)
    lucent = np.zeros_like(x)  # pneumothorax: air with no lung behind it
    vessel_gain = 1.0

    # Liver and abdomen below the diaphragm are soft tissue already; the stomach bubble sits under the left dome.
    if anatomy.gastric_bubble > 0:
        bubble = ((x - _to_x(1, anatomy.dome_u[1] + 0.03)) * (1 / 0.05)) ** 2 + (
            (y - anatomy.dome_y[1] - 0.06) * (1 / 0.028)
        ) ** 2
        tissue -= anatomy.gastric_bubble * _ramp(1 - bubble, 0.3)

    for index, finding in enumerate(spec.findings):
        kind = finding.kind
        geometry = finding.geometry
        local = np.random.default_rng(finding.seed)
        if kind == "effusion":
            sides = ("right", "left") if finding.side == "bilateral" else (finding.side,)
            parts = []
            for side_name in sides:
                side = _side_index(side_name)
                medial, lateral = anatomy.medial_u[side], anatomy.lateral_u[side]
                across = np.clip((canvas.u_side[side] - medial) / (lateral - medial), 0, 1)
                surface = (
                    _costophrenic_y(anatomy, side) - geometry["height"][side_name] - geometry["meniscus"] * across**3
                )
                if geometry["height"][side_name] > 0.15:  # large effusions reach higher medially too
                    surface = surface - 0.03 * across
                level = np.clip((y - surface) * (1 / 0.05), 0, 1) * (canvas.u_side[side] > 0)
                fluid = level * lungs[side]
                fill = np.maximum(fill, fluid * 0.97)
                # Fluid is water density like the liver below: the hemidiaphragm disappears into it.
                direct += 0.1 * fluid * level
                box = _box_from(fluid > 0.3)
                parts.append(box)
                if box is not None:
                    boxes[(index, side_name)] = box
            box = _box_union(*parts)
            if box is not None:
                boxes[(index, "all")] = box
        elif kind == "pneumothorax":
            side = _side_index(finding.side)
            inner, pleural_line = canvas.collapsed_lung(side, geometry["gap"], apical=finding.level == "apical")
            region = np.clip(lungs[side] - inner, 0, 1)
            lucent = np.maximum(lucent, region)
            fill = np.maximum(fill, inner * min(0.3, 1.5 * geometry["gap"]))  # the collapsed lung is denser
            direct += 0.14 * pleural_line
            boxes[(index, "all")] = _box_from(region > 0.5)
        elif kind in ("consolidation", "opacity"):
            # Several overlapping soft lobules with a ragged edge: airspace disease is patchy, not a disc.
            rx, ry = geometry["rx"], geometry["ry"]
            patch = np.zeros_like(x)
            for k in range(4):
                ox, oy = (0.0, 0.0) if k == 0 else (local.uniform(-0.5, 0.5) * rx, local.uniform(-0.5, 0.5) * ry)
                scale = 1.0 if k == 0 else local.uniform(0.45, 0.7)
                radial = ((x - geometry["x"] - ox) / (rx * scale)) ** 2 + ((y - geometry["y"] - oy) / (ry * scale)) ** 2
                patch = np.maximum(patch, np.exp(-1.6 * radial))
            rough = _smooth_noise(local, size, 12)
            if kind == "consolidation":
                patch = np.clip((patch - 0.3 + 0.18 * rough) * 2.8, 0, 1)
                patch = patch * (0.8 + 0.2 * np.clip(_smooth_noise(local, size, 26), -1, 1))
                if finding.lobe and finding.level == "upper" and finding.side == "right":
                    fissure = anatomy.hilum_y[0] + 0.01  # minor fissure: a sharp lower border
                    patch = patch * _ramp(fissure - y, edge)
                if finding.options.get("bronchograms"):  # thin branching lucencies: aerated bronchi in the airspace
                    bronchi = np.exp(-((_smooth_noise(local, size, 6) * (1 / 0.08)) ** 2))
                    patch = patch * (1 - 0.45 * bronchi * (patch > 0.8))
            else:
                patch = np.clip((patch - 0.2 + 0.15 * rough) * 1.6, 0, 1)
            patch = patch * lung
            fill = np.maximum(fill, patch * geometry["density"])
            boxes[(index, "all")] = _box_from(patch > 0.35)
        elif kind == "atelectasis":
            parts = []
            for band, side_name in zip(
                geometry["bands"], ("right", "left") if finding.side == "bilateral" else (finding.side,), strict=True
            ):
                side = _side_index(side_name)
                if finding.level == "retrocardiac":
                    radial = np.sqrt(((x - (0.5 + 0.09)) / 0.07) ** 2 + ((y - (anatomy.dome_y[1] - 0.05)) / 0.05) ** 2)
                    plate = np.clip((1 - radial + 0.2 * _smooth_noise(local, size, 8)) / 0.3, 0, 1)
                    plate = plate * lungs[side]
                    direct += 0.1 * plate
                else:
                    c, s = math.cos(band["tilt"]), math.sin(band["tilt"])
                    bx, by = x - band["x"], y - band["y"]
                    along = (c * bx + s * by) / band["length"]
                    across = (-s * bx + c * by) / band["thickness"]
                    plate = np.clip(1 - along * along, 0, 1) * np.clip(1.6 - np.abs(across), 0, 1)
                    plate = np.minimum(plate * 1.5, 1) * lungs[side]
                fill = np.maximum(fill, plate * geometry["density"])
                direct += 0.04 * plate
                box = _box_from(plate > 0.3)
                parts.append(box)
                if box is not None:
                    boxes[(index, side_name)] = box
            box = _box_union(*parts)
            if box is not None:
                boxes[(index, "all")] = box
        elif kind == "edema":
            strength = geometry["strength"]
            spread = geometry["spread"]
            haze = np.zeros_like(x)
            for side in (0, 1):
                cx = _to_x(side, 0.1)
                d2 = ((x - cx) * (1 / (spread * 1.3))) ** 2 + ((y - anatomy.hilum_y[side]) * (1 / (spread * 1.6))) ** 2
                haze += np.exp(-d2) * lungs[side]
            haze = haze * (0.8 + 0.2 * _smooth_noise(local, size, 14))
            fill = np.maximum(fill, np.clip(haze, 0, 1) * strength)
            vessel_gain = 1.0 + 2.5 * strength
            if geometry["kerley"]:  # short horizontal septal lines at the lateral lung bases
                for side in (0, 1):
                    near_wall = np.clip(1 - (anatomy.lateral_u[side] - canvas.u_side[side]) * (1 / 0.035), 0, 1) * (
                        canvas.u_side[side] > 0
                    )
                    period = 0.014
                    phase = (y * (1 / period)) % 1.0
                    lines = np.clip(1 - np.abs(phase - 0.5) * (period * size * anatomy.scale / 0.9), 0, 1)
                    low = np.clip((y - (anatomy.dome_y[side] - 0.14)) * (1 / 0.03), 0, 1)
                    direct += 0.05 * strength * lines * near_wall * low * lungs[side]
            boxes[(index, "all")] = _box_from(haze * lung > 0.35)
            for side in (0, 1):
                half = _box_from((haze * lungs[side]) > 0.35)
                if half is not None:
                    boxes[(index, SIDES[side])] = half
        elif kind in ("nodule", "mass"):
            radius = geometry["r"]
            radial = np.sqrt((x - geometry["x"]) ** 2 + (y - geometry["y"]) ** 2) * (1 / radius)
            if geometry["lobulation"] > 0:
                angle = np.arctan2(y - geometry["y"], x - geometry["x"])
                phases = local.uniform(0, 2 * np.pi, 3)
                bumps = sum(
                    np.cos(k * angle + phases[i]) * w for i, (k, w) in enumerate(((2, 0.6), (3, 0.5), (5, 0.3)))
                )
                radial = radial * (1 - geometry["lobulation"] * bumps)
            sphere = np.sqrt(np.clip(1 - radial * radial, 0, 1))
            solid = _ramp(1 - radial, 2.5 / (radius * size * anatomy.scale))
            fill = np.maximum(fill, solid * 0.92)
            direct += (0.06 + 0.06 * sphere) * solid
            boxes[(index, "all")] = _box_from(solid > 0.5)

    # Vessels, lung texture, then air: the lucency that remains after fluid, tissue and collapse.
    vessels = _vessel_tree(canvas, texture) * vessel_gain
    rib_gain = texture.uniform(0.75, 1.15, 12)
    texture_field = _smooth_noise(texture, size, 28)
    hila = sum(
        np.exp(-(((canvas.u_side[side] - 0.1) ** 2 + (y - anatomy.hilum_y[side]) ** 2) * (1 / (2 * 0.028**2))))
        for side in (0, 1)
    )
    lung_tissue = 1 - lucent
    air_left = air * (1 - fill)
    attenuation = tissue - anatomy.air_depth * air_left * (1 + 0.4 * lucent)
    attenuation += (0.1 * vessels + 0.015 * texture_field) * air_left * lung_tissue
    attenuation += 0.08 * hila * (1 - 0.5 * heart_mask)

    # Bones: spine, posterior and anterior ribs, clavicles, humeral heads.
    spine_half = 0.028 + 0.014 * y
    vertebra = np.cos((y - anatomy.rib_start[0]) * (2 * np.pi / 0.047))
    attenuation += 0.055 * _ramp(spine_half - u, edge * 2) * (0.75 + 0.22 * (vertebra > -0.55)) * body
    attenuation -= 0.1 * _ramp(0.017 - u, edge) * _ramp(anatomy.carina_y - y, edge * 3) * (y > -0.1)  # trachea
    for side, slope in ((0, 0.55), (1, 0.9)):  # main bronchi: the left one is longer and more horizontal
        drop = y - anatomy.carina_y
        centre = drop * slope
        bronchus = _ramp(0.011 - np.abs(canvas.u_side[side] - centre), edge) * (drop > 0) * (drop < 0.06)
        attenuation -= 0.07 * bronchus
    ribs = np.zeros_like(x)
    for side in (0, 1):
        us = canvas.u_side[side]
        start, spacing = anatomy.rib_start[side], anatomy.rib_spacing[side]
        bend = -0.35 * (us - 0.04) + 2.1 * (us - 0.04) ** 2
        phase = (y - start - bend * (1 + 0.08 * np.clip((y - start) / spacing, 0, 10))) / spacing
        frac = phase - np.floor(phase)
        width = 0.42
        r = np.abs(frac - width / 2) * (2 / width)
        band = np.clip((1 - r) * 6, 0, 1) * (0.7 + 0.3 * r * r)
        band = band * rib_gain[np.clip(phase, 0, 11).astype(np.int32)]
        valid = (phase > 0) & (phase < 10) & (us > 0.03)
        lateral_end = anatomy.lateral_u[side] + 0.04
        ribs += band * valid * _ramp(lateral_end - us, 0.02) * np.clip((us - 0.03) * 25, 0, 1)
        anterior = (y - start - 0.1 - 0.42 * (0.38 - us)) / (spacing * 1.15)
        frac = anterior - np.floor(anterior)
        anterior_band = np.clip((1 - np.abs(frac - 0.2) * (2 / 0.4)) * 4, 0, 1)
        valid = (anterior > 0) & (anterior < 6) & (us > 0.12) & (us < lateral_end)
        ribs += 0.35 * anterior_band * valid * np.clip((us - 0.12) * 20, 0, 1)
        # clavicle
        q = (us - 0.03) * (1 / 0.28)
        clavicle_centre = anatomy.clavicle_y[0] + (anatomy.clavicle_y[1] - anatomy.clavicle_y[0]) * q
        clavicle_centre = clavicle_centre + 0.012 * np.sin(2 * np.pi * q)
        half = 0.014 * (1.25 - 0.35 * np.clip(q, 0, 1))
        rc = np.abs(y - clavicle_centre) / half
        clavicle = np.clip((1 - rc) * 5, 0, 1) * (0.75 + 0.25 * rc * rc) * _ramp(q, 0.05) * _ramp(1 - q, 0.05)
        attenuation += 0.16 * clavicle
    # Ribs show best against air; over the heart, mediastinum and abdomen they are faint.
    rib_visibility = (0.35 + 0.65 * _ramp(diaphragm + 0.02 - y, 0.05)) * (1 - 0.6 * np.maximum(heart_mask, mediastinum))
    attenuation += 0.065 * ribs * body * rib_visibility

    # Devices: thin bright lines and a dense generator, drawn in pixel space.
    device_layer = np.zeros_like(x)
    pixels_per_unit = size * anatomy.scale
    for index, finding in enumerate(spec.findings):
        geometry = finding.geometry
        if finding.kind == "et_tube":
            control = [(geometry["x"] + 0.01, -0.1), (geometry["x"], 0.1), (geometry["x"], geometry["tip_y"])]
            points = canvas.to_pixels(_curve(control, 20))
            box = _draw_polyline(device_layer, points, max(0.008 * pixels_per_unit, 1.2), 0.35, hollow=True)
            if box is not None:
                boxes[(index, "all")] = box
        elif finding.kind in ("central_line", "picc"):
            tip_y = geometry["tip_y"]
            sign = -1 if finding.side == "right" else 1
            svc_x = 0.5 - 0.035
            if finding.kind == "central_line":  # internal jugular approach, down the neck
                control = [
                    (0.5 + sign * 0.09, -0.05),
                    (0.5 + sign * 0.07, 0.1),
                    (0.5 + sign * 0.04 + (0.0 if sign < 0 else -0.02), 0.2),
                    (svc_x + geometry["wobble"], 0.27),
                    (svc_x, tip_y),
                ]
            else:  # peripherally inserted, along the arm, axilla and subclavian vein
                control = [
                    (0.5 + sign * 0.55, 0.27),
                    (0.5 + sign * 0.42, 0.24),
                    (0.5 + sign * 0.25, 0.21),
                    (0.5 + sign * 0.08, 0.23),
                    (svc_x, 0.29),
                    (svc_x, tip_y),
                ]
            points = canvas.to_pixels(_curve(control, 50))
            box = _draw_polyline(device_layer, points, max(0.0035 * pixels_per_unit, 0.7), 0.4)
            if box is not None:
                boxes[(index, "all")] = box
        elif finding.kind == "pacemaker":
            gx, gy = geometry["x"], geometry["y"]
            c, s = math.cos(geometry["tilt"]), math.sin(geometry["tilt"])
            along = (c * (x - gx) + s * (y - gy)) / geometry["w"]
            across = (-s * (x - gx) + c * (y - gy)) / geometry["h"]
            generator = _ramp(1 - (along**4 + across**4), 0.15)
            device_layer += 1.2 * generator * (0.85 + 0.15 * (np.abs(along) < 0.5))
            generator_box = _box_from(generator > 0.5)
            boxes[(index, "generator")] = generator_box
            lead_boxes = [generator_box]
            heart_geometry = heart
            for lead in finding.options["leads"]:
                if lead == "right_atrium":
                    tip = (0.5 - 0.045, heart_geometry["y"] - 0.03)
                else:
                    tip = (
                        heart_geometry["x"] + heart_geometry["a"] * 0.45,
                        heart_geometry["y"] + heart_geometry["b"] * 0.55,
                    )
                control = [
                    (gx - geometry["w"] * 0.6, gy),
                    (0.5 + 0.12, gy + 0.01),
                    (0.5 + 0.02, 0.25),
                    (0.5 - 0.03, 0.36),
                    (0.5 - 0.04, heart_geometry["y"] - 0.06),
                    tip,
                ]
                points = canvas.to_pixels(_curve(control, 60))
                box = _draw_polyline(device_layer, points, max(0.005 * pixels_per_unit, 0.9), 0.45)
                if box is not None:
                    boxes[(index, f"lead_{lead}")] = box
                    lead_boxes.append(box)
            boxes[(index, "all")] = _box_union(*lead_boxes)
    attenuation += direct + device_layer

    # Film: attenuation -> density curve, window, gamma, a little blur, quantum and film noise.
    density = 1 - np.exp(-anatomy.exposure_gain * attenuation)
    low, high = anatomy.window
    image = np.clip((density - low) * (1 / (high - low)), 0, 1) ** anatomy.gamma
    image = _blur(image, passes=max(1, round(size / 256)))
    noise = np.random.default_rng(spec.noise_seed)
    image = image + anatomy.noise * noise.standard_normal(image.shape, dtype=np.float32) * (0.6 + 0.6 * image)
    image = image + 0.012 * _smooth_noise(noise, size, 40)
    pixels = np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)
    return pixels, {key: box for key, box in boxes.items() if box is not None}


def _blur(image: np.ndarray, passes: int = 1) -> np.ndarray:
    """Separable [1, 2, 1] / 4 binomial blur, edges replicated."""
    for _ in range(passes):
        padded = np.pad(image, 1, mode="edge")
        image = 0.25 * padded[:-2, 1:-1] + 0.5 * padded[1:-1, 1:-1] + 0.25 * padded[2:, 1:-1]
        padded = np.pad(image, 1, mode="edge")
        image = 0.25 * padded[1:-1, :-2] + 0.5 * padded[1:-1, 1:-1] + 0.25 * padded[1:-1, 2:]
    return image


# ----------------------------------------------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------------------------------------------

Row = tuple[str, str, int, tuple[int, str] | None]  # entity, position, existence, box key (finding index, part)


@dataclass
class _Statement:
    """One sentence (or two short ones) of a report and the rows it states."""

    text: str
    rows: list[Row]
    topic: str = ""  # report section ordering: device, lung, pleura, heart, bone, global


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


@dataclass(frozen=True)
class _Place:
    """How a report names a lung location: its position and the words for it."""

    position: str
    adjectives: tuple[str, ...]  # before the noun: "right lower lobe", "right basilar"
    phrases: tuple[str, ...]  # after the noun: "in the right lower lobe", "at the right base"


def _place(side: str, level: str, lobe: bool) -> _Place:
    """Position and wording of a lung location (MedKLIP / AGXNet anatomy rules, entities.POSITION_SYNONYMS)."""
    if level == "hilar":
        return _Place(f"{side}_hilar", (f"{side} hilar",), (f"in the {side} hilar region", f"at the {side} hilum"))
    if level == "apical":
        return _Place(f"{side}_apical_lung", (f"{side} apical",), (f"at the {side} apex",))
    if lobe:
        if level == "mid" and side == "right":
            return _Place("middle_right_lobe", ("right middle lobe",), ("in the right middle lobe",))
        if level == "mid":
            return _Place("upper_left_lobe", ("lingular",), ("in the lingula",))
        name = f"{side} {level} lobe"
        position = f"{level}_{side}_lobe"
        return _Place(position, (name,), (f"in the {name}", f"within the {name}"))
    if level == "upper":
        return _Place(
            f"{side}_upper_lung",
            (f"{side} upper lung",),
            (f"in the {side} upper lung", f"in the {side} upper lung zone"),
        )
    if level == "mid":
        return _Place(
            f"{side}_mid_lung", (f"{side} mid lung",), (f"in the {side} mid lung", f"in the {side} mid lung zone")
        )
    return _Place(
        f"{side}_lower_lung",
        (f"{side} basilar", f"{side} lower lung"),
        (f"at the {side} base", f"at the {side} lung base", f"in the {side} lower lung"),
    )


_ADVERB = {"mild": "mildly", "moderate": "moderately", "severe": "severely"}
_OTHER_SIDE = {"right": "left", "left": "right"}


def _say_cardiomegaly(f: Finding, i: int, rng: np.random.Generator, section: str) -> _Statement:
    key = (i, "all")
    sev, adv = f.severity, _ADVERB[f.severity]
    if f.certainty == -1:
        options = ["Possible mild cardiomegaly.", "Mild cardiomegaly cannot be excluded."]
        return _Statement(_pick(rng, options), [("cardiomegaly", "heart_size", -1, key)], "heart")
    if section == "impression":
        options = [f"{_cap(sev)} cardiomegaly.", "Cardiomegaly."]
    else:
        options = [
            f"{_cap(sev)} cardiomegaly.",
            f"There is {sev} cardiomegaly.",
            "Cardiomegaly is present.",
            f"The heart is {adv} enlarged.",
            f"The cardiac silhouette is {adv} enlarged.",
            f"{_cap(sev)} enlargement of the cardiac silhouette.",
            f"Heart size is {adv} enlarged.",
        ]
    return _Statement(_pick(rng, options), [("cardiomegaly", "heart_size", 1, key)], "heart")


def _say_effusion(f: Finding, i: int, rng: np.random.Generator, section: str) -> _Statement:
    sev = f.severity
    c = f.certainty
    if f.side == "bilateral":
        left, right = (i, "left"), (i, "right")
        pleural = [("effusion", "left_pleural", c, left), ("effusion", "right_pleural", c, right)]
        angles = [("left_costophrenic", left), ("right_costophrenic", right)]
        if c == -1:
            options = [
                ("Possible small bilateral pleural effusions.", pleural),
                ("Small bilateral pleural effusions cannot be excluded.", pleural),
            ]
            if section == "findings":
                rows = [("blunt", p, 1, k) for p, k in angles] + [("effusion", p, -1, k) for p, k in angles]
                options.append(("Blunting of both costophrenic angles may represent small effusions.", rows))
            text, rows = _pick(rng, options)
            return _Statement(text, rows, "pleura")
        heights = f.geometry["height"]
        larger = "right" if heights["right"] > heights["left"] else "left"
        options = [("Bilateral pleural effusions.", pleural), (f"{_cap(sev)} bilateral pleural effusions.", pleural)]
        if section == "findings":
            options += [
                (f"There are {sev} bilateral pleural effusions.", pleural),
                (f"{_cap(sev)} pleural effusions bilaterally.", pleural),
            ]
            if abs(heights["right"] - heights["left"]) > 0.2 * max(heights.values()):
                options.append(
                    (f"{_cap(sev)} bilateral pleural effusions, {larger} greater than {_OTHER_SIDE[larger]}.", pleural)
                )
            if sev == "small":
                rows = [(entity, p, 1, k) for entity in ("blunt", "effusion") for p, k in angles]
                options += [
                    ("Small effusions blunt both costophrenic angles.", rows),
                    ("Both costophrenic angles are blunted by small effusions.", rows),
                ]
        text, rows = _pick(rng, options)
        return _Statement(text, rows, "pleura")

    s = f.side
    key = (i, s)
    pleural = [("effusion", f"{s}_pleural", c, key)]
    angle = f"{s}_costophrenic"
    if c == -1:
        options = [
            (f"Possible small {s} pleural effusion.", pleural),
            (f"A small {s} pleural effusion cannot be excluded.", pleural),
            (f"Possible trace {s} effusion.", pleural),
        ]
        if section == "findings":
            rows = [("blunt", angle, 1, key), ("effusion", angle, -1, key)]
            options.append((f"Blunting of the {s} costophrenic angle may represent a small effusion.", rows))
        text, rows = _pick(rng, options)
        return _Statement(text, rows, "pleura")
    if section == "impression":
        options = [(f"{_cap(sev)} {s} pleural effusion.", pleural), (f"{_cap(s)} pleural effusion.", pleural)]
    else:
        options = [
            (f"{_cap(sev)} {s} pleural effusion.", pleural),
            (f"There is a {sev} {s} pleural effusion.", pleural),
            (f"{_cap(sev)} {s} pleural effusion is present.", pleural),
            (f"{_cap(sev)} layering {s} pleural effusion.", pleural),
            (f"{_cap(sev)} {s} effusion.", pleural),
            (f"There is a {sev} {s}-sided pleural effusion.", pleural),
        ]
        if sev == "small":
            rows = [("effusion", angle, 1, key), ("blunt", angle, 1, key)]
            options += [
                (f"A small effusion blunts the {s} costophrenic angle.", rows),
                (f"The {s} costophrenic angle is blunted by a small effusion.", rows),
                (f"Trace {s} pleural effusion.", pleural),
            ]
    text, rows = _pick(rng, options)
    return _Statement(text, rows, "pleura")


def _say_pneumothorax(f: Finding, i: int, rng: np.random.Generator, section: str) -> _Statement:
    s, sev = f.side, f.severity
    key = (i, "all")
    if f.level == "apical":
        at_apex = [("pneumothorax", f"{s}_apical_lung", f.certainty, key)]
        if f.certainty == -1:
            options = [
                (f"Possible tiny {s} apical pneumothorax.", at_apex),
                (f"A small {s} apical pneumothorax cannot be excluded.", at_apex),
            ]
        elif section == "impression":
            options = [(f"{_cap(sev)} {s} apical pneumothorax.", at_apex), (f"{_cap(s)} apical pneumothorax.", at_apex)]
        else:
            options = [
                (f"{_cap(sev)} {s} apical pneumothorax.", at_apex),
                (f"There is a {sev} {s} apical pneumothorax.", at_apex),
                (f"{_cap(sev)} pneumothorax at the {s} apex.", at_apex),
                (f"A {sev} {s} apical pneumothorax is present.", at_apex),
                (f"There is a {sev} pneumothorax at the {s} apex.", at_apex),
            ]
        text, rows = _pick(rng, options)
        return _Statement(text, rows, "pleura")
    pleural = [("pneumothorax", f"{s}_pleural", f.certainty, key)]  # a bare side: the pleural space
    hemithorax = [("pneumothorax", f"{s}_lung_unspec", f.certainty, key)]
    if f.certainty == -1:
        options = [
            (f"Possible small {s} pneumothorax.", pleural),
            (f"A small {s} pneumothorax cannot be excluded.", pleural),
        ]
    elif section == "impression":
        options = [(f"{_cap(sev)} {s} pneumothorax.", pleural), (f"{_cap(s)} pneumothorax.", pleural)]
    else:
        options = [
            (f"{_cap(sev)} {s} pneumothorax.", pleural),
            (f"There is a {sev} {s} pneumothorax.", pleural),
            (f"A {sev} {s}-sided pneumothorax is present.", pleural),
            (f"{_cap(sev)} pneumothorax in the {s} hemithorax.", hemithorax),
            (f"There is a {sev} pneumothorax in the {s} hemithorax.", hemithorax),
        ]
    text, rows = _pick(rng, options)
    return _Statement(text, rows, "pleura")


def _say_consolidation(f: Finding, i: int, rng: np.random.Generator, section: str) -> _Statement:
    place = _place(f.side, f.level, f.lobe)
    pos, key = place.position, (i, "all")
    adj, prep = _pick(rng, place.adjectives), _pick(rng, place.phrases)
    qual = f.severity
    pneumonia = f.options.get("pneumonia")
    if f.certainty == -1:
        options = [
            (f"Possible {adj} consolidation.", [("consolidation", pos, -1, key)]),
            (f"Consolidation {prep} cannot be excluded.", [("consolidation", pos, -1, key)]),
            (
                f"Subtle {adj} opacity may represent early consolidation.",
                [("opacity", pos, 1, key), ("consolidation", pos, -1, key)],
            ),
        ]
        text, rows = _pick(rng, options)
        return _Statement(text, rows, "lung")
    rows: list[Row] = [("consolidation", pos, 1, key)]
    if pneumonia == 1 and section == "impression":  # the impression names the diagnosis, at the same place
        return _Statement(f"{_cap(adj)} pneumonia.", [("pneumonia", pos, 1, key)], "lung")
    if pneumonia == -1:
        # An interpretation takes the site of what it interprets.
        rows.append(("pneumonia", pos, -1, key))
        options = [
            f"{_cap(adj)} consolidation, concerning for pneumonia.",
            f"{_cap(qual)} consolidation {prep} may represent pneumonia.",
            f"{_cap(adj)} consolidation, suspicious for pneumonia.",
            f"{_cap(qual)} consolidation {prep}, concerning for infection.",
        ]
        if section == "impression":
            options = options[:1] + [f"{_cap(adj)} consolidation, possibly pneumonia."]
        return _Statement(_pick(rng, options), rows, "lung")
    if section == "impression":
        options = [f"{_cap(adj)} consolidation.", f"{_cap(qual)} {adj} consolidation."]
    else:
        options = [
            f"{_cap(adj)} consolidation.",
            f"{_cap(qual)} consolidation {prep}.",
            f"There is {qual} consolidation {prep}.",
            f"Airspace consolidation {prep}.",
            f"{_cap(qual)} {adj} airspace consolidation.",
        ]
        if f.options.get("bronchograms"):
            options.append(f"{_cap(adj)} consolidation containing air bronchograms.")
    return _Statement(_pick(rng, options), rows, "lung")


def _say_opacity(f: Finding, i: int, rng: np.random.Generator, section: str) -> _Statement:
    place = _place(f.side, f.level, f.lobe)
    pos, key = place.position, (i, "all")
    adj, prep = _pick(rng, place.adjectives), _pick(rng, place.phrases)
    qual = f.severity
    interpretation = f.options.get("interpretation")
    rows: list[Row] = [("opacity", pos, 1, key)]
    if interpretation is None:
        if section == "impression":
            options = [f"{_cap(adj)} opacity.", f"{_cap(qual)} {adj} opacity."]
        else:
            options = [
                f"{_cap(qual)} {adj} opacity.",
                f"There is a {qual} opacity {prep}.",
                f"{_cap(qual)} opacity {prep}.",
                f"Increased opacification {prep}.",
                f"{_cap(qual)} opacities {prep}.",
                f"A {qual} {adj} opacity is noted.",
            ]
        return _Statement(_pick(rng, options), rows, "lung")
    # An interpretation (or an alternative) takes the site of the opacity it interprets.
    if interpretation == "atelectasis_or_pneumonia":
        rows += [("atelectasis", pos, -1, key), ("pneumonia", pos, -1, key)]
        options = [
            f"{_cap(qual)} {adj} opacity may represent atelectasis or early pneumonia.",
            f"{_cap(qual)} opacity {prep} could reflect atelectasis or infection.",
            f"{_cap(qual)} {adj} opacity, possibly atelectasis or pneumonia.",
        ]
    elif interpretation == "pneumonia":
        rows.append(("pneumonia", pos, -1, key))
        options = [
            f"{_cap(qual)} {adj} opacity, concerning for pneumonia.",
            f"{_cap(qual)} opacity {prep}, suspicious for pneumonia.",
            f"{_cap(qual)} {adj} opacity may represent early pneumonia.",
            f"{_cap(qual)} opacity {prep}, suggestive of pneumonia.",
        ]
    else:
        rows.append(("atelectasis", pos, -1, key))
        options = [
            f"{_cap(qual)} {adj} opacity, possibly atelectasis.",
            f"{_cap(qual)} opacity {prep} may represent atelectasis.",
            f"{_cap(qual)} {adj} opacity, suggestive of atelectasis.",
        ]
    return _Statement(_pick(rng, options), rows, "lung")


def _say_atelectasis(f: Finding, i: int, rng: np.random.Generator, section: str) -> _Statement:
    key, qual, c = (i, "all"), f.severity, f.certainty
    if f.level == "retrocardiac":
        rows = [("atelectasis", "retrocardiac", c, key)]
        if c == -1:
            options = ["Possible retrocardiac atelectasis.", "Retrocardiac atelectasis cannot be excluded."]
        elif section == "impression":
            options = ["Retrocardiac atelectasis.", f"{_cap(qual)} retrocardiac atelectasis."]
        else:
            options = [
                "Retrocardiac atelectasis.",
                f"{_cap(qual)} retrocardiac atelectasis.",
                f"There is {qual} atelectasis in the retrocardiac region.",
                "Left retrocardiac atelectasis.",
                f"{_cap(qual)} atelectasis behind the heart.",
            ]
        return _Statement(_pick(rng, options), rows, "lung")
    if f.side == "bilateral":
        rows = [("atelectasis", "lung_bases", c, key)]
        if c == -1:
            options = ["Possible bibasilar atelectasis.", "Bibasilar atelectasis cannot be excluded."]
        elif section == "impression":
            options = ["Bibasilar atelectasis.", f"{_cap(qual)} bibasilar atelectasis."]
        else:
            options = [
                "Bibasilar atelectasis.",
                f"{_cap(qual)} bibasilar atelectasis.",
                f"{_cap(qual)} atelectasis at the lung bases.",
                f"There is {qual} bibasilar atelectasis.",
                f"{_cap(qual)} atelectasis at both lung bases.",
            ]
        return _Statement(_pick(rng, options), rows, "lung")
    s = f.side
    rows = [("atelectasis", f"{s}_lower_lung", c, key)]
    if c == -1:
        options = [
            f"Possible {qual} atelectasis at the {s} base.",
            f"{_cap(s)} basilar atelectasis cannot be excluded.",
        ]
    elif section == "impression":
        options = [f"{_cap(s)} basilar atelectasis.", f"{_cap(qual)} {s} basilar atelectasis."]
    else:
        options = [
            f"{_cap(qual)} {s} basilar atelectasis.",
            f"{_cap(s)} basilar atelectasis.",
            f"{_cap(qual)} atelectasis at the {s} base.",
            f"{_cap(qual)} atelectasis in the {s} lower lung.",
            f"There is {qual} atelectasis at the {s} lung base.",
        ]
    return _Statement(_pick(rng, options), rows, "lung")


def _say_edema(f: Finding, i: int, rng: np.random.Generator, section: str) -> _Statement:
    key, sev = (i, "all"), f.severity
    if f.certainty == -1:
        options = [
            ("Possible mild pulmonary edema.", [("edema", "pulmonary", -1, key)]),
            ("Mild interstitial edema cannot be excluded.", [("edema", "interstitium", -1, key)]),
            (
                "Perihilar opacities, possibly mild edema.",
                [("opacity", "hilar_unspec", 1, key), ("edema", "hilar_unspec", -1, key)],
            ),
        ]
        text, rows = _pick(rng, options)
        return _Statement(text, rows, "lung")
    pulmonary = [("edema", "pulmonary", 1, key)]
    interstitial = [("edema", "interstitium", 1, key)]
    if section == "impression":
        options = [
            (f"{_cap(sev)} pulmonary edema.", pulmonary),
            ("Pulmonary edema.", pulmonary),
            (f"{_cap(sev)} interstitial edema.", interstitial),
        ]
    else:
        options = [
            (f"{_cap(sev)} pulmonary edema.", pulmonary),
            (f"There is {sev} pulmonary edema.", pulmonary),
            (f"{_cap(sev)} interstitial edema.", interstitial),
            (
                f"Pulmonary vascular congestion with {sev} interstitial edema.",
                [("congestion", "pulmonary", 1, key)] + interstitial,
            ),
            (
                f"Perihilar opacities consistent with {sev} pulmonary edema.",
                [("opacity", "hilar_unspec", 1, key)] + pulmonary,
            ),
            (
                f"Increased interstitial markings consistent with {sev} interstitial edema.",
                [("marking", "interstitium", 1, key)] + interstitial,
            ),
        ]
    text, rows = _pick(rng, options)
    return _Statement(text, rows, "lung")


def _say_round_lesion(f: Finding, i: int, rng: np.random.Generator, section: str) -> _Statement:
    place = _place(f.side, f.level, f.lobe)
    pos, key = place.position, (i, "all")
    adj, prep = _pick(rng, place.adjectives), _pick(rng, place.phrases)
    d = f"{f.size_cm:.1f}"
    noun = f.kind
    if f.certainty == -1:
        if noun == "nodule":
            options = [
                (f"Possible {d} cm nodule {prep}.", [("nodule", pos, -1, key)]),
                (f"A small nodule {prep} cannot be excluded.", [("nodule", pos, -1, key)]),
                (f"Possible {adj} nodule.", [("nodule", pos, -1, key)]),
            ]
        else:
            both = [("opacity", pos, 1, key), ("mass", pos, -1, key)]
            options = [
                (f"Rounded {adj} opacity, possibly a mass.", both),
                (f"{_cap(d)} cm {adj} opacity may represent a mass.", both),
                (f"A {adj} mass cannot be excluded.", [("mass", pos, -1, key)]),
            ]
        text, rows = _pick(rng, options)
        return _Statement(text, rows, "lung")
    rows = [(noun, pos, 1, key)]
    if section == "impression":
        follow = (
            "Recommend chest CT for further evaluation."
            if noun == "nodule"
            else "Recommend CT for further characterization."
        )
        options = [f"A {d} cm {adj} {noun}. {follow}", f"{_cap(adj)} {noun}.", f"{_cap(adj)} {noun}. {follow}"]
        return _Statement(_pick(rng, options), rows, "lung")
    options = [
        f"{d} cm {noun} {prep}.",
        f"There is a {d} cm {noun} {prep}.",
        f"A {d} cm {adj} {noun} is noted.",
        f"{_cap(adj)} {noun} measuring {d} cm.",
    ]
    if noun == "nodule":
        options += [f"Well-circumscribed {d} cm nodule {prep}.", f"Rounded {d} cm nodule {prep}."]
    else:
        options += [f"Lobulated {d} cm {adj} mass.", f"Large {adj} mass measuring approximately {d} cm."]
    return _Statement(_pick(rng, options), rows, "lung")


_SITE_WORDS = {
    "svc": ("the SVC", "the mid SVC", "the lower SVC"),
    "cavoatrial_junction": ("the cavoatrial junction",),
    "right_atrium": ("the right atrium",),
}


def _say_device(f: Finding, i: int, rng: np.random.Generator, section: str) -> _Statement:
    key = (i, "all")
    if f.kind == "et_tube":
        d = f"{f.size_cm:.1f}"
        rows = [("tube", "trachea", 1, key)]
        if section == "impression":
            options = [f"Endotracheal tube {d} cm above the carina.", "Endotracheal tube in the mid trachea."]
        else:
            options = [
                f"Endotracheal tube terminates {d} cm above the carina.",
                f"An endotracheal tube terminates approximately {d} cm above the carina.",
                f"ET tube ends approximately {d} cm above the carina.",
                f"The endotracheal tube is appropriately placed, {d} cm above the carina.",
                "Endotracheal tube terminates in the mid trachea.",
                f"Endotracheal tube in the trachea, {d} cm above the carina.",
            ]
        return _Statement(_pick(rng, options), rows, "device")
    if f.kind in ("central_line", "picc"):
        site = f.options["tip"]
        where = _pick(rng, _SITE_WORDS[site])
        if f.kind == "picc":
            rows = [("picc", site, 1, key)]
            options = [
                f"PICC terminates in {where}.",
                f"Peripherally inserted central catheter ends in {where}.",
                f"A PICC line terminates in {where}.",
                f"{_cap(f.side)} arm PICC terminates in {where}.",
                f"The PICC ends in {where}.",
            ]
        else:
            entity = f.options["noun"]
            nouns = ("central venous catheter",) if entity == "catheter" else ("central line", "central venous line")
            noun = _pick(rng, nouns)
            rows = [(entity, site, 1, key)]
            options = [
                f"{_cap(noun)} terminates in {where}.",
                f"The {noun} ends in {where}.",
                f"{_cap(noun)} with its end in {where}.",
                f"A {noun} terminates in {where}.",
            ]
        if site == "cavoatrial_junction":
            options = [option.replace(" in the cavoatrial", " at the cavoatrial") for option in options]
        return _Statement(_pick(rng, options), rows, "device")
    # pacemaker: the generator, then the leads, in separate sentences so each takes its own anatomy
    leads = f.options["leads"]
    rows: list[Row] = [("pacemaker", "other", 1, (i, "generator"))]
    generator = _pick(
        rng,
        (
            "Left chest wall pacemaker.",
            "Pacemaker generator overlies the left chest wall.",
            "Dual-chamber pacemaker projects over the left chest wall."
            if len(leads) == 2
            else "Single-chamber pacemaker projects over the left chest wall.",
            "Left chest wall pacer in place.",
        ),
    )
    if section == "impression":
        return _Statement("Left chest wall pacemaker in place.", rows, "device")
    rows += [("lead", lead, 1, (i, f"lead_{lead}")) for lead in leads]
    if len(leads) == 2:
        lead_text = _pick(
            rng,
            (
                "Leads terminate in the right atrium and right ventricle.",
                "The leads are in the right atrium and right ventricle.",
                "Pacing leads terminate in the right atrium and right ventricle.",
            ),
        )
    else:
        lead_text = _pick(
            rng, ("A single lead terminates in the right ventricle.", "The lead terminates in the right ventricle.")
        )
    return _Statement(f"{generator} {lead_text}", rows, "device")


def _say(f: Finding, i: int, rng: np.random.Generator, section: str) -> _Statement:
    if f.kind in ("nodule", "mass"):
        return _say_round_lesion(f, i, rng, section)
    if f.kind in ("et_tube", "central_line", "picc", "pacemaker"):
        return _say_device(f, i, rng, section)
    return {
        "cardiomegaly": _say_cardiomegaly,
        "effusion": _say_effusion,
        "pneumothorax": _say_pneumothorax,
        "consolidation": _say_consolidation,
        "opacity": _say_opacity,
        "atelectasis": _say_atelectasis,
        "edema": _say_edema,
    }[f.kind](f, i, rng, section)


# Normal statements by topic: (text, rows). A topic is offered only when no finding contradicts it; the zeros a
# normal statement implies ("Heart size is normal" -> no cardiomegaly) are rows too (docs/extraction.md).
_NORMAL_STATEMENTS: dict[str, tuple[tuple[str, tuple[tuple[str, str, int], ...]], ...]] = {
    "lungs": tuple(
        (text, (("clear", "unspecified", 1), ("consolidation", "unspecified", 0), ("opacity", "unspecified", 0)))
        for text in ("Lungs are clear.", "The lungs are clear.", "Clear lungs.")
    ),
    "heart": tuple(
        (text, (("normal", "heart_size", 1), ("cardiomegaly", "heart_size", 0)))
        for text in (
            "Heart size is normal.",
            "The heart is normal in size.",
            "Normal heart size.",
            "The cardiac silhouette is normal in size.",
        )
    ),
    "mediastinum": (
        ("Cardiomediastinal silhouette is within normal limits.", (("normal", "mediastinal", 1),)),
        ("The cardiomediastinal silhouette is normal.", (("normal", "mediastinal", 1),)),
        ("Normal cardiomediastinal contours.", (("normal", "mediastinal", 1),)),
        ("Mediastinal contours are unremarkable.", (("unremarkable", "mediastinal", 1),)),
        ("The mediastinum is unremarkable.", (("unremarkable", "mediastinal", 1),)),
    ),
    "hila": (
        ("The hila are normal.", (("normal", "hilar_unspec", 1),)),
        ("Hilar contours are unremarkable.", (("unremarkable", "hilar_unspec", 1),)),
    ),
    "vasculature": (
        ("Pulmonary vasculature is normal.", (("normal", "pulmonary", 1), ("congestion", "pulmonary", 0))),
    ),
    "volumes": (("Lung volumes are normal.", (("normal", "lung_volumes", 1),)),),
    "angles": tuple(
        (text, (("sharp", "costophrenic_unspec", 1), ("effusion", "costophrenic_unspec", 0)))
        for text in ("The costophrenic angles are sharp.", "Costophrenic angles are sharp.")
    ),
    "bones": (
        ("Osseous structures are intact.", (("intact", "other", 1), ("fracture", "other", 0))),
        ("The osseous structures are unremarkable.", (("unremarkable", "other", 1),)),
    ),
    # Real reports say so when there is nothing in place; without it, device labels would never be 0.
    "devices": (
        ("No lines or tubes.", (("line", "unspecified", 0), ("tube", "unspecified", 0))),
        ("No support devices.", (("device", "unspecified", 0),)),
        ("No pacemaker or central venous catheter.", (("pacemaker", "unspecified", 0), ("catheter", "unspecified", 0))),
        ("No endotracheal or enteric tube.", (("tube", "unspecified", 0),)),
        ("No PICC or central line.", (("picc", "unspecified", 0), ("line", "unspecified", 0))),
        ("No pacing leads.", (("lead", "unspecified", 0),)),
    ),
}
_GLOBAL_NORMAL = (
    ("No acute cardiopulmonary process.", (("process", "cardiopulmonary", 0),)),
    ("No acute cardiopulmonary abnormality.", (("abnormality", "cardiopulmonary", 0),)),
    ("No radiographic evidence of acute cardiopulmonary disease.", (("disease", "cardiopulmonary", 0),)),
)
_TOPIC_OF_NORMAL = {
    "lungs": "lung",
    "heart": "heart",
    "mediastinum": "heart",
    "hila": "heart",
    "vasculature": "lung",
    "volumes": "lung",
    "angles": "pleura",
    "bones": "bone",
    "devices": "global",
}
# Negated findings: the words for each and the position those words give.
_NEGATABLE = {
    "effusion": (
        ("pleural effusion", "pleural_unspec"),
        ("effusion", "unspecified"),
        ("pleural effusions", "pleural_unspec"),
    ),
    "pneumothorax": (("pneumothorax", "unspecified"),),
    "consolidation": (("focal consolidation", "unspecified"), ("consolidation", "unspecified")),
    "edema": (("pulmonary edema", "pulmonary"), ("edema", "unspecified")),
    "cardiomegaly": (("cardiomegaly", "heart_size"),),
}
_SINGLE_NEGATIONS = {
    "effusion": ("No {0}.", "There is no {0}.", "{1} is not seen.", "{1} is not identified."),
    "pneumothorax": ("No {0}.", "There is no {0}.", "No evidence of {0}.", "{1} is not seen.", "No {0} is identified."),
    "consolidation": ("No {0}.", "There is no {0}."),
    "edema": ("No {0}.", "There is no {0}.", "No evidence of {0}."),
    "cardiomegaly": ("No {0}.",),
}


def _negations(rng: np.random.Generator, absent: list[str], count: int) -> list[_Statement]:
    """Statements that rule out findings in `absent` (each at most once), as lists or single sentences."""
    statements = []
    pool = [
        entity for entity in ("consolidation", "effusion", "pneumothorax", "edema", "cardiomegaly") if entity in absent
    ]
    rng.shuffle(pool)
    while pool and len(statements) < count:
        listable = [entity for entity in pool if entity != "cardiomegaly"]
        if len(listable) >= 2 and rng.random() < 0.55:
            size = int(rng.integers(2, min(3, len(listable)) + 1))
            chosen = listable[:size]
            words = [_pick(rng, _NEGATABLE[entity]) for entity in chosen]
            # Bare nouns first: "No pneumothorax or pleural effusion" leaves no doubt which noun "pleural" qualifies.
            order = sorted(range(size), key=lambda k: words[k][1] != "unspecified")
            chosen, words = [chosen[k] for k in order], [words[k] for k in order]
            rows = [(entity, position, 0, None) for entity, (_, position) in zip(chosen, words, strict=True)]
            names = [word for word, _ in words]
            joined = f"{names[0]} or {names[1]}" if len(names) == 2 else f"{names[0]}, {names[1]}, or {names[2]}"
            intro = _pick(rng, ("No ", "There is no ", "No evidence of "))
            statements.append(_Statement(f"{intro}{joined}.", rows, "pleura"))
            pool = [entity for entity in pool if entity not in chosen]
            continue
        entity = pool.pop(0)
        word, position = _pick(rng, _NEGATABLE[entity])
        template = _pick(rng, _SINGLE_NEGATIONS[entity])
        text = template.format(word, _cap(word))
        if word.endswith("s"):  # "Pleural effusions are not seen."
            text = text.replace(" is not", " are not").replace("There is no", "There are no")
        topic = "heart" if entity == "cardiomegaly" else "pleura"
        statements.append(_Statement(text, [(entity, position, 0, None)], topic))
    return statements


_PARENCHYMAL = {"consolidation", "opacity", "atelectasis", "edema", "nodule", "mass", "pneumothorax", "effusion"}
_DEVICES = {"et_tube", "central_line", "picc", "pacemaker"}
_IMPRESSION_PRIORITY = (
    "pneumothorax",
    "consolidation",
    "mass",
    "edema",
    "effusion",
    "cardiomegaly",
    "opacity",
    "nodule",
    "atelectasis",
    "et_tube",
    "central_line",
    "picc",
    "pacemaker",
)
_TOPIC_ORDER = ("device", "lung", "pleura", "heart", "bone", "global")


def write_report(spec: CaseSpec, rng: np.random.Generator) -> tuple[str, str, list[Row]]:
    """Findings and impression text for a case, and the rows their sentences state.

    Every rendered finding is stated in the findings section (present, or uncertain when its certainty is -1);
    the impression repeats the main ones, or all of them when the findings section is left empty.
    """
    findings = spec.findings
    kinds = {f.kind for f in findings}
    sides_with_effusion = {
        s for f in findings if f.kind == "effusion" for s in (("right", "left") if f.side == "bilateral" else (f.side,))
    }
    statements = [_say(f, i, rng, "findings") for i, f in enumerate(findings)]
    mentioned = {row[0] for statement in statements for row in statement.rows}

    # Normal statements whose topic no finding contradicts, and negations of findings that are not there.
    allowed = {
        "lungs": not (kinds & _PARENCHYMAL),
        "heart": "cardiomegaly" not in kinds,
        "mediastinum": "cardiomegaly" not in kinds and not any(f.level == "hilar" for f in findings),
        "hila": "edema" not in kinds and not any(f.level == "hilar" for f in findings),
        "vasculature": "edema" not in kinds,
        "volumes": not (kinds & {"atelectasis", "effusion", "pneumothorax"}),
        "angles": "effusion" not in kinds,
        "bones": True,
        "devices": not (kinds & _DEVICES),
    }
    topics = [topic for topic, ok in allowed.items() if ok]
    if findings:
        n_normals = int(rng.integers(0, min(3, len(topics)) + 1))
    else:
        n_normals = int(rng.integers(2, min(5, len(topics)) + 1))
    chosen = [str(t) for t in rng.choice(topics, size=n_normals, replace=False)] if n_normals else []
    if not findings and rng.random() < 0.7 and "lungs" not in chosen:
        chosen.append("lungs")  # most normal reports say so
    for topic in chosen:
        text, rows = _pick(rng, _NORMAL_STATEMENTS[topic])
        statements.append(_Statement(text, [(e, p, x, None) for e, p, x in rows], _TOPIC_OF_NORMAL[topic]))
    implied_absent = {row[0] for statement in statements for row in statement.rows if row[2] == 0}
    # "Heart size is normal. No cardiomegaly." says the same thing twice; other pairs read naturally.
    absent = [e for e in _NEGATABLE if e not in mentioned and not (e == "cardiomegaly" and e in implied_absent)]
    statements += _negations(rng, absent, int(rng.integers(0 if findings else 1, 3)))
    if len(sides_with_effusion) == 1 and rng.random() < 0.3:
        other = _OTHER_SIDE[next(iter(sides_with_effusion))]
        statements.append(
            _Statement(f"No {other} pleural effusion.", [("effusion", f"{other}_pleural", 0, None)], "pleura")
        )
    abnormal = [i for i, f in enumerate(findings) if f.kind not in _DEVICES]
    if not abnormal and rng.random() < 0.3:
        text, rows = _pick(rng, _GLOBAL_NORMAL)
        statements.append(_Statement(text, [(e, p, x, None) for e, p, x in rows], "global"))

    # Impression: the main findings (all of them when the findings section is dropped), or a normal summary.
    drop_findings = rng.random() < 0.05
    drop_impression = not drop_findings and rng.random() < 0.07
    ranked = sorted(range(len(findings)), key=lambda i: _IMPRESSION_PRIORITY.index(findings[i].kind))
    if drop_findings:
        selected = ranked
    else:
        selected = [i for i in ranked if findings[i].kind not in _DEVICES][: int(rng.integers(1, 4))]
        if rng.random() < 0.15:
            selected += [i for i in ranked if findings[i].kind in _DEVICES][:1]
    impression = [_say(findings[i], i, rng, "impression") for i in sorted(selected, key=ranked.index)]
    if not abnormal:
        text, rows = _pick(rng, _GLOBAL_NORMAL)
        impression.append(_Statement(text, [(e, p, x, None) for e, p, x in rows], "global"))
    elif "pneumothorax" not in mentioned and "pneumothorax" in absent and rng.random() < 0.15:
        impression.append(_Statement("No pneumothorax.", [("pneumothorax", "unspecified", 0, None)], "pleura"))
    if drop_findings:
        statements = []
    if drop_impression:
        impression = []

    if rng.random() < 0.6:
        statements.sort(key=lambda statement: _TOPIC_ORDER.index(statement.topic))
    else:
        rng.shuffle(statements)
    findings_text = " ".join(statement.text for statement in statements)
    if len(impression) >= 2 and rng.random() < 0.4:
        impression_text = " ".join(f"{k}. {statement.text}" for k, statement in enumerate(impression, start=1))
    else:
        impression_text = " ".join(statement.text for statement in impression)
    rows = [row for statement in statements + impression for row in statement.rows]
    return findings_text, impression_text, rows


def _truth(rows: list[Row], boxes: dict[tuple[int, str], Box]) -> list[TruthRow]:
    """Deduplicates rows by (entity, position) and attaches boxes.

    A finding hedged in one section and stated in the other ("may represent pneumonia" ... "Left upper lobe
    pneumonia.") keeps the strongest statement, 1 over 0 over -1, as the labels do.
    """
    truth: dict[tuple[str, str], TruthRow] = {}
    for entity, position, existence, key in rows:
        box = boxes.get(key) if key is not None and existence != 0 else None
        if key is not None and box is None and existence != 0:
            box = boxes.get((key[0], "all"))
        previous = truth.get((entity, position))
        if previous is not None and previous.existence >= existence:
            continue
        truth[(entity, position)] = TruthRow(entity, position, existence, box or (previous.box if previous else None))
    return list(truth.values())


# ----------------------------------------------------------------------------------------------------------------
# Cases and data sets
# ----------------------------------------------------------------------------------------------------------------


def make_case(seed: int, index: int, size: int = 256) -> Case:
    """Generates case `index` of the data set `seed`; the same (seed, index, size) always gives the same case.

    Args:
        seed: data set seed.
        index: 0-based case number (its id is `case_id(index)`).
        size: image width and height in pixels.
    """
    rng = np.random.default_rng([seed, index])
    spec = sample_spec(rng)
    image, boxes = render(spec, size)
    findings, impression, rows = write_report(spec, rng)
    return Case(
        id=case_id(index),
        image=image,
        findings=findings,
        impression=impression,
        truth=_truth(rows, boxes),
        normal=not spec.findings,
        spec=spec,
    )


def _write_case(job: tuple[str, int, int, int]) -> tuple[str, str, str, list[TruthRow], bool]:
    """Worker: generates one case, writes its PNG, returns its text and truth (top level, so spawn can pickle it)."""
    out_dir, seed, index, size = job
    case = make_case(seed, index, size)
    Image.fromarray(case.image).save(Path(out_dir) / "images" / f"{case.id}.png", format="PNG", compress_level=2)
    return case.id, case.findings, case.impression, case.truth, case.normal


def generate(
    out_dir: str | Path,
    n: int,
    seed: int = 0,
    size: int = 256,
    workers: int | None = None,
    progress: bool = False,
) -> SynthSummary:
    """Writes `n` synthetic cases: images/*.png, reports.csv and truth.csv (see the module docstring).

    Args:
        out_dir: output folder (created; existing files of the same names are overwritten).
        n: number of cases.
        seed: data set seed; the output is byte-identical for the same (seed, n, size), whatever `workers` is.
        size: image width and height in pixels.
        workers: processes; None means os.cpu_count(), 1 means in this process.
        progress: show a progress bar.

    Returns:
        Counts of what was written.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if size < 64:
        raise ValueError(f"size must be at least 64 pixels, got {size}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    workers = max(1, min(workers or os.cpu_count() or 1, n))
    jobs = [(str(out), seed, index, size) for index in range(n)]
    logger.info("generating %d synthetic radiographs (seed %d, %d px, %d workers) into %s", n, seed, size, workers, out)
    bar = tqdm(total=n, desc="synthetic", unit="img", disable=not progress)
    results = []
    if workers == 1:
        for job in jobs:
            results.append(_write_case(job))
            bar.update()
    else:
        with get_context("spawn").Pool(workers) as pool:
            for result in pool.imap(_write_case, jobs, chunksize=max(1, min(32, n // (workers * 8)))):
                results.append(result)
                bar.update()
    bar.close()

    counts: Counter[str] = Counter()
    n_normal = 0
    with (
        open(out / "reports.csv", "w", newline="", encoding="utf-8") as reports,
        open(out / "truth.csv", "w", newline="", encoding="utf-8") as truth,
    ):
        report_writer = csv.writer(reports, lineterminator="\n")
        truth_writer = csv.writer(truth, lineterminator="\n")
        report_writer.writerow(REPORT_COLUMNS)
        truth_writer.writerow(TRUTH_COLUMNS)
        for identifier, findings, impression, rows, normal in results:
            report_writer.writerow((identifier, f"images/{identifier}.png", findings, impression))
            for row in rows:
                box = row.box if row.box is not None else ("", "", "", "")
                truth_writer.writerow((identifier, row.entity, row.position, row.existence, *box))
            counts.update({row.entity for row in rows if row.existence == 1})
            n_normal += normal
    entity_counts = {entity: counts[entity] for entity in ENTITIES if counts[entity]}
    logger.info("wrote %d cases (%d normal) to %s", n, n_normal, out)
    return SynthSummary(out_dir=out, n_images=n, n_normal=n_normal, entity_counts=entity_counts)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: `python -m medklip.data.synthetic --out DIR --n N [--seed S] [--size P] [--workers W]`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--n", type=int, default=1000, help="number of cases")
    parser.add_argument("--seed", type=int, default=0, help="data set seed")
    parser.add_argument("--size", type=int, default=256, help="image size in pixels")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    summary = generate(args.out, n=args.n, seed=args.seed, size=args.size, workers=args.workers, progress=True)
    logger.info("entity counts (images with the finding present): %s", summary.entity_counts)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
