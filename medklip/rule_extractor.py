"""The offline triplet extractor: sentences -> clauses -> findings, their negation/uncertainty, and their anatomy.

    from medklip.rule_extractor import RuleExtractor
    RuleExtractor().extract(["No pneumothorax, but there is a small left effusion."])
    # [[Triplet('pneumothorax', 'unspecified', 0, ...), Triplet('effusion', 'left_pleural', 1, ...)]]

The contract it implements is docs/extraction.md. In short:
1. Clean the text (markup, control characters, section headers) and split it into sentences.
2. Tokenise each sentence and mark cue phrases first (negation, uncertainty, resolution, pseudo-negations such as
   "no change in", clause breakers such as "but"), so their words are never read as findings.
3. Find the findings (leftmost-longest match over `entities.SYNONYMS`) and the anatomy (`entities.POSITION_SYNONYMS`
   plus side words) in the tokens left over.
4. A finding's existence comes from the nearest cue that scopes over it: pre-cues ("no", "possible") reach forward to
   the end of the clause, post-cues ("is not seen", "cannot be excluded") reach back to its start.
5. A finding's positions come from the anatomy of its chunk (the clause cut at "and", "with", commas).
6. Normal statements add the zeros they imply ("heart size is normal" -> cardiomegaly 0).

Everything is table-driven and linear in the text, so it runs thousands of reports a second on one core.
"""

from __future__ import annotations

from dataclasses import dataclass

from medklip.anatomy import PLEURAL_ENTITIES, POSITIONS_TABLE, PhraseTable, resolve, sides_of, tokenize
from medklip.entities import ENTITY_BY_PHRASE
from medklip.report_text import clean, split_sentences
from medklip.triplets import Triplet

VERSION = "1"

# --- cue vocabularies ---------------------------------------------------------------------------------------------
# Pre-cues govern the findings after them up to the end of the clause.
PRE_NEGATION = (
    "no", "not", "without", "negative for", "free of", "clear of", "no evidence of", "no evidence for",
    "no radiographic evidence of", "no signs of", "no sign of", "absence of", "absent", "never", "nor", "no definite",
    "no clear", "no clear evidence of", "no focal", "no new", "no acute", "no significant", "no suspicious",
    "no visible", "no obvious", "no convincing", "no large", "interval resolution of", "resolution of", "resolved",
    "removal of", "no longer", "rather than", "no residual", "no appreciable", "no discrete", "no overt",
)  # fmt: skip
PRE_UNCERTAIN = (
    "possible", "possibly", "probable", "probably", "likely", "may represent", "may reflect", "may be", "might be",
    "could be", "could represent", "could reflect", "may", "might", "suggestive of", "suggest", "suggests",
    "suggesting", "suspicious for", "suspicious of", "suspected", "suspect", "questionable", "question of",
    "concerning for", "concern for", "worrisome for", "cannot exclude", "can not exclude", "cannot rule out",
    "can not rule out", "differential includes", "differential diagnosis includes",
    "differential considerations include",
    "versus", "vs", "raises the possibility of", "raising the possibility of", "rule out", "r/o", "evaluate for",
    "assess for", "presumed", "presumably", "equivocal", "indeterminate", "borderline for", "question",
    "not excluded", "cannot be excluded",
)  # fmt: skip
# Post-cues govern the findings before them, back to the start of the clause.
POST_NEGATION = (
    "is not seen", "are not seen", "not seen", "is not identified", "are not identified", "not identified",
    "is not visualized", "are not visualized", "not visualized", "not appreciated", "is not appreciated",
    "not present", "is absent", "are absent", "has resolved", "have resolved", "resolved", "has cleared",
    "have cleared", "cleared", "no longer seen", "no longer visualized", "no longer visible", "no longer present",
    "no longer identified", "is gone", "has been removed", "have been removed", "been removed", "was removed",
    "were removed", "removed", "is not demonstrated", "not demonstrated", "not evident", "is not evident",
    "are not evident", "is resolved", "are resolved", "is negative", "has been withdrawn", "withdrawn",
)  # fmt: skip
POST_UNCERTAIN = (
    "cannot be excluded", "can not be excluded", "not excluded", "is not excluded", "cannot be ruled out",
    "can not be ruled out", "not ruled out", "not entirely excluded", "is not entirely excluded",
    "is possible", "are possible", "is suspected", "are suspected", "is questioned", "is likely", "are likely",
    "is probable", "not completely excluded", "is a consideration", "are a consideration", "is considered",
)  # fmt: skip
# Phrases with a negation word that negate nothing ("no change in the effusion": the effusion is there).
PSEUDO_NEGATION = (
    "no change", "no significant change", "no interval change", "no substantial change", "no appreciable change",
    "without change", "no increase", "not significantly changed", "not changed", "no other change", "not only",
    "no significant interval change", "no definite change", "without significant change", "no new change",
    "gram negative", "not necessarily", "no further change",
)  # fmt: skip
# Words that close a clause: scope of cues stops here.
CLAUSE_BREAKS = (
    ";", ":", "but", "however", "although", "though", "whereas", "while", "yet", "except", "aside from",
    "apart from", "otherwise", "which", "there is", "there are", "is seen", "are seen", "is noted", "are noted",
    "is present", "are present", "again seen", "is again seen", "are again seen", "remains", "remain", "persists",
    "has developed", "new", "in addition", "additionally", "also", "is identified", "are identified",
)  # fmt: skip
# Words that cut a clause into chunks for anatomy (each finding takes the anatomy of its own chunk).
CHUNK_BREAKS = ("and", "or", ",", "with", "as well as", "and/or", "along with", "in addition to", "plus")
# After a comma inside a negation scope, a size or severity word starts a new, positive statement:
# "No pneumothorax, small left effusion."
SEVERITY = {
    "small", "moderate", "large", "mild", "mildly", "severe", "trace", "minimal", "tiny", "marked", "markedly",
    "moderately", "extensive", "subtle", "slight", "minimally", "moderate-sized", "small-to-moderate",
}  # fmt: skip

CUES = PhraseTable(
    {
        **{phrase: "pre_negation" for phrase in PRE_NEGATION},
        **{phrase: "pre_uncertain" for phrase in PRE_UNCERTAIN},
        **{phrase: "post_negation" for phrase in POST_NEGATION},
        **{phrase: "post_uncertain" for phrase in POST_UNCERTAIN},
        **{phrase: "pseudo" for phrase in PSEUDO_NEGATION},
        **{phrase: "break" for phrase in CLAUSE_BREAKS},
        **{phrase: "chunk" for phrase in CHUNK_BREAKS},
    }
)
ENTITIES_TABLE = PhraseTable(ENTITY_BY_PHRASE)

# Findings that only qualify a whole study; reported only when the sentence has no other finding.
STUDY_WORDS = {"stable"}
LUNG_WORDS = {"lung", "lungs", "lung fields", "parenchyma"}
HEART_WORDS_POSITION = "heart_size"


# --- one sentence -------------------------------------------------------------------------------------------------
@dataclass
class _Mention:
    entity: str
    start: int
    end: int
    existence: int = 1


def _clauses(cues: list[tuple[int, int, str]], n_tokens: int) -> list[tuple[int, int]]:
    """Token ranges of clauses, split at clause breaks."""
    bounds, start = [], 0
    for cue_start, cue_end, kind in cues:
        if kind == "break":
            bounds.append((start, cue_start))
            start = cue_end
    bounds.append((start, n_tokens))
    return [(a, b) for a, b in bounds if b > a]


def _existence(mention: _Mention, clause_cues: list[tuple[int, int, str]], tokens: list[str]) -> int:
    """Nearest pre-cue before the finding (within scope) wins; else a post-cue after it; else present."""
    nearest_pre = None
    for cue_start, cue_end, kind in clause_cues:
        if cue_end <= mention.start and kind in ("pre_negation", "pre_uncertain", "pseudo"):
            nearest_pre = (cue_start, cue_end, kind)
        elif cue_end <= mention.start and kind == "severity_reset":
            nearest_pre = None
    if nearest_pre is not None and nearest_pre[2] != "pseudo":
        return 0 if nearest_pre[2] == "pre_negation" else -1
    for cue_start, _, kind in clause_cues:
        if cue_start >= mention.end and kind in ("post_negation", "post_uncertain"):
            return 0 if kind == "post_negation" else -1
    return 1


def _chunks(clause: tuple[int, int], chunk_cues: list[tuple[int, int, str]]) -> list[tuple[int, int]]:
    """Token ranges of the chunks of a clause, cut at coordinators ("and", "with", commas)."""
    start, end = clause
    chunks = []
    for cue_start, cue_end, _ in chunk_cues:
        chunks.append((start, cue_start))
        start = cue_end
    chunks.append((start, end))
    return chunks


def extract_sentence(sentence: str) -> list[Triplet]:
    """Triplets of one sentence (docs/extraction.md)."""
    tokens = tokenize(sentence)
    if not tokens:
        return []
    taken = [False] * len(tokens)
    cues = CUES.scan(tokens, taken)
    # Anatomy words inside a finding's phrase count ("pleural" in "pleural effusion"), as RadGraph reads them.
    anatomy_taken = list(taken)
    entity_matches = ENTITIES_TABLE.scan(tokens, taken)
    if not entity_matches:
        return []
    # A severity word right after a comma inside a negation scope starts a positive statement.
    extra = [
        (i, i + 1, "severity_reset")
        for i in range(1, len(tokens))
        if tokens[i] in SEVERITY and tokens[i - 1] in (",", "and")
    ]
    cues = sorted(cues + extra)
    anatomy_matches = POSITIONS_TABLE.scan(tokens, anatomy_taken)

    triplets: list[Triplet] = []
    for clause in _clauses(cues, len(tokens)):
        clause_cues = [cue for cue in cues if clause[0] <= cue[0] < clause[1]]
        mentions = [_Mention(entity, s, e) for s, e, entity in entity_matches if clause[0] <= s < clause[1]]
        if not mentions:
            continue
        for mention in mentions:
            mention.existence = _existence(mention, clause_cues, tokens)
        chunks = _chunks(clause, [cue for cue in clause_cues if cue[2] == "chunk"])
        located = _locate(mentions, chunks, anatomy_matches, tokens, anatomy_taken)
        triplets.extend(_with_implications(located, tokens, clause, sentence))
    if any(t.entity not in STUDY_WORDS for t in triplets):
        triplets = [t for t in triplets if t.entity not in STUDY_WORDS]
    return list(dict.fromkeys(triplets))


def _locate(mentions, chunks, anatomy_matches, tokens, anatomy_taken) -> list[tuple[_Mention, list[str]]]:
    """Positions of each mention from the anatomy and side words of its chunk (or its clause-mates)."""
    chunk_info = []
    for start, end in chunks:
        anatomies = [value for s, _, value in anatomy_matches if start <= s < end]
        sides = sides_of(tokens[start:end], anatomy_taken[start:end])
        has_entity = any(start <= m.start < end for m in mentions)
        chunk_info.append({"start": start, "end": end, "anatomies": anatomies, "sides": sides, "entity": has_entity})
    # Anatomy in a chunk with no finding belongs to the finding before it ("opacity in the right and left lower lobes")
    for i, info in enumerate(chunk_info):
        if not info["entity"] and (info["anatomies"] or info["sides"]) and i > 0:
            for previous in reversed(chunk_info[:i]):
                if previous["entity"]:
                    previous["anatomies"] = previous["anatomies"] + info["anatomies"]
                    previous["sides"] = previous["sides"] | info["sides"]
                    break
    located = []
    for mention in mentions:
        info = next(c for c in chunk_info if c["start"] <= mention.start < c["end"])
        anatomies, sides = info["anatomies"], info["sides"]
        index = chunk_info.index(info)
        if not anatomies and not sides and index > 0 and chunk_info[index - 1]["entity"]:
            # A finding coordinated with a located one shares its place: "right lower lobe opacity, atelectasis or
            # pneumonia" (same anatomy), "left lower lobe atelectasis and effusion" (same side, own default site).
            previous = chunk_info[index - 1]
            sides = previous["sides"] | {
                side for anatomy in previous["anatomies"] for side in ("left", "right") if side in anatomy.split("_")
            }
            if mention.entity not in PLEURAL_ENTITIES:
                anatomies = previous["anatomies"]
        located.append((mention, resolve(mention.entity, anatomies, sides)))
    return located


def _with_implications(located, tokens, clause, sentence) -> list[Triplet]:
    """Triplets of a clause, with the zeros that normal statements imply and heart enlargement as cardiomegaly."""
    clause_tokens = set(tokens[clause[0] : clause[1]])
    out: list[Triplet] = []
    for mention, positions in located:
        entity, existence = mention.entity, mention.existence
        if entity == "enlarge" and HEART_WORDS_POSITION in positions:
            # "The heart is (not) enlarged": a statement about heart size.
            out.append(Triplet("cardiomegaly", "heart_size", existence, sentence))
            if existence == 0:
                out.append(Triplet("normal", "heart_size", 1, sentence))
            continue
        out.extend(Triplet(entity, position, existence, sentence) for position in positions)
        if existence != 1:
            continue
        if entity in ("normal", "unremarkable") and HEART_WORDS_POSITION in positions:
            out.append(Triplet("cardiomegaly", "heart_size", 0, sentence))
        elif entity == "normal" and "pulmonary" in positions:
            out.append(Triplet("congestion", "pulmonary", 0, sentence))
        elif entity == "clear" and (clause_tokens & LUNG_WORDS or any(p.endswith("lung_unspec") for p in positions)):
            for position in positions:
                out.append(Triplet("consolidation", position, 0, sentence))
                out.append(Triplet("opacity", position, 0, sentence))
        elif entity in ("sharp", "sharply") and any("costophrenic" in p for p in positions):
            out.extend(Triplet("effusion", p, 0, sentence) for p in positions if "costophrenic" in p)
        elif entity == "intact" and "other" in positions:
            out.append(Triplet("fracture", "other", 0, sentence))
    return out


class RuleExtractor:
    """Rule-based triplet extraction; needs no model and runs anywhere."""

    name = "rules"
    version = VERSION

    def extract(self, texts: list[str]) -> list[list[Triplet]]:
        """Triplets of each text (a whole report: findings and impression together)."""
        return [self.extract_one(text) for text in texts]

    def extract_one(self, text: str) -> list[Triplet]:
        triplets: list[Triplet] = []
        for sentence in split_sentences(clean(text).text):
            triplets.extend(extract_sentence(sentence))
        return list(dict.fromkeys(triplets))
