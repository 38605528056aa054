"""Rules-extractor throughput on synthetic reports, on one core.

    python benchmarks/extract.py [--n 5000]

Generates `--n` synthetic reports (findings + impression, varied phrasing, negations, uncertainty), then times
`RuleExtractor.extract` over all of them in this one process, without the cache (every report is extracted). The
issue's target is 2,000 reports/s on one core. The last line printed is JSON: {"reports_per_s", "target", ...}.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd

from medklip.data import synthetic
from medklip.labels.report_text import report_text
from medklip.labels.rule_extractor import RuleExtractor

TARGET = 2000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5000, help="reports")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        synthetic.generate(Path(tmp), n=args.n, seed=0, size=64)
        table = pd.read_csv(Path(tmp) / "reports.csv", keep_default_na=False)
    texts = [report_text(f, i) for f, i in zip(table["findings"], table["impression"], strict=True)]
    extractor = RuleExtractor()
    extractor.extract(texts[:100])  # warm-up: phrase tables, regex caches
    start = time.perf_counter()
    results = extractor.extract(texts)
    seconds = time.perf_counter() - start
    rate = len(texts) / seconds
    result = {
        "reports_per_s": round(rate, 1),
        "target": TARGET,
        "ratio_to_target": round(rate / TARGET, 2),
        "n": len(texts),
        "triplets": sum(len(r) for r in results),
        "mean_chars": round(sum(map(len, texts)) / len(texts), 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
