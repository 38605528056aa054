"""MedKLIP's fixed vocabularies: the 75 observation entities, the 51 anatomical positions, and their text.

Everything here is plain data, with no torch or numpy, so every layer (data, labels, model, ...) can import it
cheaply. The label order is here, in Python; the knowledge text and phrases are in `vocabulary.yaml` beside it, loaded
and checked once at import:

- `ENTITIES` and `POSITIONS` copy MedKLIP's label order exactly (`adj_matrix.py:OBSERVATION_CLASS` and
  `LANDMARK_NAME`); index `i` of a label tensor means `ENTITIES[i]`. Never reorder them: a checkpoint's heads and its
  stored text embeddings follow this order.
- `DESCRIPTIONS` is the knowledge book: one short clinical description per entity, written for this project (MedKLIP's
  own `observation explanation.json` is Wikipedia-derived). A clinical BERT embeds them once as the entity queries.
- `POSITION_PROMPTS` are the sentences the same encoder embeds for the 51 positions (position-contrastive loss).
- `SYNONYMS` and `POSITION_SYNONYMS` are the surface phrases a rule-based report extractor maps to each entity and
  position. They fold in MedKLIP's manual lemma normalisation (e.g. "opacification" -> opacity, "pacer" -> pacemaker,
  "infectious process" -> pneumonia) and AGXNet's anatomy rules (`DICT_ANATOMICAL_LANDMARKS`).

Matching contract for extractors: lower-case the text and match phrases on word boundaries, leftmost-longest first.
Longer phrases deliberately contain shorter phrases owned by another entity or position ("enlarged cardiac
silhouette" is cardiomegaly, "enlarged" is enlarge; "left lower lobe" is lower_left_lobe, "left lung" is
left_lung_unspec), so a longest-match scan is what makes the more specific owner win. Every phrase has exactly one
owner within its table, and no phrase is in both tables.

Quick look:

    python -c "from medklip import vocabulary as v; print(len(v.ENTITIES), len(v.POSITIONS))"
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

ENTITIES: tuple[str, ...] = (
    # 0-7: NORM_OBS, statements of normality
    "normal",
    "clear",
    "sharp",
    "sharply",
    "unremarkable",
    "intact",
    "stable",
    "free",
    # 8-72: ABNORM_OBS, the lemmas covering the top 90% of abnormal mentions in MIMIC-CXR RadGraph
    "effusion",
    "opacity",
    "pneumothorax",
    "edema",
    "atelectasis",
    "tube",
    "consolidation",
    "process",
    "abnormality",
    "enlarge",
    "tip",
    "low",
    "pneumonia",
    "line",
    "congestion",
    "catheter",
    "cardiomegaly",
    "fracture",
    "air",
    "tortuous",
    "lead",
    "disease",
    "calcification",
    "prominence",
    "device",
    "engorgement",
    "picc",
    "clip",
    "elevation",
    "expand",
    "nodule",
    "wire",
    "fluid",
    "degenerative",
    "pacemaker",
    "thicken",
    "marking",
    "scar",
    "hyperinflate",
    "blunt",
    "loss",
    "widen",
    "collapse",
    "density",
    "emphysema",
    "aerate",
    "mass",
    "crowd",
    "infiltrate",
    "obscure",
    "deformity",
    "hernia",
    "drainage",
    "distention",
    "shift",
    "stent",
    "pressure",
    "lesion",
    "finding",
    "borderline",
    "hardware",
    "dilation",
    "chf",
    "redistribution",
    "aspiration",
    # 73-74: catch-all groups
    "tail_abnorm_obs",
    "excluded_obs",
)

TAIL_ENTITY = "tail_abnorm_obs"  # any abnormal observation lemma outside the 73 named ones
EXCLUDED_ENTITY = "excluded_obs"  # the EXCLUDED_OBSERVATIONS lemmas

NORMAL_ENTITIES: tuple[str, ...] = ENTITIES[:8]
# Entities that qualify a finding, a device or the study rather than name a finding: evaluation reports them but does
# not list them among the findings it could not score (a reader expects findings there, not "tip" or "low").
QUALIFIER_ENTITIES: tuple[str, ...] = (
    *NORMAL_ENTITIES, "tip", "low", "borderline", "finding", "process", "abnormality", "disease", "expand", "aerate",
    "crowd", "obscure", TAIL_ENTITY, EXCLUDED_ENTITY,
)  # fmt: skip

# adj_matrix.py:EXCLUDED_OBS. These lemmas describe change, size or context rather than a visual finding; MedKLIP
# folds them all into the single `excluded_obs` class. No SYNONYMS phrase is allowed to equal one of them.
EXCLUDED_OBSERVATIONS: tuple[str, ...] = (
    "none",
    "unchanged",
    "change",
    "great",
    "similar",
    "large",
    "small",
    "moderate",
    "mild",
    "median",
    "decrease",
    "bad",
    "more",
    "constant",
    "worsen",
    "new",
    "improve",
    "status",
    "position",
    "sternotomy",
    "cabg",
    "replacement",
    "postoperative",
    "assessment",
    "patient",
)

# model_MedKLIP.py:excluded_disease, for the "unseen diseases" ablation. The original list also names 'fibrosis',
# which is not one of the 75 (it falls into tail_abnorm_obs), so only these 7 are actually held out.
UNSEEN_ENTITIES: tuple[str, ...] = ("pneumonia", "infiltrate", "mass", "nodule", "emphysema", "thicken", "hernia")

POSITIONS: tuple[str, ...] = (
    "trachea",
    "left_hilar",
    "right_hilar",
    "hilar_unspec",
    "left_pleural",
    "right_pleural",
    "pleural_unspec",
    "heart_size",
    "heart_border",
    "left_diaphragm",
    "right_diaphragm",
    "diaphragm_unspec",
    "retrocardiac",
    "lower_left_lobe",
    "upper_left_lobe",
    "lower_right_lobe",
    "middle_right_lobe",
    "upper_right_lobe",
    "left_lower_lung",
    "left_mid_lung",
    "left_upper_lung",
    "left_apical_lung",
    "left_lung_unspec",
    "right_lower_lung",
    "right_mid_lung",
    "right_upper_lung",
    "right_apical_lung",
    "right_lung_unspec",
    "lung_apices",
    "lung_bases",
    "left_costophrenic",
    "right_costophrenic",
    "costophrenic_unspec",
    "cardiophrenic_sulcus",
    "mediastinal",
    "spine",
    "clavicle",
    "rib",
    "stomach",
    "right_atrium",
    "right_ventricle",
    "aorta",
    "svc",
    "interstitium",
    "parenchymal",
    "cavoatrial_junction",
    "cardiopulmonary",
    "pulmonary",
    "lung_volumes",
    # The observation's sentence named no anatomy.
    "unspecified",
    # The sentence named an anatomy that no rule maps to a landmark.
    "other",
)

UNSPECIFIED_POSITION = "unspecified"
OTHER_POSITION = "other"

# The knowledge text lives beside this file, in vocabulary.yaml: one description and one position prompt per name,
# and the surface phrases (see the comments there for the rules behind them). Loaded once, and checked, at import.
KNOWLEDGE_FILE = Path(__file__).with_name("vocabulary.yaml")


def _load_knowledge(path: Path) -> dict:
    """The four tables of `path`, checked against `ENTITIES` and `POSITIONS` (ValueError naming what is wrong)."""
    with open(path, encoding="utf-8") as handle:
        data = yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    expected = {
        "descriptions": ENTITIES,
        "synonyms": ENTITIES,
        "position_prompts": POSITIONS,
        "position_synonyms": POSITIONS,
    }
    if not isinstance(data, dict) or set(data) != set(expected):
        raise ValueError(f"{path}: expected the tables {sorted(expected)}, found {sorted(data or {})}")
    for table, names in expected.items():
        keys = list(data[table] or {})
        complete = table in ("descriptions", "position_prompts")  # a phrase table may leave a name without phrases
        if keys != [name for name in names if name in keys] or (complete and keys != list(names)):
            missing, extra = set(names) - set(keys), set(keys) - set(names)
            raise ValueError(
                f"{path}: {table} must list names once each, in label order"
                f"{', every one' if complete else ''} (missing {sorted(missing)}, unknown {sorted(extra)})"
            )
    for table in ("descriptions", "position_prompts"):
        empty = [name for name, text in data[table].items() if not isinstance(text, str) or not text.strip()]
        if empty:
            raise ValueError(f"{path}: {table} without text: {empty}")
    owners: dict[str, str] = {}
    for table in ("synonyms", "position_synonyms"):
        for name, phrases in data[table].items():
            for phrase in phrases or ():
                if not isinstance(phrase, str) or phrase != phrase.lower().strip() or not phrase:
                    raise ValueError(f"{path}: {table}.{name}: phrases are lower-case words, got {phrase!r}")
                if phrase in owners:
                    raise ValueError(f"{path}: the phrase {phrase!r} has two owners ({owners[phrase]}, {table}.{name})")
                owners[phrase] = f"{table}.{name}"
    return data


_KNOWLEDGE = _load_knowledge(KNOWLEDGE_FILE)
DESCRIPTIONS: dict[str, str] = dict(_KNOWLEDGE["descriptions"])  # the knowledge book, one per entity
POSITION_PROMPTS: dict[str, str] = dict(_KNOWLEDGE["position_prompts"])
SYNONYMS: dict[str, tuple[str, ...]] = {name: tuple(phrases or ()) for name, phrases in _KNOWLEDGE["synonyms"].items()}
POSITION_SYNONYMS: dict[str, tuple[str, ...]] = {
    name: tuple(phrases or ()) for name, phrases in _KNOWLEDGE["position_synonyms"].items()
}

# The phrase tables' digest: part of each extractor's cache key, so an edited phrase never leaves stale triplets.
PHRASES_SHA256 = hashlib.sha256(json.dumps([SYNONYMS, POSITION_SYNONYMS]).encode()).hexdigest()

# Reverse lookups for extractors. Building them here, rather than in each caller, keeps one definition of ownership.
ENTITY_BY_PHRASE: dict[str, str] = {phrase: entity for entity, phrases in SYNONYMS.items() for phrase in phrases}
POSITION_BY_PHRASE: dict[str, str] = {
    phrase: position for position, phrases in POSITION_SYNONYMS.items() for phrase in phrases
}


def entity_index(name: str) -> int:
    """Index of an entity in `ENTITIES`, i.e. its column in label tensors.

    Args:
        name: Entity name exactly as in `ENTITIES`, e.g. "pneumonia".

    Returns:
        The 0-based index (pneumonia is 20).

    Raises:
        ValueError: If `name` is not one of the 75 entities; the message lists the valid names.
    """
    try:
        return ENTITIES.index(name)
    except ValueError:
        raise ValueError(f"unknown entity {name!r}; expected one of: {', '.join(ENTITIES)}") from None


def position_index(name: str) -> int:
    """Index of an anatomical position in `POSITIONS`, i.e. its row in the [51, 75] label matrix.

    Args:
        name: Position name exactly as in `POSITIONS`, e.g. "left_lower_lung".

    Returns:
        The 0-based index (unspecified is 49, other is 50).

    Raises:
        ValueError: If `name` is not one of the 51 positions; the message lists the valid names.
    """
    try:
        return POSITIONS.index(name)
    except ValueError:
        raise ValueError(f"unknown position {name!r}; expected one of: {', '.join(POSITIONS)}") from None


def seen_entities(exclude_unseen: bool) -> tuple[str, ...]:
    """Entities that take part in training, in `ENTITIES` order.

    MedKLIP's zero-shot ablation (`exclude_class: True`) drops `UNSEEN_ENTITIES` from both losses so they can be
    evaluated as never-seen diseases; its default trains on all 75.

    Args:
        exclude_unseen: If True, leave out the 7 `UNSEEN_ENTITIES` (68 remain); if False, return all 75.

    Returns:
        The entity names to train on.
    """
    if not exclude_unseen:
        return ENTITIES
    return tuple(entity for entity in ENTITIES if entity not in UNSEEN_ENTITIES)


def seen_entity_indices(exclude_unseen: bool) -> tuple[int, ...]:
    """Column indices of `seen_entities(exclude_unseen)`, MedKLIP's `keep_class_dim`.

    Args:
        exclude_unseen: As in `seen_entities`.

    Returns:
        Sorted indices into `ENTITIES` (68 of them when excluding, 75 otherwise).
    """
    return tuple(entity_index(entity) for entity in seen_entities(exclude_unseen))
