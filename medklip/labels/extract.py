"""The extract step: a reports table -> a triplets table, cached by report text, sharded for parallel Jobs.

    medklip extract --reports reports.csv --out triplets.parquet                 # rules, the offline default
    medklip extract --data data/demo                                             # a prepared folder's reports
    medklip extract --reports reports.csv --out part-1.parquet --shard 1/4 --cache .cache/extract
    medklip extract merge --out triplets.parquet part-*.parquet
    medklip extract --reports reports.csv --out t.parquet --extractor radgraph --radgraph-dir /models/radgraph
    medklip extract --reports reports.csv --out t.parquet --extractor radgraph --label-scheme official
    medklip extract score tests/data/extraction_dev.jsonl                         # per-entity P/R/F1

Input columns `id,findings,impression` (either text may be empty). Output rows `report_id, entity, position,
existence, sentence, extractor` (docs/extraction.md); the run summary is stored in the parquet file's metadata.

The cache is append-only: `CACHE/<extractor>/<version>/segment-*.parquet`, one segment per run that extracted
something, each keyed by the sha256 of the cleaned report text. A rerun extracts only reports whose text it has not
seen; concurrent runs write separate segments (atomic renames), so they cannot corrupt each other.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from medklip.data.prepare import PreparedData
from medklip.data.sources import DataError, read_reports_csv
from medklip.labels.report_text import clean, report_text, text_key
from medklip.labels.triplets import TRIPLET_COLUMNS, Triplet, labels_from_table, validate

logger = logging.getLogger(__name__)

SUMMARY_KEY = b"medklip.labels.extract.summary"
EXTRACTORS = ("rules", "radgraph")
LABEL_SCHEMES = ("ours", "official")  # radgraph_extractor.LABEL_SCHEMES; docs/extraction.md, RadGraph label schemes


@dataclass
class ExtractSummary:
    """What a run did; printed by the CLI and stored in the output's parquet metadata."""

    extractor: str
    shard: str = "0/1"
    reports: int = 0  # reports of this shard
    extracted: int = 0  # distinct texts run through the extractor
    cache_hits: int = 0  # reports answered from the cache
    triplets: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reports with no text, by reason
    flagged: dict[str, int] = field(default_factory=dict)  # processed, but cleaned: truncated, markup, ...
    seconds: float = 0.0
    input_sha256: str = ""  # of the reports file `extract_file` read ("" for tables passed in memory)

    def line(self) -> str:
        skipped = sum(self.skipped.values())
        flagged = ", ".join(f"{count} {name}" for name, count in self.flagged.items() if count)
        return (
            f"{self.reports} reports (shard {self.shard}), {self.triplets} triplets, {self.extracted} extracted, "
            f"{self.cache_hits} cache hits, {skipped} skipped{f' ({flagged} cleaned)' if flagged else ''}, "
            f"{self.seconds:.1f} s with {self.extractor}"
        )


def make_extractor(name: str, radgraph_dir: str | None = None, batch_size: int = 16, label_scheme: str = "ours"):
    """The extractor called `name` (`rules` or `radgraph`), with RadGraph's `label_scheme` (`ours` or `official`).

    Raises:
        ValueError: unknown extractor or scheme, or `official` with the rules extractor (it reads no RadGraph graph,
            and the official rules are rules about RadGraph relations).
    """
    if label_scheme not in LABEL_SCHEMES:
        raise ValueError(f"unknown label scheme {label_scheme!r}; choose from {LABEL_SCHEMES}")
    if name == "rules" and label_scheme != "ours":
        raise ValueError(
            f"--label-scheme {label_scheme} needs --extractor radgraph: the official MedKLIP rules are rules about "
            f"RadGraph graphs, which the rules extractor does not build"
        )
    if name == "rules":
        from medklip.labels.rule_extractor import RuleExtractor

        return RuleExtractor()
    if name == "radgraph":
        from medklip.labels.radgraph_extractor import RadGraphExtractor

        return RadGraphExtractor(model_dir=radgraph_dir, batch_size=batch_size, label_scheme=label_scheme)
    raise ValueError(f"unknown extractor {name!r}; choose from {EXTRACTORS}")


def parse_shard(spec: str) -> tuple[int, int]:
    """'I/N' -> (I, N) with 0 <= I < N."""
    try:
        index, count = (int(part) for part in spec.split("/"))
    except ValueError as error:
        raise ValueError(f"--shard must look like I/N (e.g. 0/4), got {spec!r}") from error
    if not 0 <= index < count:
        raise ValueError(f"--shard {spec}: need 0 <= I < N")
    return index, count


def shard_of(report_id: str, count: int) -> int:
    """The shard of a report: a hash of its id, so shards are stable under reordering and roughly equal."""
    return int(hashlib.sha256(str(report_id).encode()).hexdigest()[:8], 16) % count


class TripletCache:
    """Append-only, content-addressed cache of extraction results (see the module docstring)."""

    def __init__(self, root: str | Path, extractor: str, version: str):
        self.folder = Path(root) / extractor / version

    def load(self) -> dict[str, list[Triplet]]:
        entries: dict[str, list[Triplet]] = {}
        if not self.folder.is_dir():
            return entries
        for segment in sorted(self.folder.glob("segment-*.parquet")):
            table = pq.read_table(segment).to_pydict()
            for key, encoded in zip(table["key"], table["triplets"], strict=True):
                entries[key] = [Triplet(*item) for item in json.loads(encoded)]
        return entries

    def add(self, entries: dict[str, list[Triplet]]) -> None:
        if not entries:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        table = pa.table(
            {
                "key": list(entries),
                "triplets": [json.dumps([list(triplet) for triplet in value]) for value in entries.values()],
            }
        )
        name = f"segment-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.parquet"
        temporary = self.folder / f".{name}.tmp"
        pq.write_table(table, temporary)
        os.replace(temporary, self.folder / name)


def extract_table(
    reports: pd.DataFrame,
    extractor,
    cache: str | Path | None = None,
    shard: str = "0/1",
    batch_size: int = 256,
    progress: bool = False,
) -> tuple[pd.DataFrame, ExtractSummary]:
    """Triplets of the reports of one shard.

    Args:
        reports: columns `id`, `findings`, `impression`.
        extractor: an object with `name`, `version` and `extract(texts) -> list[list[Triplet]]`.
        cache: cache root folder, or None for no cache.
        shard: 'I/N': only reports with `shard_of(id, N) == I`.
        batch_size: texts per extractor call.
        progress: show a progress bar.

    Returns:
        (triplets table with TRIPLET_COLUMNS, summary).
    """
    started = time.perf_counter()
    index, count = parse_shard(shard)
    ids = reports["id"].astype(str).tolist()
    mine = [i for i, report_id in enumerate(ids) if count == 1 or shard_of(report_id, count) == index]
    summary = ExtractSummary(extractor=f"{extractor.name}/{extractor.version}", shard=shard, reports=len(mine))
    skipped, flagged = Counter(), Counter()
    texts: dict[int, str] = {}
    for i in mine:
        cleaned = clean(report_text(reports["findings"].iat[i], reports["impression"].iat[i]))
        for flag in ("truncated", "markup", "control", "non_english"):
            flagged[flag] += getattr(cleaned, flag)
        if not any(character.isalnum() for character in cleaned.text):
            skipped["empty"] += 1
        else:
            texts[i] = cleaned.text
    keys = {i: text_key(text) for i, text in texts.items()}

    store = TripletCache(cache, extractor.name, extractor.version) if cache else None
    known = store.load() if store else {}
    todo = list(dict.fromkeys(key for key in keys.values() if key not in known))  # distinct texts, in order
    text_of = {key: texts[i] for i, key in keys.items()}
    fresh: dict[str, list[Triplet]] = {}
    bar = tqdm(total=len(todo), desc=f"extract ({extractor.name})", unit="report", disable=not progress or None)
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        for key, triplets in zip(batch, extractor.extract([text_of[key] for key in batch]), strict=True):
            fresh[key] = [validate(triplet) for triplet in triplets]
        bar.update(len(batch))
    bar.close()
    if store:
        store.add(fresh)
    known.update(fresh)

    name = summary.extractor
    rows = [
        (ids[i], triplet.entity, triplet.position, triplet.existence, triplet.sentence, name)
        for i, key in keys.items()
        for triplet in known[key]
    ]
    table = pd.DataFrame(rows, columns=list(TRIPLET_COLUMNS)).astype({"existence": "int8"})
    summary.extracted = len(todo)
    summary.cache_hits = sum(1 for key in keys.values() if key not in fresh)
    summary.triplets = len(table)
    summary.skipped = dict(skipped)
    summary.flagged = dict(flagged)
    summary.seconds = round(time.perf_counter() - started, 3)
    return table, summary


def write_triplets(table: pd.DataFrame, out: str | Path, summary: ExtractSummary | dict) -> None:
    """Writes a triplets table atomically, with the run summary in the parquet metadata."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    payload = asdict(summary) if isinstance(summary, ExtractSummary) else summary
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), SUMMARY_KEY: json.dumps(payload)})
    temporary = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    pq.write_table(arrow, temporary)
    os.replace(temporary, out)


def read_summary(path: str | Path) -> dict:
    """The run summary stored in a triplets file."""
    metadata = pq.read_schema(path).metadata or {}
    if SUMMARY_KEY not in metadata:
        raise DataError(f"{path}: not written by `medklip extract` (no summary in its metadata)")
    return json.loads(metadata[SUMMARY_KEY])


def extract_file(
    reports: str | Path,
    out: str | Path,
    extractor: str = "rules",
    shard: str = "0/1",
    cache: str | Path | None = None,
    radgraph_dir: str | None = None,
    batch_size: int = 256,
    progress: bool = False,
    label_scheme: str = "ours",
) -> ExtractSummary:
    """`medklip extract`: a reports CSV, or a prepared folder's `reports.parquet`, to a triplets parquet file."""
    reports = Path(reports)
    if reports.suffix == ".parquet":
        table = pd.read_parquet(reports, columns=["id", "findings", "impression"])
    else:
        table = read_reports_csv(reports, required=("id", "findings", "impression"))
    duplicated = table["id"].astype(str).duplicated()
    if duplicated.any():
        raise DataError(f"{reports}: duplicate report ids, e.g. {table['id'][duplicated].head(3).tolist()}")
    engine = make_extractor(
        extractor, radgraph_dir=radgraph_dir, batch_size=min(batch_size, 64), label_scheme=label_scheme
    )
    triplets, summary = extract_table(table, engine, cache=cache, shard=shard, batch_size=batch_size, progress=progress)
    summary.input_sha256 = file_sha256(reports)
    write_triplets(triplets, out, summary)
    logger.info("%s -> %s: %s", reports, out, summary.line())
    return summary


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_extracted(
    reports: str | Path,
    out: str | Path,
    extractor: str = "rules",
    radgraph_dir: str | None = None,
    label_scheme: str = "ours",
) -> bool:
    """Whether `out` holds the whole of `reports` extracted by this extractor version (a rerun would change nothing)."""
    if not Path(out).is_file():
        return False
    try:
        summary = read_summary(out)
    except DataError:
        return False
    engine = make_extractor(extractor, radgraph_dir=radgraph_dir, label_scheme=label_scheme)
    return (
        summary.get("extractor") == f"{engine.name}/{engine.version}"
        and (summary.get("shard") == "0/1" or str(summary.get("shard")).startswith("merged"))
        and summary.get("input_sha256") == file_sha256(reports)
    )


def merge(inputs: list[str | Path], out: str | Path) -> ExtractSummary:
    """Joins shard outputs into one table; refuses mixed extractors and repeated, missing or mismatched shards."""
    if not inputs:
        raise ValueError("merge needs at least one shard file")
    summaries = [read_summary(path) for path in inputs]
    extractors = {summary["extractor"] for summary in summaries}
    if len(extractors) > 1:
        raise DataError(f"shards were made by different extractors: {sorted(extractors)}")
    shards = [summary["shard"] for summary in summaries]
    if len(set(shards)) != len(shards):
        raise DataError(f"the same shard appears twice: {shards}")
    counts = {int(shard.split("/")[1]) for shard in shards}
    if len(counts) > 1:
        raise DataError(f"shards of different splits cannot be merged: {shards}")
    (count,) = counts
    missing = sorted(set(range(count)) - {int(shard.split("/")[0]) for shard in shards})
    if missing:
        raise DataError(f"missing shard(s) {[f'{index}/{count}' for index in missing]} of {count}")
    tables = [pd.read_parquet(path) for path in inputs]
    table = pd.concat(tables, ignore_index=True).sort_values(["report_id", "sentence"], kind="stable")
    merged = ExtractSummary(extractor=extractors.pop(), shard=f"merged {len(inputs)}/{count}")
    for summary in summaries:
        merged.reports += summary["reports"]
        merged.extracted += summary["extracted"]
        merged.cache_hits += summary["cache_hits"]
        merged.seconds += summary["seconds"]
        merged.skipped = dict(Counter(merged.skipped) + Counter(summary["skipped"]))
        merged.flagged = dict(Counter(merged.flagged) + Counter(summary["flagged"]))
    merged.triplets = len(table)
    inputs_read = {summary.get("input_sha256", "") for summary in summaries}
    merged.input_sha256 = inputs_read.pop() if len(inputs_read) == 1 else ""  # all shards of one reports file
    write_triplets(table.reset_index(drop=True), out, merged)
    return merged


def load_labels(data: PreparedData) -> dict[str, np.ndarray]:
    """Existence (N, 75) and position (N, 51, 75) labels for every row, from `<data>/triplets.parquet`."""
    path = data.root / "triplets.parquet"
    if not path.is_file():
        raise DataError(f"{path} not found: run `medklip extract --data {data.root}` first")
    triplets = pd.read_parquet(path, columns=["report_id", "entity", "position", "existence"])
    existence, positions = labels_from_table(triplets, data.table["id"].astype(str).tolist())
    return {"existence": existence, "positions": positions}
