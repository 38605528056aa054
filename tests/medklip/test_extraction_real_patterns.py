"""Regression table: sentences written after the patterns of real chest X-ray reports, one fixed class each.

The patterns come from an error analysis of the rules extractor on real reports (the Indiana University / Open-i
collection scored against NegBio's human-derived labels: `benchmarks/extract_real.py`). The sentences are written
here in the same shapes, not copied. Each case is (sentence, entity, expected): `expected` is the entity's label
for the sentence as training builds it (any 1, else any 0, else -1), or None when the entity must not be read at
all. The conventions are tests/data/README.md's labelling decisions 11 and 12.

A seeded property test draws coordinated negated lists with severity words, and a negative control shows that a
substring matcher with a negation window, the baseline the extractor must beat, fails this table.
"""

from __future__ import annotations

import random
import re

import pytest

from medklip.labels.rule_extractor import RuleExtractor

P, A, U, N = 1, 0, -1, None  # present, absent, uncertain, not read

CASES = [
    # --- negated lists whose later items carry a modifier ("large" does not end the scope) ---
    ("No focal consolidation, large pleural effusion, or pneumothorax.", "effusion", A),
    ("No focal consolidation, large pleural effusion, or pneumothorax.", "pneumothorax", A),
    ("No focal consolidation, large pleural effusion, or pneumothorax.", "consolidation", A),
    ("No focal airspace opacity, large effusion, or pneumothorax is seen.", "effusion", A),
    ("No lobar consolidation, sizable effusion or pneumothorax.", "pneumothorax", A),
    ("Lungs are clear without focal consolidation, large pleural effusion, or pneumothoraces.", "pneumothorax", A),
    ("Lungs are clear without focal consolidation, large pleural effusion, or pneumothoraces.", "effusion", A),
    ("No acute airspace disease, large pleural effusions or pulmonary edema.", "edema", A),
    ("No acute airspace disease, large pleural effusions or pulmonary edema.", "effusion", A),
    ("Without focal consolidation, suspicious opacity, large pleural effusion, or pneumothorax.", "effusion", A),
    ("No pneumothorax, moderate effusion, or focal infiltrate.", "infiltrate", A),
    ("No pneumothorax, moderate effusion, or focal infiltrate.", "effusion", A),
    ("There is no consolidation, large effusion, nor pneumothorax.", "effusion", A),
    ("There is no consolidation, large effusion, nor pneumothorax.", "pneumothorax", A),
    ("Otherwise, no focal consolidation, large pleural effusion, or pneumothorax.", "pneumothorax", A),
    # ... but a severity word after a comma with no "or" to follow starts a positive statement
    ("No pneumothorax, small left pleural effusion.", "effusion", P),
    ("No pneumothorax, small left pleural effusion.", "pneumothorax", A),
    ("No pneumothorax, with persistent right effusion.", "effusion", P),
    ("No cardiomegaly, mild pulmonary edema.", "edema", P),
    ("No cardiomegaly, mild pulmonary edema.", "cardiomegaly", A),
    # --- plural, adjective and slash forms ---
    ("Small bilateral pneumothoraces.", "pneumothorax", P),
    ("No pneumothoraces.", "pneumothorax", A),
    ("Bilateral pleural effusions.", "effusion", P),
    ("Several small pulmonary nodules in both lungs.", "nodule", P),
    ("Nodular opacity in the right midlung.", "nodule", N),
    ("Nodular opacity in the right midlung.", "opacity", P),
    ("Scattered nodular densities in the left upper lobe.", "nodule", N),
    ("Mass-like opacity at the right apex.", "mass", N),
    ("Focal pneumonic consolidation in the lingula.", "consolidation", P),
    ("Focal pneumonic consolidation in the lingula.", "pneumonia", N),
    ("Emphysematous changes of the upper lobes.", "emphysema", P),
    ("Bullous emphysema at both apices.", "emphysema", P),
    ("Left basilar atelectasis/scarring.", "atelectasis", P),
    ("Left basilar atelectasis/scarring.", "scar", P),
    ("Right base airspace disease/atelectasis.", "atelectasis", P),
    ("Subsegmental atelectasis/scar at the right base.", "atelectasis", P),
    ("Minimal bibasilar atelectases.", "atelectasis", P),
    ("Patchy infiltrates in the right lower lobe.", "infiltrate", P),
    ("Apical pleural thickening on the left.", "thicken", P),
    ("Bilateral apical pleural thickenings.", "thicken", P),
    # --- hedges the human labels count as not present ---
    ("Bony overlap at the apices could obscure a small nodule.", "nodule", U),
    ("Overlapping ribs could hide a small pulmonary nodule.", "nodule", U),
    ("A mild pneumonia would be a consideration in the right clinical context.", "pneumonia", U),
    ("Perihilar haze could indicate early edema.", "edema", U),
    ("An early infiltrate is a possibility.", "infiltrate", U),
    ("A small effusion cannot be excluded.", "effusion", U),
    ("A small effusion cannot be entirely excluded.", "effusion", U),
    ("Superimposed pneumonia is not excluded.", "pneumonia", U),
    ("Pulmonary edema difficult to entirely exclude.", "edema", U),
    ("Aspiration or pneumonia are also possible.", "pneumonia", U),
    ("Possible small left pleural effusion.", "effusion", U),
    ("Possibly a small right pneumothorax.", "pneumothorax", U),
    ("Questionable nodule at the right base.", "nodule", U),
    ("The opacity may represent atelectasis.", "atelectasis", U),
    ("These may be related to overlapping vessels or an early infiltrate.", "infiltrate", U),
    ("Findings may reflect mild interstitial edema.", "edema", U),
    ("Findings could represent infection.", "pneumonia", U),
    ("The differential includes edema and atypical infection.", "edema", U),
    ("Differential considerations include interstitial infiltrates and mild pulmonary edema.", "edema", U),
    ("Differential considerations include interstitial infiltrates and mild pulmonary edema.", "infiltrate", U),
    ("The differential diagnosis includes infection, inflammation or aspiration.", "pneumonia", U),
    ("Appearance could include interstitial edema or infection.", "edema", U),
    ("Opacities suspicious for pneumonia.", "pneumonia", U),
    ("Opacity concerning for early consolidation.", "consolidation", U),
    ("Findings suggestive of mild edema.", "edema", U),
    ("Cannot exclude a small pneumothorax.", "pneumothorax", U),
    ("Cannot rule out a tiny pneumothorax at the apex.", "pneumothorax", U),
    ("In the appropriate clinical setting this is compatible with pneumonia.", "pneumonia", U),
    ("Vague opacity, most xxxx atelectasis.", "atelectasis", U),
    # --- recommendations, requests and questions ---
    ("Recommend CT to evaluate this nodule.", "nodule", U),
    ("Recommend follow-up to exclude an underlying mass.", "mass", U),
    ("Followup films are recommended to ensure resolution and exclude an underlying mass.", "mass", U),
    ("Please correlate clinically for pneumonia.", "pneumonia", U),
    ("Correlate for infection.", "pneumonia", U),
    ("Evaluation for effusion is limited on the lateral view.", "effusion", U),
    ("CT is more sensitive for detecting small nodules.", "nodule", U),
    ("Repeat radiograph to rule out pneumothorax.", "pneumothorax", U),
    ("Rule-out underlying pulmonary nodule.", "nodule", U),
    ("Pneumonia?", "pneumonia", U),
    ("Is there a small left effusion?", "effusion", U),
    ("Question of a small pneumothorax.", "pneumothorax", U),
    # --- the favoured reading is present ---
    ("Probable right lower lobe pneumonia.", "pneumonia", P),
    ("Probable small bilateral effusions.", "effusion", P),
    ("Bibasilar airspace disease, probably atelectasis.", "atelectasis", P),
    ("Opacities most suggestive of pulmonary edema.", "edema", P),
    ("Findings strongly suggestive of acute pneumonia.", "pneumonia", P),
    ("Opacity most compatible with atelectasis.", "atelectasis", P),
    ("Left base opacity most consistent with atelectasis.", "atelectasis", P),
    ("Right lower lobe consolidation consistent with pneumonia.", "pneumonia", P),
    ("Opacity representing atelectasis.", "atelectasis", P),
    # --- "X versus Y": both readings present, unless a cue before X governs both ---
    ("Left basilar atelectasis versus scarring.", "atelectasis", P),
    ("Left basilar atelectasis versus scarring.", "scar", P),
    ("Streaky right lower lobe infiltrate versus atelectasis.", "infiltrate", P),
    ("Streaky right lower lobe infiltrate versus atelectasis.", "atelectasis", P),
    ("Mild bibasilar infiltrates vs. atelectasis.", "atelectasis", P),
    ("Small left pleural effusion versus pleural thickening.", "effusion", P),
    ("Small left pleural effusion versus pleural thickening.", "thicken", P),
    ("Mild right pleural thickening versus small effusion.", "effusion", P),
    ("Increased markings, edema versus chronic interstitial change.", "edema", P),
    ("Scarring versus nodule at the right apex.", "nodule", P),
    ("The opacity may represent atelectasis versus pneumonia.", "pneumonia", U),
    ("The opacity may represent atelectasis versus pneumonia.", "atelectasis", U),
    ("Possibly atelectasis versus early infiltrate.", "infiltrate", U),
    ("No effusion versus thickening is seen.", "effusion", A),
    # --- "without", "no evidence of" and other forms of absence ---
    ("The lungs are clear without focal infiltrate.", "infiltrate", A),
    ("Lungs are clear without edema or effusion.", "edema", A),
    ("Lungs are clear without edema or effusion.", "effusion", A),
    ("Cardiomegaly without pulmonary edema.", "edema", A),
    ("Cardiomegaly without pulmonary edema.", "cardiomegaly", P),
    ("Stable cardiomegaly with no pulmonary edema.", "edema", A),
    ("No evidence of pneumothorax.", "pneumothorax", A),
    ("No radiographic evidence of pneumonia.", "pneumonia", A),
    ("No signs of pulmonary edema.", "edema", A),
    ("Negative for effusion.", "effusion", A),
    ("Free of consolidation.", "consolidation", A),
    ("No definite pleural effusion seen.", "effusion", A),
    ("Pneumothorax is not seen.", "pneumothorax", A),
    ("Effusion is not identified.", "effusion", A),
    ("There are no xxxx of a pleural effusion.", "effusion", A),
    ("No infiltrates are present in the left lower lobe.", "infiltrate", A),
    ("No consolidation to suggest pneumonia.", "pneumonia", A),
    ("Hyperinflation without focal alveolar consolidation.", "consolidation", A),
    # --- resolved, historical, residual ---
    ("Interval resolution of the left pleural effusion.", "effusion", A),
    ("The right pneumothorax has resolved.", "pneumothorax", A),
    ("Previously seen effusion has cleared.", "effusion", A),
    ("Resolved interstitial edema.", "edema", A),
    ("Resolving right upper lobe pneumonia.", "pneumonia", U),
    ("Resolving interstitial edema.", "edema", U),
    ("Residuals of prior granulomatous infection.", "pneumonia", N),
    ("Calcified nodes from old granulomatous disease.", "pneumonia", N),
    ("Sequelae of prior infection.", "pneumonia", U),
    ("History of pneumonia.", "pneumonia", U),
    ("Nodules were seen on a previous CT.", "nodule", P),
    ("Healed left rib fractures.", "fracture", P),
    ("Old right rib fracture.", "fracture", P),
    ("Status post CABG with intact sternotomy wires.", "wire", P),
    # --- COPD and granulomas are not emphysema or pneumonia ---
    ("Hyperexpanded lungs consistent with COPD.", "emphysema", N),
    ("Changes of chronic obstructive pulmonary disease.", "emphysema", N),
    ("COPD.", "emphysema", N),
    ("Chronic obstructive lung disease with hyperinflation.", "emphysema", N),
    ("Emphysema with hyperinflation.", "emphysema", P),
    ("Calcified granuloma in the left upper lobe.", "nodule", N),
    # --- heart size ---
    ("Borderline cardiomegaly.", "cardiomegaly", P),
    ("The heart is borderline enlarged.", "cardiomegaly", P),
    ("Heart is large.", "cardiomegaly", P),
    ("Heart size is slightly large.", "cardiomegaly", P),
    ("The cardiac silhouette is enlarged.", "cardiomegaly", P),
    ("Heart size upper limits normal.", "cardiomegaly", N),
    ("Heart size at the upper limits of normal.", "cardiomegaly", N),
    ("Heart size is normal.", "cardiomegaly", A),
    ("The heart is not enlarged.", "cardiomegaly", A),
    ("No cardiomegaly.", "cardiomegaly", A),
    ("Heart size within normal limits.", "cardiomegaly", A),
    # --- laterality and location words do not change existence ---
    ("Small right pleural effusion.", "effusion", P),
    ("Left-sided pleural effusion, small.", "effusion", P),
    ("Moderate left pneumothorax.", "pneumothorax", P),
    ("Right apical pneumothorax measuring 1 cm.", "pneumothorax", P),
    ("Left lower lobe consolidation.", "consolidation", P),
    ("Retrocardiac opacity compatible with atelectasis.", "atelectasis", P),
    ("Right middle lobe infiltrate.", "infiltrate", P),
    ("Lingular atelectasis.", "atelectasis", P),
    ("Bibasilar atelectasis.", "atelectasis", P),
    ("A 6 mm nodule in the left upper lobe.", "nodule", P),
    ("Right hilar mass.", "mass", P),
    ("No pneumothorax on the left.", "pneumothorax", A),
    ("No effusion at the right base.", "effusion", A),
    # --- change words do not negate ---
    ("No change in the small left effusion.", "effusion", P),
    ("Unchanged left basilar atelectasis.", "atelectasis", P),
    ("Stable right upper lobe nodule.", "nodule", P),
    ("Increased bilateral pleural effusions.", "effusion", P),
    ("Decreased but persistent right pneumothorax.", "pneumothorax", P),
    ("Mild pulmonary edema, improved.", "edema", P),
    ("No significant interval change in the emphysema.", "emphysema", P),
    # --- pericardial and soft-tissue forms are other findings ---
    ("Small pericardial effusion.", "effusion", N),
    ("Subcutaneous emphysema in the left chest wall.", "emphysema", N),
]


def _label(text: str, entity: str) -> int | None:
    values = [t.existence for t in RuleExtractor().extract_one(text) if t.entity == entity]
    return max(values) if values else None


def test_the_table_is_large_and_covers_every_class():
    assert len(CASES) >= 150
    assert len({(text, entity) for text, entity, _ in CASES}) == len(CASES), "a case appears twice"
    assert {expected for *_, expected in CASES} == {P, A, U, N}


@pytest.mark.parametrize(("text", "entity", "expected"), CASES, ids=[f"{e}:{t[:50]}" for t, e, _ in CASES])
def test_real_report_pattern(text, entity, expected):
    assert _label(text, entity) == expected


# --- a seeded property: coordinated negated lists -----------------------------------------------------------------
LIST_FINDINGS = {
    "focal consolidation": "consolidation",
    "pleural effusion": "effusion",
    "pneumothorax": "pneumothorax",
    "pulmonary edema": "edema",
    "focal infiltrate": "infiltrate",
    "pulmonary nodule": "nodule",
    "atelectasis": "atelectasis",
}
SEVERITY = ("", "large ", "small ", "moderate ", "significant ", "acute ", "definite ")
OPENINGS = ("No ", "There is no ", "Lungs are clear without ", "Without ", "No evidence of ")
CLOSINGS = (".", " is identified.", " is seen.", " on this study.")


def _negated_list(rng: random.Random) -> tuple[str, list[str]]:
    items = rng.sample(list(LIST_FINDINGS), rng.randint(2, 4))
    words = [rng.choice(SEVERITY if i else ("",)) + item for i, item in enumerate(items)]
    body = ", ".join(words[:-1]) + rng.choice((", or ", " or ", ", nor ")) + words[-1]
    return rng.choice(OPENINGS) + body + rng.choice(CLOSINGS), [LIST_FINDINGS[item] for item in items]


@pytest.mark.parametrize("seed", range(5))
def test_every_item_of_a_negated_list_is_absent(seed):
    rng = random.Random(seed)
    for _ in range(60):
        text, entities = _negated_list(rng)
        for entity in entities:
            assert _label(text, entity) == A, text


# --- negative control: the baseline fails the table ------------------------------------------------------------------
def _negation_window_label(text: str, entity: str) -> int | None:
    """The substring + negation-window baseline of benchmarks/extract_real.py, for one entity."""
    stem = {"effusion": "effusion", "pneumothorax": "pneumothora", "nodule": "nodul", "edema": "edema"}.get(entity)
    if stem is None:
        return None
    match = re.search(r"\b" + stem, text.lower())
    if match is None:
        return None
    before = text.lower()[: match.start()].split()[-5:]
    return A if {"no", "not", "without"} & set(before) else P


def test_negative_control_the_baseline_fails_the_table():
    cases = [case for case in CASES if case[1] in ("effusion", "pneumothorax", "nodule", "edema")]
    wrong = [case for case in cases if _negation_window_label(case[0], case[1]) != case[2]]
    assert len(wrong) >= 0.3 * len(cases), wrong
