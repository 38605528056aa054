"""Phrase matching and anatomy -> position resolution, shared by both triplet extractors (docs/extraction.md).

`PhraseTable` finds the leftmost-longest phrases of a table in a token list; `positions_for` turns the anatomy
words of one finding's clause (and its side words) into positions of the 51.
"""

from __future__ import annotations

import re

from medklip.vocabulary import POSITION_BY_PHRASE

TOKEN = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*|[,;:()/]")


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens (hyphen compounds kept whole: "air-space") and , ; : ( ) /.

    A slash is a token of its own: "atelectasis/scarring" names two findings, and the phrase tables tokenise
    "and/or" or "pacemaker/icd" the same way, so they still match as phrases.
    """
    return TOKEN.findall(text.lower())


class PhraseTable:
    """Maps multi-word phrases to values; `scan` finds them leftmost-longest on token boundaries."""

    def __init__(self, phrases: dict[str, str]):
        self.table: dict[tuple[str, ...], str] = {}
        for phrase, value in phrases.items():
            tokens = tuple(tokenize(phrase))
            if tokens:
                self.table.setdefault(tokens, value)
        self.first_words = {tokens[0] for tokens in self.table}
        self.longest = max((len(tokens) for tokens in self.table), default=0)

    def scan(self, tokens: list[str], taken: list[bool] | None = None) -> list[tuple[int, int, str]]:
        """Matches as (start, end, value), leftmost-longest, skipping and then marking tokens in `taken`."""
        matches = []
        i = 0
        while i < len(tokens):
            if tokens[i] in self.first_words and not (taken and taken[i]):
                for length in range(min(self.longest, len(tokens) - i), 0, -1):
                    window = tuple(tokens[i : i + length])
                    if window in self.table and not (taken and any(taken[i : i + length])):
                        matches.append((i, i + length, self.table[window]))
                        if taken is not None:
                            taken[i : i + length] = [True] * length
                        i += length - 1
                        break
            i += 1
        return matches


POSITIONS_TABLE = PhraseTable(POSITION_BY_PHRASE)

# Words that make a sentence about the lungs ("the lungs are clear"), though they name no position.
LUNG_WORDS = {"lung", "lungs", "parenchyma"}
LEFT = {"left", "left-sided", "leftward"}
RIGHT = {"right", "right-sided", "rightward"}
BOTH = {"bilateral", "bilaterally", "both"}

# An unsided anatomy with a side word becomes the sided position ("left ... pleural" -> left_pleural).
SIDED = {
    "pleural_unspec": ("left_pleural", "right_pleural"),
    "hilar_unspec": ("left_hilar", "right_hilar"),
    "diaphragm_unspec": ("left_diaphragm", "right_diaphragm"),
    "costophrenic_unspec": ("left_costophrenic", "right_costophrenic"),
    "lung_bases": ("left_lower_lung", "right_lower_lung"),
    "lung_apices": ("left_apical_lung", "right_apical_lung"),
}
# Findings of the pleural space: a bare side means that side's pleura.
PLEURAL_ENTITIES = {"effusion", "pneumothorax", "fluid", "blunt", "drainage"}
# Findings of the heart's size are located at heart_size whatever else the clause names.
HEART_ENTITIES = {"cardiomegaly"}
# Findings that are about heart size when nothing else locates them ("borderline cardiomegaly").
HEART_DEFAULT_ENTITIES = {"borderline"}
# Findings for which a bare side names no place (they describe the whole study or the heart).
UNSIDED_ENTITIES = {"normal", "unremarkable", "stable", "process", "abnormality", "finding", "chf", "borderline"}


def sides_of(tokens: list[str], taken: list[bool] | None = None) -> set[str]:
    """The sides ("left", "right") named by bare side words among the tokens not already taken."""
    sides = set()
    for i, token in enumerate(tokens):
        if taken and taken[i]:
            continue
        if token in LEFT:
            sides.add("left")
        elif token in RIGHT:
            sides.add("right")
        elif token in BOTH:
            sides.update(("left", "right"))
    return sides


def resolve(entity: str, anatomies: list[str], sides: set[str]) -> list[str]:
    """Positions of one finding from its anatomy positions and bare side words (docs/extraction.md, Position).

    Args:
        entity: the finding.
        anatomies: positions named by anatomy phrases of the finding's clause, in text order.
        sides: bare side words of the clause ({"left"}, {"right"} or both).

    Returns:
        Distinct positions, in text order; ["unspecified"] when nothing locates the finding.
    """
    if entity in HEART_ENTITIES:
        return ["heart_size"]
    positions: list[str] = []
    for anatomy in anatomies:
        if anatomy in SIDED and sides and not (anatomy in ("lung_bases", "lung_apices") and len(sides) == 2):
            left, right = SIDED[anatomy]
            positions.extend(([left] if "left" in sides else []) + ([right] if "right" in sides else []))
        else:
            positions.append(anatomy)
    if not positions and sides and entity not in UNSIDED_ENTITIES:
        kind = "pleural" if entity in PLEURAL_ENTITIES else "lung_unspec"
        positions = [f"{side}_{kind}" for side in ("left", "right") if side in sides]
    if not positions and entity in HEART_DEFAULT_ENTITIES:
        positions = ["heart_size"]
    return list(dict.fromkeys(positions)) or ["unspecified"]


def positions_for(entity: str, tokens: list[str], taken: list[bool] | None = None) -> list[str]:
    """Positions of `entity` from the tokens of its clause: anatomy phrases, then bare sides."""
    taken = list(taken) if taken is not None else [False] * len(tokens)
    anatomies = [value for _, _, value in POSITIONS_TABLE.scan(tokens, taken)]
    return resolve(entity, anatomies, sides_of(tokens, taken))
