"""Data sources: where radiographs and their reports come from, named by URI.

- `folder://DIR`: `DIR/reports.csv` with columns `id,image,findings,impression` (image = path relative to DIR;
  optional `patient_id`, `subject_id` or `study_id` to keep a patient's images in one split). What hospital users bring, and what
  `medklip data synth` writes.
- `hf://NAME[?split=train&revision=REV]`: a Hugging Face dataset with columns `image`, `findings`, `impression`
  (e.g. `hf://itsanmolgupta/mimic-cxr-dataset`). NAME may also be an absolute local folder written by
  `datasets.Dataset.save_to_disk` (`hf:///data/mimic`); a relative NAME is always a Hub id.
- `synthetic://N?seed=S[&size=256]`: N procedural radiographs from `medklip.data.synthetic`, generated on first use.

A source yields `Record`s: an id, the report text, and either a file path or the encoded image bytes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pandas as pd

from medklip.safe_paths import UnsafePath, contained

logger = logging.getLogger(__name__)

HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?")  # no '..' segment can start one

REPORT_COLUMNS = ("id", "image", "findings", "impression")
# The first present one groups rows into one split. Patient before study: one patient's studies share a split too.
GROUP_COLUMNS = ("patient_id", "subject_id", "study_id")


class DataError(ValueError):
    """Input that cannot be read at all (as opposed to a single bad row, which is skipped and counted)."""


@dataclass
class Record:
    """One image and its report, before decoding."""

    id: str
    findings: str
    impression: str
    image_ref: str  # where the image came from, for people: a path or `hf:NAME[row]`
    image_path: str | None = None  # a file to read, or
    image_bytes: bytes | None = None  # the encoded image itself
    group: str | None = None  # study or patient id when the source has one
    refused: str | None = None  # why the image may not be read (a path outside the source folder)


def read_reports_csv(path: str | Path, required: tuple[str, ...] = REPORT_COLUMNS) -> pd.DataFrame:
    """Reads a reports CSV as strings, with clear errors that name the file.

    Args:
        path: the CSV file.
        required: columns that must be present.

    Returns:
        A DataFrame of strings (missing cells are empty strings).

    Raises:
        DataError: the file is missing, not UTF-8, not parseable, or lacks a required column.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: reports file not found")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(
            f"{path}: not valid UTF-8 ({error.reason} at byte {error.start}); re-save it as UTF-8, "
            f"e.g. `iconv -f latin1 -t utf-8 {path.name} > fixed.csv`"
        ) from error
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise DataError(f"{path}: not a readable CSV: {error}") from error
    table.columns = [str(column).strip() for column in table.columns]
    missing = [column for column in required if column not in table.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {list(table.columns)}, need {list(required)}")
    return table


def _group(value) -> str | None:
    """A group id cell as text; None when empty (the row then falls back to its image id)."""
    text = "" if value is None else str(value).strip()
    return text or None


class FolderSource:
    """A folder with `reports.csv` and image files (the layout `medklip data synth` writes)."""

    def __init__(self, root: str | Path, uri: str | None = None):
        self.root = Path(root)
        self.uri = uri or f"folder://{self.root}"
        self.reports_path = self.root / "reports.csv"
        self.table = read_reports_csv(self.reports_path)
        self.group_column = next((column for column in GROUP_COLUMNS if column in self.table.columns), None)

    @property
    def truth_path(self) -> Path | None:
        """`truth.csv` (synthetic sources) if the folder has one."""
        path = self.root / "truth.csv"
        return path if path.is_file() else None

    def __len__(self) -> int:
        return len(self.table)

    def fingerprint(self) -> dict:
        """Identity of the input: the CSV's bytes plus each image's path, size and modification time.

        Content hashes of every image would cost a full read of the data set; size + mtime is the same trade-off
        `make` and `rsync` make, and any edit, replacement or addition changes it.
        """
        digest = hashlib.sha256(self.reports_path.read_bytes())
        for relative in self.table["image"]:
            try:
                stat = contained(self.root, str(relative).strip()).stat()
                digest.update(f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            except (OSError, UnsafePath):
                digest.update(f"{relative}\0missing\n".encode())
        return {"kind": "folder", "root": str(self.root.resolve()), "sha256": digest.hexdigest()}

    def records(self) -> Iterator[Record]:
        for row in self.table.itertuples(index=False):
            relative = str(row.image).strip()
            path, refused = None, None
            if relative:
                try:
                    path = str(contained(self.root, relative))
                except UnsafePath as error:
                    refused = error.reason
            yield Record(
                id=str(row.id).strip(),
                findings=row.findings,
                impression=row.impression,
                image_ref=relative,
                image_path=path,
                group=_group(getattr(row, self.group_column)) if self.group_column else None,
                refused=refused,
            )


class HuggingFaceSource:
    """A `datasets` dataset with columns image, findings, impression (MIMIC-CXR mirrors use this schema).

    The mirror has no ids, so a record's id is the sha256 of its image bytes: stable across dataset revisions and
    row reorderings, and an exact duplicate image gets the same id (and is then skipped as a duplicate). A
    `patient_id`, `subject_id` or `study_id` column, when the dataset has one, groups rows into one split.
    """

    def __init__(self, name: str, split: str = "train", revision: str | None = None, uri: str | None = None):
        import datasets  # heavy import, only for this source

        self.name = name
        self.split = split
        self.uri = uri or f"hf://{name}"
        if Path(name).is_absolute():  # a folder from `save_to_disk`; a relative name is always a Hub id
            loaded = datasets.load_from_disk(name)
        else:
            loaded = datasets.load_dataset(name, split=split, revision=revision)
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise DataError(f"{name}: no split {split!r}; available: {list(loaded)}")
            loaded = loaded[split]
        missing = [column for column in ("image", "findings", "impression") if column not in loaded.column_names]
        if missing:
            raise DataError(f"{name}: missing column(s) {missing}; found {loaded.column_names}")
        # Keep the encoded bytes: we decode ourselves, so a bad image is skipped with a reason instead of crashing.
        self.dataset = loaded.cast_column("image", datasets.Image(decode=False))
        self.group_column = next((column for column in GROUP_COLUMNS if column in loaded.column_names), None)

    truth_path = None

    def __len__(self) -> int:
        return len(self.dataset)

    def fingerprint(self) -> dict:
        return {"kind": "hf", "name": self.name, "split": self.split, "dataset": self.dataset._fingerprint}

    def records(self) -> Iterator[Record]:
        for row_index, row in enumerate(self.dataset):
            image = row["image"] or {}
            data = image.get("bytes")
            path = image.get("path")
            if data is None and path and not os.path.isfile(path):
                path = None
            identity = hashlib.sha256(data).hexdigest()[:16] if data else f"row{row_index:07d}"
            yield Record(
                id=f"hf-{identity}",
                findings=row["findings"] or "",
                impression=row["impression"] or "",
                image_ref=f"hf:{self.name}[{row_index}]",
                image_path=path if data is None else None,
                image_bytes=data,
                group=_group(row[self.group_column]) if self.group_column else None,
            )


class SyntheticSource(FolderSource):
    """`synthetic://N?seed=S`: generated into `workdir/source` on first use, then read as a folder."""

    def __init__(self, n: int, seed: int, size: int, workdir: str | Path, uri: str, workers: int | None = None):
        from medklip.data import synthetic

        root = Path(workdir) / "source"
        self.spec = {"kind": "synthetic", "n": n, "seed": seed, "size": size, "version": synthetic.VERSION}
        stamp = root / "synthetic.json"
        if not (stamp.is_file() and json.loads(stamp.read_text()) == self.spec):
            logger.info("generating %d synthetic radiographs (seed %d, %d px) into %s", n, seed, size, root)
            synthetic.generate(root, n=n, seed=seed, size=size, workers=workers, progress=True)
            stamp.write_text(json.dumps(self.spec))
        super().__init__(root, uri=uri)

    def fingerprint(self) -> dict:
        # Generation is deterministic, so the spec identifies the data without hashing the files.
        return dict(self.spec)


def source_folder(uri: str) -> Path | None:
    """The local folder a source URI reads (folder://, a bare folder, hf:// of a local folder), else None."""
    if "://" not in uri:
        return Path(uri) if Path(uri).is_dir() else None
    parsed = urlparse(uri)
    location = Path(parsed.netloc + parsed.path)
    if parsed.scheme == "folder" or (parsed.scheme == "hf" and location.is_absolute()):
        return location
    return None


def open_source(uri: str, workdir: str | Path, workers: int | None = None) -> FolderSource | HuggingFaceSource:
    """Opens a source URI (see the module docstring for the forms).

    Args:
        uri: `folder://DIR`, `hf://NAME[?split=S&revision=R]` or `synthetic://N?seed=S[&size=P]`.
            A bare existing directory is taken as `folder://`.
        workdir: where a synthetic source is materialised (the prepare output folder).
        workers: processes for generating synthetic data.

    Raises:
        DataError: unknown scheme or malformed URI.
    """
    if "://" not in uri and Path(uri).is_dir():
        uri = f"folder://{uri}"
    parsed = urlparse(uri)
    query = {key: values[-1] for key, values in parse_qs(parsed.query).items()}
    location = parsed.netloc + parsed.path
    if parsed.scheme == "folder":
        if not Path(location).is_dir():
            raise DataError(f"{uri}: folder {location} does not exist")
        return FolderSource(location, uri=uri)
    if parsed.scheme == "hf":
        if not Path(location).is_absolute() and not HUB_ID.fullmatch(location):
            raise DataError(f"{uri}: NAME must be a Hub dataset id (owner/name) or an absolute local folder")
        return HuggingFaceSource(location, split=query.get("split", "train"), revision=query.get("revision"), uri=uri)
    if parsed.scheme == "synthetic":
        try:
            n = int(location)
            seed = int(query.get("seed", 0))
            size = int(query.get("size", 256))
        except ValueError as error:
            raise DataError(f"{uri}: expected synthetic://N?seed=S[&size=P] with integers") from error
        from medklip.data.synthetic import check_request

        try:
            check_request(n, size)
        except ValueError as error:
            raise DataError(f"{uri}: {error}") from None
        return SyntheticSource(n, seed, size, workdir=workdir, uri=uri, workers=workers)
    raise DataError(f"{uri}: unknown source; use folder://DIR, hf://NAME or synthetic://N?seed=S")
