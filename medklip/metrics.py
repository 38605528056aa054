"""Classification metrics over the 75 entities, with masked labels (-1 = not mentioned / uncertain)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from medklip.entities import ENTITIES


def per_entity_auc(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float | None]:
    """ROC AUC per entity over images whose label is 0 or 1; None where the labels hold only one class.

    Args:
        probabilities: (N, 75) scores.
        labels: (N, 75) in {1, 0, -1}.
    """
    aucs: dict[str, float | None] = {}
    for index, entity in enumerate(ENTITIES):
        known = labels[:, index] >= 0
        values = labels[known, index]
        if known.sum() == 0 or values.min() == values.max():
            aucs[entity] = None
            continue
        aucs[entity] = float(roc_auc_score(values, probabilities[known, index]))
    return aucs


def mean_auc(probabilities: np.ndarray, labels: np.ndarray) -> float | None:
    """Mean AUC over the entities that have both classes; None when no entity has."""
    values = [auc for auc in per_entity_auc(probabilities, labels).values() if auc is not None]
    return float(np.mean(values)) if values else None
