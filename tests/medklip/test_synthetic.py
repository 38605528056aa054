"""The synthetic radiograph generator: files, determinism, truth conventions, coverage and visible findings."""

from __future__ import annotations

import csv
import re
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medklip.data import synthetic
from medklip.vocabulary import ENTITIES, POSITIONS

BATCH = 300
BATCH_SIZE_PX = 128  # reports and truth do not depend on the image size; small images keep the batch fast
NORMAL_WORDS = {"normal", "clear", "sharp", "sharply", "unremarkable", "intact", "stable", "free"}
DEVICE_ENTITIES = {"tube", "line", "catheter", "picc", "pacemaker", "lead"}
# Words a report uses for each entity the generator states (a row without one of them was never said).
SURFACE = {
    "effusion": ("effusion", "sharp"),  # "Costophrenic angles are sharp." rules it out
    "blunt": ("blunt",),
    "pneumothorax": ("pneumothorax",),
    "consolidation": ("consolidation", "air bronchograms", "clear"),
    "opacity": ("opacit", "opacification", "clear"),
    "atelectasis": ("atelectasis",),
    "edema": ("edema",),
    "congestion": ("congestion", "vasculature is normal"),
    "marking": ("markings",),
    "pneumonia": ("pneumonia", "infection"),
    "cardiomegaly": ("cardiomegaly", "enlarged", "enlargement", "normal in size", "heart size"),
    "nodule": ("nodule",),
    "mass": ("mass",),
    "tube": ("tube",),
    "line": ("line",),
    "catheter": ("catheter",),
    "picc": ("picc", "peripherally inserted"),
    "pacemaker": ("pacemaker", "pacer"),
    "lead": ("lead",),
    "device": ("device",),
    "normal": ("normal",),
    "clear": ("clear",),
    "sharp": ("sharp",),
    "unremarkable": ("unremarkable",),
    "intact": ("intact",),
    "process": ("process",),
    "abnormality": ("abnormality",),
    "disease": ("disease",),
    "fracture": ("intact",),  # implied by "Osseous structures are intact."
}


@pytest.fixture(scope="module")
def batch() -> list[synthetic.Case]:
    return [synthetic.make_case(seed=0, index=index, size=BATCH_SIZE_PX) for index in range(BATCH)]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def test_generate_is_byte_identical_for_a_seed_whatever_the_workers(tmp_path: Path):
    one = synthetic.generate(tmp_path / "one", n=6, seed=3, size=96, workers=1)
    two = synthetic.generate(tmp_path / "two", n=6, seed=3, size=96, workers=2)
    other = synthetic.generate(tmp_path / "other", n=6, seed=4, size=96, workers=1)
    files_one, files_two, files_other = _files(one.out_dir), _files(two.out_dir), _files(other.out_dir)
    assert len(files_one) == 6 + 2
    assert files_one == files_two
    assert files_one.keys() == files_other.keys()
    assert files_one["reports.csv"] != files_other["reports.csv"]
    assert all(files_one[name] != files_other[name] for name in files_one if name.endswith(".png"))


def test_generate_writes_the_documented_layout(tmp_path: Path):
    summary = synthetic.generate(tmp_path, n=12, seed=1, size=96, workers=1)
    columns, reports = _read_csv(tmp_path / "reports.csv")
    assert columns == ["id", "image", "findings", "impression"]
    assert [row["id"] for row in reports] == [f"synth-{k:06d}" for k in range(1, 13)]
    for row in reports:
        assert row["image"] == f"images/{row['id']}.png"
        with Image.open(tmp_path / row["image"]) as image:
            assert image.mode == "L" and image.size == (96, 96)
        assert row["findings"].strip() or row["impression"].strip()
    columns, truth = _read_csv(tmp_path / "truth.csv")
    assert columns == ["id", "entity", "position", "existence", "x0", "y0", "x1", "y1"]
    assert {row["id"] for row in truth} <= {row["id"] for row in reports}
    present = Counter()
    for case_id in {row["id"] for row in truth}:
        present.update({row["entity"] for row in truth if row["id"] == case_id and row["existence"] == "1"})
    assert summary.n_images == 12
    assert summary.entity_counts == {entity: present[entity] for entity in ENTITIES if present[entity]}
    normal_ids = {f"synth-{k + 1:06d}" for k in range(12) if synthetic.make_case(1, k, 64).normal}
    assert summary.n_normal == len(normal_ids)


def test_make_case_is_deterministic_and_seed_dependent():
    first, again, other = synthetic.make_case(5, 17, 96), synthetic.make_case(5, 17, 96), synthetic.make_case(6, 17, 96)
    assert np.array_equal(first.image, again.image)
    assert (first.findings, first.impression, first.truth) == (again.findings, again.impression, again.truth)
    assert not np.array_equal(first.image, other.image)
    assert first.image.dtype == np.uint8 and first.image.shape == (96, 96)


def test_truth_uses_the_vocabularies_and_one_row_per_entity_position(batch):
    for case in batch:
        keys = [(row.entity, row.position) for row in case.truth]
        assert len(keys) == len(set(keys)), case.id
        for row in case.truth:
            assert row.entity in ENTITIES and row.entity not in ("tail_abnorm_obs", "excluded_obs"), row
            assert row.position in POSITIONS, row
            assert row.existence in (1, 0, -1), row


def test_every_report_has_text_and_sections_are_sometimes_empty(batch):
    assert all(case.findings.strip() or case.impression.strip() for case in batch)
    assert any(not case.findings for case in batch)
    assert any(not case.impression for case in batch)


def test_boxes_lie_in_the_image_and_only_on_rendered_findings(batch):
    for case in batch:
        boxed_findings = set()
        for row in case.truth:
            if row.box is None:
                # absent rows and normal statements have no box; every stated abnormality is a rendered one
                assert row.existence == 0 or row.entity in NORMAL_WORDS, (case.id, row)
                continue
            assert row.existence != 0 and row.entity not in NORMAL_WORDS, (case.id, row)
            x0, y0, x1, y1 = row.box
            assert 0 <= x0 < x1 <= BATCH_SIZE_PX and 0 <= y0 < y1 <= BATCH_SIZE_PX, (case.id, row)
            boxed_findings.add(row.box)
        # a case with something rendered states it with a box; a case with nothing rendered has no box at all
        assert bool(boxed_findings) == (not case.normal), case.id


def test_every_truth_row_is_said_in_the_report(batch):
    for case in batch:
        text = f"{case.findings} {case.impression}".lower()
        for row in case.truth:
            assert any(word in text for word in SURFACE[row.entity]), (case.id, row, text)


def test_every_required_finding_and_normal_cases_occur(batch):
    present = defaultdict(set)
    for case in batch:
        for row in case.truth:
            if row.existence == 1:
                present[row.entity].add(case.id)
    for entity in ("cardiomegaly", "effusion", "pneumothorax", "consolidation", "opacity", "atelectasis", "edema"):
        assert len(present[entity]) >= 5, entity
    assert len(present["nodule"]) >= 3 and len(present["mass"]) >= 3
    assert set().union(*(present[entity] for entity in DEVICE_ENTITIES))
    sides = {"left": set(), "right": set()}
    for case in batch:
        for row in case.truth:
            if row.entity == "effusion" and row.existence == 1 and row.position.split("_")[0] in sides:
                sides[row.position.split("_")[0]].add(case.id)
    assert sides["left"] - sides["right"] and sides["right"] - sides["left"] and sides["left"] & sides["right"]
    normal = sum(case.normal for case in batch)
    assert 0.2 * BATCH <= normal <= 0.4 * BATCH
    assert all(not any(row.box for row in case.truth) for case in batch if case.normal)


def _sentences(text: str) -> list[str]:
    return [sentence for sentence in re.split(r"(?<=\.)\s+(?=[A-Z0-9])", text) if sentence]


def test_reports_vary_in_wording_and_use_negation_and_uncertainty(batch):
    effusion_phrasings = set()
    for case in batch:
        if any(row.entity == "effusion" and row.existence == 1 for row in case.truth):
            for sentence in _sentences(case.findings):
                if "effusion" in sentence.lower() and not sentence.lower().startswith(("no ", "there is no")):
                    template = re.sub(r"\b(small|moderate|large|trace|left|right)\b", "_", sentence.lower())
                    effusion_phrasings.add(template)
    assert len(effusion_phrasings) >= 5, effusion_phrasings
    text = " ".join(f"{case.findings} {case.impression}" for case in batch)
    for negation in ("No pneumothorax", "There is no", "No evidence of", "is not seen"):
        assert negation in text, negation
    for cue in ("cannot be excluded", "Possible", "may represent", "concerning for", "suggestive of"):
        assert cue in text, cue
    assert any(row.existence == -1 for case in batch for row in case.truth)
    assert sum(row.existence == 0 for case in batch for row in case.truth) > BATCH
    for words in ("left lower lobe", "right upper lobe", "bibasilar", "apex", "costophrenic angle", "lingula"):
        assert words in text.lower(), words


def _find(kind: str, predicate=lambda finding: True) -> tuple[synthetic.CaseSpec, int]:
    """The first spec (seed 0) with a present finding of `kind` that satisfies `predicate`."""
    for index in range(500):
        spec = synthetic.sample_spec(np.random.default_rng([0, index]))
        for position, finding in enumerate(spec.findings):
            if finding.kind == kind and finding.certainty == 1 and predicate(finding):
                return spec, position
    raise AssertionError(f"no {kind} in 500 cases")


def _with_and_without(kind: str, predicate=lambda finding: True, size: int = 128):
    spec, position = _find(kind, predicate)
    image, boxes = synthetic.render(spec, size)
    without = replace(spec, findings=tuple(f for k, f in enumerate(spec.findings) if k != position))
    plain, _ = synthetic.render(without, size)
    x0, y0, x1, y1 = boxes[(position, "all")]
    region = (slice(y0, y1), slice(x0, x1))
    return image[region].astype(float).mean(), plain[region].astype(float).mean(), spec


@pytest.mark.parametrize(
    ("kind", "predicate", "min_difference"),
    [
        ("effusion", lambda f: f.side in ("left", "right") and f.severity != "small", 18),
        ("consolidation", lambda f: True, 10),
        ("nodule", lambda f: True, 15),
        ("mass", lambda f: True, 25),
        ("atelectasis", lambda f: f.level == "lower", 10),
        ("edema", lambda f: True, 8),
        ("opacity", lambda f: True, 8),
        ("cardiomegaly", lambda f: True, 8),
    ],
)
def test_rendered_findings_brighten_their_box(kind, predicate, min_difference):
    with_finding, without_finding, _ = _with_and_without(kind, predicate)
    assert with_finding - without_finding >= min_difference


def test_pneumothorax_darkens_its_box_and_devices_are_bright():
    with_finding, without_finding, _ = _with_and_without("pneumothorax")
    assert without_finding - with_finding >= 4
    spec, position = _find("pacemaker")
    image, boxes = synthetic.render(spec, 128)
    x0, y0, x1, y1 = boxes[(position, "generator")]
    assert image[y0:y1, x0:x1].max() >= 240


def test_effusion_is_on_the_stated_side():
    spec, position = _find("effusion", lambda f: f.side == "left" and f.severity != "small")
    _, boxes = synthetic.render(spec, 128)
    x0, _, x1, _ = boxes[(position, "left")]
    assert x0 > 64  # the patient's left is the image right


def test_cardiomegaly_widens_the_heart():
    spec, position = _find("cardiomegaly")
    assert synthetic.cardiothoracic_ratio(spec) > 0.5
    without = replace(spec, findings=tuple(f for k, f in enumerate(spec.findings) if k != position))
    assert synthetic.cardiothoracic_ratio(without) < 0.5
    for index in range(20):
        normal = synthetic.sample_spec(np.random.default_rng([0, index]))
        if not any(f.kind == "cardiomegaly" for f in normal.findings):
            assert synthetic.cardiothoracic_ratio(normal) < 0.5
