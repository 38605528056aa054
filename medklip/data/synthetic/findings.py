"""Which findings a case has and where: one sampler per finding kind, scenarios, and `sample_spec`."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from medklip.data.synthetic.anatomy import lesion_centre, lung_point, sample_anatomy, side_index, to_x
from medklip.data.synthetic.case import CM_PER_UNIT, NORMAL_FRACTION, SIDES, Anatomy, CaseSpec, Finding, pick, uniform

logger = logging.getLogger(__name__)


class _Occupancy:
    """Lung zones already holding a finding, so that two findings never claim the same zone."""

    def __init__(self) -> None:
        self.taken: set[tuple[str, str]] = set()

    def free(self, *keys: tuple[str, str]) -> bool:
        return not any(key in self.taken for key in keys)

    def take(self, *keys: tuple[str, str]) -> None:
        self.taken.update(keys)


def _new_cardiomegaly(rng: np.random.Generator, anatomy: Anatomy, occupancy: _Occupancy) -> Finding | None:
    certainty = -1 if rng.random() < 0.1 else 1
    if certainty == -1:
        severity, target = "mild", uniform(rng, 0.52, 0.55)
    else:
        severity = pick(rng, ("mild", "mild", "moderate", "moderate", "severe"))
        target = {"mild": (0.54, 0.58), "moderate": (0.58, 0.64), "severe": (0.64, 0.7)}[severity]
        target = uniform(rng, *target)
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
    side = side or pick(rng, ("right", "left", "bilateral", "right", "left"))
    sides = ("right", "left") if side == "bilateral" else (side,)
    if not occupancy.free(*[(s, "pleural") for s in sides]):
        return None
    certainty = -1 if rng.random() < 0.12 else 1
    severity = "small" if certainty == -1 else pick(rng, ("small", "small", "moderate", "large"))
    if side == "bilateral" and severity == "large":
        severity = "moderate"
    heights = {}
    for s in sides:
        scale = uniform(rng, 0.7, 1.1) if side == "bilateral" else 1.0
        height = {"small": (0.02, 0.05), "moderate": (0.1, 0.16), "large": (0.22, 0.32)}[severity]
        heights[s] = uniform(rng, *height) * scale
    occupancy.take(*[(s, "pleural") for s in sides])
    if severity == "large":
        occupancy.take(*[(s, "lower") for s in sides])
    return Finding(
        "effusion",
        side=side,
        severity=severity,
        certainty=certainty,
        geometry={"height": heights, "meniscus": uniform(rng, 0.08, 0.14)},
        seed=int(rng.integers(2**31)),
    )


def _new_pneumothorax(rng: np.random.Generator, anatomy: Anatomy, occupancy: _Occupancy) -> Finding | None:
    side = pick(rng, SIDES)
    level = pick(rng, ("apical", "apical", "lateral"))
    keys = [(side, "upper")] + ([(side, "mid")] if level == "lateral" else [])
    if not occupancy.free(*keys):
        return None
    occupancy.take(*keys)
    certainty = -1 if rng.random() < 0.1 else 1
    severity = "small" if certainty == -1 else pick(rng, ("small", "small", "moderate", "large"))
    gap = {"small": (0.035, 0.05), "moderate": (0.06, 0.09), "large": (0.1, 0.14)}[severity]
    return Finding(
        "pneumothorax",
        side=side,
        level=level,
        severity=severity,
        certainty=certainty,
        geometry={"gap": uniform(rng, *gap)},
        seed=int(rng.integers(2**31)),
    )


def _free_zone(
    rng: np.random.Generator, occupancy: _Occupancy, levels: Sequence[str], sides: Sequence[str] = SIDES
) -> tuple[str, str] | None:
    options = [(side, level) for side in sides for level in levels if occupancy.free((side, level))]
    return pick(rng, options) if options else None


def _new_consolidation(rng: np.random.Generator, anatomy: Anatomy, occupancy: _Occupancy) -> Finding | None:
    zone = _free_zone(rng, occupancy, ("upper", "mid", "lower", "lower"))
    if zone is None:
        return None
    occupancy.take(zone)
    side, level = zone
    lobe = rng.random() < 0.6
    certainty = -1 if rng.random() < 0.1 else 1
    pneumonia = None if certainty == -1 else pick(rng, (None, None, 1, -1, -1))
    x, y = lesion_centre(rng, anatomy, side_index(side), level, lobe)
    return Finding(
        "consolidation",
        side=side,
        level=level,
        lobe=lobe,
        severity=pick(rng, ("dense", "patchy", "focal")),
        certainty=certainty,
        options={"pneumonia": pneumonia, "bronchograms": bool(rng.random() < 0.5)},
        geometry={
            "x": x,
            "y": y,
            "rx": uniform(rng, 0.1, 0.14) * (1.2 if lobe else 1.0),
            "ry": uniform(rng, 0.08, 0.11) * (1.2 if lobe else 1.0),
            "density": uniform(rng, 0.7, 0.88),
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
    x, y = lesion_centre(rng, anatomy, side_index(side), level, lobe)
    return Finding(
        "opacity",
        side=side,
        level=level,
        lobe=lobe,
        severity=pick(rng, ("patchy", "streaky", "ill-defined", "faint")),
        options={"interpretation": pick(rng, interpretations)},
        geometry={
            "x": x,
            "y": y,
            "rx": uniform(rng, 0.08, 0.13),
            "ry": uniform(rng, 0.06, 0.1),
            "density": uniform(rng, 0.35, 0.5),
        },
        seed=int(rng.integers(2**31)),
    )


def _new_atelectasis(rng: np.random.Generator, anatomy: Anatomy, occupancy: _Occupancy) -> Finding | None:
    style = pick(rng, ("side", "side", "bilateral", "retrocardiac"))
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
        index = side_index(s)
        u, y = lung_point(rng, anatomy, index, (0.68, 0.8), (0.3, 0.6))
        bands.append(
            {
                "x": to_x(index, u),
                "y": y,
                "length": uniform(rng, 0.07, 0.12),
                "thickness": uniform(rng, 0.011, 0.018),
                "tilt": uniform(rng, -0.25, 0.25),
            }
        )
    return Finding(
        "atelectasis",
        side=side,
        level=level,
        severity=pick(rng, ("mild", "minimal", "plate-like", "linear", "subsegmental")),
        certainty=-1 if rng.random() < 0.08 else 1,
        geometry={"bands": bands, "density": uniform(rng, 0.75, 0.95)},
        seed=int(rng.integers(2**31)),
    )


def _new_edema(rng: np.random.Generator, anatomy: Anatomy, occupancy: _Occupancy) -> Finding | None:
    if not occupancy.free(("right", "mid"), ("left", "mid")):
        return None
    occupancy.take(("right", "mid"), ("left", "mid"))
    certainty = -1 if rng.random() < 0.1 else 1
    severity = "mild" if certainty == -1 else pick(rng, ("mild", "mild", "moderate", "severe"))
    strength = {"mild": 0.35, "moderate": 0.5, "severe": 0.65}[severity]
    return Finding(
        "edema",
        side="bilateral",
        severity=severity,
        certainty=certainty,
        options={"style": pick(rng, ("pulmonary", "interstitial", "congestion", "perihilar", "markings"))},
        geometry={"strength": strength, "kerley": bool(rng.random() < 0.5), "spread": uniform(rng, 0.1, 0.14)},
        seed=int(rng.integers(2**31)),
    )


def _new_round_lesion(rng: np.random.Generator, anatomy: Anatomy, occupancy: _Occupancy, kind: str) -> Finding | None:
    levels = ("upper", "mid", "lower", "upper") if kind == "nodule" else ("upper", "mid", "lower", "hilar")
    zone = _free_zone(rng, occupancy, levels)
    if zone is None:
        return None
    occupancy.take(zone)
    side, level = zone
    index = side_index(side)
    lobe = level != "hilar" and rng.random() < (0.2 if kind == "nodule" else 0.35)
    if level == "hilar":
        u = uniform(rng, 0.1, 0.13)
        x, y = to_x(index, u), anatomy.hilum_y[index] + uniform(rng, -0.02, 0.02)
    else:
        x, y = lesion_centre(rng, anatomy, index, level, lobe)
    diameter_cm = uniform(rng, 0.8, 2.6) if kind == "nodule" else uniform(rng, 3.5, 6.5)
    radius = diameter_cm / CM_PER_UNIT / 2
    return Finding(
        kind,
        side=side,
        level=level,
        lobe=lobe,
        certainty=-1 if rng.random() < 0.1 else 1,
        size_cm=round(diameter_cm, 1),
        geometry={"x": x, "y": y, "r": radius, "lobulation": 0.0 if kind == "nodule" else uniform(rng, 0.05, 0.12)},
        seed=int(rng.integers(2**31)),
    )


def _new_et_tube(rng: np.random.Generator, anatomy: Anatomy, occupancy: _Occupancy) -> Finding | None:
    above_carina = round(uniform(rng, 2.5, 6.0), 1)
    return Finding(
        "et_tube",
        size_cm=above_carina,
        geometry={"tip_y": anatomy.carina_y - above_carina / CM_PER_UNIT, "x": 0.5 + uniform(rng, -0.006, 0.006)},
        seed=int(rng.integers(2**31)),
    )


def _new_central_line(rng: np.random.Generator, anatomy: Anatomy, occupancy: _Occupancy, kind: str) -> Finding:
    tip = pick(rng, ("svc", "svc", "cavoatrial_junction", "right_atrium"))
    tip_y = {"svc": (0.3, 0.38), "cavoatrial_junction": (0.42, 0.46), "right_atrium": (0.48, 0.54)}[tip]
    side = pick(rng, ("right", "right", "left"))
    return Finding(
        kind,
        side=side,
        options={"tip": tip, "noun": pick(rng, ("catheter", "line"))},
        geometry={"tip_y": anatomy.carina_y - 0.34 + uniform(rng, *tip_y), "wobble": uniform(rng, -0.01, 0.01)},
        seed=int(rng.integers(2**31)),
    )


def _new_pacemaker(rng: np.random.Generator, anatomy: Anatomy, occupancy: _Occupancy) -> Finding:
    leads = pick(rng, (("right_atrium", "right_ventricle"), ("right_atrium", "right_ventricle"), ("right_ventricle",)))
    return Finding(
        "pacemaker",
        side="left",
        options={"leads": leads},
        geometry={
            "x": 0.5 + uniform(rng, 0.2, 0.27),
            "y": uniform(rng, 0.16, 0.21),
            "w": uniform(rng, 0.05, 0.065),
            "h": uniform(rng, 0.035, 0.045),
            "tilt": uniform(rng, -0.3, 0.1),
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
        findings.append(_new(pick(rng, ("consolidation", "opacity", "effusion", "nodule")), rng, anatomy, occupancy))
    return findings


def sample_spec(rng: np.random.Generator) -> CaseSpec:
    """Draws a case: anatomy, findings (none in about NORMAL_FRACTION of cases) and a noise seed."""
    anatomy = sample_anatomy(rng)
    findings = [] if rng.random() < NORMAL_FRACTION else _sample_findings(rng, anatomy)
    return CaseSpec(anatomy=anatomy, findings=tuple(findings), noise_seed=int(rng.integers(2**31)))
