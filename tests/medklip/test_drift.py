"""Label drift between two training sets: prevalence per entity, the two-proportion test, the table and its plot."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from medklip.evaluation.drift import describe_shift, label_prevalence, prevalence_shift, shift_csv, two_proportion_test
from medklip.vocabulary import ENTITIES

EFFUSION, EDEMA, PNEUMOTHORAX = (ENTITIES.index(name) for name in ("effusion", "edema", "pneumothorax"))


def labels_with(n: int, prevalence: dict[int, float], seed: int) -> np.ndarray:
    """(n, 75) labels: for each given entity exactly round(p * n) positives, the rest negatives; others unmentioned."""
    labels = np.full((n, len(ENTITIES)), -1, dtype=np.int8)
    rng = np.random.default_rng(seed)
    for entity, share in prevalence.items():
        column = np.zeros(n, dtype=np.int8)
        column[: round(share * n)] = 1
        labels[:, entity] = rng.permutation(column)
    return labels


def test_prevalence_counts_positives_over_all_images():
    labels = labels_with(200, {EFFUSION: 0.25}, seed=0)
    labels[:10, EDEMA] = 1  # 10 positives, 190 unmentioned
    prevalence = label_prevalence(labels)
    assert prevalence["n_images"] == 200
    assert prevalence["entities"]["effusion"] == {"n_pos": 50, "n_neg": 150, "n_unlabelled": 0, "prevalence": 0.25}
    assert prevalence["entities"]["edema"] == {"n_pos": 10, "n_neg": 0, "n_unlabelled": 190, "prevalence": 0.05}
    assert label_prevalence(np.empty((0, 75)))["entities"]["effusion"]["prevalence"] is None


def test_two_proportion_test_matches_the_textbook_normal_approximation():
    from scipy.stats import norm

    z, p = two_proportion_test(30, 300, 90, 300)  # 10% -> 30%
    pooled = 120 / 600
    expected_z = 0.2 / math.sqrt(pooled * (1 - pooled) * (2 / 300))
    assert z == pytest.approx(expected_z) and p == pytest.approx(2 * norm.sf(expected_z))
    assert two_proportion_test(30, 300, 30, 300) == (0.0, 1.0)
    assert two_proportion_test(0, 100, 0, 80) == (None, None)  # nothing varies
    assert two_proportion_test(3, 0, 4, 10) == (None, None)


def test_a_known_shift_is_found_and_only_it():
    # The champion's data: effusion 10%, edema 20%, pneumothorax 5%. This week's: effusion 30% (a real move),
    # edema 22% (within the threshold), pneumothorax 5% on 40 images (no data to tell).
    before = label_prevalence(labels_with(1000, {EFFUSION: 0.10, EDEMA: 0.20, PNEUMOTHORAX: 0.05}, seed=1))
    after = label_prevalence(labels_with(800, {EFFUSION: 0.30, EDEMA: 0.22, PNEUMOTHORAX: 0.05}, seed=2))
    shift = prevalence_shift(before, after, threshold=0.05, alpha=0.01)
    assert shift["moved"] == ["effusion"]
    top = shift["rows"][0]
    assert top["entity"] == "effusion" and top["difference"] == pytest.approx(0.20)
    assert top["reference"] == pytest.approx(0.10) and top["current"] == pytest.approx(0.30)
    assert top["z"] > 10 and top["p_value"] < 1e-20
    edema = next(row for row in shift["rows"] if row["entity"] == "edema")
    assert edema["difference"] == pytest.approx(0.02) and not edema["moved"]

    small = label_prevalence(labels_with(40, {PNEUMOTHORAX: 0.15}, seed=3))  # +10 points, but 6 of 40 images
    tiny = prevalence_shift(label_prevalence(labels_with(40, {PNEUMOTHORAX: 0.05}, seed=4)), small)
    row = next(row for row in tiny["rows"] if row["entity"] == "pneumothorax")
    assert row["difference"] == pytest.approx(0.10) and row["p_value"] > 0.01 and tiny["moved"] == []

    line = describe_shift(shift)
    assert line.startswith("1 entity's prevalence moved by more than 0.05 (two-proportion test, p < 0.01) between")
    assert "effusion 0.100 -> 0.300" in line
    assert "no entity" in describe_shift(tiny)
    assert shift_csv(shift).splitlines()[1].startswith("effusion,0.1,0.3,0.2,")


def test_the_drift_plot_is_an_image(tmp_path):
    from medklip.evaluation.plots import plot_prevalence_shift

    before = label_prevalence(labels_with(500, {EFFUSION: 0.1, EDEMA: 0.3}, seed=5))
    after = label_prevalence(labels_with(500, {EFFUSION: 0.3, EDEMA: 0.3}, seed=6))
    path = plot_prevalence_shift(prevalence_shift(before, after), tmp_path / "drift.png")
    with Image.open(path) as image:
        image.verify()
    assert path.stat().st_size > 5000
