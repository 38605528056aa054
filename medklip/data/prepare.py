"""Prepare a source once: decode every image, store uint8 shards for fast random access, plus the reports table.

    medklip data prepare --source synthetic://2000?seed=0 --out data/demo
    medklip data prepare --source folder:///data/hospital --out data/hospital
    medklip data prepare --source hf://itsanmolgupta/mimic-cxr-dataset --out data/mimic

Output folder:
    shards/images-NNNNN.u8   raw uint8 pixels, images back to back (read with np.memmap)
    reports.parquet          one row per kept image: id, findings, impression, image, group, split_group, split,
                             report_sha256, shard, offset, height, width
    manifest.json            n_images, n_skipped, skipped (the first 1000 [{id, path, reason}]), splits,
                             split_roles, grouping, settings, fingerprint
    skipped.csv              every skipped row: id, path, reason
    truth.csv                copied from the source when it has one (synthetic data)
    .medklip-prepared        marks the folder as prepare's own

Prepare writes only into a new or empty folder, its own earlier output, or an older release's (one with a
manifest), never into the source folder, and replaces only the files it wrote there.

Preparing the same input with the same settings again does nothing: the manifest's fingerprint matches.

Splits and their roles (`SPLIT_ROLES`, written into the manifest): `train` is trained on; `val` chooses model_best
and the F1 thresholds (selection); `gate` is held out for the registry's promotion gate, which training never reads
(promotion); `test` is scored once per evaluated run and reported, and no decision reads it (report). A row's split is
a hash of its group key, the patient (or study) id when the source has one, so one patient's images never sit in two
splits and a row keeps its split when the data set grows; `manifest["grouping"]` says which key was used and how many
rows had to fall back to their image id. Folders prepared before format 3 have no gate split: `promotion_split` then
names `val`, with the reason.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
from filelock import FileLock
from tqdm import tqdm

from medklip.data.images import MAX_BYTES, MAX_PIXELS, MIN_SIDE, BadImage, ImageLimits, decode_with_source_size
from medklip.data.sources import DataError, Record, open_source, source_folder

logger = logging.getLogger(__name__)

FORMAT = "medklip-prepared/3"  # 2: source_height/source_width columns; 3: gate split, split roles, grouping
WINDOW = 256  # records decoded per round trip to the worker pool (bounds memory for in-memory sources)
MAX_STUDY_IMAGES = 4  # a duplicate report shared by more rows than this is boilerplate, not one study
MARKER = ".medklip-prepared"  # marks an output folder as prepare's own
SHARD_NAME = re.compile(r"shards/images-\d{5}\.u8")
SKIPPED_IN_MANIFEST = 1000  # the manifest lists the first skipped rows; skipped.csv lists them all


@dataclass
class PrepareConfig:
    """Settings of `prepare`; all but `workers` go into the fingerprint."""

    short_side: int = 256  # images are resized so the shorter side has this many pixels
    min_side: int = MIN_SIDE  # source images smaller than this on a side are skipped as "tiny"
    val_fraction: float = 0.1  # share of split groups assigned to validation (model selection, thresholds)
    test_fraction: float = 0.1  # share of split groups assigned to test (reported, used by no decision)
    gate_fraction: float = 0.1  # share of split groups held out for the registry's promotion gate (0: none)
    split_seed: int = 0  # changes the split assignment (a hash of seed and group key)
    shard_bytes: int = 256 * 2**20  # a new shard file starts after this many bytes of pixels
    workers: int | None = None  # decoding processes (None: all cores; 1: no pool)
    max_pixels: int = MAX_PIXELS  # an image with more pixels is skipped as "too large" (from its header)
    max_bytes: int = MAX_BYTES  # an image file larger than this is skipped unread

    def __post_init__(self):
        if self.short_side < self.min_side:
            raise ValueError(f"short_side {self.short_side} is below min_side {self.min_side}")
        if self.max_pixels < self.min_side**2 or self.max_bytes < 1:
            raise ValueError(f"max_pixels must be at least {self.min_side**2} and max_bytes at least 1")
        fractions = (self.val_fraction, self.test_fraction, self.gate_fraction)
        if not (all(0 <= value < 1 for value in fractions) and sum(fractions) < 1):
            raise ValueError("val_fraction, test_fraction and gate_fraction must be in [0, 1) and sum to less than 1")


def report_sha256(findings: str, impression: str) -> str:
    """The report's identity for caching and duplicate detection: whitespace-normalised findings + impression."""
    text = " ".join(findings.split()) + "\n" + " ".join(impression.split())
    return hashlib.sha256(text.encode()).hexdigest()


SPLIT_ROLES = {"train": "training", "val": "selection", "gate": "promotion", "test": "report"}
LEGACY_SPLIT_ROLES = {"train": "training", "val": "selection", "test": "report"}  # formats before 3: no gate split
GROUP_FALLBACK = (
    "no patient or study id: rows sharing an exact report (at most 4) are one group, every other row is its own "
    "group (image id)"
)


def split_groups(keys: list[str], report_hashes: list[str]) -> list[str]:
    """The key each row's split is drawn from: `group:<patient or study id>` when the source has one.

    Without one (the MIMIC-CXR mirror has no patient ids), rows that share an exact report are taken to be images of
    one study and kept together, unless more than `MAX_STUDY_IMAGES` rows share it: such reports ("No acute
    cardiopulmonary process.") are boilerplate written for many patients, and each of those rows is its own group
    (`id:<image id>`).
    """
    counts = Counter(report_hashes)
    return [
        key if key.startswith("group:") or counts[report_hash] > MAX_STUDY_IMAGES else f"report:{report_hash}"
        for key, report_hash in zip(keys, report_hashes, strict=True)
    ]


def assign_splits(
    keys: list[str],
    report_hashes: list[str],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    gate_fraction: float = 0.0,
) -> list[str]:
    """Assigns train/val/gate/test by hashing each row's group key (`split_groups`), so one group never spans two
    splits and a row's split never changes when the data set grows.

    A group's hash is a position in [0, 1): [0, test) is test, then val, then gate, the rest train. Adding a gate
    split (or growing it) therefore moves train rows only: every val and test row keeps its split.
    """
    splits = []
    for group in split_groups(keys, report_hashes):
        position = int(hashlib.sha256(f"{seed}:{group}".encode()).hexdigest()[:15], 16) / 16**15
        if position < test_fraction:
            splits.append("test")
        elif position < test_fraction + val_fraction:
            splits.append("val")
        elif position < test_fraction + val_fraction + gate_fraction:
            splits.append("gate")
        else:
            splits.append("train")
    return splits


def hashed_groups(groups) -> np.ndarray:
    """Split groups as 16 hex digits of their sha256: comparable across folders, without patient ids in artifacts."""
    return np.array([hashlib.sha256(str(group).encode()).hexdigest()[:16] for group in groups], dtype=object)


def grouping_summary(group_column: str | None, keys: list[str], groups: list[str]) -> dict:
    """`manifest["grouping"]`: the key splits were grouped by, and how many rows had to fall back to image ids."""
    by_key = sum(key.startswith("group:") for key in keys)
    return {
        "key": group_column,
        "n_groups": len(set(groups)),
        "n_images_grouped_by_key": by_key,
        "n_images_by_fallback": len(keys) - by_key,
        "fallback": None if by_key == len(keys) else (
            GROUP_FALLBACK if group_column is None else f"{len(keys) - by_key} rows with an empty {group_column}: "
            + GROUP_FALLBACK
        ),
    }  # fmt: skip


def _decode(job: tuple[str | None, bytes | None, int, int, ImageLimits]):
    """Worker: (path, bytes, short_side, min_side, limits) -> (pixels or None, skip reason or None, source (h, w))."""
    path, data, short_side, min_side, limits = job
    try:
        if data is None:
            if path is None:
                raise BadImage("missing file", "no image given")
            try:
                limits.check_bytes(os.stat(path).st_size)  # before reading: a huge file is never loaded
                with open(path, "rb") as handle:
                    data = handle.read(limits.max_bytes + 1)
            except FileNotFoundError:
                raise BadImage("missing file") from None
            except OSError as error:
                raise BadImage("unreadable file", error.strerror or type(error).__name__) from error
        pixels, source_size = decode_with_source_size(data, short_side, min_side, limits)
        return pixels, None, source_size
    except BadImage as error:
        return None, str(error), (0, 0)


def _screen(records: Iterator[Record], skipped: list[dict]) -> Iterator[Record]:
    """Drops rows that need no decoding to reject (no report text, duplicate ids), noting them in `skipped`."""
    seen = set()
    for record in records:
        if not record.id:
            skipped.append({"id": "", "path": record.image_ref, "reason": "empty id"})
        elif record.id in seen:
            skipped.append({"id": record.id, "path": record.image_ref, "reason": "duplicate id"})
        elif not (record.findings.strip() or record.impression.strip()):
            skipped.append({"id": record.id, "path": record.image_ref, "reason": "no report text"})
        elif record.refused:
            skipped.append({"id": record.id, "path": record.image_ref, "reason": record.refused})
        else:
            yield record
        seen.add(record.id)


def _windows(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while window := list(itertools.islice(iterator, size)):
        yield window


class _ShardWriter:
    """Appends images to raw uint8 shard files, starting a new file past `shard_bytes`."""

    def __init__(self, folder: Path, shard_bytes: int):
        self.folder = folder
        self.shard_bytes = shard_bytes
        self.names: list[str] = []
        self.handle = None
        self.written = 0

    def add(self, pixels: np.ndarray) -> tuple[int, int]:
        if self.handle is None or self.written >= self.shard_bytes:
            self._next()
        offset = self.written
        self.handle.write(np.ascontiguousarray(pixels).tobytes())
        self.written += pixels.size
        return len(self.names) - 1, offset

    def _next(self):
        self.close()
        name = f"shards/images-{len(self.names):05d}.u8"
        self.names.append(name)
        self.handle = open(self.folder / name, "wb")  # noqa: SIM115 - closed in close()
        self.written = 0

    def close(self):
        if self.handle is not None:
            self.handle.close()
            self.handle = None


def _fingerprint(source_fingerprint: dict, config: PrepareConfig) -> str:
    settings = {key: value for key, value in asdict(config).items() if key != "workers"}
    blob = json.dumps({"format": FORMAT, "source": source_fingerprint, "settings": settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def load_manifest(out: str | Path) -> dict | None:
    """The manifest of a prepared folder, or None if it has not been (completely) prepared."""
    path = Path(out) / "manifest.json"
    if not path.is_file():
        return None
    manifest = json.loads(path.read_text())
    if not all((Path(out) / name).is_file() for name in manifest.get("shards", [])):
        return None
    return manifest


def is_prepared(source: str, out: str | Path, config: PrepareConfig | None = None) -> bool:
    """Whether `out` already holds `source` prepared with these settings (then `prepare` would do nothing)."""
    existing = load_manifest(Path(out))
    if not existing:
        return False
    config = config or PrepareConfig()
    opened = open_source(source, workdir=out, workers=config.workers)
    return existing.get("fingerprint") == _fingerprint(opened.fingerprint(), config)


def prepare(source: str, out: str | Path, config: PrepareConfig | None = None, progress: bool = False) -> dict:
    """Decodes, resizes and shards a source into `out` (see the module docstring). Idempotent.

    Args:
        source: a source URI (`medklip.data.sources.open_source`).
        out: output folder.
        config: settings; defaults to `PrepareConfig()`.
        progress: show a progress bar.

    Returns:
        The manifest dict (also in `out/manifest.json`), with `"reused": True` when nothing had to be done.
    """
    config = config or PrepareConfig()
    out = Path(out)
    _refuse_overlap(source, out)
    _claim(out)
    with FileLock(str(out / ".prepare.lock")):
        opened = open_source(source, workdir=out, workers=config.workers)
        fingerprint = _fingerprint(opened.fingerprint(), config)
        existing = load_manifest(out)
        if existing and existing.get("fingerprint") == fingerprint:
            logger.info("%s is up to date with %s; nothing to do", out, source)
            return {**existing, "reused": True}
        manifest = _build(opened, source, out, config, fingerprint, progress)
    logger.info("prepared %d images (%d skipped) into %s", manifest["n_images"], manifest["n_skipped"], out)
    return manifest


def _refuse_overlap(source: str, out: Path) -> None:
    """`--out` may not be the source folder, nor inside it, nor hold it: prepare replaces what it writes there."""
    folder = source_folder(source)
    if folder is None:
        return
    folder, target = folder.resolve(), out.resolve()
    if target == folder or target.is_relative_to(folder) or folder.is_relative_to(target):
        relation = "is" if target == folder else "is inside" if target.is_relative_to(folder) else "contains"
        raise DataError(
            f"--out {out} {relation} the source folder {folder}; give an output folder of its own "
            "(prepare replaces the files it writes there)"
        )


def _claim(out: Path) -> None:
    """Makes `out` prepare's own: new or empty (then marked), marked already, or an older prepare's output.

    Raises:
        DataError: `out` holds files prepare did not write; nothing there is touched.
    """
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file, not a folder")
    entries = sorted(item.name for item in out.iterdir()) if out.is_dir() else []
    if MARKER not in entries:
        if entries and _manifest_format(out / "manifest.json") is None:
            shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
            raise DataError(
                f"--out {out} is not empty and was not written by `medklip data prepare` (it holds {shown}); "
                "give a new or empty folder: nothing there was changed"
            )
        out.mkdir(parents=True, exist_ok=True)
        (out / MARKER).write_text("written by medklip data prepare: it replaces only the files it lists\n")


def _manifest_format(path: Path) -> str | None:
    try:
        value = json.loads(path.read_text()).get("format")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value.startswith("medklip-prepared/") else None


def _build(opened, source: str, out: Path, config: PrepareConfig, fingerprint: str, progress: bool) -> dict:
    staging = out / f".staging-{uuid.uuid4().hex[:8]}"
    (staging / "shards").mkdir(parents=True)
    writer = _ShardWriter(staging, config.shard_bytes)
    pool = None
    if config.workers != 1:
        pool = ProcessPoolExecutor(max_workers=config.workers, mp_context=get_context("spawn"))
    bar = tqdm(total=len(opened), desc="prepare", unit="img", disable=not progress or None)
    try:
        rows, skipped = [], []
        limits = ImageLimits(config.max_pixels, config.max_bytes)
        # Bounded windows keep memory flat: a Hugging Face source hands us encoded bytes, not paths.
        for window in _windows(_screen(opened.records(), skipped), WINDOW):
            jobs = [(r.image_path, r.image_bytes, config.short_side, config.min_side, limits) for r in window]
            results = pool.map(_decode, jobs, chunksize=8) if pool else map(_decode, jobs)
            for record, (pixels, reason, source_size) in zip(window, results, strict=True):
                if pixels is None:
                    skipped.append({"id": record.id, "path": record.image_ref, "reason": reason})
                    continue
                shard, offset = writer.add(pixels)
                rows.append(
                    {
                        "id": record.id,
                        "findings": record.findings,
                        "impression": record.impression,
                        "image": record.image_ref,
                        "group": f"group:{record.group}" if record.group else f"id:{record.id}",
                        "report_sha256": report_sha256(record.findings, record.impression),
                        "shard": shard,
                        "offset": offset,
                        "height": pixels.shape[0],
                        "width": pixels.shape[1],
                        "source_height": source_size[0],
                        "source_width": source_size[1],
                    }
                )
            bar.n = len(rows) + len(skipped)
            bar.refresh()
        writer.close()
        if not rows:
            raise DataError(f"{source}: no usable images ({len(skipped)} skipped); first reasons: {skipped[:3]}")
        table = pd.DataFrame(rows)
        table["split_group"] = split_groups(list(table["group"]), list(table["report_sha256"]))
        table["split"] = assign_splits(
            list(table["group"]),
            list(table["report_sha256"]),
            config.val_fraction,
            config.test_fraction,
            config.split_seed,
            config.gate_fraction,
        )
        table.to_parquet(staging / "reports.parquet", index=False)
        if skipped:
            pd.DataFrame(skipped, columns=["id", "path", "reason"]).to_csv(staging / "skipped.csv", index=False)
        if opened.truth_path is not None:
            shutil.copyfile(opened.truth_path, staging / "truth.csv")
        manifest = {
            "format": FORMAT,
            "source": source,
            "fingerprint": fingerprint,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "settings": {key: value for key, value in asdict(config).items() if key != "workers"},
            "n_images": len(table),
            "n_skipped": len(skipped),
            "skipped": skipped[:SKIPPED_IN_MANIFEST],
            "skipped_file": "skipped.csv" if skipped else None,
            "skipped_by_reason": dict(Counter(item["reason"].split(":")[0] for item in skipped)),
            "splits": {name: int((table["split"] == name).sum()) for name in SPLITS},
            "split_roles": dict(SPLIT_ROLES),
            "grouping": grouping_summary(
                getattr(opened, "group_column", None), list(table["group"]), list(table["split_group"])
            ),
            "shards": writer.names,
            "truth": "truth.csv" if opened.truth_path is not None else None,
        }
        _publish(staging, out, manifest)
        return manifest
    finally:
        bar.close()
        writer.close()
        if pool is not None:
            pool.shutdown()
        shutil.rmtree(staging, ignore_errors=True)


def _publish(staging: Path, out: Path, manifest: dict) -> None:
    """Moves a finished build into place; the manifest goes last, so its presence means complete. Only what a
    previous build wrote (the shards its manifest lists, its reports, truth and skip list) is replaced or removed."""
    previous = load_manifest(out) or {}
    (out / "manifest.json").unlink(missing_ok=True)
    for name in previous.get("shards", []):
        if SHARD_NAME.fullmatch(name):
            (out / name).unlink(missing_ok=True)
    (out / "shards").mkdir(exist_ok=True)
    for shard in (staging / "shards").iterdir():
        shard.replace(out / "shards" / shard.name)
    written_before = {"reports.parquet", previous.get("truth"), previous.get("skipped_file")}
    for name in ("reports.parquet", "truth.csv", "skipped.csv"):
        if (staging / name).exists():
            (staging / name).replace(out / name)
        elif name in written_before:
            (out / name).unlink(missing_ok=True)
    temporary = out / "manifest.json.tmp"
    temporary.write_text(json.dumps(manifest, indent=2))
    temporary.replace(out / "manifest.json")


# --- reading a prepared folder -------------------------------------------------------------------------------------
SPLITS = ("train", "val", "gate", "test")


class PreparedData:
    """A prepared folder: the reports table plus lazily opened, read-only memory maps of the shards."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        manifest = load_manifest(self.root)
        if manifest is None:
            raise DataError(f"{self.root}: not a prepared data folder (run `medklip data prepare --out {self.root}`)")
        self.manifest = manifest
        self.table = pd.read_parquet(self.root / "reports.parquet")
        # Plain arrays: a pandas row lookup per image would cost more than the image itself.
        self._layout = self.table[["shard", "offset", "height", "width"]].to_numpy(dtype=np.int64)
        self._maps: dict[int, np.memmap] = {}

    def __getstate__(self):
        # Memory maps are reopened in each DataLoader worker rather than pickled.
        return {**self.__dict__, "_maps": {}}

    def __len__(self) -> int:
        return len(self.table)

    def _shard(self, shard: int) -> np.memmap:
        if shard not in self._maps:
            self._maps[shard] = np.memmap(self.root / self.manifest["shards"][shard], dtype=np.uint8, mode="r")
        return self._maps[shard]

    def image(self, row: int) -> np.ndarray:
        """The (H, W) uint8 image of table row `row` (a view into the shard; copy before writing)."""
        shard, start, height, width = self._layout[row]
        return self._shard(int(shard))[start : start + height * width].reshape(height, width)

    @property
    def split_roles(self) -> dict[str, str]:
        """{split: role} from the manifest (`SPLIT_ROLES`); older folders: train, val and test only."""
        return dict(self.manifest.get("split_roles") or LEGACY_SPLIT_ROLES)

    def split_groups(self) -> np.ndarray:
        """(N,) the key each row's split was drawn from (recomputed for folders written before the column)."""
        if "split_group" in self.table.columns:
            return self.table["split_group"].astype(str).to_numpy()
        keys = self.table["group"] if "group" in self.table.columns else "id:" + self.table["id"].astype(str)
        return np.array(split_groups(list(keys), list(self.table["report_sha256"])), dtype=object)

    def rows(self, split: str | None) -> np.ndarray:
        """Row numbers of a split (`train`, `val`, `gate`, `test`), or all rows for None."""
        if split is None:
            return np.arange(len(self.table))
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")
        return np.flatnonzero(self.table["split"].to_numpy() == split)


def promotion_split(data: PreparedData) -> tuple[str, str | None]:
    """(split, reason) the registry's promotion gate compares models on: `gate` when the folder has gate rows; else
    `val`, with the reason that must be stated wherever the decision is (it also chose model_best)."""
    if data.split_roles.get("gate") == "promotion" and len(data.rows("gate")):
        return "gate", None
    why = "it was prepared without a gate split" if "gate" in data.split_roles else (
        f"it was prepared by an older release ({data.manifest.get('format', 'format unknown')}) without a gate split"
    )  # fmt: skip
    return "val", (
        f"the gate compares on the val split because {data.root} has no gate split ({why}); val also chose "
        "model_best, so the challenger's advantage is optimistic: re-prepare with a gate fraction for an unbiased gate"
    )
