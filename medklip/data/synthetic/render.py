"""Drawing a case: soft tissue, heart, findings, lung air, bones, devices and the film, in that order.

`render` builds a `Scene` (the canvas plus the layers that the drawing steps add to) and runs the steps in a fixed
order; each finding kind has its own drawing function. The order of the steps and of the random draws inside them
is part of the output: a given seed gives the same image (`case.VERSION` keys caches of generated sources).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from medklip.data.synthetic.anatomy import costophrenic_y, heart_geometry, side_index, to_x
from medklip.data.synthetic.canvas import (
    Canvas,
    blur,
    box_from,
    box_union,
    curve,
    draw_polyline,
    ramp,
    smooth_noise,
    vessel_tree,
)
from medklip.data.synthetic.case import SIDES, Anatomy, Box, CaseSpec, Finding


@dataclass
class Scene:
    """The canvas of one case and the layers that the drawing steps build up (all (S, S) float arrays)."""

    canvas: Canvas
    anatomy: Anatomy
    size: int
    boxes: dict[tuple[int, str], Box] = field(default_factory=dict)
    body: np.ndarray | None = None  # 0..1 inside the body outline
    tissue: np.ndarray | None = None  # soft-tissue attenuation
    heart: dict | None = None  # the heart's ellipse (`heart_geometry`)
    heart_mask: np.ndarray | None = None
    mediastinum: np.ndarray | None = None
    diaphragm: np.ndarray | None = None  # the diaphragm's height at each column
    lungs: tuple[np.ndarray, np.ndarray] | None = None  # (right, left) lung masks
    air: np.ndarray | None = None  # lung air before findings
    fill: np.ndarray | None = None  # 0..1: lung air replaced by fluid or tissue
    direct: np.ndarray | None = None  # attenuation added regardless of air (lesions over the mediastinum, devices)
    lucent: np.ndarray | None = None  # pneumothorax: air with no lung behind it
    vessel_gain: float = 1.0

    @property
    def lung(self) -> np.ndarray:
        return self.lungs[0] + self.lungs[1]

    def keep_box(self, key: tuple[int, str], box: Box | None) -> Box | None:
        if box is not None:
            self.boxes[key] = box
        return box


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
    scene = Scene(Canvas(anatomy, size), anatomy, size)
    texture = np.random.default_rng(anatomy.texture_seed)
    by_kind = {finding.kind: (index, finding) for index, finding in enumerate(spec.findings)}

    _soft_tissue(scene)
    _heart_and_mediastinum(scene, by_kind.get("cardiomegaly"))
    _lungs_and_abdomen(scene)
    for index, finding in enumerate(spec.findings):
        draw = _FINDINGS.get(finding.kind)
        if draw is not None:
            draw(scene, index, finding, np.random.default_rng(finding.seed))
    attenuation, rib_gain = _lung_air(scene, texture)
    _bones(scene, attenuation, rib_gain)
    attenuation += scene.direct + _devices(scene, spec.findings)
    pixels = _film(attenuation, anatomy, spec.noise_seed, size)
    return pixels, {key: box for key, box in scene.boxes.items() if box is not None}


# --- the body -----------------------------------------------------------------------------------------------------
def _soft_tissue(scene: Scene) -> None:
    """An elliptical body section, sloping from the neck to the shoulders, over a dark (air) background."""
    anatomy, canvas = scene.anatomy, scene.canvas
    x, y, u, edge = canvas.x, canvas.y, canvas.u, canvas.edge
    shoulders = np.clip((y + 0.02) * (1 / 0.2), 0.0, 1.0)
    half_width = anatomy.neck_half_width + (anatomy.body_half_width - anatomy.neck_half_width) * (
        shoulders * shoulders * (3 - 2 * shoulders)
    )
    body = ramp(half_width - u, edge * 2)
    thickness = np.sqrt(np.clip(1 - (u / half_width) ** 2, 0.02, 1.0))
    tissue = 0.04 + body * (0.2 + 0.24 * thickness)
    if anatomy.breast > 0:
        for side in (0, 1):
            bx = to_x(side, 0.26)
            by = anatomy.dome_y[side] - 0.02
            inside = ((x - bx) * (1 / 0.17)) ** 2 + ((y - by) * (1 / 0.12)) ** 2
            tissue += anatomy.breast * ramp(1 - inside, 0.15) * np.clip((y - by + 0.06) * 20, 0, 1)
    scene.body, scene.tissue = body, tissue


def _heart_and_mediastinum(scene: Scene, cardiomegaly: tuple[int, Finding] | None) -> None:
    """The heart (possibly enlarged) on the diaphragm, merging upwards into the mediastinum; the abdomen below."""
    anatomy, canvas = scene.anatomy, scene.canvas
    x, y, u, edge = canvas.x, canvas.y, canvas.u, canvas.edge
    heart = heart_geometry(anatomy, cardiomegaly[1].geometry["enlargement"] if cardiomegaly else 1.0)
    cos, sin = math.cos(heart["angle"]), math.sin(heart["angle"])
    hx, hy = x - heart["x"], y - heart["y"]
    ellipse = ((cos * hx + sin * hy) / heart["a"]) ** 2 + ((-sin * hx + cos * hy) / heart["b"]) ** 2
    diaphragm = np.where(
        x < 0.5,
        anatomy.dome_y[0] + anatomy.dome_curve[0] * (canvas.u_side[0] - anatomy.dome_u[0]) ** 2,
        anatomy.dome_y[1] + anatomy.dome_curve[1] * (canvas.u_side[1] - anatomy.dome_u[1]) ** 2,
    )
    heart_mask = ramp(1 - ellipse, 2 * edge / heart["b"]) * ramp(diaphragm + 0.01 - y, edge * 3)
    mediastinum = ramp(0.075 + 0.02 * np.clip((y - 0.2) * 5, 0, 1) - u, edge * 3) * scene.body
    scene.tissue += 0.13 * np.maximum(mediastinum, heart_mask)
    below = ramp(y - diaphragm, 0.03) * scene.body  # liver, spleen and bowel below the diaphragm, thinner laterally
    scene.tissue += below * (0.1 - 0.06 * np.clip((y - diaphragm) * 4, 0, 1) * np.clip(u * 3 - 0.3, 0, 1))
    if cardiomegaly:
        scene.boxes[(cardiomegaly[0], "all")] = box_from(heart_mask > 0.5)
    scene.heart, scene.heart_mask, scene.mediastinum, scene.diaphragm = heart, heart_mask, mediastinum, diaphragm


def _lungs_and_abdomen(scene: Scene) -> None:
    """The lung masks and their air; empty finding layers; the stomach bubble under the left dome."""
    anatomy, canvas = scene.anatomy, scene.canvas
    x, y = canvas.x, canvas.y
    scene.lungs = tuple(canvas.lung(side)["mask"] for side in (0, 1))
    profiles = tuple(canvas.lung(side)["profile"] for side in (0, 1))
    scene.air = (scene.lungs[0] * profiles[0] + scene.lungs[1] * profiles[1]) * (1 - 0.72 * scene.heart_mask)
    scene.fill, scene.direct, scene.lucent = np.zeros_like(x), np.zeros_like(x), np.zeros_like(x)
    # Liver and abdomen below the diaphragm are soft tissue already; the stomach bubble sits under the left dome.
    if anatomy.gastric_bubble > 0:
        bubble = ((x - to_x(1, anatomy.dome_u[1] + 0.03)) * (1 / 0.05)) ** 2 + (
            (y - anatomy.dome_y[1] - 0.06) * (1 / 0.028)
        ) ** 2
        scene.tissue -= anatomy.gastric_bubble * ramp(1 - bubble, 0.3)


# --- findings in the lungs and pleura -----------------------------------------------------------------------------
def _sides(finding: Finding) -> tuple[str, ...]:
    return ("right", "left") if finding.side == "bilateral" else (finding.side,)


def _draw_effusion(scene: Scene, index: int, finding: Finding, local: np.random.Generator) -> None:
    anatomy, canvas, geometry = scene.anatomy, scene.canvas, finding.geometry
    parts = []
    for side_name in _sides(finding):
        side = side_index(side_name)
        medial, lateral = anatomy.medial_u[side], anatomy.lateral_u[side]
        across = np.clip((canvas.u_side[side] - medial) / (lateral - medial), 0, 1)
        surface = costophrenic_y(anatomy, side) - geometry["height"][side_name] - geometry["meniscus"] * across**3
        if geometry["height"][side_name] > 0.15:  # large effusions reach higher medially too
            surface = surface - 0.03 * across
        level = np.clip((canvas.y - surface) * (1 / 0.05), 0, 1) * (canvas.u_side[side] > 0)
        fluid = level * scene.lungs[side]
        scene.fill = np.maximum(scene.fill, fluid * 0.97)
        # Fluid is water density like the liver below: the hemidiaphragm disappears into it.
        scene.direct += 0.1 * fluid * level
        parts.append(scene.keep_box((index, side_name), box_from(fluid > 0.3)))
    scene.keep_box((index, "all"), box_union(*parts))


def _draw_pneumothorax(scene: Scene, index: int, finding: Finding, local: np.random.Generator) -> None:
    side, geometry = side_index(finding.side), finding.geometry
    inner, pleural_line = scene.canvas.collapsed_lung(side, geometry["gap"], apical=finding.level == "apical")
    region = np.clip(scene.lungs[side] - inner, 0, 1)
    scene.lucent = np.maximum(scene.lucent, region)
    scene.fill = np.maximum(scene.fill, inner * min(0.3, 1.5 * geometry["gap"]))  # the collapsed lung is denser
    scene.direct += 0.14 * pleural_line
    scene.boxes[(index, "all")] = box_from(region > 0.5)


def _draw_airspace(scene: Scene, index: int, finding: Finding, local: np.random.Generator) -> None:
    """Consolidation or opacity: overlapping soft lobules with a ragged edge (airspace disease is patchy)."""
    canvas, anatomy, geometry, size = scene.canvas, scene.anatomy, finding.geometry, scene.size
    x, y = canvas.x, canvas.y
    rx, ry = geometry["rx"], geometry["ry"]
    patch = np.zeros_like(x)
    for k in range(4):
        ox, oy = (0.0, 0.0) if k == 0 else (local.uniform(-0.5, 0.5) * rx, local.uniform(-0.5, 0.5) * ry)
        scale = 1.0 if k == 0 else local.uniform(0.45, 0.7)
        radial = ((x - geometry["x"] - ox) / (rx * scale)) ** 2 + ((y - geometry["y"] - oy) / (ry * scale)) ** 2
        patch = np.maximum(patch, np.exp(-1.6 * radial))
    rough = smooth_noise(local, size, 12)
    if finding.kind == "consolidation":
        patch = np.clip((patch - 0.3 + 0.18 * rough) * 2.8, 0, 1)
        patch = patch * (0.8 + 0.2 * np.clip(smooth_noise(local, size, 26), -1, 1))
        if finding.lobe and finding.level == "upper" and finding.side == "right":
            fissure = anatomy.hilum_y[0] + 0.01  # minor fissure: a sharp lower border
            patch = patch * ramp(fissure - y, canvas.edge)
        if finding.options.get("bronchograms"):  # thin branching lucencies: aerated bronchi in the airspace
            bronchi = np.exp(-((smooth_noise(local, size, 6) * (1 / 0.08)) ** 2))
            patch = patch * (1 - 0.45 * bronchi * (patch > 0.8))
    else:
        patch = np.clip((patch - 0.2 + 0.15 * rough) * 1.6, 0, 1)
    patch = patch * scene.lung
    scene.fill = np.maximum(scene.fill, patch * geometry["density"])
    scene.boxes[(index, "all")] = box_from(patch > 0.35)


def _draw_atelectasis(scene: Scene, index: int, finding: Finding, local: np.random.Generator) -> None:
    """Plate-like bands, or a retrocardiac wedge behind the heart."""
    canvas, anatomy, geometry, size = scene.canvas, scene.anatomy, finding.geometry, scene.size
    x, y = canvas.x, canvas.y
    parts = []
    for band, side_name in zip(geometry["bands"], _sides(finding), strict=True):
        side = side_index(side_name)
        if finding.level == "retrocardiac":
            radial = np.sqrt(((x - (0.5 + 0.09)) / 0.07) ** 2 + ((y - (anatomy.dome_y[1] - 0.05)) / 0.05) ** 2)
            plate = np.clip((1 - radial + 0.2 * smooth_noise(local, size, 8)) / 0.3, 0, 1)
            plate = plate * scene.lungs[side]
            scene.direct += 0.1 * plate
        else:
            c, s = math.cos(band["tilt"]), math.sin(band["tilt"])
            bx, by = x - band["x"], y - band["y"]
            along = (c * bx + s * by) / band["length"]
            across = (-s * bx + c * by) / band["thickness"]
            plate = np.clip(1 - along * along, 0, 1) * np.clip(1.6 - np.abs(across), 0, 1)
            plate = np.minimum(plate * 1.5, 1) * scene.lungs[side]
        scene.fill = np.maximum(scene.fill, plate * geometry["density"])
        scene.direct += 0.04 * plate
        parts.append(scene.keep_box((index, side_name), box_from(plate > 0.3)))
    scene.keep_box((index, "all"), box_union(*parts))


def _draw_edema(scene: Scene, index: int, finding: Finding, local: np.random.Generator) -> None:
    """Perihilar haze, engorged vessels and, optionally, Kerley B lines at the lateral bases."""
    canvas, anatomy, geometry, size = scene.canvas, scene.anatomy, finding.geometry, scene.size
    x, y, lungs = canvas.x, canvas.y, scene.lungs
    strength, spread = geometry["strength"], geometry["spread"]
    haze = np.zeros_like(x)
    for side in (0, 1):
        cx = to_x(side, 0.1)
        d2 = ((x - cx) * (1 / (spread * 1.3))) ** 2 + ((y - anatomy.hilum_y[side]) * (1 / (spread * 1.6))) ** 2
        haze += np.exp(-d2) * lungs[side]
    haze = haze * (0.8 + 0.2 * smooth_noise(local, size, 14))
    scene.fill = np.maximum(scene.fill, np.clip(haze, 0, 1) * strength)
    scene.vessel_gain = 1.0 + 2.5 * strength
    if geometry["kerley"]:  # short horizontal septal lines at the lateral lung bases
        for side in (0, 1):
            near_wall = np.clip(1 - (anatomy.lateral_u[side] - canvas.u_side[side]) * (1 / 0.035), 0, 1) * (
                canvas.u_side[side] > 0
            )
            period = 0.014
            phase = (y * (1 / period)) % 1.0
            lines = np.clip(1 - np.abs(phase - 0.5) * (period * size * anatomy.scale / 0.9), 0, 1)
            low = np.clip((y - (anatomy.dome_y[side] - 0.14)) * (1 / 0.03), 0, 1)
            scene.direct += 0.05 * strength * lines * near_wall * low * lungs[side]
    scene.boxes[(index, "all")] = box_from(haze * scene.lung > 0.35)
    for side in (0, 1):
        scene.keep_box((index, SIDES[side]), box_from((haze * lungs[side]) > 0.35))


def _draw_round_lesion(scene: Scene, index: int, finding: Finding, local: np.random.Generator) -> None:
    """A nodule or mass: a dense sphere, lobulated when its geometry says so."""
    canvas, anatomy, geometry = scene.canvas, scene.anatomy, finding.geometry
    x, y = canvas.x, canvas.y
    radius = geometry["r"]
    radial = np.sqrt((x - geometry["x"]) ** 2 + (y - geometry["y"]) ** 2) * (1 / radius)
    if geometry["lobulation"] > 0:
        angle = np.arctan2(y - geometry["y"], x - geometry["x"])
        phases = local.uniform(0, 2 * np.pi, 3)
        bumps = sum(np.cos(k * angle + phases[i]) * w for i, (k, w) in enumerate(((2, 0.6), (3, 0.5), (5, 0.3))))
        radial = radial * (1 - geometry["lobulation"] * bumps)
    sphere = np.sqrt(np.clip(1 - radial * radial, 0, 1))
    solid = ramp(1 - radial, 2.5 / (radius * scene.size * anatomy.scale))
    scene.fill = np.maximum(scene.fill, solid * 0.92)
    scene.direct += (0.06 + 0.06 * sphere) * solid
    scene.boxes[(index, "all")] = box_from(solid > 0.5)


_FINDINGS = {
    "effusion": _draw_effusion,
    "pneumothorax": _draw_pneumothorax,
    "consolidation": _draw_airspace,
    "opacity": _draw_airspace,
    "atelectasis": _draw_atelectasis,
    "edema": _draw_edema,
    "nodule": _draw_round_lesion,
    "mass": _draw_round_lesion,
}  # cardiomegaly is drawn with the heart; devices after the bones


# --- air and bones ------------------------------------------------------------------------------------------------
def _lung_air(scene: Scene, texture: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Vessels, lung texture, then air: the lucency that remains after fluid, tissue and collapse.

    Returns the attenuation so far and the ribs' density factors (drawn here, between the vessels and the texture).
    """
    canvas, anatomy, y = scene.canvas, scene.anatomy, scene.canvas.y
    vessels = vessel_tree(canvas, texture) * scene.vessel_gain
    rib_gain = texture.uniform(0.75, 1.15, 12)
    texture_field = smooth_noise(texture, scene.size, 28)
    hila = sum(
        np.exp(-(((canvas.u_side[side] - 0.1) ** 2 + (y - anatomy.hilum_y[side]) ** 2) * (1 / (2 * 0.028**2))))
        for side in (0, 1)
    )
    lung_tissue = 1 - scene.lucent
    air_left = scene.air * (1 - scene.fill)
    attenuation = scene.tissue - anatomy.air_depth * air_left * (1 + 0.4 * scene.lucent)
    attenuation += (0.1 * vessels + 0.015 * texture_field) * air_left * lung_tissue
    attenuation += 0.08 * hila * (1 - 0.5 * scene.heart_mask)
    return attenuation, rib_gain


def _bones(scene: Scene, attenuation: np.ndarray, rib_gain: np.ndarray) -> None:
    """Spine, trachea and main bronchi, posterior and anterior ribs, clavicles (added to `attenuation` in place)."""
    canvas, anatomy = scene.canvas, scene.anatomy
    y, u, edge, body = canvas.y, canvas.u, canvas.edge, scene.body
    spine_half = 0.028 + 0.014 * y
    vertebra = np.cos((y - anatomy.rib_start[0]) * (2 * np.pi / 0.047))
    attenuation += 0.055 * ramp(spine_half - u, edge * 2) * (0.75 + 0.22 * (vertebra > -0.55)) * body
    attenuation -= 0.1 * ramp(0.017 - u, edge) * ramp(anatomy.carina_y - y, edge * 3) * (y > -0.1)  # trachea
    for side, slope in ((0, 0.55), (1, 0.9)):  # main bronchi: the left one is longer and more horizontal
        drop = y - anatomy.carina_y
        centre = drop * slope
        bronchus = ramp(0.011 - np.abs(canvas.u_side[side] - centre), edge) * (drop > 0) * (drop < 0.06)
        attenuation -= 0.07 * bronchus
    ribs = np.zeros_like(canvas.x)
    for side in (0, 1):
        posterior, anterior = _ribs(canvas, anatomy, side, rib_gain)
        ribs += posterior
        ribs += anterior
        attenuation += 0.16 * _clavicle(canvas, anatomy, side)
    # Ribs show best against air; over the heart, mediastinum and abdomen they are faint.
    rib_visibility = (0.35 + 0.65 * ramp(scene.diaphragm + 0.02 - y, 0.05)) * (
        1 - 0.6 * np.maximum(scene.heart_mask, scene.mediastinum)
    )
    attenuation += 0.065 * ribs * body * rib_visibility


def _ribs(canvas: Canvas, anatomy: Anatomy, side: int, rib_gain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One side's posterior ribs (curved bands of varying density) and its fainter anterior ribs."""
    y, us = canvas.y, canvas.u_side[side]
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
    posterior = band * valid * ramp(lateral_end - us, 0.02) * np.clip((us - 0.03) * 25, 0, 1)
    anterior = (y - start - 0.1 - 0.42 * (0.38 - us)) / (spacing * 1.15)
    frac = anterior - np.floor(anterior)
    anterior_band = np.clip((1 - np.abs(frac - 0.2) * (2 / 0.4)) * 4, 0, 1)
    valid = (anterior > 0) & (anterior < 6) & (us > 0.12) & (us < lateral_end)
    return posterior, 0.35 * anterior_band * valid * np.clip((us - 0.12) * 20, 0, 1)


def _clavicle(canvas: Canvas, anatomy: Anatomy, side: int) -> np.ndarray:
    us, y = canvas.u_side[side], canvas.y
    q = (us - 0.03) * (1 / 0.28)
    clavicle_centre = anatomy.clavicle_y[0] + (anatomy.clavicle_y[1] - anatomy.clavicle_y[0]) * q
    clavicle_centre = clavicle_centre + 0.012 * np.sin(2 * np.pi * q)
    half = 0.014 * (1.25 - 0.35 * np.clip(q, 0, 1))
    rc = np.abs(y - clavicle_centre) / half
    return np.clip((1 - rc) * 5, 0, 1) * (0.75 + 0.25 * rc * rc) * ramp(q, 0.05) * ramp(1 - q, 0.05)


# --- devices ------------------------------------------------------------------------------------------------------
def _devices(scene: Scene, findings: tuple[Finding, ...]) -> np.ndarray:
    """Thin bright lines and a dense generator, drawn in pixel space."""
    layer = np.zeros_like(scene.canvas.x)
    for index, finding in enumerate(findings):
        if finding.kind == "et_tube":
            _draw_et_tube(scene, layer, index, finding)
        elif finding.kind in ("central_line", "picc"):
            _draw_venous_line(scene, layer, index, finding)
        elif finding.kind == "pacemaker":
            _draw_pacemaker(scene, layer, index, finding)
    return layer


def _draw_et_tube(scene: Scene, layer: np.ndarray, index: int, finding: Finding) -> None:
    geometry, pixels_per_unit = finding.geometry, scene.size * scene.anatomy.scale
    control = [(geometry["x"] + 0.01, -0.1), (geometry["x"], 0.1), (geometry["x"], geometry["tip_y"])]
    points = scene.canvas.to_pixels(curve(control, 20))
    scene.keep_box((index, "all"), draw_polyline(layer, points, max(0.008 * pixels_per_unit, 1.2), 0.35, hollow=True))


def _draw_venous_line(scene: Scene, layer: np.ndarray, index: int, finding: Finding) -> None:
    """A central line (internal jugular approach, down the neck) or a PICC (along the arm and subclavian vein)."""
    geometry, pixels_per_unit = finding.geometry, scene.size * scene.anatomy.scale
    tip_y = geometry["tip_y"]
    sign = -1 if finding.side == "right" else 1
    svc_x = 0.5 - 0.035
    if finding.kind == "central_line":
        control = [
            (0.5 + sign * 0.09, -0.05),
            (0.5 + sign * 0.07, 0.1),
            (0.5 + sign * 0.04 + (0.0 if sign < 0 else -0.02), 0.2),
            (svc_x + geometry["wobble"], 0.27),
            (svc_x, tip_y),
        ]
    else:
        control = [
            (0.5 + sign * 0.55, 0.27),
            (0.5 + sign * 0.42, 0.24),
            (0.5 + sign * 0.25, 0.21),
            (0.5 + sign * 0.08, 0.23),
            (svc_x, 0.29),
            (svc_x, tip_y),
        ]
    points = scene.canvas.to_pixels(curve(control, 50))
    scene.keep_box((index, "all"), draw_polyline(layer, points, max(0.0035 * pixels_per_unit, 0.7), 0.4))


def _draw_pacemaker(scene: Scene, layer: np.ndarray, index: int, finding: Finding) -> None:
    """The generator on the chest wall and its leads to the right atrium and/or ventricle."""
    canvas, geometry, heart = scene.canvas, finding.geometry, scene.heart
    x, y, pixels_per_unit = canvas.x, canvas.y, scene.size * scene.anatomy.scale
    gx, gy = geometry["x"], geometry["y"]
    c, s = math.cos(geometry["tilt"]), math.sin(geometry["tilt"])
    along = (c * (x - gx) + s * (y - gy)) / geometry["w"]
    across = (-s * (x - gx) + c * (y - gy)) / geometry["h"]
    generator = ramp(1 - (along**4 + across**4), 0.15)
    layer += 1.2 * generator * (0.85 + 0.15 * (np.abs(along) < 0.5))
    generator_box = box_from(generator > 0.5)
    scene.boxes[(index, "generator")] = generator_box
    lead_boxes = [generator_box]
    for lead in finding.options["leads"]:
        if lead == "right_atrium":
            tip = (0.5 - 0.045, heart["y"] - 0.03)
        else:
            tip = (heart["x"] + heart["a"] * 0.45, heart["y"] + heart["b"] * 0.55)
        control = [
            (gx - geometry["w"] * 0.6, gy),
            (0.5 + 0.12, gy + 0.01),
            (0.5 + 0.02, 0.25),
            (0.5 - 0.03, 0.36),
            (0.5 - 0.04, heart["y"] - 0.06),
            tip,
        ]
        points = canvas.to_pixels(curve(control, 60))
        box = scene.keep_box(
            (index, f"lead_{lead}"), draw_polyline(layer, points, max(0.005 * pixels_per_unit, 0.9), 0.45)
        )
        if box is not None:
            lead_boxes.append(box)
    scene.boxes[(index, "all")] = box_union(*lead_boxes)


# --- the film -----------------------------------------------------------------------------------------------------
def _film(attenuation: np.ndarray, anatomy: Anatomy, noise_seed: int, size: int) -> np.ndarray:
    """Attenuation -> density curve, window, gamma, a little blur, quantum and film noise -> uint8 pixels."""
    density = 1 - np.exp(-anatomy.exposure_gain * attenuation)
    low, high = anatomy.window
    image = np.clip((density - low) * (1 / (high - low)), 0, 1) ** anatomy.gamma
    image = blur(image, passes=max(1, round(size / 256)))
    noise = np.random.default_rng(noise_seed)
    image = image + anatomy.noise * noise.standard_normal(image.shape, dtype=np.float32) * (0.6 + 0.6 * image)
    image = image + 0.012 * smooth_noise(noise, size, 40)
    return np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)
