"""The fixed vocabularies: MedKLIP's exact order, the knowledge text, and phrase ownership for the extractor."""

from __future__ import annotations

import ast
import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml

import medklip.vocabulary as vocabulary_module
from medklip.vocabulary import (
    DESCRIPTIONS,
    ENTITIES,
    ENTITY_BY_PHRASE,
    EXCLUDED_ENTITY,
    EXCLUDED_OBSERVATIONS,
    NORMAL_ENTITIES,
    POSITION_BY_PHRASE,
    POSITION_PROMPTS,
    POSITION_SYNONYMS,
    POSITIONS,
    SYNONYMS,
    TAIL_ENTITY,
    UNSEEN_ENTITIES,
    entity_index,
    position_index,
    seen_entities,
    seen_entity_indices,
)

# The rows of the tables in reference/medklip.md section 2, as written there.
ENTITY_TABLE_ROWS = [
    (0, "normal, clear, sharp, sharply, unremarkable, intact, stable, free"),
    (
        8,
        "effusion, opacity, pneumothorax, edema, atelectasis, tube, consolidation, process, abnormality, "
        "enlarge, tip, low",
    ),
    (
        20,
        "pneumonia, line, congestion, catheter, cardiomegaly, fracture, air, tortuous, lead, disease, "
        "calcification, prominence",
    ),
    (
        32,
        "device, engorgement, picc, clip, elevation, expand, nodule, wire, fluid, degenerative, pacemaker, "
        "thicken, marking, scar",
    ),
    (
        46,
        "hyperinflate, blunt, loss, widen, collapse, density, emphysema, aerate, mass, crowd, infiltrate, "
        "obscure, deformity, hernia",
    ),
    (
        60,
        "drainage, distention, shift, stent, pressure, lesion, finding, borderline, hardware, dilation, chf, "
        "redistribution, aspiration",
    ),
    (73, "tail_abnorm_obs"),
    (74, "excluded_obs"),
]
POSITION_TABLE_ROWS = [
    (
        0,
        "trachea, left_hilar, right_hilar, hilar_unspec, left_pleural, right_pleural, pleural_unspec, "
        "heart_size, heart_border, left_diaphragm, right_diaphragm, diaphragm_unspec, retrocardiac",
    ),
    (13, "lower_left_lobe, upper_left_lobe, lower_right_lobe, middle_right_lobe, upper_right_lobe"),
    (
        18,
        "left_lower_lung, left_mid_lung, left_upper_lung, left_apical_lung, left_lung_unspec, "
        "right_lower_lung, right_mid_lung, right_upper_lung, right_apical_lung, right_lung_unspec",
    ),
    (28, "lung_apices, lung_bases, left_costophrenic, right_costophrenic, costophrenic_unspec"),
    (33, "cardiophrenic_sulcus, mediastinal, spine, clavicle, rib, stomach, right_atrium, right_ventricle, aorta, svc"),
    (
        43,
        "interstitium, parenchymal, cavoatrial_junction, cardiopulmonary, pulmonary, lung_volumes, unspecified, other",
    ),
]
EXCLUDED_OBS_FROM_REFERENCE = (
    "none, unchanged, change, great, similar, large, small, moderate, mild, median, decrease, bad, more, constant, "
    "worsen, new, improve, status, position, sternotomy, cabg, replacement, postoperative, assessment, patient"
)
# Surface forms whose MedKLIP lemma is an EXCLUDED_OBS lemma; none may be claimed by a named entity.
EXCLUDED_SURFACE_FORMS = (
    *EXCLUDED_OBS_FROM_REFERENCE.split(", "),
    "changes", "changed", "greater", "larger", "smaller", "moderately", "mildly", "decreased", "decreasing", "worse",
    "worsened", "worsening", "improved", "improvement", "improving", "positioned", "post-operative",
)  # fmt: skip
SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


def _split_row(start: int, row: str) -> list[tuple[int, str]]:
    return [(start + offset, name) for offset, name in enumerate(row.split(", "))]


def _scan(text: str, phrase_owner: dict[str, str]) -> list[str]:
    """Leftmost-longest, word-bounded phrase matching: the contract the module docstring promises extractors."""
    phrases = sorted(phrase_owner, key=len, reverse=True)
    pattern = re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, phrases)) + r")(?!\w)")
    return [phrase_owner[match.group(0)] for match in pattern.finditer(text.lower())]


# --- order and counts ------------------------------------------------------------------------------------------------


def test_counts():
    assert len(ENTITIES) == 75
    assert len(POSITIONS) == 51
    assert len(NORMAL_ENTITIES) == 8
    assert len(EXCLUDED_OBSERVATIONS) == 25
    assert len(UNSEEN_ENTITIES) == 7


@pytest.mark.parametrize("names", [ENTITIES, POSITIONS, EXCLUDED_OBSERVATIONS, UNSEEN_ENTITIES])
def test_names_are_unique(names):
    assert len(set(names)) == len(names)


@pytest.mark.parametrize(
    ("index", "name"), [pair for start, row in ENTITY_TABLE_ROWS for pair in _split_row(start, row)]
)
def test_entity_order_matches_reference_table(index, name):
    assert ENTITIES[index] == name


@pytest.mark.parametrize(
    ("index", "name"), [pair for start, row in POSITION_TABLE_ROWS for pair in _split_row(start, row)]
)
def test_position_order_matches_reference_table(index, name):
    assert POSITIONS[index] == name


def test_order_spot_checks():
    assert ENTITIES[0] == "normal"
    assert ENTITIES[8] == "effusion"
    assert ENTITIES[20] == "pneumonia"  # "eumonia" in MedKLIP's JSON; the class itself is pneumonia
    assert ENTITIES[24] == "cardiomegaly"
    assert ENTITIES[42] == "pacemaker"
    assert ENTITIES[54] == "mass"
    assert ENTITIES[73] == TAIL_ENTITY == "tail_abnorm_obs"
    assert ENTITIES[74] == EXCLUDED_ENTITY == "excluded_obs"
    assert POSITIONS[0] == "trachea"
    assert POSITIONS[13] == "lower_left_lobe"
    assert POSITIONS[31] == "right_costophrenic"
    assert POSITIONS[42] == "svc"
    assert POSITIONS[49] == "unspecified"
    assert POSITIONS[50] == "other"


def test_groups():
    assert NORMAL_ENTITIES == ("normal", "clear", "sharp", "sharply", "unremarkable", "intact", "stable", "free")
    assert NORMAL_ENTITIES == ENTITIES[:8]
    assert ", ".join(EXCLUDED_OBSERVATIONS) == EXCLUDED_OBS_FROM_REFERENCE
    assert not set(EXCLUDED_OBSERVATIONS) & set(ENTITIES)  # they collapse into excluded_obs, never their own class
    assert set(UNSEEN_ENTITIES) == {"pneumonia", "infiltrate", "mass", "nodule", "emphysema", "thicken", "hernia"}
    assert set(UNSEEN_ENTITIES) <= set(ENTITIES)
    assert "fibrosis" not in ENTITIES  # MedKLIP's excluded_disease names it, but it only exists as a tail lemma


# --- helpers ---------------------------------------------------------------------------------------------------------


def test_indices_round_trip():
    assert [entity_index(name) for name in ENTITIES] == list(range(75))
    assert [position_index(name) for name in POSITIONS] == list(range(51))
    assert entity_index("pneumonia") == 20
    assert position_index("unspecified") == 49


@pytest.mark.parametrize("name", ["fibrosis", "Pneumonia", "pneumonia ", "", "eumonia"])
def test_entity_index_rejects_unknown_names_and_lists_choices(name):
    with pytest.raises(ValueError, match="unknown entity") as caught:
        entity_index(name)
    assert "cardiomegaly" in str(caught.value) and "excluded_obs" in str(caught.value)


@pytest.mark.parametrize("name", ["left lower lung", "Trachea", "left_lung", ""])
def test_position_index_rejects_unknown_names_and_lists_choices(name):
    with pytest.raises(ValueError, match="unknown position") as caught:
        position_index(name)
    assert "left_lower_lung" in str(caught.value) and "other" in str(caught.value)


def test_seen_entities_keeps_all_by_default_path():
    assert seen_entities(exclude_unseen=False) == ENTITIES
    assert seen_entity_indices(exclude_unseen=False) == tuple(range(75))


def test_seen_entities_drops_exactly_the_unseen_seven_in_order():
    seen = seen_entities(exclude_unseen=True)
    assert len(seen) == 68  # MedKLIP's keep_class_dim has 68 entries
    assert not set(seen) & set(UNSEEN_ENTITIES)
    assert list(seen) == [name for name in ENTITIES if name not in UNSEEN_ENTITIES]
    indices = seen_entity_indices(exclude_unseen=True)
    assert list(indices) == sorted(indices) and len(indices) == 68
    assert 20 not in indices and 54 not in indices and 24 in indices


# --- knowledge descriptions ------------------------------------------------------------------------------------------


def test_every_entity_has_a_description_in_entity_order():
    assert list(DESCRIPTIONS) == list(ENTITIES)


@pytest.mark.parametrize("entity", ENTITIES)
def test_description_is_one_to_three_sentences(entity):
    text = DESCRIPTIONS[entity]
    assert text == text.strip() and text.endswith(".")
    assert "  " not in text and "e.g." not in text and "i.e." not in text  # would break the sentence count
    assert 1 <= len(SENTENCE_END.findall(text)) <= 3
    assert 40 <= len(text) <= 350


def test_descriptions_are_distinct():
    assert len(set(DESCRIPTIONS.values())) == len(DESCRIPTIONS)
    openings = [" ".join(text.split()[:6]) for text in DESCRIPTIONS.values()]
    assert len(set(openings)) == len(openings)


def test_placeholder_descriptions_from_medklip_are_not_reused():
    assert DESCRIPTIONS["tail_abnorm_obs"] != "Some very rare diseases."
    assert DESCRIPTIONS["excluded_obs"] != "Some observations that seldom appear in the reports."
    assert "urinary" not in DESCRIPTIONS["catheter"].lower()  # MedKLIP's catheter text described a urinary catheter


# --- entity phrases --------------------------------------------------------------------------------------------------


def test_synonym_table_covers_every_entity_in_order():
    assert list(SYNONYMS) == list(ENTITIES)
    for entity in ENTITIES[:73]:
        assert SYNONYMS[entity], entity
    assert SYNONYMS[EXCLUDED_ENTITY] == ()


@pytest.mark.parametrize("entity", ENTITIES[:73])
def test_entity_name_is_its_own_phrase(entity):
    # The lemma itself must map home, or MedKLIP-style lemma input would fall into the tail.
    assert entity in SYNONYMS[entity]


def test_phrases_are_clean_lower_case_text():
    for entity, phrases in SYNONYMS.items():
        for phrase in phrases:
            assert phrase == phrase.lower() == phrase.strip(), (entity, phrase)
            assert phrase and "  " not in phrase, (entity, phrase)


def test_every_entity_phrase_has_exactly_one_owner():
    owners: dict[str, list[str]] = {}
    for entity, phrases in SYNONYMS.items():
        for phrase in phrases:
            owners.setdefault(phrase, []).append(entity)
    shared = {phrase: names for phrase, names in owners.items() if len(names) > 1}
    assert not shared
    assert len(ENTITY_BY_PHRASE) == sum(len(phrases) for phrases in SYNONYMS.values())
    assert all(phrase in SYNONYMS[entity] for phrase, entity in ENTITY_BY_PHRASE.items())


def test_excluded_lemmas_and_their_surface_forms_are_not_claimed():
    claimed = sorted(set(EXCLUDED_SURFACE_FORMS) & set(ENTITY_BY_PHRASE))
    assert not claimed


@pytest.mark.parametrize(
    ("phrase", "entity"),
    [
        # MedKLIP's manual lemma normalisation (reference/medklip.md section 3).
        ("enlargement", "enlarge"),
        ("engorge", "engorgement"),
        ("opacification", "opacity"),
        ("calcify", "calcification"),
        ("atelectatic", "atelectasis"),
        ("atelectase", "atelectasis"),
        ("aeration", "aerate"),
        ("distend", "distention"),
        ("distension", "distention"),
        ("wide", "widen"),
        ("prominent", "prominence"),
        ("masse", "mass"),
        ("degenerate", "degenerative"),
        ("obscuration", "obscure"),
        ("nodular", "nodule"),
        ("nodularity", "nodule"),
        ("tortuosity", "tortuous"),
        ("elevate", "elevation"),
        ("drain", "drainage"),
        ("consolidative", "consolidation"),
        ("consolidate", "consolidation"),
        ("dilate", "dilation"),
        ("dilatation", "dilation"),
        ("hydropneumothorax", "pneumothorax"),
        ("pneumothoraces", "pneumothorax"),
        ("pneumothorace", "pneumothorax"),
        ("pacer", "pacemaker"),
        ("infection", "pneumonia"),
        ("infectious", "pneumonia"),
        ("infectious process", "pneumonia"),
        # Lemmas the table sends outside the 75, so MedKLIP counts them in the tail.
        ("fibrotic", "tail_abnorm_obs"),
        ("fibrosis", "tail_abnorm_obs"),
        ("haze", "tail_abnorm_obs"),
        ("kyphotic", "tail_abnorm_obs"),
        ("deviate", "tail_abnorm_obs"),
        ("elongate", "tail_abnorm_obs"),
    ],
)
def test_lemma_normalisation_table_is_folded_in(phrase, entity):
    assert ENTITY_BY_PHRASE[phrase] == entity


@pytest.mark.parametrize(
    ("entity", "phrases"),
    [
        ("effusion", ("effusion", "effusions", "pleural effusion", "pleural fluid", "hydrothorax")),
        (
            "cardiomegaly",
            (
                "cardiomegaly",
                "enlarged cardiac silhouette",
                "enlarged heart",
                "heart is enlarged",
                "cardiac enlargement",
            ),
        ),
        ("pneumothorax", ("pneumothorax", "pneumothoraces", "hydropneumothorax")),
        ("pacemaker", ("pacemaker", "pacer", "icd", "aicd", "pacemaker/icd")),
        ("tube", ("endotracheal tube", "et tube", "ett", "ng tube", "nasogastric tube", "og tube", "chest tube")),
        ("line", ("central line", "central venous line", "ij line", "port")),
        ("picc", ("picc", "picc line")),
        ("catheter", ("catheter", "central venous catheter", "swan-ganz catheter")),
    ],
)
def test_core_phrases(entity, phrases):
    assert {phrase: ENTITY_BY_PHRASE.get(phrase) for phrase in phrases} == dict.fromkeys(phrases, entity)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The heart is enlarged.", ["cardiomegaly"]),
        ("Enlarged cardiac silhouette.", ["cardiomegaly"]),
        ("Enlarged hilar lymph nodes.", ["enlarge"]),
        ("Borderline cardiomegaly.", ["borderline", "cardiomegaly"]),
        ("Heart size is at the upper limits of normal.", ["borderline"]),
        ("No free air under the diaphragm.", ["air"]),
        ("Costophrenic angles are free.", ["free"]),
        ("Small pericardial effusion.", ["tail_abnorm_obs"]),
        ("Small left pleural effusion.", ["effusion"]),
        ("No acute air space disease.", ["disease"]),
        ("Infectious process in the right lower lobe.", ["pneumonia"]),
        ("Right PICC line terminates in the SVC.", ["picc"]),
        ("Aspiration pneumonia.", ["aspiration", "pneumonia"]),
        ("Elevated pulmonary venous pressure.", ["pressure"]),
        ("Hyper-expanded lungs.", ["hyperinflate"]),
        ("Subcutaneous emphysema along the chest wall.", ["air"]),
        ("Degenerative changes of the spine.", ["degenerative"]),
        ("ECG leads overlie the chest.", ["device"]),
        ("Pacemaker leads end in the right ventricle.", ["pacemaker", "lead"]),
        ("ET tube tip 4 cm above the carina.", ["tube", "tip"]),
    ],
)
def test_longest_match_picks_the_specific_entity(text, expected):
    assert _scan(text, ENTITY_BY_PHRASE) == expected


# --- positions -------------------------------------------------------------------------------------------------------


def test_every_position_has_a_prompt_in_position_order():
    assert list(POSITION_PROMPTS) == list(POSITIONS)
    for prompt in POSITION_PROMPTS.values():
        assert prompt.endswith(".") and len(SENTENCE_END.findall(prompt)) == 1
    assert len(set(POSITION_PROMPTS.values())) == len(POSITION_PROMPTS)
    assert POSITION_PROMPTS["left_lower_lung"] == "It is located at the left lower lung zone."
    assert POSITION_PROMPTS["unspecified"] == "Its location is not specified."
    assert POSITION_PROMPTS["other"] == "It is located at another anatomical site."


def test_every_landmark_has_anatomy_phrases():
    assert set(POSITION_SYNONYMS) <= set(POSITIONS)
    assert list(POSITION_SYNONYMS) == [name for name in POSITIONS if name in POSITION_SYNONYMS]  # table order
    for position in POSITIONS[:49]:
        assert POSITION_SYNONYMS.get(position), position
    assert not POSITION_SYNONYMS.get("unspecified")  # means "no anatomy named", so nothing can match it


def test_every_position_phrase_is_clean_and_has_exactly_one_owner():
    owners: dict[str, list[str]] = {}
    for position, phrases in POSITION_SYNONYMS.items():
        for phrase in phrases:
            assert phrase == phrase.lower() == phrase.strip() and phrase and "  " not in phrase, (position, phrase)
            owners.setdefault(phrase, []).append(position)
    assert not {phrase: names for phrase, names in owners.items() if len(names) > 1}
    assert len(POSITION_BY_PHRASE) == sum(len(phrases) for phrases in POSITION_SYNONYMS.values())


def test_entity_and_position_phrases_do_not_overlap():
    # An extractor scans both tables over the same sentence; one string must not mean both a finding and a place.
    assert not set(ENTITY_BY_PHRASE) & set(POSITION_BY_PHRASE)


@pytest.mark.parametrize(
    ("phrase", "position"),
    [
        ("left pleural", "left_pleural"),
        ("left pleural space", "left_pleural"),
        ("bases", "lung_bases"),
        ("bibasilar", "lung_bases"),
        ("bibasal", "lung_bases"),
        ("lung bases", "lung_bases"),
        ("both bases", "lung_bases"),
        ("left base", "left_lower_lung"),
        ("left basilar", "left_lower_lung"),
        ("left lower lung", "left_lower_lung"),
        ("left lung base", "left_lower_lung"),
        ("left lower lobe", "lower_left_lobe"),
        ("lll", "lower_left_lobe"),
        ("lingula", "upper_left_lobe"),
        ("retrocardiac", "retrocardiac"),
        ("heart size", "heart_size"),
        ("cardiac silhouette", "heart_size"),
        ("heart", "heart_size"),
        ("left heart border", "heart_border"),
        ("trachea", "trachea"),
        ("carina", "trachea"),
        ("svc", "svc"),
        ("superior vena cava", "svc"),
        ("cavoatrial junction", "cavoatrial_junction"),
        ("cavo-atrial junction", "cavoatrial_junction"),
        ("right atrium", "right_atrium"),
        ("mediastinum", "mediastinal"),
        ("mediastinal", "mediastinal"),
        ("cardiomediastinal", "mediastinal"),
        ("left apex", "left_apical_lung"),
        ("left apical", "left_apical_lung"),
        ("apices", "lung_apices"),
        ("biapical", "lung_apices"),
        ("left costophrenic angle", "left_costophrenic"),
        ("right costophrenic angle", "right_costophrenic"),
        ("costophrenic angles", "costophrenic_unspec"),
        ("perihilar", "hilar_unspec"),
        ("left perihilar", "left_hilar"),
        ("hila", "hilar_unspec"),
        # AGXNet-faithful choices that differ from a naive reading (see the comment above POSITION_SYNONYMS).
        ("left hemithorax", "left_lung_unspec"),
        ("lung volumes", "lung_volumes"),
        ("lower lobes", "lung_bases"),
        ("abdomen", "stomach"),
    ],
)
def test_anatomy_phrases(phrase, position):
    assert POSITION_BY_PHRASE[phrase] == position


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Opacity in the left lower lobe.", ["lower_left_lobe"]),
        ("The lungs are clear.", []),
        ("The left lung is clear.", ["left_lung_unspec"]),
        ("Opacity behind the heart.", ["retrocardiac"]),
        ("Blunting of the left costophrenic angle.", ["left_costophrenic"]),
        ("Subcutaneous air in the left chest wall.", ["other"]),
        ("Right IJ catheter tip at the cavoatrial junction.", ["other", "cavoatrial_junction"]),
        ("Left ventricular enlargement.", ["heart_size"]),
        ("Right middle lobe and right upper lobe opacities.", ["middle_right_lobe", "upper_right_lobe"]),
    ],
)
def test_longest_match_picks_the_specific_position(text, expected):
    assert _scan(text, POSITION_BY_PHRASE) == expected


# --- dependencies ----------------------------------------------------------------------------------------------------


def test_module_imports_only_the_standard_library_and_yaml():
    # Parsed rather than imported: medklip/__init__ may pull in torch for other modules, this file must not.
    tree = ast.parse(Path(vocabulary_module.__file__).read_text())
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    imported |= {
        node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported <= set(sys.stdlib_module_names) | {"__future__", "yaml"}, imported


# --- the knowledge file ----------------------------------------------------------------------------------------------

# The sha256 of every table. A change of the knowledge text or phrases is a change of the model's queries and of
# extraction: update this on purpose, and say why here.
# - 0d08e2ee...: the tables as they stood in Python literals before they moved to vocabulary.yaml (commit 835e033).
# - now: COPD is not emphysema (a clinical diagnosis, tail_abnorm_obs), granulomatous infection/disease/process is
#   not pneumonia, "borderline cardiomegaly" is two words again (borderline + cardiomegaly), plain "heart is large"
#   phrases are cardiomegaly, "upper limits normal" is borderline (measured on real reports:
#   benchmarks/extract_real.py).
VOCABULARY_SHA256 = "d3b2eadb339f76900f9a1bc316ebe48f3c30b07e1ddcdc84b3c5eb6c71de1092"
TABLES = (
    "ENTITIES", "POSITIONS", "DESCRIPTIONS", "SYNONYMS", "POSITION_PROMPTS", "POSITION_SYNONYMS", "ENTITY_BY_PHRASE",
    "POSITION_BY_PHRASE", "EXCLUDED_OBSERVATIONS", "UNSEEN_ENTITIES", "NORMAL_ENTITIES", "TAIL_ENTITY",
    "EXCLUDED_ENTITY", "UNSPECIFIED_POSITION", "OTHER_POSITION",
)  # fmt: skip


def vocabulary_sha256(module) -> str:
    return hashlib.sha256(json.dumps({name: getattr(module, name) for name in TABLES}).encode()).hexdigest()


def test_the_vocabulary_changes_only_on_purpose():
    assert vocabulary_sha256(vocabulary_module) == VOCABULARY_SHA256


def test_the_digest_sees_a_changed_phrase(monkeypatch):
    # Negative control: one phrase fewer changes the digest.
    changed = dict(SYNONYMS, effusion=SYNONYMS["effusion"][1:])
    monkeypatch.setattr(vocabulary_module, "SYNONYMS", changed)
    assert vocabulary_sha256(vocabulary_module) != VOCABULARY_SHA256


def broken_copy(tmp_path, edit) -> Path:
    path = tmp_path / "vocabulary.yaml"
    shutil.copy(vocabulary_module.KNOWLEDGE_FILE, path)
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["descriptions"].pop("pneumonia"), r"descriptions .*missing \['pneumonia'\]"),
        (lambda d: d["position_prompts"].update(spleen="It is in the spleen."), r"unknown \['spleen'\]"),
        (lambda d: d["synonyms"]["nodule"].append("pleural effusion"), "'pleural effusion' has two owners"),
        (lambda d: d["position_synonyms"]["trachea"].append("left lung"), "'left lung' has two owners"),
        (lambda d: d["synonyms"]["mass"].append("Mass"), "lower-case"),
        (lambda d: d["descriptions"].update(normal=" "), "descriptions without text: \\['normal'\\]"),
        (lambda d: d.pop("synonyms"), "expected the tables"),
        (lambda d: d.update(descriptions=dict(reversed(list(d["descriptions"].items())))), "in label order"),
    ],
)
def test_a_broken_knowledge_file_is_refused_naming_the_fault(tmp_path, edit, message):
    with pytest.raises(ValueError, match=message):
        vocabulary_module._load_knowledge(broken_copy(tmp_path, edit))


def test_the_shipped_knowledge_file_loads_into_the_tables():
    data = vocabulary_module._load_knowledge(vocabulary_module.KNOWLEDGE_FILE)
    assert data["descriptions"] == DESCRIPTIONS and list(data["synonyms"]) == list(SYNONYMS)
