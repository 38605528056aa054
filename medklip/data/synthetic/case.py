"""What a synthetic case is: its types (anatomy, findings, spec, truth rows), constants and seeded draws."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


VERSION = 1  # bump when the images or reports of a given seed change; it keys cached synthetic sources

REPORT_COLUMNS = ("id", "image", "findings", "impression")
MAX_CASES = 100_000  # a synthetic data set's size limit (about 3 GB of 256 px PNGs)
SIZE_RANGE = (64, 1024)  # image side in pixels

TRUTH_COLUMNS = ("id", "entity", "position", "existence", "x0", "y0", "x1", "y1")

NORMAL_FRACTION = 0.3  # share of cases with no finding and no device

SIDES = ("right", "left")  # index 0 = patient's right = image left

CM_PER_UNIT = 37.0  # anatomy units (image width before scaling) to centimetres, for stated lesion sizes

Box = tuple[int, int, int, int]


def case_id(index: int) -> str:
    """The id of case `index` (0-based): `synth-000001` for index 0."""
    return f"synth-{index + 1:06d}"


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


def pick(rng: np.random.Generator, options: Sequence):
    return options[int(rng.integers(len(options)))]


def uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


def pair(rng: np.random.Generator, low: float, high: float, spread: float) -> tuple[float, float]:
    """A (right, left) pair: a shared value with a small independent difference per side."""
    base = uniform(rng, low, high)
    return (base + uniform(rng, -spread, spread), base + uniform(rng, -spread, spread))
