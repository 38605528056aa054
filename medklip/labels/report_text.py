"""Report text before extraction: joining sections, cleaning, splitting into sentences.

Both extractors see the same cleaned text, and the extraction cache keys on it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

MAX_CHARS = 20_000  # ~10x the longest real report; longer text is truncated (and counted)

MARKUP = re.compile(r"<[^>]{0,200}>|&[a-z]{2,8};|&#\d{1,6};")
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
HEADER = re.compile(
    r"\b(findings|impression|indication|history|comparison|technique|conclusion|exam|examination)\s*:", re.IGNORECASE
)
ABBREVIATION_END = re.compile(r"\b(vs|approx|e\.g|i\.e|dr|st|pt|cf|incl|resp)\.$", re.IGNORECASE)
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+|(?<=[a-z])\.(?=[A-Z])|\s+(?=\d{1,2}[.)]\s)")


@dataclass
class CleanedText:
    text: str
    truncated: bool = False
    markup: bool = False
    control: bool = False
    non_english: bool = False


def clean(text: str) -> CleanedText:
    """Removes markup, control characters and section headers; truncates very long text."""
    result = CleanedText(text)
    if len(text) > MAX_CHARS:
        text, result.truncated = text[:MAX_CHARS], True
    if "<" in text or "&" in text:
        stripped = MARKUP.sub(" ", text)
        result.markup = stripped != text
        text = stripped
    stripped = CONTROL.sub(" ", text)
    result.control = stripped != text
    text = HEADER.sub(". ", stripped)
    letters = sum(character.isalpha() for character in text)
    ascii_letters = sum(character.isascii() and character.isalpha() for character in text)
    result.non_english = letters > 20 and ascii_letters < 0.6 * letters
    result.text = text
    return result


def split_sentences(text: str) -> list[str]:
    """Sentences of a report (decimals such as "2.5 cm" and abbreviations such as "vs." stay whole)."""
    sentences: list[str] = []
    for piece in SENTENCE_END.split(text):
        if sentences and ABBREVIATION_END.search(sentences[-1]):
            sentences[-1] = f"{sentences[-1]} {piece}"
        elif piece:
            sentences.append(piece)
    return [sentence.strip() for sentence in sentences if sentence.strip(" .")]


def report_text(findings: str | None, impression: str | None) -> str:
    """The text extracted from: findings, then impression (either may be empty)."""
    parts = [part.strip() for part in (findings or "", impression or "") if part and part.strip()]
    return "\n".join(parts)


def text_key(text: str) -> str:
    """sha256 of the whitespace-normalised text: the cache key (the extractor's name and version sit beside it)."""
    return hashlib.sha256(" ".join(text.split()).encode()).hexdigest()
