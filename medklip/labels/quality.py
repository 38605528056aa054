"""How good is an extractor? Per-entity precision, recall and F1 against hand-labelled text.

    medklip extract score tests/data/extraction_dev.jsonl [--extractor rules]

A labelled set is JSON Lines: {"text": "...", "triplets": [[entity, position, existence], ...]}, the complete
triplets a perfect extractor would give (docs/extraction.md). Scoring is per (text, entity) with the entity's
label aggregated as for training (any 1, else any 0, else -1): a prediction is a true positive only with the same
label, so a missed negation counts as both a false positive and a false negative. `tail_abnorm_obs` and
`excluded_obs` are catch-alls and are not scored. Positions are scored separately, on present findings.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from medklip.labels.triplets import Triplet, validate
from medklip.vocabulary import EXCLUDED_ENTITY, TAIL_ENTITY

UNSCORED = {TAIL_ENTITY, EXCLUDED_ENTITY}


def load_labelled(path: str | Path) -> list[tuple[str, list[Triplet]]]:
    """(text, expected triplets) pairs of a JSON Lines file."""
    cases = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        record = json.loads(line)
        try:
            triplets = [
                validate(Triplet(entity, position, int(existence)))
                for entity, position, existence in record["triplets"]
            ]
        except (ValueError, KeyError) as error:
            raise ValueError(f"{path}:{number}: {error}") from error
        cases.append((record["text"], triplets))
    return cases


def _labels(triplets: list[Triplet]) -> dict[str, int]:
    labels: dict[str, int] = {}
    for triplet in triplets:
        if triplet.entity not in UNSCORED:
            labels[triplet.entity] = max(labels.get(triplet.entity, -1), triplet.existence)
    return labels


def _prf(tp: int, fp: int, fn: int) -> dict[str, float | int]:
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4), "support": tp + fn}


def score(expected: list[list[Triplet]], predicted: list[list[Triplet]]) -> dict:
    """Per-entity and micro-averaged P/R/F1 of existence labels, and position P/R on present findings."""
    counts = defaultdict(lambda: [0, 0, 0])  # entity -> tp, fp, fn
    position_counts = [0, 0, 0]
    errors = []
    for index, (truth, guess) in enumerate(zip(expected, predicted, strict=True)):
        truth_labels, guess_labels = _labels(truth), _labels(guess)
        for entity in truth_labels.keys() | guess_labels.keys():
            want, got = truth_labels.get(entity), guess_labels.get(entity)
            if want is not None and want == got:
                counts[entity][0] += 1
                continue
            if got is not None:
                counts[entity][1] += 1
            if want is not None:
                counts[entity][2] += 1
            errors.append({"case": index, "entity": entity, "expected": want, "predicted": got})
        truth_positions = {(t.entity, t.position) for t in truth if t.existence == 1 and t.entity not in UNSCORED}
        guess_positions = {(t.entity, t.position) for t in guess if t.existence == 1 and t.entity not in UNSCORED}
        position_counts[0] += len(truth_positions & guess_positions)
        position_counts[1] += len(guess_positions - truth_positions)
        position_counts[2] += len(truth_positions - guess_positions)
    total = [sum(values[i] for values in counts.values()) for i in range(3)]
    return {
        "micro": _prf(*total),
        "positions": _prf(*position_counts),
        "per_entity": {entity: _prf(*counts[entity]) for entity in sorted(counts, key=lambda e: -sum(counts[e]))},
        "errors": errors,
    }


def format_table(result: dict) -> str:
    """A plain-text table of a `score` result."""
    lines = [f"{'entity':<18}{'precision':>10}{'recall':>10}{'f1':>8}{'support':>9}"]
    for entity, values in result["per_entity"].items():
        lines.append(
            f"{entity:<18}{values['precision']:>10.3f}{values['recall']:>10.3f}{values['f1']:>8.3f}{values['support']:>9}"
        )
    for name in ("micro", "positions"):
        values = result[name]
        lines.append(
            f"{name.upper():<18}{values['precision']:>10.3f}{values['recall']:>10.3f}{values['f1']:>8.3f}{values['support']:>9}"
        )
    return "\n".join(lines)
