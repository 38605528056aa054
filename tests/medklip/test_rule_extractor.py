"""The rules extractor on the cases docs/extraction.md names: negation scope, uncertainty, laterality, normals."""

from __future__ import annotations

import pytest

from medklip.labels.report_text import clean, split_sentences
from medklip.labels.rule_extractor import RuleExtractor

extractor = RuleExtractor()


def triplets(text: str) -> set[tuple[str, str, int]]:
    return {(t.entity, t.position, t.existence) for t in extractor.extract_one(text)}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("No pneumothorax or effusion.", {("pneumothorax", "unspecified", 0), ("effusion", "unspecified", 0)}),
        (
            "No pneumothorax, but there is a small left effusion.",
            {("pneumothorax", "unspecified", 0), ("effusion", "left_pleural", 1)},
        ),
        (
            "No pneumothorax, small left effusion.",
            {("pneumothorax", "unspecified", 0), ("effusion", "left_pleural", 1)},
        ),
        ("Pneumothorax is not seen.", {("pneumothorax", "unspecified", 0)}),
        ("The right lower lobe opacity has resolved.", {("opacity", "lower_right_lobe", 0)}),
        ("No change in small left effusion.", {("effusion", "left_pleural", 1)}),
        ("Left lower lobe pneumonia cannot be excluded.", {("pneumonia", "lower_left_lobe", -1)}),
        ("No definite focal consolidation.", {("consolidation", "unspecified", 0)}),
        ("The ET tube has been removed.", {("tube", "unspecified", 0)}),
    ],
)
def test_negation_and_its_scope(text, expected):
    assert triplets(text) == expected


def test_uncertainty_reaches_forward_only():
    assert triplets("Patchy right basilar opacity may represent atelectasis or early pneumonia.") == {
        ("opacity", "right_lower_lung", 1),
        ("atelectasis", "right_lower_lung", -1),
        ("pneumonia", "right_lower_lung", -1),
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Bilateral pleural effusions.", {("effusion", "left_pleural", 1), ("effusion", "right_pleural", 1)}),
        ("Bibasilar atelectasis.", {("atelectasis", "lung_bases", 1)}),
        ("Right lower lobe consolidation.", {("consolidation", "lower_right_lobe", 1)}),
        ("Left basilar opacity.", {("opacity", "left_lower_lung", 1)}),
        ("Right apical pneumothorax.", {("pneumothorax", "right_apical_lung", 1)}),
        ("Retrocardiac opacity.", {("opacity", "retrocardiac", 1)}),
        ("Effusion on the right.", {("effusion", "right_pleural", 1)}),
        ("Moderate cardiomegaly.", {("cardiomegaly", "heart_size", 1)}),
        ("ET tube tip 4 cm above the carina.", {("tube", "trachea", 1), ("tip", "trachea", 1)}),
        (
            "Left lower lobe atelectasis and effusion.",
            {("atelectasis", "lower_left_lobe", 1), ("effusion", "left_pleural", 1)},
        ),
    ],
)
def test_positions(text, expected):
    assert triplets(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Heart size is normal.", {("normal", "heart_size", 1), ("cardiomegaly", "heart_size", 0)}),
        ("The heart is not enlarged.", {("normal", "heart_size", 1), ("cardiomegaly", "heart_size", 0)}),
        (
            "Lungs are clear.",
            {("clear", "unspecified", 1), ("consolidation", "unspecified", 0), ("opacity", "unspecified", 0)},
        ),
        (
            "Costophrenic angles are sharp.",
            {("sharp", "costophrenic_unspec", 1), ("effusion", "costophrenic_unspec", 0)},
        ),
        ("No acute cardiopulmonary process.", {("process", "cardiopulmonary", 0)}),
        ("Stable appearance of the chest.", {("stable", "unspecified", 1)}),
        ("Stable moderate cardiomegaly.", {("cardiomegaly", "heart_size", 1)}),
    ],
)
def test_normal_statements_and_their_implied_zeros(text, expected):
    assert triplets(text) == expected


def test_inflections_and_multiword_synonyms():
    assert triplets("Enlarged cardiac silhouette.") == {("cardiomegaly", "heart_size", 1)}
    assert ("effusion", "left_pleural", 1) in triplets("Small left effusions.")
    assert ("atelectasis", "lung_bases", 1) in triplets("Bibasilar atelectatic changes.")


@pytest.mark.parametrize(
    "text",
    ["", "   \n\t ", "<html><body><p>   </p></body></html>", "\x00\x01\x02", "Épanchement pleural gauche modéré."],
)
def test_bad_text_gives_no_triplets_and_no_crash(text):
    assert extractor.extract_one(text) == []


def test_markup_control_characters_and_huge_reports_are_cleaned():
    assert triplets("<p>Small <b>left</b> effusion.</p>\x07") == {("effusion", "left_pleural", 1)}
    huge = "Small left effusion. " * 60_000  # about 1.2 MB
    cleaned = clean(huge)
    assert cleaned.truncated and len(cleaned.text) <= 20_000
    assert triplets(huge) == {("effusion", "left_pleural", 1)}


def test_sentence_splitting_keeps_decimals_and_splits_numbered_lists():
    assert split_sentences("ET tube 2.5 cm above the carina. No pneumothorax.") == [
        "ET tube 2.5 cm above the carina.",
        "No pneumothorax.",
    ]
    assert len(split_sentences("1. Small effusion. 2. No pneumothorax.")) >= 2
