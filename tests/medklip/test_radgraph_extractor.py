"""RadGraph backend: graph -> triplet conversion, the real `radgraph` package on a tiny offline model, missing model.

The conversion tests use hand-written graphs in the package's output format, in both label sets (RadGraph 1.0
`OBS-DP`... and RadGraph-XL `Observation::definitely present`...), and under both label schemes (`ours`, the
default, and `official`, MedKLIP's own preprocessing: docs/extraction.md). The model tests build a random-weight
DyGIE model with a 2-layer BERT (tests/radgraph_tiny.py) and load it through `radgraph.RadGraph`, so every step of
the package runs for real; its graphs are arbitrary, so they are checked for form and against the package's own
`forward`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

import medklip.labels.radgraph_extractor as module
from medklip.cli import main
from medklip.labels.extract import extract_table, is_extracted, read_summary
from medklip.labels.radgraph_extractor import (
    LABEL_SCHEMES,
    RadGraphExtractor,
    RadGraphModelNotFoundError,
    annotations_to_triplets,
    observation_entity,
    official_entity,
)
from medklip.labels.triplets import Triplet, existence_vector, validate
from medklip.vocabulary import ENTITY_BY_PHRASE

XL = {
    "OBS-DP": "Observation::definitely present",
    "OBS-DA": "Observation::definitely absent",
    "OBS-U": "Observation::uncertain",
    "ANAT-DP": "Anatomy::definitely present",
}


def graph(text: str, *entities: tuple, scheme: str = "v1") -> dict:
    """A RadGraph annotation: entities are (words, label, start_ix, relations) with ids "1", "2", ... in order.

    `words` must equal the tokens of `text` from start_ix (checked), like the package's output.
    """
    tokens = text.split()
    out = {}
    for number, (words, label, start, relations) in enumerate(entities, start=1):
        end = start + len(words.split()) - 1
        assert " ".join(tokens[start : end + 1]) == words, (words, tokens[start : end + 1])
        out[str(number)] = {
            "tokens": words,
            "label": XL[label] if scheme == "xl" else label,
            "start_ix": start,
            "end_ix": end,
            "relations": [list(relation) for relation in relations],
        }
    return {"text": text, "entities": out, "data_source": None, "data_split": "inference"}


def triples(annotation: dict, scheme: str = "ours") -> list[tuple[str, str, int]]:
    return [(t.entity, t.position, t.existence) for t in annotations_to_triplets(annotation, scheme)]


# --- conversion ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", ["v1", "xl"])
def test_small_left_pleural_effusion(scheme):
    annotation = graph(
        "Small left pleural effusion .",
        ("Small", "OBS-DP", 0, [("modify", "4")]),
        ("left", "ANAT-DP", 1, [("modify", "3")]),
        ("pleural", "ANAT-DP", 2, []),
        ("effusion", "OBS-DP", 3, [("located_at", "3")]),
        scheme=scheme,
    )
    triplets = annotations_to_triplets(annotation)
    assert triplets == [Triplet("effusion", "left_pleural", 1, "Small left pleural effusion.")]


@pytest.mark.parametrize("scheme", ["v1", "xl"])
def test_negated_and_uncertain(scheme):
    assert triples(graph("No pneumothorax .", ("pneumothorax", "OBS-DA", 1, []), scheme=scheme)) == [
        ("pneumothorax", "unspecified", 0)
    ]
    assert triples(graph("Possible pneumonia .", ("pneumonia", "OBS-U", 1, []), scheme=scheme)) == [
        ("pneumonia", "unspecified", -1)
    ]


@pytest.mark.parametrize("scheme", ["v1", "xl"])
@pytest.mark.parametrize("target", ["3", "1"])  # located at the head "lobe", or at its modifier "Right"
def test_multi_token_anatomy_via_modify(scheme, target):
    annotation = graph(
        "Right lower lobe opacity .",
        ("Right", "ANAT-DP", 0, [("modify", "3")]),
        ("lower", "ANAT-DP", 1, [("modify", "3")]),
        ("lobe", "ANAT-DP", 2, []),
        ("opacity", "OBS-DP", 3, [("located_at", target)]),
        scheme=scheme,
    )
    assert triples(annotation) == [("opacity", "lower_right_lobe", 1)]


def test_anatomy_modifier_chain():
    annotation = graph(
        "Opacity in the left lower lobe .",
        ("Opacity", "OBS-DP", 0, [("located_at", "4")]),
        ("left", "ANAT-DP", 3, [("modify", "3")]),
        ("lower", "ANAT-DP", 4, [("modify", "4")]),
        ("lobe", "ANAT-DP", 5, []),
    )
    assert triples(annotation) == [("opacity", "lower_left_lobe", 1)]


@pytest.mark.parametrize("scheme", ["v1", "xl"])
def test_out_of_vocabulary_and_excluded(scheme):
    assert "cyst" not in ENTITY_BY_PHRASE
    assert triples(graph("Small cyst .", ("Small", "OBS-DP", 0, [("modify", "2")]), ("cyst", "OBS-DP", 1, []))) == [
        ("tail_abnorm_obs", "unspecified", 1)
    ]
    assert triples(graph("Otherwise unchanged .", ("unchanged", "OBS-DP", 1, []), scheme=scheme)) == [
        ("excluded_obs", "unspecified", 1)
    ]
    assert triples(graph("Status post sternotomy .", ("sternotomy", "OBS-DP", 2, []), scheme=scheme)) == [
        ("excluded_obs", "unspecified", 1)
    ]


@pytest.mark.parametrize("scheme", ["v1", "xl"])
def test_bilateral(scheme):
    effusions = graph(
        "Bilateral pleural effusions .",
        ("Bilateral", "ANAT-DP", 0, [("modify", "2")]),
        ("pleural", "ANAT-DP", 1, []),
        ("effusions", "OBS-DP", 2, [("located_at", "2")]),
        scheme=scheme,
    )
    assert triples(effusions) == [("effusion", "left_pleural", 1), ("effusion", "right_pleural", 1)]
    opacities = graph(
        "Bilateral opacities .",
        ("Bilateral", "ANAT-DP", 0, []),
        ("opacities", "OBS-DP", 1, [("located_at", "1")]),
        scheme=scheme,
    )
    assert triples(opacities) == [("opacity", "left_lung_unspec", 1), ("opacity", "right_lung_unspec", 1)]
    bases = graph(
        "Bibasilar atelectasis .", ("Bibasilar", "ANAT-DP", 0, []), ("atelectasis", "OBS-DP", 1, [("located_at", "1")])
    )
    assert triples(bases) == [("atelectasis", "lung_bases", 1)]


@pytest.mark.parametrize("scheme", ["v1", "xl"])
def test_cardiomegaly_and_heart_size(scheme):
    annotation = graph(
        "Moderate cardiomegaly .",
        ("Moderate", "OBS-DP", 0, [("modify", "2")]),
        ("cardiomegaly", "OBS-DP", 1, []),
        scheme=scheme,
    )
    assert triples(annotation) == [("cardiomegaly", "heart_size", 1)]
    normal = graph(
        "Heart size is normal .",
        ("Heart", "ANAT-DP", 0, []),
        ("size", "ANAT-DP", 1, [("modify", "1")]),
        ("normal", "OBS-DP", 3, [("located_at", "1")]),
        scheme=scheme,
    )
    assert triples(normal) == [("normal", "heart_size", 1), ("cardiomegaly", "heart_size", 0)]
    enlarged = graph(
        "The heart is not enlarged .", ("heart", "ANAT-DP", 1, []), ("enlarged", "OBS-DA", 4, [("located_at", "1")])
    )
    assert triples(enlarged) == [("cardiomegaly", "heart_size", 0), ("normal", "heart_size", 1)]


def test_two_sentences_and_sentence_text():
    annotation = graph(
        "Small right pleural effusion . No pneumothorax .",
        ("Small", "OBS-DP", 0, [("modify", "4")]),
        ("right", "ANAT-DP", 1, [("modify", "3")]),
        ("pleural", "ANAT-DP", 2, []),
        ("effusion", "OBS-DP", 3, [("located_at", "3")]),
        ("pneumothorax", "OBS-DA", 6, []),
    )
    assert annotations_to_triplets(annotation) == [
        Triplet("effusion", "right_pleural", 1, "Small right pleural effusion."),
        Triplet("pneumothorax", "unspecified", 0, "No pneumothorax."),
    ]


def test_normal_statements_and_other_anatomy():
    clear = graph("Lungs are clear .", ("Lungs", "ANAT-DP", 0, []), ("clear", "OBS-DP", 2, [("located_at", "1")]))
    assert triples(clear) == [
        ("clear", "unspecified", 1),
        ("consolidation", "unspecified", 0),
        ("opacity", "unspecified", 0),
    ]
    other = graph(
        "Opacity projecting over the epigastric region .",
        ("Opacity", "OBS-DP", 0, [("located_at", "2")]),
        ("epigastric", "ANAT-DP", 4, []),
    )
    assert triples(other) == [("opacity", "other", 1)]
    left_base = graph(
        "Left base atelectasis .",
        ("Left", "ANAT-DP", 0, [("modify", "2")]),
        ("base", "ANAT-DP", 1, []),
        ("atelectasis", "OBS-DP", 2, [("located_at", "2")]),
    )
    assert triples(left_base) == [("atelectasis", "left_lower_lung", 1)]


def test_suggestive_of_measurements_and_malformed_input():
    annotation = graph(
        "4 cm opacity , likely pneumonia . ET tube tip 4 cm above the carina .",
        ("4 cm", "OBS-DP", 0, [("modify", "2")]),
        ("opacity", "OBS-DP", 2, [("suggestive_of", "3"), ("located_at", "99")]),  # 99: no such entity
        ("pneumonia", "OBS-U", 5, []),
        ("ET tube", "OBS-DP", 7, [("located_at", "6")]),
        ("tip", "OBS-DP", 9, [("located_at", "6")]),
        ("carina", "ANAT-DP", 14, []),
        ("above", "Something::else", 12, []),  # unknown label: ignored
        ("4", "Observation::measurement::definitely present", 10, []),  # measurement: not a finding
    )
    assert triples(annotation) == [
        ("opacity", "unspecified", 1),
        ("pneumonia", "unspecified", -1),
        ("tube", "trachea", 1),
        ("tip", "trachea", 1),
    ]
    assert annotations_to_triplets({"text": "", "entities": {}}) == []
    assert annotations_to_triplets({}) == []


def test_duplicates_are_removed_and_all_valid():
    annotation = graph(
        "Effusion . Effusion .",
        ("Effusion", "OBS-DP", 0, []),
        ("Effusion", "OBS-DP", 2, []),
    )
    triplets = annotations_to_triplets(annotation)
    assert [(t.entity, t.position, t.existence) for t in triplets] == [("effusion", "unspecified", 1)]
    assert all(validate(t) for t in triplets)


@pytest.mark.parametrize(
    ("words", "entity"),
    [
        ("pleural effusions", "effusion"),
        ("opacities", "opacity"),
        ("air - space opacity", "opacity"),
        ("masses", "mass"),
        ("enlarged cardiac silhouette", "cardiomegaly"),
        ("worsened", "excluded_obs"),
        ("new", "excluded_obs"),
        ("frobnication", "tail_abnorm_obs"),
    ],
)
def test_observation_entity(words, entity):
    assert observation_entity(words) == entity


# --- label schemes: ours vs MedKLIP's official preprocessing (docs/extraction.md, RadGraph label schemes) ---------
# (name, annotation, triplets under `ours`, triplets under `official`): one case per difference, both outputs exact.
SCHEME_CASES = [
    (
        "suggestive_of",
        graph(
            "Opacity , likely pneumonia . Retrocardiac opacity suggesting atelectasis .",
            ("Opacity", "OBS-DP", 0, [("suggestive_of", "2")]),  # no located_at: official drops it
            ("pneumonia", "OBS-U", 3, []),
            ("Retrocardiac", "ANAT-DP", 5, []),
            ("opacity", "OBS-DP", 6, [("located_at", "3"), ("suggestive_of", "5")]),  # located: kept by both
            ("atelectasis", "OBS-U", 8, []),
        ),
        [
            ("opacity", "unspecified", 1),
            ("pneumonia", "unspecified", -1),
            ("opacity", "retrocardiac", 1),
            ("atelectasis", "unspecified", -1),
        ],
        [("opacity", "retrocardiac", 1)],
    ),
    (
        "enlarge_at_heart",
        graph(
            "The heart is enlarged . The heart is not enlarged .",
            ("heart", "ANAT-DP", 1, []),
            ("enlarged", "OBS-DP", 3, [("located_at", "1")]),
            ("heart", "ANAT-DP", 6, []),
            ("enlarged", "OBS-DA", 9, [("located_at", "3")]),
        ),
        [("cardiomegaly", "heart_size", 1), ("cardiomegaly", "heart_size", 0), ("normal", "heart_size", 1)],
        [("enlarge", "heart_size", 1), ("enlarge", "heart_size", 0)],
    ),
    (
        "cardiomegaly_not_located",
        graph(
            "Moderate cardiomegaly .", ("Moderate", "OBS-DP", 0, [("modify", "2")]), ("cardiomegaly", "OBS-DP", 1, [])
        ),
        [("cardiomegaly", "heart_size", 1)],
        [("cardiomegaly", "unspecified", 1)],
    ),
    (
        "modify_chain",
        graph(
            "Opacity in the left lower lobe . Nodule in the right upper lobe . Effusion at the left lung base .",
            ("Opacity", "OBS-DP", 0, [("located_at", "4")]),
            ("left", "ANAT-DP", 3, [("modify", "3")]),  # left -> lower -> lobe: a chain, two steps from the head
            ("lower", "ANAT-DP", 4, [("modify", "4")]),
            ("lobe", "ANAT-DP", 5, []),
            ("Nodule", "OBS-DP", 7, [("located_at", "8")]),
            ("right", "ANAT-DP", 10, [("modify", "8")]),  # right -> lobe, upper -> lobe: one step, both agree
            ("upper", "ANAT-DP", 11, [("modify", "8")]),
            ("lobe", "ANAT-DP", 12, []),
            ("Effusion", "OBS-DP", 14, [("located_at", "10")]),  # at the chain's far end "left": official drops it
            ("left", "ANAT-DP", 17, [("modify", "11")]),  # left -> lung -> base
            ("lung", "ANAT-DP", 18, [("modify", "12")]),
            ("base", "ANAT-DP", 19, []),
        ),
        [("opacity", "lower_left_lobe", 1), ("nodule", "upper_right_lobe", 1), ("effusion", "left_lower_lung", 1)],
        [("opacity", "lung_bases", 1), ("nodule", "upper_right_lobe", 1)],
    ),
    (
        "modify_only",
        graph(
            "Small left pleural effusion . Hyperinflated lungs . Worsening left basilar opacity .",
            ("Small", "OBS-DP", 0, [("modify", "4")]),  # modifies an observation, nothing else: both drop it
            ("left", "ANAT-DP", 1, [("modify", "3")]),
            ("pleural", "ANAT-DP", 2, []),
            ("effusion", "OBS-DP", 3, [("located_at", "3")]),
            ("Hyperinflated", "OBS-DP", 5, [("modify", "6")]),  # only modify, to an anatomy: ours keeps it
            ("lungs", "ANAT-DP", 6, []),
            ("Worsening", "OBS-DP", 8, [("modify", "10"), ("located_at", "9")]),  # modifier and located: official keeps
            ("left", "ANAT-DP", 9, [("modify", "9")]),
            ("basilar", "ANAT-DP", 10, []),
            ("opacity", "OBS-DP", 11, [("located_at", "9")]),
        ),
        [("effusion", "left_pleural", 1), ("hyperinflate", "unspecified", 1), ("opacity", "left_lower_lung", 1)],
        [("effusion", "left_pleural", 1), ("excluded_obs", "left_lower_lung", 1), ("opacity", "left_lower_lung", 1)],
    ),
    (
        "uncertain",
        graph(
            "Possible left lower lobe pneumonia .",
            ("left", "ANAT-DP", 1, [("modify", "3")]),
            ("lower", "ANAT-DP", 2, [("modify", "3")]),
            ("lobe", "ANAT-DP", 3, []),
            ("pneumonia", "OBS-U", 4, [("located_at", "3")]),
        ),
        [("pneumonia", "lower_left_lobe", -1)],
        [],
    ),
    (
        "absent",
        graph(
            "No pneumothorax . No left pleural effusion . No bilateral pleural effusions .",
            ("pneumothorax", "OBS-DA", 1, []),
            ("left", "ANAT-DP", 4, [("modify", "3")]),
            ("pleural", "ANAT-DP", 5, []),
            ("effusion", "OBS-DA", 6, [("located_at", "3")]),
            ("bilateral", "ANAT-DP", 9, [("modify", "6")]),
            ("pleural", "ANAT-DP", 10, []),
            ("effusions", "OBS-DA", 11, [("located_at", "6")]),
        ),
        [
            ("pneumothorax", "unspecified", 0),
            ("effusion", "left_pleural", 0),
            ("effusion", "left_pleural", 0),  # the third sentence's: another sentence, so another triplet
            ("effusion", "right_pleural", 0),
        ],
        [("pneumothorax", "unspecified", 0), ("effusion", "left_pleural", 0), ("effusion", "pleural_unspec", 0)],
    ),
    (
        "normal_statements",
        graph(
            "Heart size is normal . Lungs are clear .",
            ("Heart", "ANAT-DP", 0, []),
            ("size", "ANAT-DP", 1, [("modify", "1")]),
            ("normal", "OBS-DP", 3, [("located_at", "1")]),
            ("Lungs", "ANAT-DP", 5, []),
            ("clear", "OBS-DP", 7, [("located_at", "4")]),
        ),
        [
            ("normal", "heart_size", 1),
            ("cardiomegaly", "heart_size", 0),
            ("clear", "unspecified", 1),
            ("consolidation", "unspecified", 0),
            ("opacity", "unspecified", 0),
        ],
        [("normal", "heart_size", 1), ("clear", "other", 1)],
    ),
    (
        "bare_side",
        graph(
            "Bilateral opacities .", ("Bilateral", "ANAT-DP", 0, []), ("opacities", "OBS-DP", 1, [("located_at", "1")])
        ),
        [("opacity", "left_lung_unspec", 1), ("opacity", "right_lung_unspec", 1)],
        [("opacity", "other", 1)],
    ),
    (
        "multi_word_observation",
        graph(
            "Small pleural effusion . Enlarged cardiac silhouette . Opacification . Infectious process .",
            ("Small pleural effusion", "OBS-DP", 0, []),  # RadGraph-XL often keeps such phrases whole
            ("Enlarged cardiac silhouette", "OBS-DP", 4, []),
            ("Opacification", "OBS-DP", 8, []),
            ("Infectious process", "OBS-DP", 10, []),
            scheme="xl",
        ),
        [
            ("effusion", "unspecified", 1),
            ("cardiomegaly", "heart_size", 1),
            ("opacity", "unspecified", 1),
            ("pneumonia", "unspecified", 1),
        ],
        [
            ("tail_abnorm_obs", "unspecified", 1),
            ("tail_abnorm_obs", "unspecified", 1),
            ("opacity", "unspecified", 1),
            ("pneumonia", "unspecified", 1),
        ],
    ),
    (
        "relation_across_sentences",
        graph(
            "Opacity is seen . It is in the left lung .",
            ("Opacity", "OBS-DP", 0, [("located_at", "3")]),  # the package reads a report as one "sentence"
            ("left", "ANAT-DP", 8, [("modify", "3")]),
            ("lung", "ANAT-DP", 9, []),
        ),
        [("opacity", "left_lung_unspec", 1)],
        [],
    ),
]
CASE_IDS = [case[0] for case in SCHEME_CASES]


def rows(table: pd.DataFrame) -> list[tuple[str, str, int]]:
    return list(zip(table["entity"], table["position"], table["existence"], strict=True))


def check_case(annotation: dict, ours: list, official: list) -> None:
    assert triples(annotation, "ours") == ours
    assert triples(annotation, "official") == official


@pytest.mark.parametrize(("name", "annotation", "ours", "official"), SCHEME_CASES, ids=CASE_IDS)
def test_label_schemes(name, annotation, ours, official):
    check_case(annotation, ours, official)
    assert triples(annotation) == ours  # ours is the default
    assert all(validate(t) for scheme in LABEL_SCHEMES for t in annotations_to_triplets(annotation, scheme))


@pytest.mark.parametrize("swap", ["identical", "swapped"])
def test_negative_control_cases_fail_if_the_schemes_were_identical_or_swapped(monkeypatch, swap):
    """Each case tells the schemes apart: with official = ours, or the two exchanged, every case's check fails."""
    ours, official = module.ours_triplets, module.official_triplets
    monkeypatch.setattr(module, "official_triplets", ours)
    if swap == "swapped":
        monkeypatch.setattr(module, "ours_triplets", official)
    for name, annotation, expected_ours, expected_official in SCHEME_CASES:
        assert expected_ours != expected_official, name
        with pytest.raises(AssertionError):
            check_case(annotation, expected_ours, expected_official)


def test_uncertain_gives_the_same_labels_in_both_schemes():
    """Official drops OBS-U, ours keeps it as -1: the existence labels (-1, masked) are the same."""
    (_, annotation, _, _) = SCHEME_CASES[CASE_IDS.index("uncertain")]
    ours, official = (existence_vector(annotations_to_triplets(annotation, scheme)) for scheme in LABEL_SCHEMES)
    assert (ours == official).all() and (ours == -1).all()


@pytest.mark.parametrize(
    ("words", "entity"),
    [
        ("enlarged", "enlarge"),
        ("increased", "enlarge"),  # the manual table: increase -> enlarge
        ("opacities", "opacity"),
        ("calcified", "calcification"),
        ("masses", "mass"),
        ("nodular", "nodule"),
        ("worse", "excluded_obs"),  # spaCy's lemma "bad" is an excluded lemma
        ("worsening", "excluded_obs"),
        ("infection", "pneumonia"),
        ("cannot be assessed", "tail_abnorm_obs"),  # -> "difficult to assess", not one of the 75
        ("pleural effusions", "tail_abnorm_obs"),  # a whole phrase, not in the table
        ("fibrotic", "tail_abnorm_obs"),  # -> fibrosis, not one of the 75
    ],
)
def test_official_entity(words, entity):
    assert official_entity(words) == entity


def test_unknown_label_scheme(tmp_path):
    with pytest.raises(ValueError, match="label scheme"):
        annotations_to_triplets({}, "paper")
    with pytest.raises(ValueError, match="label scheme"):
        RadGraphExtractor(model_dir=tmp_path, label_scheme="paper")


def fake_model_dir(root: Path) -> Path:
    """A model folder that passes the checks (the weights are only hashed); `annotate` must be replaced to run."""
    folder = root / "modern-radgraph-xl"
    (folder / "vocabulary").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "weights.th").write_bytes(b"weights")
    return root


def test_cache_never_answers_one_scheme_with_the_other(tmp_path, monkeypatch):
    (_, annotation, ours, official) = SCHEME_CASES[CASE_IDS.index("suggestive_of")]
    monkeypatch.setattr(RadGraphExtractor, "annotate", lambda self, texts: [annotation for _ in texts])
    model_dir = fake_model_dir(tmp_path / "models")
    extractors = {scheme: RadGraphExtractor(model_dir=model_dir, label_scheme=scheme) for scheme in LABEL_SCHEMES}
    assert extractors["ours"].version.endswith("-ours") and extractors["official"].version.endswith("-official")
    reports = pd.DataFrame(
        {"id": ["a", "b"], "findings": ["Opacity, likely pneumonia.", "Other text."], "impression": ""}
    )
    cache = tmp_path / "cache"
    first, summary = extract_table(reports, extractors["ours"], cache=cache)
    assert summary.cache_hits == 0 and rows(first) == ours * 2
    second, summary = extract_table(reports, extractors["official"], cache=cache)
    assert summary.cache_hits == 0 and summary.extracted == 2  # not served from ours' cache
    assert rows(second) == official * 2
    again, summary = extract_table(reports, extractors["ours"], cache=cache)
    assert summary.cache_hits == 2 and again.equals(first)
    assert sorted(path.name for path in (cache / "radgraph").iterdir()) == sorted(
        e.version for e in extractors.values()
    )


def test_cli_label_scheme(tmp_path, monkeypatch, capsys):
    (_, annotation, _, official) = SCHEME_CASES[CASE_IDS.index("enlarge_at_heart")]
    reports = tmp_path / "reports.csv"
    reports.write_text("id,findings,impression\nr1,The heart is enlarged. The heart is not enlarged.,\n")
    out = tmp_path / "official.parquet"
    args = ["extract", "--reports", str(reports), "--out", str(out), "--label-scheme", "official"]
    assert main(args) == 2  # the default extractor is rules: refused, one line, nothing written
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "--label-scheme official needs --extractor radgraph" in error and not out.exists()

    monkeypatch.setattr(RadGraphExtractor, "annotate", lambda self, texts: [annotation for _ in texts])
    model_dir = str(fake_model_dir(tmp_path / "models"))
    assert main([*args, "--extractor", "radgraph", "--radgraph-dir", model_dir]) == 0
    table = pd.read_parquet(out)
    assert rows(table) == official
    assert read_summary(out)["extractor"].endswith("-official")
    assert is_extracted(reports, out, "radgraph", model_dir, label_scheme="official")
    assert not is_extracted(reports, out, "radgraph", model_dir)  # ours would give other triplets: extract again


# --- the real package on a tiny model -----------------------------------------------------------------------------
REPORTS = [
    "Small left pleural effusion. No pneumothorax.",
    "Heart size is normal.",
    "Right lower lobe opacity may represent pneumonia or atelectasis. ET tube tip 4 cm above the carina.",
    "Normal",
    "Lungs are clear. No acute cardiopulmonary process. Mild bibasilar atelectasis, unchanged since the prior study. "
    "Stable cardiomegaly with mild pulmonary vascular congestion.",
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    pytest.importorskip("radgraph")
    from tests.radgraph_tiny import build_tiny_radgraph

    return build_tiny_radgraph(tmp_path_factory.mktemp("radgraph"))


@pytest.fixture(scope="module")
def extractor(tiny_dir) -> RadGraphExtractor:
    return RadGraphExtractor(model_dir=tiny_dir, batch_size=2, device="cpu")


def _check_graph(annotation: dict) -> None:
    words = annotation["text"].split()
    for key, entity in annotation["entities"].items():
        assert 0 <= entity["start_ix"] <= entity["end_ix"] < len(words)
        assert entity["tokens"] == " ".join(words[entity["start_ix"] : entity["end_ix"] + 1])
        assert entity["label"].split("::")[0] in ("Observation", "Anatomy")
        for name, target in entity["relations"]:
            assert name in ("modify", "located_at", "suggestive_of") and target in annotation["entities"], key


@pytest.mark.slow
def test_extract_returns_valid_triplets(extractor):
    texts = [REPORTS[0], "", "   \n ", *REPORTS[1:]]
    results = extractor.extract(texts)
    assert len(results) == len(texts)
    assert results[1] == [] and results[2] == []
    for triplets in results:
        assert isinstance(triplets, list)
        for triplet in triplets:
            assert isinstance(triplet, Triplet) and validate(triplet)
            assert triplet.sentence
    assert extractor.extract([]) == []


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Document .* single token:UserWarning")  # RadGraph.forward on "Normal"
def test_batched_graphs_equal_package_forward(extractor):
    batched = extractor.annotate(REPORTS)  # 5 reports of mixed length in batches of 2: padding differs per batch
    reference = extractor.forward(REPORTS)  # radgraph's own RadGraph.forward, one report per pass
    assert [graph["text"] for graph in batched] == [reference[str(i)]["text"] for i in range(len(REPORTS))]
    assert sum(len(graph["entities"]) for graph in batched) > 0  # random weights still predict entities
    for i, graph in enumerate(batched):
        _check_graph(graph)
        assert graph == reference[str(i)], f"report {i} differs"


@pytest.mark.slow
def test_empty_texts_do_not_load_the_model(tiny_dir):
    fresh = RadGraphExtractor(model_dir=tiny_dir, device="cpu")
    assert fresh.extract(["", "  ", "\n"]) == [[], [], []]
    assert fresh._radgraph is None


@pytest.mark.slow
def test_long_reports_are_cut_at_sentence_ends(extractor, monkeypatch):
    monkeypatch.setattr(module, "MAX_UNIT_TOKENS", 12)
    text = " ".join(REPORTS)
    (graph,) = extractor.annotate([text])
    _check_graph(graph)
    words = graph["text"].split()
    assert words == extractor.forward([text])["0"]["text"].split()  # all tokens, in order
    pieces = module._cut(words)
    assert len(pieces) > 3 and all(len(piece) <= 12 for piece in pieces) and sum(pieces, []) == words
    assert all(piece[-1] == "." for piece in pieces[:-1] if len(piece) < 12)  # cut at sentence ends
    piece_of = [k for k, piece in enumerate(pieces) for _ in piece]
    entities = graph["entities"]
    assert len({piece_of[e["start_ix"]] for e in entities.values()}) > 1  # entities from several pieces
    for entity in entities.values():
        assert piece_of[entity["start_ix"]] == piece_of[entity["end_ix"]]
        for _, target in entity["relations"]:
            assert piece_of[entities[target]["start_ix"]] == piece_of[entity["start_ix"]]
    assert all(validate(t) for t in annotations_to_triplets(graph))


@pytest.mark.slow
def test_tokenizer_compat_leaves_transformers_as_it_was(extractor):
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

    before = {
        name: hasattr(PreTrainedTokenizerBase, name) for name in ("encode_plus", "build_inputs_with_special_tokens")
    }
    extractor.extract(REPORTS[:2])
    after = {name: hasattr(PreTrainedTokenizerBase, name) for name in before}
    assert before == after


def test_version_tracks_model_type_and_weights(tmp_path):
    folder = tmp_path / "modern-radgraph-xl"
    (folder / "vocabulary").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "weights.th").write_bytes(b"first weights")
    first = RadGraphExtractor(model_dir=tmp_path, device="cpu").version
    (folder / "weights.th").write_bytes(b"other weights")
    second = RadGraphExtractor(model_dir=tmp_path, device="cpu").version
    assert first.startswith("modern-radgraph-xl-") and second.startswith("modern-radgraph-xl-")
    assert first != second
    other_type = tmp_path / "radgraph"
    shutil.copytree(folder, other_type)
    assert RadGraphExtractor(model_dir=tmp_path, model_type="radgraph", device="cpu").version.startswith("radgraph-")


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="model type"):
        RadGraphExtractor(model_dir=tmp_path, model_type="echograph-9000")
    with pytest.raises(ValueError, match="batch_size"):
        RadGraphExtractor(model_dir=tmp_path, batch_size=0)


# --- missing model ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("state", ["missing", "empty", "incomplete"])
def test_missing_model_is_a_clear_error_before_radgraph(tmp_path, state):
    folder = tmp_path / "modern-radgraph-xl"
    if state != "missing":
        folder.mkdir()
    if state == "incomplete":
        (folder / "config.json").write_text("{}")
    with pytest.raises(RadGraphModelNotFoundError) as raised:
        RadGraphExtractor(model_dir=tmp_path)
    message = str(raised.value)
    assert isinstance(raised.value, FileNotFoundError)
    for needle in (str(folder), "StanfordAIMI/RRG_scorers", "modern-radgraph-xl.tar.gz", "--radgraph-dir"):
        assert needle in message
    assert "MEDKLIP_RADGRAPH_DIR" in message
    if state == "incomplete":
        assert "weights.th" in message and "vocabulary" in message
    assert folder.exists() == (state != "missing")  # radgraph (which creates it, then downloads) never ran


def test_model_dir_defaults_to_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDKLIP_RADGRAPH_DIR", str(tmp_path / "models"))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "models" / "modern-radgraph-xl")):
        RadGraphExtractor()
