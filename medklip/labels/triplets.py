"""Triplets and the labels built from them, exactly as MedKLIP builds them.

A `Triplet` is one (entity, position, existence) statement of a report sentence (docs/extraction.md):
existence 1 present, 0 stated absent, -1 uncertain. Labels per report:

- existence [75]: 1 if any triplet of the entity is 1, else 0 if any is 0, else -1 (not mentioned or only
  uncertain: masked in the loss);
- positions [51, 75]: the same rule per (position, entity) cell.

Because 1 > 0 > -1, "any 1, else any 0, else -1" is the maximum over the triplets, starting from -1.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from medklip.vocabulary import ENTITIES, POSITIONS

ENTITY_INDEX = {name: i for i, name in enumerate(ENTITIES)}
POSITION_INDEX = {name: i for i, name in enumerate(POSITIONS)}
TRIPLET_COLUMNS = ("report_id", "entity", "position", "existence", "sentence", "extractor")


class Triplet(NamedTuple):
    """One statement of a report: `entity` (of the 75) at `position` (of the 51) with `existence` in {1, 0, -1}."""

    entity: str
    position: str
    existence: int
    sentence: str = ""


def statement_triplets(
    entity: str, existence: int, positions: list[str], sentence: str, about_lungs: bool = False
) -> list[Triplet]:
    """The triplets of one finding, with the zeros a normal statement implies (docs/extraction.md).

    Shared by both extractors so they label "heart size is normal", "lungs are clear", "costophrenic angles are
    sharp", "osseous structures are intact" and "the heart is (not) enlarged" alike.

    Args:
        entity: the finding as read.
        existence: 1, 0 or -1.
        positions: its positions.
        sentence: the source sentence.
        about_lungs: the sentence's subject is the lungs (for "clear").
    """
    if entity == "enlarge" and "heart_size" in positions:  # "the heart is (not) enlarged": about heart size
        out = [Triplet("cardiomegaly", "heart_size", existence, sentence)]
        return out + [Triplet("normal", "heart_size", 1, sentence)] if existence == 0 else out
    out = [Triplet(entity, position, existence, sentence) for position in positions]
    if existence != 1:
        return out
    if entity in ("normal", "unremarkable") and "heart_size" in positions:
        out.append(Triplet("cardiomegaly", "heart_size", 0, sentence))
    elif entity == "normal" and "pulmonary" in positions:
        out.append(Triplet("congestion", "pulmonary", 0, sentence))
    elif entity == "clear" and (about_lungs or any(position.endswith("lung_unspec") for position in positions)):
        for position in positions:
            out += [Triplet("consolidation", position, 0, sentence), Triplet("opacity", position, 0, sentence)]
    elif entity in ("sharp", "sharply"):
        out += [Triplet("effusion", position, 0, sentence) for position in positions if "costophrenic" in position]
    elif entity == "intact" and "other" in positions:
        out.append(Triplet("fracture", "other", 0, sentence))
    return out


def validate(triplet: Triplet) -> Triplet:
    """Raises ValueError for names outside the vocabularies or an existence outside {1, 0, -1}."""
    if triplet.entity not in ENTITY_INDEX:
        raise ValueError(f"unknown entity {triplet.entity!r}")
    if triplet.position not in POSITION_INDEX:
        raise ValueError(f"unknown position {triplet.position!r}")
    if triplet.existence not in (1, 0, -1):
        raise ValueError(f"existence must be 1, 0 or -1, got {triplet.existence!r}")
    return triplet


def existence_vector(triplets: list[Triplet]) -> np.ndarray:
    """The [75] int8 existence labels of one report."""
    labels = np.full(len(ENTITIES), -1, dtype=np.int8)
    for triplet in triplets:
        index = ENTITY_INDEX[triplet.entity]
        labels[index] = max(labels[index], triplet.existence)
    return labels


def labels_from_table(triplets: pd.DataFrame, report_ids: list[str] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Existence [N, 75] and position [N, 51, 75] int8 labels for `report_ids`, from a triplets table.

    Args:
        triplets: rows with `report_id, entity, position, existence` (the output of `medklip extract`).
        report_ids: the reports to label, in the order wanted; reports without triplets get all -1.

    Returns:
        (existence, positions), both int8 with values in {1, 0, -1}.
    """
    row_of = {report_id: row for row, report_id in enumerate(report_ids)}
    existence = np.full((len(report_ids), len(ENTITIES)), -1, dtype=np.int8)
    positions = np.full((len(report_ids), len(POSITIONS), len(ENTITIES)), -1, dtype=np.int8)
    if len(triplets):
        rows = triplets["report_id"].map(row_of)
        known = rows.notna().to_numpy()
        rows = rows[known].astype(np.int64).to_numpy()
        entity = triplets["entity"][known].map(ENTITY_INDEX).astype(np.int64).to_numpy()
        position = triplets["position"][known].map(POSITION_INDEX).astype(np.int64).to_numpy()
        value = triplets["existence"][known].astype(np.int8).to_numpy()
        np.maximum.at(existence, (rows, entity), value)
        np.maximum.at(positions, (rows, position, entity), value)
    return existence, positions
