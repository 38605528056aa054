"""Extractor quality on real radiology reports: per-label P/R/F1 against human-derived labels, with two baselines.

    python benchmarks/extract_real.py --data DIR [--min-positives 20] [--errors errors.csv]

DIR holds `reports.csv` (`id, findings, impression`) and `labels.csv` (`id` plus one 0/1 column per label). The set
this was built on is the Indiana University chest X-ray collection (Open-i; Demner-Fushman et al., "Preparing a
collection of radiology examinations for distribution and retrieval", JAMIA 2016; report text CC BY-NC-ND 4.0), with
the labels of NegBio's OpenI gold standard (Peng et al., "NegBio: a high-performance tool for negation and
uncertainty detection in radiology reports", AMIA 2018; `ncbi-nlp/NegBio`, `examples/openi_gld_std14.csv`, public
domain). Its labels come from MeSH terms assigned by hand: a finding only hedged or negated in the text is 0.

Scoring is present-vs-not per (report, label): a report is predicted present for a label when the extractor gives at
least one triplet of the label's entity with existence 1 (uncertain, -1, counts as not present, as does absent, 0).
Labels map onto MedKLIP entities: Effusion -> effusion, Infiltration -> infiltrate, Pleural_Thickening -> thicken,
the rest by their lower-case name; Fibrosis has no entity among the 75 and `normal` is not a finding, so neither is
scored. The macro F1 is over the labels with at least `--min-positives` positives.

Two baselines run on the same reports in the same run:
- `substring`: present when one of the label's own terms (`BASELINE_TERMS`, with any suffix) occurs in the text;
- `substring_negation`: the same, unless one of "no", "not", "without", "negative for", "free of" occurs within
  the five words before the synonym in the same sentence.

The last line printed is JSON: macro F1 of each method, per-label P/R/F1, reports/s of the rules extractor.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import pandas as pd

from medklip.labels.report_text import report_text, split_sentences
from medklip.labels.rule_extractor import RuleExtractor

LABEL_TO_ENTITY = {
    "Atelectasis": "atelectasis",
    "Cardiomegaly": "cardiomegaly",
    "Effusion": "effusion",
    "Infiltration": "infiltrate",
    "Mass": "mass",
    "Nodule": "nodule",
    "Pneumonia": "pneumonia",
    "Pneumothorax": "pneumothorax",
    "Consolidation": "consolidation",
    "Edema": "edema",
    "Emphysema": "emphysema",
    "Pleural_Thickening": "thicken",
    "Hernia": "hernia",
}
# The baselines' terms: each label's own words, with any suffix ("effusions", "nodular"). Fixed here, not taken
# from the vocabulary, so tuning the extractor's synonyms never moves the baselines.
BASELINE_TERMS = {
    "atelectasis": ("atelecta",),
    "cardiomegaly": ("cardiomegaly", "enlarged heart", "heart is enlarged", "cardiac enlargement"),
    "effusion": ("pleural effusion", "effusion"),
    "infiltrate": ("infiltrat",),
    "mass": ("mass",),
    "nodule": ("nodul",),
    "pneumonia": ("pneumonia",),
    "pneumothorax": ("pneumothora",),
    "consolidation": ("consolidat",),
    "edema": ("edema",),
    "emphysema": ("emphysema",),
    "thicken": ("pleural thickening",),
    "hernia": ("hernia",),
}
NEGATION_WINDOW = 5
NEGATION_WORDS = ("no", "not", "without", "negative for", "free of")


def read(data: Path) -> tuple[list[str], list[str], pd.DataFrame]:
    reports = pd.read_csv(data / "reports.csv", keep_default_na=False, dtype=str)
    labels = pd.read_csv(data / "labels.csv").set_index("id")
    reports = reports[reports["id"].isin(labels.index)]
    texts = [report_text(f, i) for f, i in zip(reports["findings"], reports["impression"], strict=True)]
    return list(reports["id"]), texts, labels.loc[list(reports["id"])]


def _synonym_patterns() -> dict[str, re.Pattern]:
    return {
        entity: re.compile(r"\b(?:" + "|".join(map(re.escape, terms)) + r")\w*")
        for entity, terms in BASELINE_TERMS.items()
    }


def substring_baseline(texts: list[str], negation_window: bool) -> list[set[str]]:
    """Entities each text is called present for by a substring match (optionally with a negation window)."""
    patterns = _synonym_patterns()
    negation = re.compile(r"\b(?:" + "|".join(NEGATION_WORDS) + r")\b")
    out = []
    for text in texts:
        present = set()
        for sentence in split_sentences(text.lower()):
            for entity, pattern in patterns.items():
                for match in pattern.finditer(sentence):
                    before = " ".join(sentence[: match.start()].split()[-NEGATION_WINDOW:])
                    if not (negation_window and negation.search(before)):
                        present.add(entity)
                        break
        out.append(present)
    return out


def rules_present(texts: list[str]) -> tuple[list[set[str]], float]:
    extractor = RuleExtractor()
    extractor.extract(texts[:50])  # warm-up
    start = time.perf_counter()
    results = extractor.extract(texts)
    seconds = time.perf_counter() - start
    return [{t.entity for t in triplets if t.existence == 1} for triplets in results], len(texts) / seconds


def per_label(predicted: list[set[str]], labels: pd.DataFrame) -> dict[str, dict]:
    out = {}
    for label, entity in LABEL_TO_ENTITY.items():
        if label not in labels.columns:
            continue
        gold = labels[label].to_numpy() == 1
        guess = [entity in p for p in predicted]
        tp = sum(g and p for g, p in zip(gold, guess, strict=True))
        fp = sum(p and not g for g, p in zip(gold, guess, strict=True))
        fn = sum(g and not p for g, p in zip(gold, guess, strict=True))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[label] = {"p": round(precision, 3), "r": round(recall, 3), "f1": round(f1, 3), "positives": int(gold.sum())}
    return out


def errors(ids, texts, predicted, labels) -> pd.DataFrame:
    rows = []
    for report_id, text, present in zip(ids, texts, predicted, strict=True):
        for label, entity in LABEL_TO_ENTITY.items():
            gold = int(labels.at[report_id, label]) == 1 if label in labels.columns else False
            if gold != (entity in present):
                rows.append({"id": report_id, "label": label, "kind": "fn" if gold else "fp", "text": text})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder with reports.csv and labels.csv")
    parser.add_argument("--min-positives", type=int, default=20, help="labels in the macro average")
    parser.add_argument("--errors", type=Path, help="write the rules extractor's disagreements here (CSV)")
    args = parser.parse_args(argv)
    ids, texts, labels = read(args.data)
    methods = {
        "substring": substring_baseline(texts, negation_window=False),
        "substring_negation": substring_baseline(texts, negation_window=True),
    }
    methods["rules"], rate = rules_present(texts)
    scored = [label for label in LABEL_TO_ENTITY if label in labels and labels[label].sum() >= args.min_positives]
    table = {name: per_label(predicted, labels) for name, predicted in methods.items()}
    print(f"{len(texts)} reports; macro over {len(scored)} labels with >= {args.min_positives} positives")
    print(f"{'label':<20}{'pos':>5}" + "".join(f"{name:>26}" for name in methods))
    print(f"{'':<25}" + "".join(f"{'P     R     F1':>26}" for _ in methods))
    for label in LABEL_TO_ENTITY:
        if label not in labels:
            continue
        mark = "" if label in scored else " *"
        cells = "".join(
            f"{table[m][label]['p']:>16.3f}{table[m][label]['r']:>6.3f}{table[m][label]['f1']:>6.3f}" for m in methods
        )
        print(f"{label + mark:<20}{table['rules'][label]['positives']:>5}{cells}")
    macro = {name: round(sum(table[name][lab]["f1"] for lab in scored) / len(scored), 4) for name in methods}
    print("macro F1: " + ", ".join(f"{name} {value:.3f}" for name, value in macro.items()))
    print("* fewer positives than --min-positives: shown, not averaged")
    if args.errors:
        errors(ids, texts, methods["rules"], labels).to_csv(args.errors, index=False)
    result = {
        "reports": len(texts),
        "labels_scored": scored,
        "macro_f1": macro,
        "min_label_f1": {name: min(table[name][lab]["f1"] for lab in scored) for name in methods},
        "rules_reports_per_s": round(rate, 1),
        "per_label": table,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
