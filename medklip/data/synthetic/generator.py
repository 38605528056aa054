"""Making cases and folders of them: `make_case`, `generate` (parallel, resumable) and the command line."""

from __future__ import annotations

import argparse
import csv
import logging
import os
from collections import Counter
from collections.abc import Sequence
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from medklip.data.synthetic.case import (
    MAX_CASES,
    REPORT_COLUMNS,
    SIZE_RANGE,
    TRUTH_COLUMNS,
    Case,
    SynthSummary,
    TruthRow,
    case_id,
)
from medklip.data.synthetic.findings import sample_spec
from medklip.data.synthetic.render import render
from medklip.data.synthetic.reports import truth, write_report
from medklip.vocabulary import ENTITIES

logger = logging.getLogger(__name__)


def make_case(seed: int, index: int, size: int = 256) -> Case:
    """Generates case `index` of the data set `seed`; the same (seed, index, size) always gives the same case.

    Args:
        seed: data set seed.
        index: 0-based case number (its id is `case_id(index)`).
        size: image width and height in pixels.
    """
    rng = np.random.default_rng([seed, index])
    spec = sample_spec(rng)
    image, boxes = render(spec, size)
    findings, impression, rows = write_report(spec, rng)
    return Case(
        id=case_id(index),
        image=image,
        findings=findings,
        impression=impression,
        truth=truth(rows, boxes),
        normal=not spec.findings,
        spec=spec,
    )


def _write_case(job: tuple[str, int, int, int]) -> tuple[str, str, str, list[TruthRow], bool]:
    """Worker: generates one case, writes its PNG, returns its text and truth (top level, so spawn can pickle it)."""
    out_dir, seed, index, size = job
    case = make_case(seed, index, size)
    Image.fromarray(case.image).save(Path(out_dir) / "images" / f"{case.id}.png", format="PNG", compress_level=2)
    return case.id, case.findings, case.impression, case.truth, case.normal


def check_request(n: int, size: int) -> None:
    """Refuses, before any work, a data set no machine should be asked for (one typed into a form, say)."""
    if not 1 <= n <= MAX_CASES:
        raise ValueError(f"synthetic n = {n} is out of range: 1 to {MAX_CASES:,}")
    if not SIZE_RANGE[0] <= size <= SIZE_RANGE[1]:
        raise ValueError(f"synthetic size = {size} is out of range: {SIZE_RANGE[0]} to {SIZE_RANGE[1]} pixels")


def generate(
    out_dir: str | Path,
    n: int,
    seed: int = 0,
    size: int = 256,
    workers: int | None = None,
    progress: bool = False,
) -> SynthSummary:
    """Writes `n` synthetic cases: images/*.png, reports.csv and truth.csv (see the module docstring).

    Args:
        out_dir: output folder (created; existing files of the same names are overwritten).
        n: number of cases.
        seed: data set seed; the output is byte-identical for the same (seed, n, size), whatever `workers` is.
        size: image width and height in pixels.
        workers: processes; None means os.cpu_count(), 1 means in this process.
        progress: show a progress bar.

    Returns:
        Counts of what was written.
    """
    check_request(n, size)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    workers = max(1, min(workers or os.cpu_count() or 1, n))
    jobs = [(str(out), seed, index, size) for index in range(n)]
    logger.info("generating %d synthetic radiographs (seed %d, %d px, %d workers) into %s", n, seed, size, workers, out)
    bar = tqdm(total=n, desc="synthetic", unit="img", disable=not progress or None)
    results = []
    if workers == 1:
        for job in jobs:
            results.append(_write_case(job))
            bar.update()
    else:
        with get_context("spawn").Pool(workers) as pool:
            for result in pool.imap(_write_case, jobs, chunksize=max(1, min(32, n // (workers * 8)))):
                results.append(result)
                bar.update()
    bar.close()

    counts: Counter[str] = Counter()
    n_normal = 0
    with (
        open(out / "reports.csv", "w", newline="", encoding="utf-8") as reports,
        open(out / "truth.csv", "w", newline="", encoding="utf-8") as truth,
    ):
        report_writer = csv.writer(reports, lineterminator="\n")
        truth_writer = csv.writer(truth, lineterminator="\n")
        report_writer.writerow(REPORT_COLUMNS)
        truth_writer.writerow(TRUTH_COLUMNS)
        for identifier, findings, impression, rows, normal in results:
            report_writer.writerow((identifier, f"images/{identifier}.png", findings, impression))
            for row in rows:
                box = row.box if row.box is not None else ("", "", "", "")
                truth_writer.writerow((identifier, row.entity, row.position, row.existence, *box))
            counts.update({row.entity for row in rows if row.existence == 1})
            n_normal += normal
    entity_counts = {entity: counts[entity] for entity in ENTITIES if counts[entity]}
    logger.info("wrote %d cases (%d normal) to %s", n, n_normal, out)
    return SynthSummary(out_dir=out, n_images=n, n_normal=n_normal, entity_counts=entity_counts)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: `python -m medklip.data.synthetic --out DIR --n N [--seed S] [--size P] [--workers W]`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--n", type=int, default=1000, help="number of cases")
    parser.add_argument("--seed", type=int, default=0, help="data set seed")
    parser.add_argument("--size", type=int, default=256, help="image size in pixels")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    summary = generate(args.out, n=args.n, seed=args.seed, size=args.size, workers=args.workers, progress=True)
    logger.info("entity counts (images with the finding present): %s", summary.entity_counts)
    return 0
