"""Speed of the vectorised bootstrap AUC against sklearn in a Python loop, on the same data in the same run.

    python benchmarks/evaluate.py [--images 10000] [--entities 75] [--resamples 1000] [--baseline-resamples 20]

Times `bootstrap_auc` (per-entity AUCs with 95% bootstrap CIs) on synthetic scores for `--entities` x `--images`
with `--resamples` resamples; the target is 10 s for 75 x 10,000 x 1000. The baseline is the straightforward
implementation: for each resample and each entity, index the resampled rows and call `sklearn.metrics.roc_auc_score`.
It runs only `--baseline-resamples` resamples and its time is scaled up linearly to `--resamples`, so
`baseline_seconds_extrapolated` is an extrapolation, not a measurement. Every 10th label is -1 (excluded), as in real
data where many findings are not mentioned. The last line printed is JSON: {"seconds", "target_seconds",
"baseline_seconds_extrapolated", "ratio" (baseline / vectorised, the speed-up), ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from sklearn.metrics import roc_auc_score

from medklip.evaluation.metrics import bootstrap_auc

TARGET_SECONDS = 10.0


def synthetic(n_images: int, n_entities: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(scores, labels): 20% positives that score higher on average; 10% of labels are -1."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n_images, n_entities)) < 0.2).astype(np.int8)
    scores = 1 / (1 + np.exp(-(rng.normal(size=(n_images, n_entities)) + labels)))
    labels[rng.random((n_images, n_entities)) < 0.1] = -1
    return scores, labels


def baseline(scores: np.ndarray, labels: np.ndarray, n_resamples: int, seed: int = 0) -> np.ndarray:
    """(R, E) AUCs the plain way: sklearn per resample per entity; NaN where a resample lacks a class."""
    rng = np.random.default_rng(seed)
    aucs = np.full((n_resamples, scores.shape[1]), np.nan)
    for e in range(scores.shape[1]):
        known = np.flatnonzero(labels[:, e] >= 0)
        for r in range(n_resamples):
            rows = known[rng.integers(0, len(known), len(known))]
            if labels[rows, e].min() != labels[rows, e].max():
                aucs[r, e] = roc_auc_score(labels[rows, e], scores[rows, e])
    return aucs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000, help="test images")
    parser.add_argument("--entities", type=int, default=75, help="entities (columns)")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples for the vectorised run")
    parser.add_argument("--baseline-resamples", type=int, default=20, help="resamples actually run by the baseline")
    args = parser.parse_args()
    scores, labels = synthetic(args.images, args.entities)

    bootstrap_auc(scores[:500, :2], labels[:500, :2], n_resamples=10)  # warm-up: imports, thread pool
    start = time.perf_counter()
    auc, low, high = bootstrap_auc(scores, labels, n_resamples=args.resamples, seed=0)
    seconds = time.perf_counter() - start
    single_start = time.perf_counter()
    bootstrap_auc(scores, labels, n_resamples=args.resamples, seed=0, workers=1)
    single_seconds = time.perf_counter() - single_start

    start = time.perf_counter()
    baseline_aucs = baseline(scores, labels, args.baseline_resamples)
    baseline_measured = time.perf_counter() - start
    extrapolated = baseline_measured * args.resamples / args.baseline_resamples

    # Sanity: both bootstraps describe the same sampling distribution (different random resamples, so not equal).
    spread_fast = float(np.nanmean((high - low) / 3.92))
    spread_baseline = float(np.nanmean(np.nanstd(baseline_aucs, axis=0)))
    print(f"vectorised: {seconds:.2f} s ({single_seconds:.2f} s on one thread), mean AUC {np.nanmean(auc):.4f}")
    print(
        f"baseline: {baseline_measured:.2f} s measured for {args.baseline_resamples} resamples, "
        f"{extrapolated:.1f} s extrapolated to {args.resamples}"
    )
    print(f"bootstrap SE of AUC, mean over entities: vectorised ~{spread_fast:.4f}, baseline {spread_baseline:.4f}")
    result = {
        "seconds": round(seconds, 3),
        "target_seconds": TARGET_SECONDS,
        "baseline_seconds_extrapolated": round(extrapolated, 1),
        "ratio": round(extrapolated / seconds, 1),
        "ratio_is": "baseline_seconds_extrapolated / seconds (speed-up)",
        "baseline_seconds_measured": round(baseline_measured, 3),
        "baseline_resamples_run": args.baseline_resamples,
        "seconds_one_thread": round(single_seconds, 3),
        "threads": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "images": args.images,
        "entities": args.entities,
        "resamples": args.resamples,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
