"""The offline triplet extractor: sentences -> clauses -> findings, their negation/uncertainty, and their anatomy.

    from medklip.labels.rule_extractor import RuleExtractor
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

from medklip.labels.anatomy import (
    LUNG_WORDS,
    PLEURAL_ENTITIES,
    POSITIONS_TABLE,
    PhraseTable,
    resolve,
    sides_of,
    tokenize,
)
from medklip.labels.report_text import clean, split_sentences
from medklip.labels.triplets import Triplet, statement_triplets
from medklip.vocabulary import ENTITY_BY_PHRASE, PHRASES_SHA256

# Part of the cache key with the phrase tables' digest: bump whenever a change here may change any text's output.
VERSION = "2"

# --- cue vocabularies ---------------------------------------------------------------------------------------------
# Pre-cues govern the findings after them up to the end of the clause.
PRE_NEGATION = (
    "no", "not", "without", "negative for", "free of", "clear of", "no evidence of", "no evidence for",
    "no radiographic evidence of", "no signs of", "no sign of", "absence of", "absent", "never", "nor", "no definite",
    "no clear", "no clear evidence of", "no focal", "no new", "no acute", "no significant", "no suspicious",
    "neither", "no visible", "no obvious", "no convincing", "no large", "interval resolution of", "resolution of",
    "resolved", "removal of", "no longer", "rather than", "no residual", "no appreciable", "no discrete", "no overt",
)  # fmt: skip
PRE_UNCERTAIN = (
    "possible", "possibly", "likely", "may represent", "may reflect", "may be", "might be",
    "could be", "could represent", "could reflect", "may", "might", "suggestive of", "suggest", "suggests",
    "suggesting", "suspicious for", "suspicious of", "suspected", "suspect", "questionable", "question of",
    "concerning for", "concern for", "worrisome for", "cannot exclude", "can not exclude", "cannot rule out",
    "can not rule out", "differential includes", "differential diagnosis includes",
    "differential considerations include",
    "raises the possibility of", "raising the possibility of", "rule out", "r/o", "evaluate for",
    "assess for", "presumed", "presumably", "equivocal", "indeterminate", "borderline for", "question",
    "not excluded", "cannot be excluded", "could obscure", "may obscure", "could hide", "may hide",
    "could mask", "could indicate", "could include", "may include",
    "possibility of", "the possibility of", "recommend", "recommended", "recommendation", "to evaluate",
    "for evaluation of", "evaluation for", "to rule out", "rule-out", "to exclude", "correlate", "correlation",
    "detecting", "most xxxx", "xxxx to represent", "or possibly", "differential of which", "exclude",
    "in the appropriate clinical setting", "in the proper clinical setting", "in the right clinical setting",
)  # fmt: skip
# The reading the report favours, though hedged: present, as the human labels count it ("probable pneumonia").
PRE_FAVOURED = (
    "probable", "probably", "most suggestive of", "strongly suggestive of", "most consistent with",
    "probably representing", "most compatible with",
)  # fmt: skip
# Historical or resolving mentions of a process: it was there before, not (or not certainly) now. Uncertain (-1).
# Not "old", "healed" or "status post": an old fracture, a healed rib or the wires after surgery are still seen.
PRE_HISTORICAL = (
    "prior", "previous", "history of", "sequela of", "sequelae of", "residuals of", "residua of", "resolving",
)  # fmt: skip
# Post-cues govern the findings before them, back to the start of the clause.
POST_NEGATION = (
    "is not seen", "are not seen", "not seen", "is not identified", "are not identified", "not identified",
    "is not visualized", "are not visualized", "not visualized", "not appreciated", "is not appreciated",
    "not present", "is absent", "are absent", "has resolved", "have resolved", "resolved", "has cleared",
    "have cleared", "cleared", "no longer seen", "no longer visualized", "no longer visible", "no longer present",
    "no longer identified", "is gone", "has been removed", "have been removed", "been removed", "was removed",
    "were removed", "removed", "is not demonstrated", "not demonstrated", "not evident", "is not evident",
    "are not evident", "is resolved", "are resolved", "is negative",
)  # fmt: skip
POST_UNCERTAIN = (
    "cannot be excluded", "can not be excluded", "not excluded", "is not excluded", "cannot be ruled out",
    "can not be ruled out", "not ruled out", "not entirely excluded", "is not entirely excluded",
    "is possible", "are possible", "is suspected", "are suspected", "is questioned", "is likely", "are likely",
    "is probable", "not completely excluded", "is a consideration", "are a consideration", "is considered",
    "would be a consideration", "is a possibility", "are a possibility", "also possible", "are also possible",
    "is also possible", "cannot be entirely excluded", "can not be entirely excluded", "difficult to exclude",
    "difficult to entirely exclude", "not well seen", "not well-seen", "is not well seen", "is not well-seen",
)  # fmt: skip
# Phrases with a negation word that negate nothing ("no change in the effusion": the effusion is there).
PSEUDO_NEGATION = (
    "no change", "no significant change", "no interval change", "no substantial change", "no appreciable change",
    "without change", "no increase", "not significantly changed", "not changed", "no other change", "not only",
    "no significant interval change", "no definite change", "without significant change", "no new change",
    "gram negative", "not necessarily", "no further change",
)  # fmt: skip
# "X versus Y": the report names both readings, and the human labels count both as present (so do we); a cue
# before the first reading governs both ("may represent atelectasis versus edema": both uncertain).
ALTERNATIVES = ("versus", "vs", "vs.")
# Words between a negation and its findings that do not change it: "no consolidation to suggest pneumonia".
TRANSPARENT = ("to suggest", "to indicate", "to explain", "to account for", "that would suggest")
# Words that close a clause: scope of cues stops here.
CLAUSE_BREAKS = (
    ";", ":", "but", "however", "although", "though", "whereas", "while", "yet", "except", "aside from",
    "apart from", "otherwise", "which", "there is", "there are", "is seen", "are seen", "is noted", "are noted",
    "is present", "are present", "again seen", "is again seen", "are again seen", "remains", "remain", "persists",
    "has developed", "new", "in addition", "additionally", "also", "is identified", "are identified",
    "and the", ", and the", ", the",
)  # fmt: skip
# Words that cut a clause into chunks for anatomy (each finding takes the anatomy of its own chunk).
CHUNK_BREAKS = ("and", "or", ",", "with", "as well as", "and/or", "along with", "in addition to", "plus")
# After a comma (or "and", "with") inside a negation scope, a size, severity or change word starts a new, positive
# statement: "No pneumothorax, small left effusion.", "No pneumothorax, with persistent right effusion."
RESTART_WORDS = {
    "persistent", "persisting", "stable", "unchanged", "increased", "increasing", "decreased", "decreasing",
    "improved", "improving", "worsened", "worsening", "residual", "redemonstrated", "re-demonstrated", "again",
    "small", "moderate", "large", "mild", "mildly", "severe", "trace", "minimal", "tiny", "marked", "markedly",
    "moderately", "extensive", "subtle", "slight", "minimally", "moderate-sized", "small-to-moderate",
}  # fmt: skip

CUES = PhraseTable(
    {
        **{phrase: "pre_negation" for phrase in PRE_NEGATION},
        **{phrase: "pre_uncertain" for phrase in PRE_UNCERTAIN},
        **{phrase: "pre_historical" for phrase in PRE_HISTORICAL},
        **{phrase: "pre_favoured" for phrase in PRE_FAVOURED},
        **{phrase: "post_negation" for phrase in POST_NEGATION},
        **{phrase: "post_uncertain" for phrase in POST_UNCERTAIN},
        **{phrase: "pseudo" for phrase in PSEUDO_NEGATION},
        **{phrase: "alternative" for phrase in ALTERNATIVES},
        **{phrase: "transparent" for phrase in TRANSPARENT},
        **{phrase: "break" for phrase in CLAUSE_BREAKS},
        **{phrase: "chunk" for phrase in CHUNK_BREAKS},
    }
)
ENTITIES_TABLE = PhraseTable(ENTITY_BY_PHRASE)

# Adjective forms of findings that, right before another finding, only qualify it (`_heads_only`).
MODIFIER_FORMS = {
    "nodular", "micronodular", "consolidative", "infiltrative", "pneumonic", "atelectatic", "edematous", "bullous",
    "masslike", "mass-like", "emphysematous",
}  # fmt: skip
# Devices whose tip the report locates.
DEVICE_ENTITIES = {"tube", "line", "catheter", "picc", "pacemaker", "lead", "wire", "stent", "device", "drainage"}
# Findings that only qualify a whole study; reported only when the sentence has no other finding.
STUDY_WORDS = {"stable"}


# --- one sentence -------------------------------------------------------------------------------------------------
@dataclass
class _Mention:
    entity: str
    start: int
    end: int
    existence: int = 1
    alternative: bool = False  # one reading of "X versus Y"


def _heads_only(matches: list[tuple[int, int, str]], tokens: list[str]) -> list[tuple[int, int, str]]:
    """Drops an adjective form that qualifies the finding right after it: "nodular opacity" is an opacity.

    RadGraph reads such an adjective as an observation that `modify`s the next one, and the official MedKLIP
    preprocessing drops observations whose only relation is `modify`.
    """
    return [
        match
        for match, following in zip(matches, [*matches[1:], None], strict=False)
        if not (" ".join(tokens[match[0] : match[1]]) in MODIFIER_FORMS and following and following[0] == match[1])
    ]


def _clauses(cues: list[tuple[int, int, str]], n_tokens: int) -> list[tuple[int, int]]:
    """Token ranges of clauses, split at clause breaks."""
    bounds, start = [], 0
    for cue_start, cue_end, kind in cues:
        if kind == "break":
            bounds.append((start, cue_start))
            start = cue_end
    bounds.append((start, n_tokens))
    return [(a, b) for a, b in bounds if b > a]


def _in_list(cue: tuple[int, int, str], clause: tuple[int, int], tokens: list[str]) -> bool:
    """A severity word inside a list that goes on to "or"/"nor" continues the list, it starts no new statement.

    "No focal consolidation, large pleural effusion, or pneumothorax": every item is negated.
    """
    return cue[2] == "severity_reset" and any(token in ("or", "nor") for token in tokens[cue[1] : clause[1]])


def _existence(mention: _Mention, clause_cues: list[tuple[int, int, str]]) -> int:
    """Nearest pre-cue before the finding (within scope) wins; else a post-cue after it; else present."""
    nearest, transparent = None, False
    for _, cue_end, kind in clause_cues:
        if cue_end > mention.start:
            break
        if kind in ("pre_negation", "pre_uncertain", "pre_historical", "pre_favoured", "pseudo"):
            nearest = kind
        elif kind == "transparent":  # "no consolidation to suggest pneumonia": the negation reaches through
            transparent = True
        elif kind == "severity_reset" and nearest == "pre_negation":
            nearest, transparent = None, False
    if nearest == "pre_negation":
        return 0
    if nearest in ("pre_uncertain", "pre_historical") or (nearest is None and transparent):
        return -1
    if nearest is None:
        for cue_start, _, kind in clause_cues:
            if cue_start >= mention.end and kind in ("post_negation", "post_uncertain"):
                return 0 if kind == "post_negation" else -1
    return 1


def _chunks(clause: tuple[int, int], chunk_cues: list[tuple[int, int, str]], tokens: list[str]) -> list[tuple]:
    """(start, end, connector) chunks of a clause, cut at coordinators; connector = the words before the chunk."""
    start, end = clause
    chunks, connector = [], ""
    for cue_start, cue_end, _ in chunk_cues:
        chunks.append((start, cue_start, connector))
        start, connector = cue_end, " ".join(tokens[cue_start:cue_end])
    chunks.append((start, end, connector))
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
    entity_matches = _heads_only(ENTITIES_TABLE.scan(tokens, taken), tokens)
    if not entity_matches:
        return []
    # A severity word right after a comma inside a negation scope starts a positive statement.
    extra = [
        (i, i + 1, "severity_reset")
        for i in range(1, len(tokens))
        if tokens[i] in RESTART_WORDS and tokens[i - 1] in (",", "and", "with")
    ]
    cues = sorted(cues + extra)
    anatomy_matches = POSITIONS_TABLE.scan(tokens, anatomy_taken)

    triplets: list[Triplet] = []
    for clause in _clauses(cues, len(tokens)):
        clause_cues = [cue for cue in cues if clause[0] <= cue[0] < clause[1] and not _in_list(cue, clause, tokens)]
        mentions = [_Mention(entity, s, e) for s, e, entity in entity_matches if clause[0] <= s < clause[1]]
        if not mentions:
            continue
        # A post-cue with no finding before it reads forward ("Resolved interstitial edema").
        clause_cues = [
            (start, end, kind.replace("post_", "pre_", 1) if start < mentions[0].start else kind)
            for start, end, kind in clause_cues
        ]
        for cue_start, cue_end, kind in clause_cues:
            if kind == "alternative":  # "atelectasis versus consolidation": readings of the finding observed
                before = [m for m in mentions if m.end <= cue_start][-1:]
                after = [m for m in mentions if m.start >= cue_end][:1]
                for mention in before + after:
                    mention.alternative = True
        for mention in mentions:
            mention.existence = _existence(mention, clause_cues)
        chunks = _chunks(clause, [cue for cue in clause_cues if cue[2] == "chunk"], tokens)
        located = _locate(mentions, chunks, anatomy_matches, tokens, anatomy_taken)
        triplets.extend(_with_implications(located, tokens, sentence))
    if sentence.rstrip().endswith("?"):  # a question asserts nothing: "Pneumonia?"
        triplets = [t._replace(existence=-1) if t.existence == 1 else t for t in triplets]
    if any(t.entity not in STUDY_WORDS for t in triplets):
        triplets = [t for t in triplets if t.entity not in STUDY_WORDS]
    # "Stable" about one structure ("the mediastinum is stable") qualifies it; only the whole study counts.
    triplets = [t for t in triplets if t.entity not in STUDY_WORDS or t.position == "unspecified"]
    return list(dict.fromkeys(triplets))


def _locate(mentions, chunks, anatomy_matches, tokens, anatomy_taken) -> list[tuple[_Mention, list[str]]]:
    """Positions of each mention from the anatomy and side words of its chunk (or its clause-mates)."""
    chunk_info = []
    for start, end, connector in chunks:
        chunk_info.append(
            {
                "start": start,
                "end": end,
                "connector": connector,
                "anatomies": [value for s, _, value in anatomy_matches if start <= s < end],
                "sides": sides_of(tokens[start:end], anatomy_taken[start:end]),
                "mentions": [m for m in mentions if start <= m.start < end],
            }
        )
    # Anatomy in a chunk with no finding belongs to the finding before it ("opacity in the right and left lower
    # lobes"), or after it when none comes before ("heart size and mediastinal contours are normal").
    for i, info in enumerate(chunk_info):
        if info["mentions"] or not (info["anatomies"] or info["sides"]):
            continue
        before = [c for c in reversed(chunk_info[:i]) if c["mentions"]]
        after = [c for c in chunk_info[i + 1 :] if c["mentions"]]
        if before:
            before[0]["anatomies"] = before[0]["anatomies"] + info["anatomies"]
            before[0]["sides"] = before[0]["sides"] | info["sides"]
        elif after:
            after[0]["anatomies"] = info["anatomies"] + after[0]["anatomies"]
            after[0]["sides"] = after[0]["sides"] | info["sides"]
    located = []
    for index, info in enumerate(chunk_info):
        for mention in info["mentions"]:
            anatomies, sides = _borrowed(mention, index, chunk_info)
            located.append((mention, resolve(mention.entity, anatomies, sides)))
    return _share_device_sites(located)


def _borrowed(mention: _Mention, index: int, chunk_info: list[dict]) -> tuple[list[str], set[str]]:
    """The anatomy and sides of a finding's chunk, or what it may take from a coordinated neighbour.

    "Right lower lobe opacity, atelectasis or pneumonia": an alternative or an interpretation takes the observed
    site. "Left lower lobe atelectasis and effusion": a pleural finding takes the side. "Tortuous and calcified
    aorta": a bare first conjunct takes the anatomy of the next.
    """
    info = chunk_info[index]
    if info["anatomies"] or info["sides"]:
        return info["anatomies"], info["sides"]
    previous = chunk_info[index - 1] if index > 0 and chunk_info[index - 1]["mentions"] else None
    following = chunk_info[index + 1] if index + 1 < len(chunk_info) else None
    if previous is None:
        bare = info["end"] - info["start"] == mention.end - mention.start
        if bare and following is not None and following["mentions"] and following["connector"] == "and":
            return following["anatomies"], following["sides"]
        return [], set()
    sides = previous["sides"] | {
        side for anatomy in previous["anatomies"] for side in ("left", "right") if side in anatomy.split("_")
    }
    alternative = info["connector"] in ("or", "and/or") or mention.existence == -1 or mention.alternative
    if alternative and mention.entity not in PLEURAL_ENTITIES:
        return previous["anatomies"], previous["sides"]
    if mention.entity in PLEURAL_ENTITIES:
        return [], sides
    return [], set()


def _share_device_sites(located: list[tuple[_Mention, list[str]]]) -> list[tuple[_Mention, list[str]]]:
    """A device and its tip share every site of the clause ("right IJ line with tip in the SVC")."""
    for i, (mention, positions) in enumerate(located):
        if mention.entity != "tip":
            continue
        devices = [j for j in range(i - 1, -1, -1) if located[j][0].entity in DEVICE_ENTITIES]
        devices = devices[:1] or [j for j in range(i + 1, len(located)) if located[j][0].entity in DEVICE_ENTITIES][:1]
        for j in devices:
            shared = [p for p in dict.fromkeys(located[j][1] + positions) if p != "unspecified"] or ["unspecified"]
            located[i] = (mention, shared)
            located[j] = (located[j][0], shared)
    return located


def _with_implications(located, tokens, sentence) -> list[Triplet]:
    """Triplets of a clause, with the zeros that normal statements imply (`triplets.statement_triplets`)."""
    about_lungs = bool(set(tokens) & LUNG_WORDS)  # "lungs are hyperinflated but clear": subject in an earlier clause
    out: list[Triplet] = []
    for mention, positions in located:
        out.extend(statement_triplets(mention.entity, mention.existence, positions, sentence, about_lungs))
    return out


class RuleExtractor:
    """Rule-based triplet extraction; needs no model and runs anywhere."""

    name = "rules"
    version = f"{VERSION}-{PHRASES_SHA256[:10]}"

    def extract(self, texts: list[str]) -> list[list[Triplet]]:
        """Triplets of each text (a whole report: findings and impression together)."""
        return [self.extract_one(text) for text in texts]

    def extract_one(self, text: str) -> list[Triplet]:
        triplets: list[Triplet] = []
        for sentence in split_sentences(clean(text).text):
            triplets.extend(extract_sentence(sentence))
        return list(dict.fromkeys(triplets))
