"""The RadGraph triplet extractor: reports -> RadGraph entities and relations -> (entity, position, existence).

    from medklip.labels.radgraph_extractor import RadGraphExtractor, annotations_to_triplets
    extractor = RadGraphExtractor(model_dir="/models/radgraph")      # holds modern-radgraph-xl/
    extractor.extract(["Small left pleural effusion. No pneumothorax."])
    # [[Triplet('effusion', 'left_pleural', 1, ...), Triplet('pneumothorax', 'unspecified', 0, ...)]]

    medklip extract --reports reports.csv --out t.parquet --extractor radgraph --radgraph-dir /models/radgraph
    medklip extract ... --extractor radgraph --label-scheme official     # MedKLIP's own preprocessing rules

Two parts:

1. `annotations_to_triplets` turns one report's RadGraph graph (the `radgraph` package's output format, either label
   set: RadGraph 1.0 `OBS-DP`/`OBS-DA`/`OBS-U`/`ANAT-DP` or RadGraph-XL `Observation::definitely present`, ...)
   into triplets under one of two label schemes (docs/extraction.md, "RadGraph label schemes", lists every
   difference). `ours`, the default: an observation's positions come from the anatomy it is `located_at`, each
   anatomy expanded with the anatomy words that `modify` it ("left lower lobe"), `unspecified` when none; existence
   is 1/0/-1 for definitely present/absent/uncertain; observation words map to the 75 entities through
   `vocabulary.ENTITY_BY_PHRASE`, MedKLIP's excluded lemmas to `excluded_obs`, anything else to `tail_abnorm_obs`;
   positions and normal statements follow the same contract as the rules extractor. `official`: the rules of MedKLIP's
   `radgraph_itemized.py` -> `radgraph_parsed.py` -> `adj_matrix.py` (`official_triplets`). It needs no model and
   no torch.
2. `RadGraphExtractor` runs the real `radgraph` package (model `modern-radgraph-xl` by default) over batches of
   reports and converts each graph. The weights are not downloaded here: put an extracted `modern-radgraph-xl.tar.gz`
   (Hugging Face repo StanfordAIMI/RRG_scorers) in `<dir>/modern-radgraph-xl/` and pass `--radgraph-dir <dir>` or set
   `MEDKLIP_RADGRAPH_DIR`. The encoder named in its config.json (a Hugging Face model id) must also be loadable: in
   the Hugging Face cache (`HF_HOME`, with `HF_HUB_OFFLINE=1` offline) or with internet access.

Batching: `RadGraph.forward` feeds one report per forward pass, and DyGIE's `forward` refuses more than one document
per batch ("Multi-document minibatching not yet supported"). DyGIE does batch the *sentences* of a document, and the
package feeds each report as one sentence, so a batch here is one document whose sentences are the batch's reports:
the encoder, span extractor and NER run on the whole batch, the relation module on each report's own spans (see
`_predict` for why), so the graphs equal those of `RadGraph.forward` (tests check this); only padding differs.
Reports longer than `MAX_UNIT_TOKENS` tokens are cut at sentence ends into pieces that go through separately
(relations cannot cross a cut), which bounds the quadratic span-pair memory.

transformers 5 compatibility: the allennlp copy vendored in `radgraph` 0.1.18 calls two tokenizer methods that
transformers 5 removed, `encode_plus` (radgraph/allennlp/data/tokenizers/pretrained_transformer_tokenizer.py, lines
123, 182, 232, 345) and `build_inputs_with_special_tokens` (.../token_indexers/pretrained_transformer_indexer.py, line
171), so `RadGraph(...)` fails with "AttributeError: BertTokenizer has no attribute encode_plus". While it loads and
runs the model, this module restores both as thin aliases (`encode_plus(text, pair, **kw)` is `__call__`; special
tokens come from the tokenizer's own single-sequence template) and removes them afterwards. With transformers 4.x
nothing is added. The graphs are identical to those of an unmodified transformers 4.57 run (checked on a test model).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

from medklip.labels.anatomy import LUNG_WORDS, POSITIONS_TABLE, PhraseTable, resolve, sides_of, tokenize
from medklip.labels.triplets import POSITION_INDEX, Triplet, statement_triplets
from medklip.vocabulary import (
    ENTITIES,
    ENTITY_BY_PHRASE,
    EXCLUDED_ENTITY,
    EXCLUDED_OBSERVATIONS,
    OTHER_POSITION,
    PHRASES_SHA256,
    TAIL_ENTITY,
    UNSPECIFIED_POSITION,
)

logger = logging.getLogger(__name__)

# Bump when annotations_to_triplets changes what it emits, so cached extractions are not reused.
CONVERSION_VERSION = "1"
# How graphs become triplets: "ours" (docs/extraction.md) or "official" (MedKLIP's own preprocessing). Part of
# `RadGraphExtractor.version`, so the extraction cache never answers one scheme with the other's triplets.
LABEL_SCHEMES = ("ours", "official")
DEFAULT_LABEL_SCHEME = "ours"
DEFAULT_MODEL_TYPE = "modern-radgraph-xl"
MODEL_TYPES = ("radgraph", "radgraph-xl", "modern-radgraph-xl")
ENV_DIR = "MEDKLIP_RADGRAPH_DIR"
MODEL_FILES = ("config.json", "weights.th", "vocabulary")

MAX_UNIT_TOKENS = 256  # longer reports are cut at sentence ends (span pairs grow with the square of the length)
PAIR_TOKENS = 128  # a batch holds at most batch_size reports of this length, fewer of longer ones

# --- labels -------------------------------------------------------------------------------------------------------
EXISTENCE = {"definitely present": 1, "definitely absent": 0, "uncertain": -1}
V1_KIND = {"OBS": "observation", "ANAT": "anatomy"}
V1_CERTAINTY = {"DP": "definitely present", "DA": "definitely absent", "U": "uncertain"}

ENTITIES_TABLE = PhraseTable(ENTITY_BY_PHRASE)
# Whole-organ words that name no particular position: "lungs are clear" is unspecified, not `other`.
GENERIC_ANATOMY = {
    "lung", "lungs", "chest", "thorax", "thoracic", "hemithorax", "hemithoraces", "lobe", "lobes", "zone", "zones",
    "field", "fields", "region", "regions", "area", "areas", "side", "sides", "the", "of", "and", "both",
}  # fmt: skip
SENTENCE_END = re.compile(r"[.!?]+")


def _parse_label(label: str) -> tuple[str | None, int | None, bool]:
    """(kind, existence, is_measurement) of an entity label of either scheme; kind is observation/anatomy/None.

    Args:
        label: "OBS-DP", "ANAT-DP", "Observation::uncertain", "Anatomy::measurement::definitely present", ...

    Returns:
        kind ("observation", "anatomy" or None if unknown), existence (1, 0, -1 or None), measurement flag.
    """
    label = (label or "").strip()
    if "::" in label:
        parts = [part.strip().lower() for part in label.split("::")]
        return (
            parts[0] if parts[0] in ("observation", "anatomy") else None,
            EXISTENCE.get(parts[-1]),
            ("measurement" in parts[1:-1]),
        )
    head, _, certainty = label.upper().partition("-")
    return V1_KIND.get(head), EXISTENCE.get(V1_CERTAINTY.get(certainty, "")), False


def _singular(word: str) -> str:
    """A plain English singular ("opacities" -> "opacity", "masses" -> "mass", "effusions" -> "effusion")."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("sses", "xes", "ches", "shes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _lemmas(word: str) -> set[str]:
    """Candidate lemmas of a word, enough to recognise MedKLIP's excluded lemmas ("worsened" -> "worsen")."""
    out = {word, _singular(word)}
    for suffix, replacements in (
        ("ments", ("",)), ("ment", ("",)), ("ing", ("", "e")), ("ed", ("", "e")), ("d", ("",)), ("er", ("", "e")),
        ("est", ("", "e")), ("s", ("",)),
    ):  # fmt: skip
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            out.update(word[: -len(suffix)] + replacement for replacement in replacements)
    return out


def _join(words: list[str]) -> str:
    """Tokens back to text: no space before closing punctuation or around hyphens and slashes."""
    text = " ".join(words)
    text = re.sub(r"\s+([.,;:!?%)\]])", r"\1", text)
    text = re.sub(r"([(\[])\s+", r"\1", text)
    return re.sub(r"(?<=\w)\s*([-/])\s*(?=\w)", r"\1", text)


def observation_entity(words: str) -> str:
    """The entity (of the 75) of an observation's words.

    The longest `ENTITY_BY_PHRASE` phrase inside the words wins (the rightmost of equal length, an English noun
    phrase's head), trying the words as written and then singularised. Otherwise MedKLIP's excluded lemmas give
    `excluded_obs` and anything else `tail_abnorm_obs`.

    Args:
        words: the observation's tokens, e.g. "pleural effusions" or "air - space opacity".

    Returns:
        An entity name.
    """
    tokens = tokenize(_join(words.split()))
    for candidate in (tokens, [_singular(token) for token in tokens]):
        matches = ENTITIES_TABLE.scan(candidate)
        if matches:
            start, end, entity = max(matches, key=lambda match: (match[1] - match[0], match[0]))
            return entity
    content = [token for token in tokens if token.isalpha()]
    if content and all(_lemmas(token) & set(EXCLUDED_OBSERVATIONS) for token in content):
        return EXCLUDED_ENTITY
    return TAIL_ENTITY


def anatomy_positions(entity: str, phrases: list[str]) -> tuple[list[str], set[str]]:
    """Positions of a finding located at the anatomy `phrases` (docs/extraction.md, Position).

    Each phrase is matched against the position table; bare side words apply across the finding's phrases
    ("left" + "lung base" -> left_lower_lung) and `medklip.labels.anatomy.resolve` applies the side defaults and
    heart rule.
    A phrase that names neither a position nor a side is `other`, unless it is a whole-organ word ("lungs").

    Args:
        entity: the finding's entity.
        phrases: its anatomy phrases, e.g. ["left lower lobe"]; empty when it is located nowhere.

    Returns:
        (positions, the set of anatomy tokens), positions ["unspecified"] when nothing locates the finding.
    """
    anatomies: list[str] = []
    sides: set[str] = set()
    words: set[str] = set()
    for phrase in phrases:
        tokens = tokenize(phrase)
        words.update(tokens)
        taken = [False] * len(tokens)
        found = [value for _, _, value in POSITIONS_TABLE.scan(tokens, taken)]
        side = sides_of(tokens, taken)
        if not found and not side and not all(token in GENERIC_ANATOMY or not token.isalpha() for token in tokens):
            found = ["other"]
        anatomies.extend(found)
        sides |= side
    return resolve(entity, anatomies, sides), words


def _sentences(words: list[str]) -> tuple[list[int], list[str]]:
    """Sentence index of every token, and each sentence's text ("2 . 5 cm" keeps its decimal point)."""
    index_of, sentences, current = [], [], []
    for i, word in enumerate(words):
        index_of.append(len(sentences))
        current.append(word)
        decimal = word == "." and 0 < i < len(words) - 1 and words[i - 1][-1:].isdigit() and words[i + 1][:1].isdigit()
        if (SENTENCE_END.fullmatch(word) and not decimal) or (
            len(word) > 1 and word[-1] in ".!?" and word[0].isalpha()
        ):
            sentences.append(_join(current))
            current = []
    if current:
        sentences.append(_join(current))
    return index_of, sentences


class _Graph:
    """One report's RadGraph annotation, parsed once: tokens, sentences, and each entity's kind, existence, span."""

    def __init__(self, annotation: dict):
        self.words = str(annotation.get("text") or "").split()
        self.entities: dict[str, dict] = {str(key): value for key, value in (annotation.get("entities") or {}).items()}
        self.sentence_of, self.sentences = _sentences(self.words)
        self.kind, self.existence, self.measurement, self.span = {}, {}, {}, {}
        for key, entity in self.entities.items():
            self.kind[key], self.existence[key], self.measurement[key] = _parse_label(str(entity.get("label", "")))
            start, end = entity.get("start_ix"), entity.get("end_ix", entity.get("start_ix"))
            valid = isinstance(start, int) and isinstance(end, int) and 0 <= start <= end < len(self.words)
            self.span[key] = (start, end) if valid else None
            if self.kind[key] is None:
                logger.debug("skipping entity %s with unknown label %r", key, entity.get("label"))

    def relations(self, key: str, name: str | None = None, target_kind: str | None = None) -> list[str]:
        """Targets of `key`'s relations called `name` (any when None) that exist, of `target_kind` (any when None)."""
        return [
            str(target)
            for relation, target in (
                tuple(item[:2]) for item in self.entities[key].get("relations") or [] if len(item) >= 2
            )
            if (name is None or relation == name)
            and str(target) in self.entities
            and (target_kind is None or self.kind.get(str(target)) == target_kind)
        ]

    def start(self, key: str) -> int:
        return self.span[key][0] if self.span[key] else 0

    def sentence_index(self, key: str) -> int | None:
        return self.sentence_of[self.span[key][0]] if self.span[key] else None

    def sentence(self, key: str) -> str:
        return self.sentences[self.sentence_of[self.span[key][0]]] if self.span[key] else _join(self.words)

    def text(self, keys: list[str]) -> tuple[int, str]:
        """(first token index, the tokens of `keys` joined in text order), e.g. "left lower lobe"."""
        indices = sorted({i for key in keys if self.span[key] for i in range(self.span[key][0], self.span[key][1] + 1)})
        if indices:
            return indices[0], _join([self.words[i] for i in indices])
        return 0, _join(" ".join(str(self.entities[key].get("tokens", "")) for key in keys).split())


def annotations_to_triplets(annotation: dict, scheme: str = DEFAULT_LABEL_SCHEME) -> list[Triplet]:
    """Triplets of one report from its RadGraph graph, under one label scheme (docs/extraction.md, RadGraph).

    Args:
        annotation: `{"text": "...", "entities": {"1": {"tokens": "effusion", "label": "OBS-DP", "start_ix": 3,
            "end_ix": 3, "relations": [["located_at", "2"]]}, ...}}`, the `radgraph` package's per-report format;
            `start_ix`/`end_ix` index the whitespace tokens of `text`.
        scheme: "ours" (`ours_triplets`, the default) or "official" (`official_triplets`, MedKLIP's preprocessing).

    Returns:
        Distinct triplets in the order their observations appear.

    Raises:
        ValueError: unknown scheme.
    """
    if scheme == "ours":
        return ours_triplets(annotation)
    if scheme == "official":
        return official_triplets(annotation)
    raise ValueError(f"unknown label scheme {scheme!r}; choose from {LABEL_SCHEMES}")


def ours_triplets(annotation: dict) -> list[Triplet]:
    """Triplets of one report under our label scheme, the contract of docs/extraction.md.

    Rules: an observation that `modify`s another observation is a modifier ("small" of "small effusion"), not a
    finding; measurement observations ("2 cm") are skipped; every other observation is a finding with the existence
    of its label (1 present, 0 absent, -1 uncertain) at the anatomy it is `located_at`. Each anatomy is taken with
    the anatomy entities that `modify` it, transitively, as one phrase in text order ("left lower lobe"; an
    observation located at a modifier such as "left" gets the whole phrase too). No such anatomy -> `unspecified`.
    Positions and the zeros of normal statements follow `anatomy_positions` and `statement_triplets`.

    Args:
        annotation: one report's graph, as for `annotations_to_triplets`.

    Returns:
        Distinct triplets in the order their observations appear.
    """
    graph = _Graph(annotation)

    # Anatomy phrases: each anatomy's head (follow `modify` to anatomy), and the members of each head's phrase.
    def head_of(key: str) -> str:
        seen = {key}
        while targets := [target for target in graph.relations(key, "modify", "anatomy") if target not in seen]:
            key = targets[0]
            seen.add(key)
        return key

    members: dict[str, list[str]] = {}
    for key in graph.entities:
        if graph.kind[key] == "anatomy":
            members.setdefault(head_of(key), []).append(key)

    found: list[tuple[int, Triplet]] = []
    for key, entity in graph.entities.items():
        if graph.kind[key] != "observation" or graph.existence[key] is None or graph.measurement[key]:
            continue
        if graph.relations(key, "modify", "observation"):
            continue  # a modifier of another finding ("small", "new", "stable" of "stable cardiomegaly")
        name = observation_entity(str(entity.get("tokens", "")))
        heads = list(dict.fromkeys(head_of(target) for target in graph.relations(key, "located_at", "anatomy")))
        phrases = [text for _, text in sorted(graph.text(members[head]) for head in heads)]
        positions, anatomy_words = anatomy_positions(name, phrases)
        about_lungs = bool(anatomy_words & LUNG_WORDS)
        for triplet in statement_triplets(name, graph.existence[key], positions, graph.sentence(key), about_lungs):
            found.append((graph.start(key), triplet))
    found.sort(key=lambda item: item[0])
    return list(dict.fromkeys(triplet for _, triplet in found))


# --- the official scheme ------------------------------------------------------------------------------------------
# MedKLIP's manual lemma normalisation (adj_matrix.py), applied to the lemma of a whole observation phrase.
OFFICIAL_LEMMAS = {
    "enlargement": "enlarge", "increase": "enlarge", "engorge": "engorgement", "opacification": "opacity",
    "opacity-": "opacity", "calcify": "calcification", "effusion ;": "effusion", "atelectatic": "atelectasis",
    "atelectasis ;": "atelectasis", "atelectase": "atelectasis", "aeration": "aerate", "distend": "distention",
    "distension": "distention", "wide": "widen", "prominent": "prominence", "haze": "haziness", "masse": "mass",
    "kyphotic": "kyphosis", "degenerate": "degenerative", "obscuration": "obscure", "fibrotic": "fibrosis",
    "nodular": "nodule", "nodularity": "nodule", "ventilate": "ventilation", "tortuosity": "tortuous",
    "elongate": "elongation", "elevate": "elevation", "drain": "drainage", "deviate": "deviation",
    "consolidative": "consolidation", "consolidate": "consolidation", "dilate": "dilation", "dilatation": "dilation",
    "hydropneumothorax": "pneumothorax", "pneumothoraces": "pneumothorax", "pneumothorace": "pneumothorax",
    "improvement": "improve", "improved": "improve", "can not be assess": "difficult to assess",
    "can not be evaluate": "difficult to assess", "not well see": "difficult to assess",
    "not well assess": "difficult to assess", "can not be accurately assess": "difficult to assess",
    "not well evaluate": "difficult to assess", "not well visualize": "difficult to assess",
    "difficult to evaluate": "difficult to assess", "poorly see": "difficult to assess", "pacer": "pacemaker",
    "infection": "pneumonia", "infectious": "pneumonia", "infectious process": "pneumonia",
}  # fmt: skip
NAMED_ENTITIES = frozenset(ENTITIES) - {TAIL_ENTITY, EXCLUDED_ENTITY}  # NORM_OBS + ABNORM_OBS, kept as they are
# Words whose lemma decides an official entity: a suffix-stripped form of a token counts only if it is one of these.
LEMMA_WORDS = (
    NAMED_ENTITIES | set(EXCLUDED_OBSERVATIONS) | {word for phrase in OFFICIAL_LEMMAS for word in phrase.split()}
)
# Irregular forms spaCy's lemmatizer resolves that suffix rules cannot ("worse" is why `bad` is an excluded lemma).
IRREGULAR_LEMMAS = {
    "seen": "see", "cannot": "can not", "worse": "bad", "worst": "bad", "lower": "low", "lowest": "low",
    "larger": "large", "largest": "large", "smaller": "small", "smallest": "small", "greater": "great",
    "greatest": "great", "is": "be", "are": "be", "was": "be", "were": "be", "been": "be",
}  # fmt: skip
LEMMA_SUFFIXES = (("ies", "y"), ("ied", "y"), ("es", ""), ("s", ""), ("ed", ""), ("ed", "e"), ("ing", ""), ("ing", "e"))


def official_lemma(token: str) -> str:
    """A token's lemma as far as MedKLIP's vocabulary can tell (it used spaCy `en_core_web_sm`, not installed here).

    The token itself if it is a word of `LEMMA_WORDS`, else its irregular lemma, else the first suffix-stripped form
    ("opacities" -> opacity, "enlarged" -> enlarge, "scarring" -> scar) that is one; otherwise the token unchanged,
    which names no entity whatever spaCy would have made of it.
    """
    token = token.lower()
    if token in LEMMA_WORDS:
        return token
    if token in IRREGULAR_LEMMAS:
        return IRREGULAR_LEMMAS[token]
    for suffix, replacement in LEMMA_SUFFIXES:
        if token.endswith(suffix) and len(token) > len(suffix) + 2:
            stem = token[: -len(suffix)]
            undoubled = stem[:-1] if len(stem) > 2 and stem[-1] == stem[-2] and suffix in ("ed", "ing") else stem
            for candidate in (stem + replacement, undoubled + replacement):
                if candidate in LEMMA_WORDS:
                    return candidate
    return token


def official_entity(words: str) -> str:
    """The entity of an observation's words the official way: the lemma of the whole phrase, then the manual table.

    A lemma that is one of the 73 named entities is kept, an excluded lemma gives `excluded_obs`, anything else
    (every multi-word phrase the table does not name, such as "pleural effusion") `tail_abnorm_obs`.

    Args:
        words: the observation's tokens, e.g. "enlarged" or "pleural effusions".
    """
    lemma = " ".join(official_lemma(token) for token in words.split())
    lemma = OFFICIAL_LEMMAS.get(lemma, lemma)
    if lemma in NAMED_ENTITIES:
        return lemma
    return EXCLUDED_ENTITY if lemma in EXCLUDED_OBSERVATIONS else TAIL_ENTITY


def official_landmark(phrase: str) -> str:
    """The one landmark of an anatomy phrase: of the positions it names, the first in label order, else `other`.

    MedKLIP's `DICT_ANATOMICAL_LANDMARKS` word rules are not reproduced; the position phrase table (which folds them
    in) stands for them, with their "first landmark in dict order wins" and no side or generic-word rules.
    """
    found = [value for _, _, value in POSITIONS_TABLE.scan(tokenize(phrase))]
    return min(found, key=POSITION_INDEX.__getitem__) if found else OTHER_POSITION


def official_triplets(annotation: dict) -> list[Triplet]:
    """Triplets of one report the way MedKLIP's preprocessing builds them (`radgraph_parsed.py`, `adj_matrix.py`).

    Per sentence: an anatomy head is a definitely-present anatomy with no outgoing relation; its phrase is the head
    with the anatomies whose relation points at it (one step, no chains). An observation `located_at` a head or a
    phrase member of its sentence gets that phrase's landmark (`official_landmark`); an observation with no relation
    at all gets `unspecified`; any other observation (only `modify` or `suggestive_of`, or `located_at` something
    else) is dropped. `modify` and `suggestive_of` are otherwise ignored. Existence: definitely present 1, definitely
    absent 0; uncertain observations are dropped (the official matrix leaves them -1, as no triplet does). Names come
    from `official_entity`. No cell is added or rewritten ("the heart is enlarged" stays `enlarge` at heart_size).

    Args:
        annotation: one report's graph, as for `annotations_to_triplets`.

    Returns:
        Distinct triplets in the order their observations appear.
    """
    graph = _Graph(annotation)

    def is_anatomy(key: str) -> bool:
        return graph.kind[key] == "anatomy" and graph.existence[key] == 1 and not graph.measurement[key]

    anatomies = [key for key in graph.entities if is_anatomy(key)]
    heads = [key for key in anatomies if not graph.relations(key)]
    phrase_of: dict[str, list[str]] = {
        head: [head]
        + [
            key
            for key in anatomies
            if key != head and head in graph.relations(key) and graph.sentence_index(key) == graph.sentence_index(head)
        ]
        for head in heads
    }
    heads_of: dict[str, list[str]] = {}  # an anatomy id -> the heads whose phrase holds it
    for head, keys in phrase_of.items():
        for key in keys:
            heads_of.setdefault(key, []).append(head)

    found: list[tuple[int, Triplet]] = []
    for key, entity in graph.entities.items():
        if graph.kind[key] != "observation" or graph.measurement[key] or graph.existence[key] not in (1, 0):
            continue  # OBS-U (and measurements, and unknown labels) never reach the official matrix
        located = [
            head
            for target in graph.relations(key, "located_at")
            if graph.sentence_index(target) == graph.sentence_index(key)
            for head in heads_of.get(target, [])
        ]
        if located:
            phrases = sorted(graph.text(phrase_of[head]) for head in dict.fromkeys(located))
            positions = list(dict.fromkeys(official_landmark(text) for _, text in phrases))
        elif graph.relations(key):
            continue  # a relation, but not located_at an anatomy of its sentence: the official parser drops it
        else:
            positions = [UNSPECIFIED_POSITION]
        name = official_entity(str(entity.get("tokens", "")))
        for position in positions:
            found.append((graph.start(key), Triplet(name, position, graph.existence[key], graph.sentence(key))))
    found.sort(key=lambda item: item[0])
    return list(dict.fromkeys(triplet for _, triplet in found))


# --- the model ----------------------------------------------------------------------------------------------------
class RadGraphModelNotFoundError(FileNotFoundError):
    """The RadGraph model folder is missing, empty or incomplete (radgraph itself would try to download it)."""


def default_model_dir() -> Path:
    """`$MEDKLIP_RADGRAPH_DIR` if set, else the `radgraph` package's own cache folder (radgraph's `CACHE_DIR`)."""
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR]).expanduser()
    import importlib.metadata

    from appdirs import user_cache_dir

    return Path(user_cache_dir("radgraph")) / importlib.metadata.version("radgraph")


def check_model_dir(model_dir: Path, model_type: str) -> Path:
    """The model folder `<model_dir>/<model_type>`, after checking it has config.json, vocabulary/ and weights.th.

    Raises:
        RadGraphModelNotFoundError: with where we looked and how to provide the model.
    """
    folder = Path(model_dir) / model_type
    missing = [name for name in MODEL_FILES if not (folder / name).exists()]
    if not missing:
        return folder
    state = "does not exist" if not folder.exists() else f"lacks {', '.join(missing)}"
    raise RadGraphModelNotFoundError(
        f"RadGraph model not found: {folder} {state}. This environment cannot download it (radgraph would fetch "
        f"{model_type}.tar.gz from the Hugging Face Hub). On a machine with internet, download {model_type}.tar.gz "
        f"from the Hugging Face repo StanfordAIMI/RRG_scorers (e.g. `huggingface-cli download StanfordAIMI/RRG_scorers "
        f"{model_type}.tar.gz`), extract it into <dir>/{model_type}/ so that <dir>/{model_type}/config.json, "
        f"vocabulary/ and weights.th exist, then pass --radgraph-dir <dir> or set {ENV_DIR}=<dir>. The encoder named "
        f"in its config.json must be loadable too (Hugging Face cache, HF_HUB_OFFLINE=1 when offline)."
    )


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    """sha256 hex digest of a file, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _cuda_index(device: str | None) -> int:
    """radgraph's `cuda` argument for a torch device string: -1 for cpu, N for cuda:N; None picks cuda:0 if any."""
    import torch

    if device is None:
        return 0 if torch.cuda.is_available() else -1
    parsed = torch.device(device)
    if parsed.type == "cpu":
        return -1
    if parsed.type == "cuda":
        return parsed.index or 0
    raise ValueError(f"radgraph runs on cpu or cuda, not {device!r}")


@contextlib.contextmanager
def tokenizer_api_compat() -> Iterator[None]:
    """Restores `encode_plus` and `build_inputs_with_special_tokens` while radgraph runs under transformers 5.

    Only methods that are missing are added, on `PreTrainedTokenizerBase`, and they are removed on exit; with
    transformers 4.x this does nothing. See the module docstring for the exact call sites.
    """
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

    def encode_plus(self, text, text_pair=None, **kwargs):
        return self(text, text_pair, **kwargs)

    def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None):
        if token_ids_1 is not None:
            raise NotImplementedError("only single sequences are needed by radgraph")
        full = self("a", add_special_tokens=True)["input_ids"]
        bare = self("a", add_special_tokens=False)["input_ids"]
        at = next(i for i in range(len(full)) if full[i : i + len(bare)] == bare)
        return full[:at] + list(token_ids_0) + full[at + len(bare) :]

    added = []
    for name, method in (
        ("encode_plus", encode_plus),
        ("build_inputs_with_special_tokens", build_inputs_with_special_tokens),
    ):
        if not hasattr(PreTrainedTokenizerBase, name):
            setattr(PreTrainedTokenizerBase, name, method)
            added.append(name)
    try:
        yield
    finally:
        for name in added:
            delattr(PreTrainedTokenizerBase, name)


def _cut(tokens: list[str], limit: int | None = None) -> list[list[str]]:
    """Pieces of at most `limit` (default `MAX_UNIT_TOKENS`) tokens, cut after sentence ends where possible."""
    limit = MAX_UNIT_TOKENS if limit is None else limit
    if len(tokens) <= limit:
        return [tokens]
    pieces, current, sentence = [], [], []
    for token in tokens:
        sentence.append(token)
        if SENTENCE_END.fullmatch(token):
            if len(current) + len(sentence) > limit and current:
                pieces.append(current)
                current = []
            current.extend(sentence)
            sentence = []
    if len(current) + len(sentence) > limit and current:
        pieces.append(current)
        current = []
    current.extend(sentence)
    pieces.append(current)
    return [piece[i : i + limit] for piece in pieces for i in range(0, len(piece), limit)]


def _merge(pieces: list[dict]) -> dict:
    """One annotation from the annotations of a report's consecutive pieces (token and entity ids shifted)."""
    if len(pieces) == 1:
        return pieces[0]
    words, entities = [], {}
    for piece in pieces:
        offset, base = len(words), len(entities)
        for key, entity in piece["entities"].items():
            entities[str(int(key) + base)] = {
                **entity,
                "start_ix": entity["start_ix"] + offset,
                "end_ix": entity["end_ix"] + offset,
                "relations": [[name, str(int(target) + base)] for name, target in entity["relations"]],
            }
        words.extend(piece["text"].split())
    return {**pieces[0], "text": " ".join(words), "entities": entities}


class RadGraphExtractor:
    """Triplets from the real RadGraph model (`radgraph` package), run in batches.

    The model is loaded on the first `extract`/`annotate` call; construction only checks the folder and hashes the
    weights, so a run answered from the extraction cache never loads it.
    """

    name = "radgraph"

    def __init__(
        self,
        model_dir: str | Path | None = None,
        model_type: str = DEFAULT_MODEL_TYPE,
        batch_size: int = 16,
        device: str | None = None,
        label_scheme: str = DEFAULT_LABEL_SCHEME,
    ):
        """Checks the model folder and computes `version`.

        Args:
            model_dir: radgraph's `model_cache_dir`, the folder holding `<model_type>/` (config.json, vocabulary/,
                weights.th). Default: `$MEDKLIP_RADGRAPH_DIR`, else radgraph's own cache folder.
            model_type: "modern-radgraph-xl" (default), "radgraph-xl" or "radgraph".
            batch_size: reports per forward pass (fewer for reports longer than `PAIR_TOKENS` tokens).
            device: "cpu", "cuda" or "cuda:N"; None uses cuda:0 when available.
            label_scheme: how graphs become triplets, "ours" (default) or "official" (`annotations_to_triplets`).

        Raises:
            RadGraphModelNotFoundError: the model folder is missing or incomplete (nothing is downloaded).
            ValueError: unknown model type, device, batch size or label scheme.
        """
        if model_type not in MODEL_TYPES:
            raise ValueError(f"unknown RadGraph model type {model_type!r}; choose from {MODEL_TYPES}")
        if label_scheme not in LABEL_SCHEMES:
            raise ValueError(f"unknown label scheme {label_scheme!r}; choose from {LABEL_SCHEMES}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model_type = model_type
        self.model_dir = Path(model_dir).expanduser() if model_dir is not None else default_model_dir()
        self.folder = check_model_dir(self.model_dir, model_type)
        self.batch_size = batch_size
        self.cuda = _cuda_index(device)
        self.label_scheme = label_scheme
        weights = file_sha256(self.folder / "weights.th")[:12]
        # The cache folder's name: model, weights, conversion, scheme and the phrase tables it maps words with.
        self.version = f"{model_type}-{weights}-c{CONVERSION_VERSION}-p{PHRASES_SHA256[:10]}-{label_scheme}"
        self._radgraph = None

    @property
    def radgraph(self):
        """The loaded `radgraph.RadGraph` (loaded on first use)."""
        if self._radgraph is None:
            self._radgraph = self._load()
        return self._radgraph

    def _load(self):
        from radgraph import RadGraph

        encoder = json.loads((self.folder / "config.json").read_text()).get("model", {})
        encoder = encoder.get("embedder", {}).get("token_embedders", {}).get("bert", {}).get("model_name")
        logger.info("loading RadGraph %s from %s (encoder %s)", self.model_type, self.folder, encoder)
        printed = io.StringIO()
        try:
            with tokenizer_api_compat(), contextlib.redirect_stdout(printed):
                model = RadGraph(model_type=self.model_type, model_cache_dir=str(self.model_dir), cuda=self.cuda)
        except OSError as error:
            raise OSError(
                f"RadGraph could not load its encoder {encoder!r} (named in {self.folder / 'config.json'}): {error}. "
                f"It must be in the Hugging Face cache (set HF_HOME; HF_HUB_OFFLINE=1 when offline) or reachable."
            ) from error
        for line in printed.getvalue().splitlines():
            logger.debug("radgraph: %s", line)
        return model

    def forward(self, texts: list[str]) -> dict:
        """The package's own `RadGraph.forward` (one report per pass): `{"0": annotation, ...}`. For checks."""
        with tokenizer_api_compat():
            return self.radgraph(texts)

    def annotate(self, texts: list[str]) -> list[dict | None]:
        """RadGraph graphs of `texts`, batched; None for texts with no tokens (the model is not called for them).

        Args:
            texts: report texts.

        Returns:
            One annotation per text in the package's format (`{"text", "entities", "data_source", "data_split"}`).
        """
        import torch
        from radgraph.allennlp.data.dataloader import PyTorchDataLoader
        from radgraph.allennlp.data.dataset_readers import AllennlpDataset
        from radgraph.utils import batch_to_device, postprocess_reports, preprocess_reports

        if not texts:
            return []
        tokens = [doc["sentences"][0] for doc in preprocess_reports([str(t or "") for t in texts], self.model_type)]
        pieces_of = {i: _cut(words) for i, words in enumerate(tokens) if words}
        units = [(i, j, piece) for i, pieces in pieces_of.items() for j, piece in enumerate(pieces)]
        if not units:
            return [None] * len(texts)
        units.sort(key=lambda unit: len(unit[2]))
        batches, budget = [], self.batch_size * PAIR_TOKENS**2
        for unit in units:
            if batches and len(batches[-1]) < self.batch_size and (len(batches[-1]) + 1) * len(unit[2]) ** 2 <= budget:
                batches[-1].append(unit)
            else:
                batches.append([unit])

        model = self.radgraph
        dygie = model.model
        if not _sentences_are_independent(dygie):
            batches = [[unit] for batch in batches for unit in batch]  # unusual config: one report per pass
        results = []
        with tokenizer_api_compat(), warnings.catch_warnings():
            # DyGIEReader warns about one-token sentences ("Normal"); the model handles them (so does RadGraph.forward).
            warnings.filterwarnings("ignore", message=r"Document .* has a sentence with a single token")
            documents = [
                {"doc_key": str(b), "dataset": self.model_type, "sentences": [unit[2] for unit in batch]}
                for b, batch in enumerate(batches)
            ]
            data = AllennlpDataset([model.reader.text_to_instance(document) for document in documents])
            data.index_with(dygie.vocab)
            loader = PyTorchDataLoader(data, batch_size=1)  # one document, i.e. one batch of reports, per pass
            with torch.inference_mode():
                for batch, units_of_batch in zip(loader, batches, strict=True):
                    predictions = _predict(dygie, batch_to_device(batch, model.device))
                    for (ner, relations), (i, j, piece) in zip(predictions, units_of_batch, strict=True):
                        results.append(_prediction_dict(f"{i}:{j}", piece, ner, relations))
        graphs = postprocess_reports(results)
        out: list[dict | None] = [None] * len(texts)
        for i, pieces in pieces_of.items():
            graphs_of_report = []
            for j, piece in enumerate(pieces):
                graph = graphs.get(f"{i}:{j}")
                if graph is None:
                    logger.warning("RadGraph postprocessing failed for report %d piece %d; no entities kept", i, j)
                    graph = {"text": " ".join(piece), "entities": {}, "data_source": None, "data_split": "inference"}
                graphs_of_report.append(graph)
            out[i] = _merge(graphs_of_report)
        return out

    def extract(self, texts: list[str]) -> list[list[Triplet]]:
        """Triplets of each text (a whole report); [] for empty or whitespace-only texts.

        Args:
            texts: report texts (findings and impression together).

        Returns:
            One list of triplets per text, in order.
        """
        return [annotations_to_triplets(graph, self.label_scheme) if graph else [] for graph in self.annotate(texts)]


def _sentences_are_independent(dygie) -> bool:
    """True when DyGIE's predictions for a sentence do not depend on the document's other sentences.

    That holds when coreference (which links spans across sentences and, with `coref_prop`, rewrites their
    embeddings) and events are off, as in the released RadGraph models (NER and relations only).
    """
    weights = dygie._loss_weights
    return weights.get("coref", 0) == 0 and weights.get("events", 0) == 0 and dygie._coref.coref_prop == 0


def _predict(dygie, batch: dict) -> list[tuple[list, list]]:
    """(NER, relation) predictions for each sentence (report) of one batched document.

    The steps of `DyGIE.forward` at inference, with the model's own modules: the encoder, span extractor and NER
    run on the whole batch; the relation module runs on each sentence's own spans. (Called on a padded batch,
    `RelationExtractor._predict_sentence` masks only the columns beyond a sentence's span budget, not the rows, so a
    short sentence next to a long one would get extra relations from its padding rows; per sentence it sees exactly
    what `RadGraph.forward` gives it.)

    Args:
        dygie: the loaded `radgraph.dygie.models.dygie.DyGIE`.
        batch: one collated instance (`text`, `spans`, `metadata`) on the model's device.

    Returns:
        Per sentence, (list of PredictedNER, list of PredictedRelation), with sentence-relative spans.
    """
    import torch.nn.functional as F
    from radgraph.allennlp.nn import util
    from radgraph.dygie.data.dataset_readers.document import Document

    document = batch["metadata"][0]
    if len(document.sentences) == 1 or not _sentences_are_independent(dygie):
        document = dygie.make_output_human_readable(dygie(**batch))
        return [(s.predicted_ner or [], s.predicted_relations or []) for s in document.sentences]
    text = batch["text"]
    embeddings = dygie._embedder(text, num_wrapping_dims=1).squeeze(0)
    lengths = util.get_text_field_mask(text, num_wrapping_dims=1).float().squeeze(0).sum(dim=1).long()
    spans = batch["spans"].squeeze(0)
    span_mask = (spans[:, :, 0] >= 0).float()
    spans = F.relu(spans.float()).long()
    span_embeddings = dygie._endpoint_span_extractor(embeddings, spans)
    ner = [[] for _ in document.sentences]
    if dygie._loss_weights["ner"] > 0:
        ner = dygie._ner(spans, span_mask, span_embeddings, lengths, None, document)["predictions"]
    out = []
    for s, sentence in enumerate(document.sentences):
        relations = []
        if dygie._loss_weights["relation"] > 0:
            n = int(span_mask[s].sum().item())
            alone = Document(document.doc_key, document.dataset, [sentence])
            window = slice(s, s + 1)
            relations = dygie._relation(
                spans[window, :n], span_mask[window, :n], span_embeddings[window, :n], lengths[window], None, alone
            )["predictions"][0]
        out.append((ner[s], relations))
    return out


def _prediction_dict(key: str, words: list[str], ner: list, relations: list) -> dict:
    """One report's predictions in the single-report format `radgraph.utils.postprocess_reports` reads."""
    return {
        "doc_key": key,
        "sentences": [words],
        "predicted_ner": [[[*p.span.span_sent, p.label, p.raw_score, p.softmax_score] for p in ner]],
        "predicted_relations": [
            [[*r.pair[0].span_sent, *r.pair[1].span_sent, r.label, r.raw_score, r.softmax_score] for r in relations]
        ],
    }
