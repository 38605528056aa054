"""Labels from triplets, exactly as MedKLIP builds them (any 1, else any 0, else -1)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medklip.labels.triplets import Triplet, existence_vector, labels_from_table, validate
from medklip.vocabulary import ENTITIES, POSITIONS

E = ENTITIES.index
P = POSITIONS.index


def test_existence_rule_any_one_then_any_zero_then_masked():
    labels = existence_vector(
        [
            Triplet("effusion", "left_pleural", 0),
            Triplet("effusion", "right_pleural", 1),  # any 1 wins
            Triplet("pneumothorax", "unspecified", -1),
            Triplet("pneumothorax", "unspecified", 0),  # else any 0
            Triplet("nodule", "unspecified", -1),  # only uncertain: masked
        ]
    )
    assert labels.shape == (75,) and labels.dtype == np.int8
    assert labels[E("effusion")] == 1 and labels[E("pneumothorax")] == 0 and labels[E("nodule")] == -1
    assert (np.delete(labels, [E("effusion"), E("pneumothorax")]) == -1).all()


def test_labels_from_table_per_report_and_position():
    table = pd.DataFrame(
        [
            ("r1", "effusion", "left_pleural", 1),
            ("r1", "effusion", "right_pleural", 0),
            ("r2", "cardiomegaly", "heart_size", 0),
            ("unknown", "mass", "unspecified", 1),  # not among the requested reports: ignored
        ],
        columns=["report_id", "entity", "position", "existence"],
    )
    existence, positions = labels_from_table(table, ["r2", "r1", "r3"])
    assert existence.shape == (3, 75) and positions.shape == (3, 51, 75)
    assert existence[1, E("effusion")] == 1 and existence[0, E("cardiomegaly")] == 0
    assert positions[1, P("left_pleural"), E("effusion")] == 1
    assert positions[1, P("right_pleural"), E("effusion")] == 0
    assert (existence[2] == -1).all() and (existence[:, E("mass")] == -1).all()


def test_validate_rejects_names_outside_the_vocabulary():
    with pytest.raises(ValueError, match="unknown entity"):
        validate(Triplet("fibrosis", "unspecified", 1))
    with pytest.raises(ValueError, match="unknown position"):
        validate(Triplet("effusion", "left_lung", 1))
    with pytest.raises(ValueError, match="existence"):
        validate(Triplet("effusion", "unspecified", 2))
