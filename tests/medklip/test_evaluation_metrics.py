"""Evaluation metrics: AUC and its vectorised bootstrap against sklearn, thresholds, calibration, the payload."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from medklip.evaluation.metrics import (
    _draw_counts,
    _layout,
    _resampled_aucs,
    bootstrap_auc,
    bootstrap_mean_auc,
    calibration,
    choose_thresholds,
    evaluate_predictions,
    threshold_metrics,
)
from medklip.vocabulary import ENTITIES


def _synthetic(n: int, n_entities: int, seed: int, prevalence: float = 0.3, unlabelled: float = 0.2):
    """(scores, labels): positives score higher on average; a fraction of labels are -1."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, n_entities)) < prevalence).astype(np.int8)
    scores = 1 / (1 + np.exp(-(rng.normal(size=(n, n_entities)) + 1.2 * labels)))
    labels[rng.random((n, n_entities)) < unlabelled] = -1
    return np.round(scores, 2), labels  # rounding makes ties


def test_auc_on_constructed_predictions_with_known_values():
    labels = np.array([[0, 0, 0, 0, 1], [0, 0, 0, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    scores = np.array(
        [
            # perfect, inverted, all tied, hand case 1, hand case 2 (a positive tied with a negative)
            [0.1, 0.9, 0.5, 0.1, 0.5],
            [0.2, 0.8, 0.5, 0.4, 0.5],
            [0.8, 0.2, 0.5, 0.35, 0.2],
            [0.9, 0.1, 0.5, 0.8, 0.9],
        ]
    )
    auc, low, high = bootstrap_auc(scores, labels, n_resamples=0)
    # hand case 1 (sklearn's docstring example): positives 0.35, 0.8 beat 1 and 2 of the negatives 0.1, 0.4 -> 3/4.
    # hand case 2: positives {0.5, 0.9} vs negatives {0.5, 0.2}: 0.5 (tie) + 1 + 1 + 1 = 3.5 of 4 pairs.
    np.testing.assert_allclose(auc, [1.0, 0.0, 0.5, 0.75, 0.875])
    np.testing.assert_allclose(auc, [roc_auc_score(labels[:, e], scores[:, e]) for e in range(5)])
    assert np.isnan(low).all() and np.isnan(high).all()  # no resamples asked: no interval, not a made-up one


def test_vectorised_bootstrap_equals_sklearn_on_the_same_explicit_resamples():
    rng = np.random.default_rng(3)
    scores = np.round(rng.random(40), 1)  # many ties, across and within classes
    labels = rng.choice([-1, 0, 1], size=40, p=[0.2, 0.5, 0.3]).astype(np.int8)
    layout = _layout(scores, labels)
    assert layout.ties
    n_resamples = 12

    # The counts the bootstrap uses are exactly the per-resample tallies of explicit draws with replacement ...
    draws = np.random.default_rng(7).integers(0, layout.n, size=(n_resamples, layout.n))
    counts = _draw_counts(np.random.default_rng(7), layout.n, n_resamples)
    np.testing.assert_array_equal(counts, [np.bincount(row, minlength=layout.n) for row in draws])
    assert (counts.sum(axis=1) == layout.n).all()

    # ... and the count-weighted AUC equals sklearn on the resampled arrays themselves.
    fast = _resampled_aucs(layout, counts)
    for resample, row in enumerate(draws):
        images = layout.rows[row]  # cell -> image
        expected = roc_auc_score(labels[images], scores[images])
        assert fast[resample] == pytest.approx(expected, abs=1e-12)
    assert len(set(np.round(fast, 9))) > 5  # the resamples really differ


def test_a_resample_without_both_classes_is_nan_and_skipped():
    scores = np.array([0.2, 0.4, 0.9])
    labels = np.array([0, 0, 1], dtype=np.int8)
    layout = _layout(scores, labels)
    counts = np.array([[3, 0, 0], [0, 0, 3], [1, 1, 1], [0, 2, 1]])  # cells: negatives 0.2, 0.4 then positive 0.9
    aucs = _resampled_aucs(layout, counts)
    assert np.isnan(aucs[0]) and np.isnan(aucs[1])
    assert aucs[2] == 1.0 and aucs[3] == 1.0
    # With 3 images a good share of resamples hold one class; the interval comes from the others only.
    auc, low, high = bootstrap_auc(scores[:, None], labels[:, None], n_resamples=200)
    assert auc[0] == 1.0 and low[0] == 1.0 and high[0] == 1.0


def test_intervals_contain_the_estimate_and_shrink_with_more_data():
    widths = []
    for n in (200, 5000):
        scores, labels = _synthetic(n, 4, seed=n)
        auc, low, high = bootstrap_auc(scores, labels, n_resamples=300, seed=1)
        assert (low <= auc).all() and (auc <= high).all() and (high - low > 0).all()
        widths.append(high - low)
    assert (widths[1] < widths[0] / 2).all()  # ~ 1/sqrt(n): 25x the data, about 1/5 the width


def test_bootstrap_is_reproducible_and_per_entity():
    scores, labels = _synthetic(300, 3, seed=5)
    first = bootstrap_auc(scores, labels, n_resamples=100, seed=2, workers=1)
    again = bootstrap_auc(scores, labels, n_resamples=100, seed=2, workers=3)
    other = bootstrap_auc(scores, labels, n_resamples=100, seed=3)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[1], other[1])
    # An entity's interval does not change when another column does.
    changed = scores.copy()
    changed[:, 2] = 1 - changed[:, 2]
    shifted = bootstrap_auc(changed, labels, n_resamples=100, seed=2)
    np.testing.assert_array_equal(shifted[1][:2], first[1][:2])
    assert shifted[1][2] != first[1][2]


def test_mean_auc_interval_resamples_images_jointly():
    scores, labels = _synthetic(400, 6, seed=8)
    auc, _, _ = bootstrap_auc(scores, labels, n_resamples=0)
    mean, low, high = bootstrap_mean_auc(scores, labels, n_resamples=300, seed=0)
    assert mean == pytest.approx(np.mean(auc))
    assert low < mean < high
    assert high - low < 0.1


def test_thresholds_come_from_validation_only():
    # Validation: the best F1 calls everything >= 0.3 positive (F1 = 1). On test, 0.3 gives TP 2, FP 2 (F1 = 2/3,
    # accuracy 3/5), while the threshold a test-tuned evaluation would pick, 0.7, gives F1 = 1.
    grid = np.array([[0.1], [0.3], [0.5], [0.7], [0.9]])
    val_labels = np.array([[0], [1], [1], [1], [1]])
    test_labels = np.array([[0], [0], [0], [1], [1]])
    assert choose_thresholds(grid, val_labels)[0] == 0.3
    assert choose_thresholds(grid, test_labels)[0] == 0.7
    metrics = evaluate_predictions(grid, test_labels, grid, val_labels, entities=["effusion"], n_resamples=50)
    entry = metrics["per_entity"]["effusion"]
    assert entry["threshold"] == 0.3
    assert entry["f1"] == pytest.approx(2 / 3)
    assert entry["accuracy"] == pytest.approx(0.6) == metrics["accuracy"]
    assert entry["precision"] == pytest.approx(0.5) and entry["recall"] == 1.0
    assert metrics["thresholds_from"] == "validation"


def test_chosen_threshold_maximises_validation_f1():
    scores, labels = _synthetic(150, 5, seed=11)
    labels[:, 4] = np.where(labels[:, 4] == 1, 0, labels[:, 4])  # no positive: nothing to choose
    thresholds = choose_thresholds(scores, labels)
    assert np.isnan(thresholds[4])
    for e in range(4):
        known = labels[:, e] >= 0
        truth, values = labels[known, e], scores[known, e]
        best = max(f1_score(truth, values >= t) for t in np.unique(values))
        assert f1_score(truth, values >= thresholds[e]) == pytest.approx(best)
    result = threshold_metrics(scores, labels, thresholds)
    for e in range(4):
        known = labels[:, e] >= 0
        assert result["f1"][e] == pytest.approx(f1_score(labels[known, e], scores[known, e] >= thresholds[e]))
    assert np.isnan(result["f1"][4]) and np.isnan(result["accuracy"][4])
    assert result["n_scored_pairs"] == int((labels[:, :4] >= 0).sum())  # the entity without a threshold is left out


def test_one_class_and_unlabelled_entities_get_none_with_a_reason():
    scores, labels = _synthetic(60, 4, seed=2, unlabelled=0.0)
    labels[:40, 1], labels[40:, 1] = 0, -1  # one class: 40 negatives
    labels[:, 2] = -1  # never labelled
    val_scores, val_labels = _synthetic(60, 4, seed=3, unlabelled=0.0)
    val_labels[:, 3] = np.minimum(val_labels[:, 3], 0)  # no validation positive: no threshold for entity 3
    metrics = evaluate_predictions(scores, labels, val_scores, val_labels, entities=list("abcd"), n_resamples=100)
    a, b, c, d = (metrics["per_entity"][name] for name in "abcd")
    assert a["auc"] is not None and a["reason"] is None
    assert b["auc"] is None and b["auc_ci95"] is None and b["reason"] == "one class in test data (n_pos=0, n_neg=40)"
    assert (b["n_pos"], b["n_neg"]) == (0, 40)
    assert c["auc"] is None and c["reason"] == "no labelled test images" and c["accuracy"] is None
    assert c["brier"] is None and c["ece"] is None
    assert d["threshold"] is None and d["f1"] is None and d["accuracy"] is None
    assert d["auc"] is not None and "no threshold: no positive in validation data" in d["reason"]
    assert metrics["n_entities_with_auc"] == 2
    assert metrics["mean_auc"] == pytest.approx((a["auc"] + d["auc"]) / 2)  # never a stand-in 0.5 for b or c


def test_unlabelled_pairs_are_excluded_from_every_per_entity_number():
    scores, labels = _synthetic(120, 3, seed=4, unlabelled=0.0)
    val_scores, val_labels = _synthetic(80, 3, seed=6, unlabelled=0.0)
    extra = np.random.default_rng(0).random((50, 3))  # wild scores on images nobody labelled
    padded_scores = np.concatenate([scores, extra])
    padded_labels = np.concatenate([labels, np.full((50, 3), -1, dtype=np.int8)])
    plain = evaluate_predictions(scores, labels, val_scores, val_labels, entities=list("abc"), n_resamples=100)
    padded = evaluate_predictions(
        padded_scores, padded_labels, val_scores, val_labels, entities=list("abc"), n_resamples=100
    )
    assert padded["per_entity"] == plain["per_entity"]
    assert padded["accuracy"] == plain["accuracy"] and padded["mean_auc"] == plain["mean_auc"]
    assert padded["n_test"] == plain["n_test"] + 50


def test_calibration():
    # Perfectly calibrated: in each tenth-wide bin, the fraction of positives equals the (single) score there.
    centres = np.arange(10) / 10 + 0.05
    scores = np.repeat(centres, 20)
    labels = np.concatenate([np.arange(20) < round(p * 20) for p in centres]).astype(np.int8)
    overconfident = np.where(labels == 1, 0.93, 0.91)  # one bin: 50% positive vs mean score 0.92 -> ECE 0.42
    brier, ece = calibration(np.column_stack([scores, overconfident]), np.column_stack([labels, labels]))
    assert ece[0] < 1e-9
    assert ece[1] == pytest.approx(0.42)
    # Brier by hand, with an unlabelled pair that must not count: (0.1^2 + 0.2^2 + 0.6^2) / 3.
    brier, ece = calibration(np.array([[0.9], [0.2], [0.6], [0.0]]), np.array([[1], [0], [0], [-1]]))
    assert brier[0] == pytest.approx(0.41 / 3)
    assert ece[0] == pytest.approx((0.1 + 0.2 + 0.6) / 3)  # three images in three different bins
    with pytest.raises(ValueError, match="probabilities"):
        calibration(np.array([[1.5]]), np.array([[1]]))


def test_payload_is_json_without_nan_and_its_mean_is_the_mean_it_shows():
    scores, labels = _synthetic(200, len(ENTITIES), seed=9, prevalence=0.1)
    labels[:, 10] = np.minimum(labels[:, 10], 0)
    labels[:, 11] = -1
    val_scores, val_labels = _synthetic(100, len(ENTITIES), seed=10, prevalence=0.1)
    metrics = evaluate_predictions(scores, labels, val_scores, val_labels, n_resamples=50)
    text = json.dumps(metrics, allow_nan=False)  # raises on NaN or numpy types
    assert "NaN" not in text
    assert list(metrics["per_entity"]) == list(ENTITIES)
    shown = [entry["auc"] for entry in metrics["per_entity"].values() if entry["auc"] is not None]
    assert len(shown) == metrics["n_entities_with_auc"] == len(ENTITIES) - 2
    assert metrics["mean_auc"] == pytest.approx(np.mean(shown))
    assert min(shown) <= metrics["mean_auc"] <= max(shown)
    low, high = metrics["mean_auc_ci95"]
    assert low <= metrics["mean_auc"] <= high
    for entry in metrics["per_entity"].values():
        if entry["auc_ci95"] is not None:
            assert entry["auc_ci95"][0] <= entry["auc"] <= entry["auc_ci95"][1]
        assert (entry["reason"] is None) == all(
            entry[key] is not None for key in ("auc", "auc_ci95", "f1", "threshold")
        )
    assert metrics["n_test"] == 200 and metrics["n_val"] == 100


def test_without_resamples_the_intervals_are_none_and_say_why():
    scores, labels = _synthetic(100, 2, seed=1)
    metrics = evaluate_predictions(scores, labels, scores, labels, entities=["a", "b"], n_resamples=0)
    assert metrics["mean_auc_ci95"] is None
    assert metrics["per_entity"]["a"]["auc_ci95"] is None
    assert metrics["per_entity"]["a"]["reason"] == "no CI: bootstrap disabled (n_resamples=0)"


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="labels must be"):
        bootstrap_auc(np.zeros((3, 1)), np.array([[2], [0], [1]]))
    with pytest.raises(ValueError, match="same"):
        bootstrap_auc(np.zeros((3, 2)), np.zeros((3, 1)))
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_auc(np.array([[np.nan], [0.1]]), np.array([[0], [1]]))
    with pytest.raises(ValueError, match="entities"):
        evaluate_predictions(np.zeros((3, 2)), np.zeros((3, 2)), np.zeros((3, 2)), np.zeros((3, 2)), entities=["a"])


def test_mean_auc_for_validation_averages_scored_entities_only():
    from medklip.evaluation.metrics import mean_auc

    scores = np.random.default_rng(0).random((40, 75))
    labels = np.full((40, 75), -1)
    labels[:20, 3], labels[20:, 3] = 1, 0
    scores[:20, 3] += 1  # perfectly separated
    labels[:, 5] = np.arange(40) % 2
    scores[:, 5] = 1 - labels[:, 5]  # perfectly inverted
    assert mean_auc(scores, labels) == 0.5  # (1.0 + 0.0) / 2; the 73 one-class entities do not count
    assert mean_auc(scores, np.full((40, 75), -1)) is None


def test_paired_difference_is_zero_for_identical_models_and_positive_for_a_clearly_better_one():
    from medklip.evaluation.metrics import bootstrap_mean_auc, paired_mean_auc_difference

    rng = np.random.default_rng(3)
    labels = rng.choice([1, 0, -1], size=(300, 6), p=[0.3, 0.6, 0.1]).astype(np.int8)
    weak = rng.uniform(size=labels.shape) + 0.2 * (labels == 1)
    strong = rng.uniform(size=labels.shape) + 1.0 * (labels == 1)
    same = paired_mean_auc_difference(weak, weak, labels, n_resamples=300)
    assert same["difference"] == 0 and same["ci95"] == [0, 0]
    better = paired_mean_auc_difference(strong, weak, labels, n_resamples=300, seed=1)
    assert better["mean_auc_a"] == pytest.approx(bootstrap_mean_auc(strong, labels, n_resamples=0)[0])
    assert better["mean_auc_b"] == pytest.approx(bootstrap_mean_auc(weak, labels, n_resamples=0)[0])
    assert better["ci95"][0] > 0 and better["difference"] == pytest.approx(better["mean_auc_a"] - better["mean_auc_b"])
    worse = paired_mean_auc_difference(weak, strong, labels, n_resamples=300, seed=1)
    assert worse["ci95"] == pytest.approx([-better["ci95"][1], -better["ci95"][0]])  # same draws, mirrored
    # Pairing removes image difficulty: the paired interval is narrower than the two unpaired ones side by side.
    _, low_a, high_a = bootstrap_mean_auc(strong, labels, n_resamples=300, seed=1)
    assert better["ci95"][1] - better["ci95"][0] < high_a - low_a + 1e-9 or better["ci95"][0] > 0


def test_paired_difference_without_any_entity_with_both_classes_is_undefined():
    from medklip.evaluation.metrics import paired_mean_auc_difference

    labels = np.zeros((10, 3), dtype=np.int8)
    result = paired_mean_auc_difference(np.zeros((10, 3)), np.ones((10, 3)), labels, n_resamples=10)
    assert result["difference"] is None and result["n_entities"] == 0
    with pytest.raises(ValueError):
        paired_mean_auc_difference(np.zeros((10, 3)), np.ones((10, 3)), labels, n_resamples=0)


def test_grouped_resampling_draws_whole_patients_and_widens_intervals_of_correlated_images():
    from medklip.evaluation.metrics import _draw_group_counts, group_index, paired_mean_auc_difference

    groups = np.repeat([f"P{i}" for i in range(40)], 5)  # 40 patients, 5 images each
    index = group_index(groups, len(groups))
    counts = _draw_group_counts(np.random.default_rng(0), index, 50)  # (50, 200)
    for patient in range(40):
        members = counts[:, index == patient]
        assert (members == members[:, :1]).all()  # a patient's images are drawn together, never apart
    assert (counts.sum(axis=1) % 5 == 0).all()

    # Five identical copies of each patient's image: resampling images pretends to 200 independent cases.
    rng = np.random.default_rng(4)
    labels = np.repeat(rng.choice([0, 1], size=(40, 4)), 5, axis=0).astype(np.int8)
    strong = np.repeat(rng.uniform(size=(40, 4)), 5, axis=0) + 0.6 * labels
    weak = np.repeat(rng.uniform(size=(40, 4)), 5, axis=0) + 0.2 * labels
    by_image = paired_mean_auc_difference(strong, weak, labels, n_resamples=400, seed=2)
    by_patient = paired_mean_auc_difference(strong, weak, labels, n_resamples=400, seed=2, groups=groups)
    assert by_image["difference"] == by_patient["difference"]  # the point estimate does not depend on grouping
    assert (by_image["resampled"], by_patient["resampled"], by_patient["n_groups"]) == ("images", "groups", 40)
    width = lambda result: result["ci95"][1] - result["ci95"][0]  # noqa: E731
    assert width(by_patient) > 1.6 * width(by_image)  # about sqrt(5) wider: 40 patients, not 200 cases
    with pytest.raises(ValueError, match="one group per image"):
        paired_mean_auc_difference(strong, weak, labels, n_resamples=10, groups=groups[:-1])


def test_without_groups_the_intervals_are_the_image_bootstrap_as_before():
    from medklip.evaluation.metrics import bootstrap_mean_auc

    rng = np.random.default_rng(9)
    labels = rng.choice([0, 1], size=(120, 3)).astype(np.int8)
    scores = rng.uniform(size=labels.shape) + 0.5 * labels
    singletons = [f"image{i}" for i in range(120)]
    image_level = bootstrap_mean_auc(scores, labels, n_resamples=300, seed=5)
    assert bootstrap_mean_auc(scores, labels, n_resamples=300, seed=5, groups=None) == image_level
    grouped = bootstrap_mean_auc(scores, labels, n_resamples=300, seed=5, groups=singletons)
    assert grouped[0] == image_level[0] and grouped[1] == pytest.approx(image_level[1], abs=0.03)


def test_the_per_entity_intervals_resample_whole_patients_too():
    from medklip.evaluation.metrics import bootstrap_auc, evaluate_predictions

    rng = np.random.default_rng(11)
    for trial in range(3):  # seeded draws of the patient count, copies per patient and entity count
        patients, copies, entities = int(rng.integers(30, 60)), int(rng.integers(3, 7)), int(rng.integers(2, 5))
        groups = np.repeat([f"P{i}" for i in range(patients)], copies)
        labels = np.repeat(rng.choice([0, 1], size=(patients, entities)), copies, axis=0).astype(np.int8)
        labels[rng.uniform(size=labels.shape) < 0.1] = -1  # an unlabelled pair leaves its group for that entity
        scores = np.repeat(rng.uniform(size=(patients, entities)), copies, axis=0) + 0.4 * np.maximum(labels, 0)
        auc_i, low_i, high_i = bootstrap_auc(scores, labels, n_resamples=300, seed=trial)
        auc_g, low_g, high_g = bootstrap_auc(scores, labels, n_resamples=300, seed=trial, groups=groups)
        assert np.array_equal(auc_i, auc_g)  # the point estimate does not depend on grouping
        # Copies of one image are one case: the image bootstrap is about sqrt(copies) too narrow.
        assert ((high_g - low_g) > 1.3 * (high_i - low_i)).all(), (trial, high_g - low_g, high_i - low_i)
        probabilities = 1 / (1 + np.exp(-scores))
        report = evaluate_predictions(probabilities, labels, probabilities, labels, [f"e{e}" for e in range(entities)],
                                      n_resamples=300, seed=trial, groups=groups)  # fmt: skip
        # The report's intervals are the grouped ones (a monotone transform of the scores keeps every resample's AUC).
        intervals = np.array([entry["auc_ci95"] for entry in report["per_entity"].values()])
        assert np.allclose(intervals, np.stack([low_g, high_g], axis=1))
        assert not np.allclose(intervals, np.stack([low_i, high_i], axis=1))
        assert report["mean_auc_ci_resampled"] == "groups"
