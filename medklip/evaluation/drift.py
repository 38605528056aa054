"""Label drift: how the per-entity prevalence of a training set moved since the champion's training set.

    from medklip.evaluation.drift import label_prevalence, prevalence_shift
    before = label_prevalence(champion_labels)        # (N, 75) existence labels in {1, 0, -1}
    after = label_prevalence(challenger_labels)
    shift = prevalence_shift(before, after, threshold=0.05)   # shift["moved"]: entities that moved

Every training run logs the prevalence of its `train` split (`medklip.tracking.runs`: `data/label_prevalence.json`);
the registry compares a new version's with the champion's and stores the table, a plot
(`medklip.evaluation.plots.plot_prevalence_shift`) and a line in the model card.

Prevalence is the share of images whose report states the entity present (label 1) among all images: an entity the
reports stop mentioning counts as less prevalent, which is what a model trained on those labels sees. An entity has
*moved* when its prevalence changed by more than `threshold` (absolute) and a two-sided two-proportion z-test (pooled
normal approximation) gives p below `alpha`. The test is per entity, not corrected for 75 comparisons; `threshold`
keeps trivially small but significant moves of a large data set out of the list.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from medklip.vocabulary import ENTITIES

DEFAULT_THRESHOLD = 0.05  # absolute change in prevalence that counts as a move
DEFAULT_ALPHA = 0.01  # two-sided p-value below which a change counts as more than sampling noise


def label_prevalence(labels: np.ndarray, entities: Sequence[str] = ENTITIES) -> dict:
    """Per-entity counts of a labelled image set, as a JSON-ready dict.

    Args:
        labels: (N, E) existence labels in {1, 0, -1}.
        entities: the E column names.

    Returns:
        {"n_images": N, "entities": {entity: {"n_pos", "n_neg", "n_unlabelled", "prevalence"}}}; prevalence is
        n_pos / N (None for an empty set).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[1] != len(entities):
        raise ValueError(f"labels {labels.shape} must be (N, {len(entities)})")
    n = len(labels)
    positive, negative = (labels == 1).sum(axis=0), (labels == 0).sum(axis=0)
    return {
        "n_images": int(n),
        "entities": {
            entity: {
                "n_pos": int(positive[e]),
                "n_neg": int(negative[e]),
                "n_unlabelled": int(n - positive[e] - negative[e]),
                "prevalence": float(positive[e] / n) if n else None,
            }
            for e, entity in enumerate(entities)
        },
    }


def two_proportion_test(k1: int, n1: int, k2: int, n2: int) -> tuple[float | None, float | None]:
    """(z, two-sided p) of H0: equal proportions, for k1 of n1 against k2 of n2, pooled normal approximation.

    None, None when undefined (an empty set, or both proportions 0 or both 1: nothing varies).
    """
    if n1 == 0 or n2 == 0:
        return None, None
    pooled = (k1 + k2) / (n1 + n2)
    variance = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if variance <= 0:
        return None, None
    z = (k2 / n2 - k1 / n1) / math.sqrt(variance)
    return z, math.erfc(abs(z) / math.sqrt(2))  # 2 * (1 - Phi(|z|))


def prevalence_shift(
    reference: dict, current: dict, threshold: float = DEFAULT_THRESHOLD, alpha: float = DEFAULT_ALPHA
) -> dict:
    """The table of prevalence changes from `reference` (the champion's data) to `current` (the challenger's).

    Args:
        reference, current: `label_prevalence` dicts.
        threshold: absolute prevalence change above which an entity can count as moved.
        alpha: two-sided p-value below which it does.

    Returns:
        {"threshold", "alpha", "n_reference", "n_current", "rows": [{entity, reference, current, difference, z,
        p_value, moved, n_pos_reference, n_pos_current}] sorted by |difference|, largest first, "moved": [entity]}.
    """
    n_reference, n_current = reference["n_images"], current["n_images"]
    rows = []
    for entity, before in reference["entities"].items():
        after = current["entities"].get(entity)
        if after is None:
            continue
        z, p_value = two_proportion_test(before["n_pos"], n_reference, after["n_pos"], n_current)
        difference = None
        if before["prevalence"] is not None and after["prevalence"] is not None:
            difference = after["prevalence"] - before["prevalence"]
        moved = difference is not None and p_value is not None and abs(difference) > threshold and p_value < alpha
        rows.append(
            {
                "entity": entity,
                "reference": before["prevalence"],
                "current": after["prevalence"],
                "difference": difference,
                "z": z,
                "p_value": p_value,
                "moved": moved,
                "n_pos_reference": before["n_pos"],
                "n_pos_current": after["n_pos"],
            }
        )
    rows.sort(key=lambda row: -abs(row["difference"] or 0.0))
    return {
        "threshold": threshold,
        "alpha": alpha,
        "n_reference": n_reference,
        "n_current": n_current,
        "rows": rows,
        "moved": [row["entity"] for row in rows if row["moved"]],
    }


def describe_shift(shift: dict, limit: int = 5) -> str:
    """One sentence for a model card or a gate reason: which entities moved, by how much, with p."""
    moved = [row for row in shift["rows"] if row["moved"]]
    test = (
        f"by more than {shift['threshold']:g} (two-proportion test, p < {shift['alpha']:g}) between the champion's "
        f"{shift['n_reference']} and this version's {shift['n_current']} training images"
    )
    if not moved:
        return f"no entity's prevalence moved {test}"
    shown = ", ".join(
        f"{row['entity']} {row['reference']:.3f} -> {row['current']:.3f} (p={row['p_value']:.1g})"
        for row in moved[:limit]
    )
    more = f" and {len(moved) - limit} more" if len(moved) > limit else ""
    count = "1 entity's prevalence" if len(moved) == 1 else f"{len(moved)} entities' prevalence"
    return f"{count} moved {test}: {shown}{more}"


def shift_csv(shift: dict) -> str:
    """The table as CSV text (for an MLflow artifact)."""
    columns = ("entity", "reference", "current", "difference", "z", "p_value", "moved")
    lines = [",".join(columns)]
    for row in shift["rows"]:
        cells = ["" if row[key] is None else f"{row[key]:.6g}" if isinstance(row[key], float) else str(row[key])
                 for key in columns]  # fmt: skip
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"
