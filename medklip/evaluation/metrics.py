"""Test-set metrics for the entity scores: AUC with bootstrap CIs, F1/accuracy at validation thresholds, calibration.

`evaluate_predictions` builds the `metrics.json` payload that `medklip evaluate` writes; the other public functions
are its parts and can be used alone:

    from medklip.evaluation.metrics import evaluate_predictions
    metrics = evaluate_predictions(test_scores, test_labels, val_scores, val_labels)  # (N, E) and (M, E) arrays
    json.dumps(metrics, allow_nan=False)  # never NaN: undefined numbers are None, with a "reason"

Rules that keep the numbers honest (the prototype this replaces averaged AUCs it did not show and tuned thresholds
on the test set):

- Labels are in {1, 0, -1}; -1 (not mentioned or uncertain) removes that (image, entity) pair from every metric.
- An entity without both classes among its labelled test images has no AUC (None, with the reason and the counts),
  never a stand-in 0.5. `mean_auc` averages exactly the per-entity AUCs that are not None, and says how many.
- Thresholds for F1 and accuracy are chosen on the validation data only and applied unchanged to the test data.
- 95% CIs are percentile bootstrap intervals: per entity by resampling that entity's labelled images; for the mean
  AUC by resampling test images jointly and averaging the entity AUCs defined in each resample.
- Given `groups` (the patient or study of each image), every resampling draws whole groups (a cluster bootstrap):
  images of one patient are correlated, and resampling them one by one would make intervals too narrow. The
  per-entity and mean-AUC intervals and the paired comparison of two models (the registry's gate) take groups.

The bootstrap is vectorised: resampling with replacement gives each image an integer count, and the AUC of a resample
is the count-weighted Mann-Whitney statistic, computed for a block of resamples at once from cumulative sums of the
negatives' counts in score order (see `_resampled_aucs`). Timing: `python benchmarks/evaluate.py`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from medklip.vocabulary import ENTITIES

logger = logging.getLogger(__name__)

CI_PERCENTILES = (2.5, 97.5)
# Resamples are processed in blocks of about this many (resample, image) cells, so that a block's count matrix
# (int64) and its cumulative sums stay within a core's cache and memory stays flat however many resamples are asked.
_BLOCK_CELLS = 1 << 18


# --- input checks -----------------------------------------------------------------------------------------------
def _check(scores: np.ndarray, labels: np.ndarray, probabilities: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Scores as float64 and labels as int8, both (N, E), after checking shapes and values."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 2 or scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must be the same (N, E) shape")
    if not np.isfinite(scores).all():
        raise ValueError("scores hold NaN or infinite values")
    if probabilities and scores.size and (scores.min() < 0.0 or scores.max() > 1.0):
        raise ValueError(f"scores must be probabilities in [0, 1], got [{scores.min()}, {scores.max()}]")
    if labels.size and not np.isin(labels, (-1, 0, 1)).all():
        raise ValueError("labels must be 1 (present), 0 (absent) or -1 (not mentioned / uncertain: excluded)")
    return scores, labels.astype(np.int8)


# --- AUC --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Layout:
    """One entity's labelled images arranged for the weighted Mann-Whitney statistic.

    Cell order is [negatives by ascending score | positives by ascending score]. Because resampling draws cells
    uniformly, drawing cell indices directly is the same as drawing images, so no gather is needed.
    """

    rows: np.ndarray  # (n,) image indices in cell order
    n_neg: int
    below: np.ndarray  # (n_pos,) per positive: how many negatives score strictly lower
    up_to: np.ndarray  # (n_pos,) per positive: how many negatives score lower or equal (differs from below on ties)

    @property
    def n(self) -> int:
        return len(self.rows)

    @property
    def n_pos(self) -> int:
        return len(self.rows) - self.n_neg

    @property
    def ties(self) -> bool:
        return bool((self.below != self.up_to).any())


def _layout(scores: np.ndarray, labels: np.ndarray) -> _Layout:
    """Layout of one entity's column, (N,) scores and (N,) labels in {1, 0, -1}."""
    negatives = np.flatnonzero(labels == 0)
    positives = np.flatnonzero(labels == 1)
    negatives = negatives[np.argsort(scores[negatives], kind="stable")]
    positives = positives[np.argsort(scores[positives], kind="stable")]
    negative_scores = scores[negatives]
    positive_scores = scores[positives]
    return _Layout(
        rows=np.concatenate([negatives, positives]),
        n_neg=len(negatives),
        below=np.searchsorted(negative_scores, positive_scores, side="left"),
        up_to=np.searchsorted(negative_scores, positive_scores, side="right"),
    )


def _layout_auc(layout: _Layout) -> float:
    """Exact ROC AUC of the full sample (ties count one half); NaN without both classes."""
    if layout.n_neg == 0 or layout.n_pos == 0:
        return float("nan")
    twice_wins = int(layout.below.sum()) + int(layout.up_to.sum())
    return twice_wins / (2.0 * layout.n_pos * layout.n_neg)


def _resampled_aucs(layout: _Layout, counts: np.ndarray) -> np.ndarray:
    """AUC of each resample given how many times it drew each cell; NaN where a resample lacks a class.

    With counts w, a resample's AUC is

        sum_{i pos, j neg} w_i w_j ([s_i > s_j] + 0.5 [s_i = s_j])  /  (P N),   P = sum_pos w_i,  N = sum_neg w_j,

    exactly what sklearn returns on the resampled arrays (duplicated rows are duplicated pairs). With C(k) the summed
    counts of the k lowest-scoring negatives, the negatives below positive i weigh C(below_i) and those tied with it
    weigh C(up_to_i) - C(below_i), so the numerator is sum_pos w_i (C(below_i) + C(up_to_i)) / 2: one cumulative sum
    per resample and two gathers, all in integers, so no rounding enters before the final division. With no ties
    between the classes below_i == up_to_i and one gather does.

    Args:
        layout: the entity's cell order.
        counts: (R, n) draws per cell, int64.

    Returns:
        (R,) AUCs.
    """
    n_resamples, n = counts.shape
    # One running total over the flattened (R, n) block rather than a cumsum along axis 1: numpy releases the GIL
    # for the 1-D scan only, and the threads over entities need it released. Negatives fill the first cells of each
    # row, so C_r(k) is the running total k cells into row r minus the total before row r.
    running = np.zeros(n_resamples * n + 1, dtype=np.int64)  # (R * n + 1,)
    np.cumsum(counts.ravel(), out=running[1:])
    row_start = np.arange(n_resamples, dtype=np.int64)[:, None] * n  # (R, 1)
    before_row = running[row_start]  # (R, 1)
    positive_counts = counts[:, layout.n_neg :]  # (R, n_pos)
    below = running[row_start + layout.below] - before_row  # (R, n_pos) C_r(below_i)
    if layout.ties:
        up_to = running[row_start + layout.up_to] - before_row  # (R, n_pos) C_r(up_to_i)
        twice_wins = np.einsum("rp,rp->r", positive_counts, below + up_to)
    else:
        twice_wins = 2 * np.einsum("rp,rp->r", positive_counts, below)
    n_neg = (running[row_start + layout.n_neg] - before_row)[:, 0]  # (R,)
    n_pos = (running[row_start + n] - before_row)[:, 0] - n_neg
    pairs = n_pos * n_neg
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, twice_wins / (2.0 * pairs), np.nan)


def _draw_counts(rng: np.random.Generator, n: int, n_resamples: int) -> np.ndarray:
    """(R, n) int64 counts of n draws with replacement from n cells, one row per resample."""
    draws = rng.integers(0, n, size=(n_resamples, n))  # (R, n) cell indices
    draws += (np.arange(n_resamples, dtype=np.int64) * n)[:, None]  # a separate bin range per resample
    return np.bincount(draws.ravel(), minlength=n_resamples * n).reshape(n_resamples, n)


def group_index(groups: Sequence | np.ndarray | None, n_images: int) -> np.ndarray | None:
    """(N,) int64 group number of each image from any group labels (patient ids), or None to resample images."""
    if groups is None:
        return None
    groups = np.asarray(groups)
    if groups.shape != (n_images,):
        raise ValueError(f"groups {groups.shape} must hold one group per image ({n_images},)")
    return np.unique(groups.astype(str), return_inverse=True)[1].astype(np.int64)


def _draw_group_counts(rng: np.random.Generator, index: np.ndarray, n_resamples: int) -> np.ndarray:
    """(R, N) counts per image of a cluster bootstrap: G draws of whole groups; an image counts as its group does."""
    group_counts = _draw_counts(rng, int(index.max()) + 1, n_resamples)  # (R, G)
    return group_counts[:, index]  # (R, N)


def _entity_bootstrap(
    layout: _Layout, n_resamples: int, seed: np.random.SeedSequence, groups: np.ndarray | None = None
) -> np.ndarray:
    """(R,) AUCs of resamples of this entity's labelled images; all NaN without both classes.

    With `groups` ((N,) group numbers of all images) each resample draws whole groups among those that hold a
    labelled image of this entity, as many as there are.
    """
    aucs = np.full(n_resamples, np.nan)
    if layout.n_pos == 0 or layout.n_neg == 0:
        return aucs
    rng = np.random.default_rng(seed)
    cells = None if groups is None else np.unique(groups[layout.rows], return_inverse=True)[1]  # (n,) per cell
    block = max(1, _BLOCK_CELLS // layout.n)
    for start in range(0, n_resamples, block):
        stop = min(start + block, n_resamples)
        size = stop - start
        counts = _draw_counts(rng, layout.n, size) if cells is None else _draw_group_counts(rng, cells, size)
        aucs[start:stop] = _resampled_aucs(layout, counts)
    return aucs


def _workers(workers: int | None) -> int:
    if workers is not None:
        return max(1, workers)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _map(function, items: Sequence, workers: int) -> list:
    """`function` over `items`, in threads: numpy releases the GIL in the heavy calls, results keep item order."""
    if workers == 1 or len(items) <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        return list(pool.map(function, items))


def _percentile_interval(resampled: np.ndarray) -> tuple[float, float, int]:
    """(low, high, resamples used) of the 95% percentile interval, skipping NaN resamples."""
    usable = resampled[~np.isnan(resampled)]
    if len(usable) == 0:
        return float("nan"), float("nan"), 0
    low, high = np.percentile(usable, CI_PERCENTILES)
    return float(low), float(high), len(usable)


def _bootstrap(
    scores: np.ndarray,
    labels: np.ndarray,
    n_resamples: int,
    seed: int,
    workers: int | None,
    groups: Sequence | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(auc, ci_low, ci_high, resamples used), each (E,); the body of `bootstrap_auc`."""
    if n_resamples < 0:
        raise ValueError(f"n_resamples must be >= 0, got {n_resamples}")
    scores, labels = _check(scores, labels)
    index = group_index(groups, len(scores))
    n_entities = scores.shape[1]
    layouts = [_layout(scores[:, e], labels[:, e]) for e in range(n_entities)]
    aucs = np.array([_layout_auc(layout) for layout in layouts])
    # One seed per entity: an entity's interval does not depend on the other columns or on the thread schedule.
    seeds = np.random.SeedSequence(seed).spawn(n_entities)
    resampled = _map(
        lambda e: _entity_bootstrap(layouts[e], n_resamples, seeds[e], index), range(n_entities), _workers(workers)
    )
    intervals = np.array([_percentile_interval(values) for values in resampled]).reshape(n_entities, 3)
    return aucs, intervals[:, 0], intervals[:, 1], intervals[:, 2].astype(np.int64)


def bootstrap_auc(
    scores: np.ndarray,
    labels: np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
    *,
    workers: int | None = None,
    groups: Sequence | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC AUC per entity with a 95% percentile-bootstrap interval.

    Each entity uses only its labelled images (label 0 or 1). Its interval comes from `n_resamples` resamples, with
    replacement, of those images (of their patients, given `groups`); a resample that happens to hold one class only
    is skipped for that entity.

    Args:
        scores: (N, E) scores; any real values, only their order matters.
        labels: (N, E) in {1, 0, -1}; -1 is excluded.
        n_resamples: bootstrap resamples per entity; 0 skips the intervals (all NaN).
        seed: seeds the resampling; results do not depend on `workers`.
        workers: threads over entities; default all usable cores.
        groups: (N,) patient (or study) of each image: whole groups are resampled. None: images.

    Returns:
        (auc, ci_low, ci_high), each (E,) float64; NaN where an entity lacks a class (or, for the interval, where no
        resample had both classes).
    """
    aucs, low, high, _ = _bootstrap(scores, labels, n_resamples, seed, workers, groups)
    return aucs, low, high


def bootstrap_mean_auc(
    scores: np.ndarray,
    labels: np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
    *,
    workers: int | None = None,
    groups: Sequence | np.ndarray | None = None,
) -> tuple[float, float, float]:
    """Mean AUC over entities with both classes, with a 95% percentile-bootstrap interval.

    The images are resampled jointly (all entities see the same resample, keeping their correlation); each resample's
    value is the mean of the entity AUCs it defines.

    Args:
        scores: (N, E) scores.
        labels: (N, E) in {1, 0, -1}.
        n_resamples: bootstrap resamples; 0 skips the interval.
        seed: seeds the resampling.
        workers: threads over blocks of resamples; default all usable cores.
        groups: (N,) patient (or study) of each image: whole groups are resampled. None: images.

    Returns:
        (mean AUC, ci_low, ci_high); NaN where undefined.
    """
    if n_resamples < 0:
        raise ValueError(f"n_resamples must be >= 0, got {n_resamples}")
    scores, labels = _check(scores, labels)
    layouts = [_layout(scores[:, e], labels[:, e]) for e in range(scores.shape[1])]
    layouts = [layout for layout in layouts if layout.n_pos and layout.n_neg]
    if not layouts:
        return float("nan"), float("nan"), float("nan")
    mean = float(np.mean([_layout_auc(layout) for layout in layouts]))

    def mean_of_block(counts: np.ndarray) -> np.ndarray:
        aucs = np.column_stack([_resampled_aucs(layout, counts[:, layout.rows]) for layout in layouts])  # (R_b, E')
        defined = ~np.isnan(aucs)
        with np.errstate(invalid="ignore"):
            return np.where(defined, aucs, 0.0).sum(axis=1) / defined.sum(axis=1)  # NaN if no entity is defined

    index = group_index(groups, len(scores))
    resampled = _over_resample_blocks(len(scores), n_resamples, seed, workers, mean_of_block, index)
    low, high, _ = _percentile_interval(resampled)
    return mean, low, high


def _over_resample_blocks(
    n_images: int, n_resamples: int, seed: int, workers: int | None, per_block, groups: np.ndarray | None = None
) -> np.ndarray:
    """`per_block(counts)` -> (R_block,) over blocks of joint image resamples (counts (R_block, N)), concatenated.

    With `groups` ((N,) group numbers from `group_index`) each resample draws whole groups. Blocks keep memory flat;
    each block has its own seed, so results do not depend on `workers`.
    """
    block = max(1, _BLOCK_CELLS // n_images)
    starts = list(range(0, n_resamples, block))
    seeds = np.random.SeedSequence(seed).spawn(len(starts))

    def run_block(index: int) -> np.ndarray:
        size = min(block, n_resamples - starts[index])
        rng = np.random.default_rng(seeds[index])
        return per_block(_draw_counts(rng, n_images, size) if groups is None else _draw_group_counts(rng, groups, size))

    resampled = _map(run_block, range(len(starts)), _workers(workers))
    return np.concatenate(resampled) if resampled else np.empty(0)


def paired_mean_auc_difference(
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    labels: np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
    *,
    workers: int | None = None,
    groups: Sequence | np.ndarray | None = None,
) -> dict:
    """Mean AUC of model a minus that of model b on the same images, with a paired 95% bootstrap interval.

    Both models are scored on each resample of the images (the same draws for both, so image difficulty cancels),
    over the entities with both classes in that resample; the interval is the percentile interval of the
    differences. A lower bound above 0 means a beats b beyond resampling noise.

    Args:
        scores_a, scores_b: (N, E) scores of the two models for the same images in the same order.
        labels: (N, E) in {1, 0, -1}.
        n_resamples: bootstrap resamples (> 0).
        seed: seeds the resampling.
        workers: threads over blocks of resamples; default all usable cores.
        groups: (N,) patient (or study) of each image: each resample draws whole groups. None: images.

    Returns:
        {"mean_auc_a", "mean_auc_b", "difference", "ci95": [low, high], "n_images", "n_groups", "resampled",
        "n_entities", "n_resamples"}; numbers are None where no entity has both classes.
    """
    if n_resamples <= 0:
        raise ValueError(f"n_resamples must be > 0, got {n_resamples}")
    scores_a, labels = _check(scores_a, labels)
    scores_b, _ = _check(scores_b, labels)
    index = group_index(groups, len(labels))
    entities = [e for e in range(labels.shape[1]) if (labels[:, e] == 1).any() and (labels[:, e] == 0).any()]
    result = {
        "n_images": len(labels),
        "n_groups": len(labels) if index is None else int(index.max()) + 1 if len(index) else 0,
        "resampled": "images" if index is None else "groups",
        "n_entities": len(entities),
        "n_resamples": n_resamples,
    }
    if not entities:
        return {**result, "mean_auc_a": None, "mean_auc_b": None, "difference": None, "ci95": None}
    layouts_a = [_layout(scores_a[:, e], labels[:, e]) for e in entities]
    layouts_b = [_layout(scores_b[:, e], labels[:, e]) for e in entities]
    mean_a = float(np.mean([_layout_auc(layout) for layout in layouts_a]))
    mean_b = float(np.mean([_layout_auc(layout) for layout in layouts_b]))

    def difference_of_block(counts: np.ndarray) -> np.ndarray:  # counts (R_block, N): the same draws for a and b
        aucs_a = np.column_stack([_resampled_aucs(layout, counts[:, layout.rows]) for layout in layouts_a])
        aucs_b = np.column_stack([_resampled_aucs(layout, counts[:, layout.rows]) for layout in layouts_b])
        defined = ~np.isnan(aucs_a)  # depends on labels and draws only, so the same cells for b
        with np.errstate(invalid="ignore"):
            return np.where(defined, aucs_a - aucs_b, 0.0).sum(axis=1) / defined.sum(axis=1)  # (R_block,)

    differences = _over_resample_blocks(len(labels), n_resamples, seed, workers, difference_of_block, index)
    low, high, _ = _percentile_interval(differences)
    return {**result, "mean_auc_a": mean_a, "mean_auc_b": mean_b, "difference": mean_a - mean_b, "ci95": [low, high]}


# --- thresholds -------------------------------------------------------------------------------------------------
def mean_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Mean AUC over the entities with both classes (labels -1 excluded); None when no entity has both.

    The cheap form, without confidence intervals, for validation during training.
    """
    aucs, _, _ = bootstrap_auc(scores, labels, n_resamples=0)
    return float(np.nanmean(aucs)) if np.isfinite(aucs).any() else None


def choose_thresholds(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per entity, the threshold that maximises F1 on these (validation) data.

    An image is called positive when its score is >= the threshold. Candidates are the observed scores of labelled
    images; among equal F1 the highest threshold wins.

    Args:
        scores: (M, E) validation scores.
        labels: (M, E) validation labels in {1, 0, -1}.

    Returns:
        (E,) thresholds; NaN where the entity has no positive validation image (F1 is then 0 or undefined at every
        threshold, so nothing can be chosen).
    """
    scores, labels = _check(scores, labels)
    thresholds = np.full(scores.shape[1], np.nan)
    for e in range(scores.shape[1]):
        known = labels[:, e] >= 0
        values, truth = scores[known, e], labels[known, e]
        n_pos = int(truth.sum())
        if n_pos == 0:
            continue
        order = np.argsort(-values, kind="stable")
        values, truth = values[order], truth[order]
        true_positives = np.cumsum(truth)  # (n,) when the cut is after position k
        called = np.arange(1, len(values) + 1)
        last_of_value = np.r_[values[1:] != values[:-1], True]  # a cut must not split equal scores
        f1 = 2 * true_positives[last_of_value] / (called[last_of_value] + n_pos)
        thresholds[e] = values[last_of_value][np.argmax(f1)]
    return thresholds


def threshold_metrics(scores: np.ndarray, labels: np.ndarray, thresholds: np.ndarray) -> dict:
    """F1, accuracy, precision and recall per entity at fixed thresholds (chosen elsewhere) on these (test) data.

    Args:
        scores: (N, E) test scores.
        labels: (N, E) test labels in {1, 0, -1}.
        thresholds: (E,) from `choose_thresholds` on validation data; NaN means no threshold.

    Returns:
        {"f1", "accuracy", "precision", "recall": (E,) float64, NaN where undefined (no threshold, no labelled image,
        precision without a predicted positive, recall without a positive, F1 with neither);
        "n_pos", "n_neg": (E,) int64 labelled test counts;
        "overall_accuracy": accuracy over all labelled (image, entity) pairs of entities with a threshold (NaN if
        none), "n_scored_pairs": how many pairs that is}.
    """
    scores, labels = _check(scores, labels)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.shape != (scores.shape[1],):
        raise ValueError(f"thresholds {thresholds.shape} must be ({scores.shape[1]},), one per entity")
    positive, negative = labels == 1, labels == 0
    with np.errstate(invalid="ignore"):
        called = scores >= thresholds[None, :]  # NaN thresholds call nothing; masked out below
    has_threshold = ~np.isnan(thresholds)
    true_pos = (called & positive).sum(axis=0)
    false_pos = (called & negative).sum(axis=0)
    n_pos, n_neg = positive.sum(axis=0), negative.sum(axis=0)
    false_neg = n_pos - true_pos
    true_neg = n_neg - false_pos

    def ratio(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(has_threshold & (bottom > 0), top / np.maximum(bottom, 1), np.nan)

    scored_pairs = int((n_pos + n_neg)[has_threshold].sum())
    correct = int((true_pos + true_neg)[has_threshold].sum())
    return {
        "f1": ratio(2 * true_pos, 2 * true_pos + false_pos + false_neg),
        "accuracy": ratio(true_pos + true_neg, n_pos + n_neg),
        "precision": ratio(true_pos, true_pos + false_pos),
        "recall": ratio(true_pos, n_pos),
        "n_pos": n_pos.astype(np.int64),
        "n_neg": n_neg.astype(np.int64),
        "overall_accuracy": correct / scored_pairs if scored_pairs else float("nan"),
        "n_scored_pairs": scored_pairs,
    }


# --- calibration ------------------------------------------------------------------------------------------------
def calibration(scores: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Brier score and expected calibration error per entity, on its labelled images.

    ECE uses `n_bins` equal-width bins over [0, 1] (the last one closed): the image-weighted mean over bins of
    |mean predicted probability - fraction positive|.

    Args:
        scores: (N, E) probabilities in [0, 1].
        labels: (N, E) in {1, 0, -1}.
        n_bins: ECE bins.

    Returns:
        (brier, ece), each (E,); NaN where the entity has no labelled image.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    scores, labels = _check(scores, labels, probabilities=True)
    n_entities = scores.shape[1]
    known = labels >= 0
    outcome = (labels == 1).astype(np.float64)
    counts = known.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        brier = np.where(known, (scores - outcome) ** 2, 0.0).sum(axis=0) / counts
    bins = np.minimum((scores * n_bins).astype(np.int64), n_bins - 1)  # (N, E)
    cells = (np.arange(n_entities)[None, :] * n_bins + bins)[known]  # one bin per (entity, bin) pair
    size = n_entities * n_bins
    predicted = np.bincount(cells, weights=scores[known], minlength=size).reshape(n_entities, n_bins)
    observed = np.bincount(cells, weights=outcome[known], minlength=size).reshape(n_entities, n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        # sum_b (n_b / n) |mean_p_b - mean_y_b| = sum_b |sum_p_b - sum_y_b| / n: the bin sizes cancel
        ece = np.abs(predicted - observed).sum(axis=1) / counts
    return brier, ece


# --- the metrics.json payload -----------------------------------------------------------------------------------
def _number(value: float) -> float | None:
    return None if value is None or np.isnan(value) else float(value)


# Below this many positives or negatives, plots and the CLI show "n too small" instead of an entity's AUC interval:
# resampling 4 negatives gives [1.00-1.00], which reads as certainty. metrics.json keeps the interval itself.
MIN_CASES_FOR_CI = 10


def too_few_for_ci(entry: dict) -> bool:
    """Whether an entity's `per_entity` entry has fewer than `MIN_CASES_FOR_CI` positives or negatives."""
    return min(entry.get("n_pos") or 0, entry.get("n_neg") or 0) < MIN_CASES_FOR_CI


def _reason(entry: dict, n_resamples: int) -> str | None:
    """Why any number of an entity's `per_entity` entry is None, in words; None when all are present."""
    reasons = []
    n_pos, n_neg = entry["n_pos"], entry["n_neg"]
    if n_pos + n_neg == 0:
        reasons.append("no labelled test images")
    elif entry["auc"] is None:
        reasons.append(f"one class in test data (n_pos={n_pos}, n_neg={n_neg})")
    elif entry["auc_ci95"] is None:
        disabled = n_resamples == 0
        reasons.append(
            "no CI: bootstrap disabled (n_resamples=0)" if disabled else "no CI: no resample had both classes"
        )
    if entry["threshold"] is None:
        if entry["n_pos_val"] + entry["n_neg_val"] == 0:
            reasons.append("no threshold: no labelled validation images")
        else:
            reasons.append(f"no threshold: no positive in validation data (n_pos=0, n_neg={entry['n_neg_val']})")
    elif n_pos + n_neg > 0 and entry["f1"] is None:
        reasons.append("f1 undefined: no positive test label and no positive call")
    return "; ".join(reasons) or None


def evaluate_predictions(
    test_scores: np.ndarray,
    test_labels: np.ndarray,
    val_scores: np.ndarray,
    val_labels: np.ndarray,
    entities: Sequence[str] = ENTITIES,
    n_resamples: int = 1000,
    seed: int = 0,
    groups: Sequence | np.ndarray | None = None,
) -> dict:
    """The metrics.json payload: AUCs with CIs on test, F1/accuracy at thresholds chosen on validation, calibration.

    Args:
        test_scores: (N, E) probabilities on the scored split.
        test_labels: (N, E) labels in {1, 0, -1}.
        val_scores: (M, E) probabilities on the validation split, used only to choose thresholds.
        val_labels: (M, E) labels in {1, 0, -1}.
        entities: the E column names.
        n_resamples: bootstrap resamples for every CI; 0 leaves the CIs None.
        seed: seeds the bootstrap.
        groups: (N,) patient (or study) of each test image: every interval (per entity and mean) resamples whole
            groups.

    Returns:
        A JSON-ready dict (no NaN; undefined numbers are None):
        {"mean_auc", "mean_auc_ci95", "n_entities_with_auc", "n_entities", "accuracy", "n_accuracy_pairs",
        "mean_auc_ci_resampled", "n_test", "n_val", "n_resamples", "seed", "thresholds_from",
        "per_entity": {entity: {"auc", "auc_ci95",
        "auc_ci_resamples", "f1", "precision", "recall", "threshold", "accuracy", "brier", "ece", "n_pos", "n_neg",
        "n_pos_val", "n_neg_val", "reason"}}}.
    """
    entities = list(entities)
    test_scores, test_labels = _check(test_scores, test_labels, probabilities=True)
    val_scores, val_labels = _check(val_scores, val_labels, probabilities=True)
    if test_scores.shape[1] != len(entities) or val_scores.shape[1] != len(entities):
        raise ValueError(
            f"{len(entities)} entities, but test has {test_scores.shape[1]} columns and val {val_scores.shape[1]}"
        )
    aucs, ci_low, ci_high, ci_used = _bootstrap(test_scores, test_labels, n_resamples, seed, None, groups)
    mean, mean_low, mean_high = bootstrap_mean_auc(test_scores, test_labels, n_resamples, seed, groups=groups)
    thresholds = choose_thresholds(val_scores, val_labels)
    at_threshold = threshold_metrics(test_scores, test_labels, thresholds)
    brier, ece = calibration(test_scores, test_labels)
    val_pos, val_neg = (val_labels == 1).sum(axis=0), (val_labels == 0).sum(axis=0)

    per_entity = {}
    for e, entity in enumerate(entities):
        n_pos, n_neg = int(at_threshold["n_pos"][e]), int(at_threshold["n_neg"][e])
        entry = {
            "auc": _number(aucs[e]),
            "auc_ci95": None if np.isnan(aucs[e]) or np.isnan(ci_low[e]) else [float(ci_low[e]), float(ci_high[e])],
            "auc_ci_resamples": int(ci_used[e]),
            "f1": _number(at_threshold["f1"][e]),
            "precision": _number(at_threshold["precision"][e]),
            "recall": _number(at_threshold["recall"][e]),
            "threshold": _number(thresholds[e]),
            "accuracy": _number(at_threshold["accuracy"][e]),
            "brier": _number(brier[e]),
            "ece": _number(ece[e]),
            "n_pos": n_pos,
            "n_neg": n_neg,
            "n_pos_val": int(val_pos[e]),
            "n_neg_val": int(val_neg[e]),
        }
        entry["reason"] = _reason(entry, n_resamples)
        per_entity[entity] = entry
    n_with_auc = int((~np.isnan(aucs)).sum())
    if n_with_auc < len(entities):
        logger.info(
            "%d of %d entities have no AUC (one class or no labels in the test data)",
            len(entities) - n_with_auc,
            len(entities),
        )
    if n_with_auc:
        logger.info(
            "mean AUC %.4f (95%% CI %.4f-%.4f) over %d entities, n_test %d",
            mean,
            mean_low,
            mean_high,
            n_with_auc,
            len(test_scores),
        )
    return {
        "mean_auc": _number(mean),
        "mean_auc_ci95": None if np.isnan(mean_low) else [float(mean_low), float(mean_high)],
        "mean_auc_ci_resampled": "images" if groups is None else "groups",
        "n_entities_with_auc": n_with_auc,
        "n_entities": len(entities),
        "accuracy": _number(at_threshold["overall_accuracy"]),
        "n_accuracy_pairs": at_threshold["n_scored_pairs"],
        "n_test": len(test_scores),
        "n_val": len(val_scores),
        "n_resamples": n_resamples,
        "seed": seed,
        "thresholds_from": "validation",
        "per_entity": per_entity,
    }
