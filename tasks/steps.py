"""The retrain flow's tasks: each a thin wrapper that skips up-to-date work or launches a `medklip` command.

Steps that talk to a service (MLflow, a cluster API) retry with exponential backoff, and only on transient
failures (`TransientStepError`, `TrackingUnavailable`); a deterministic failure fails at once.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from medklip.tracking.runs import TrackingUnavailable
from tasks.step import Step, TransientStepError


def transient(task, task_run, state) -> bool:
    """Retry condition: only failures that may pass."""
    try:
        state.result()
    except (TransientStepError, TrackingUnavailable):
        return True
    except Exception:  # anything else is deterministic: retrying would fail the same way
        return False
    return False


# Skipping unchanged work is the steps' own fingerprint check (files on disk), not Prefect's result cache.
RETRIES = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=10),
    "retry_condition_fn": transient,
    "cache_policy": NO_CACHE,
}
MEDKLIP = ["-m", "medklip.cli"]


@task(name="prepare", **RETRIES)
def prepare(launcher, source: str, data_dir: Path) -> str:
    from medklip.data.prepare import is_prepared

    if is_prepared(source, data_dir):
        get_run_logger().info("%s already holds %s with these settings: skipped", data_dir, source)
        return "skipped (unchanged)"
    launcher.run(
        Step("prepare", [*MEDKLIP, "data", "prepare", "--source", source, "--out", str(data_dir)]), get_run_logger()
    )
    return "prepared"


@task(name="extract", **RETRIES)
def extract(launcher, data_dir: Path, extractor: str, cache: Path) -> str:
    from medklip.labels.extract import is_extracted

    if is_extracted(data_dir / "reports.parquet", data_dir / "triplets.parquet", extractor):
        get_run_logger().info("%s/triplets.parquet is up to date (%s): skipped", data_dir, extractor)
        return "skipped (unchanged)"
    args = [*MEDKLIP, "extract", "--data", str(data_dir), "--extractor", extractor, "--cache", str(cache)]
    launcher.run(Step("extract", args), get_run_logger())
    return "extracted"


@task(name="train", **RETRIES)
def train(launcher, data_dir: Path, save: Path, preset: str, overrides: list[str], nodes: int, gpus: int) -> str:
    args = ["-m", "medklip.train", "--data", str(data_dir), "--config", preset, "--save", str(save), *overrides]
    step = Step("train", args, processes=max(1, gpus), nodes=nodes, gpus_per_node=gpus, distributed=True)
    launcher.run(step, get_run_logger())
    return (save / "mlflow_run_id").read_text().strip()


@task(name="evaluate", **RETRIES)
def evaluate(launcher, weights: Path, data_dir: Path, out: Path) -> dict:
    args = [*MEDKLIP, "evaluate", "--weights", str(weights), "--data", str(data_dir), "--out", str(out)]
    launcher.run(Step("evaluate", args), get_run_logger())
    return json.loads((out / "metrics.json").read_text())


@task(name="register", **RETRIES)
def register(run_id: str, name: str, margin: float, resamples: int) -> dict:
    from medklip.tracking.registry import register as register_version

    return register_version(run_id, name, margin=margin, n_resamples=resamples)
