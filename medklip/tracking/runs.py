"""MLflow runs: the connection, a training run (params, tags, metrics in the background) and evaluation results.

    export MLFLOW_TRACKING_URI=http://127.0.0.1:5000     # a server; unset: the local store ./mlruns/
    medklip train --data D --save checkpoints/x           # creates a run, writes its id to checkpoints/x/mlflow_run_id
    medklip evaluate --weights checkpoints/x/model_best.safetensors --data D    # logs into the same run
    mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db                    # browse the local store

A training run holds the resolved config flattened as params, tags with the data fingerprint, the data source, the
extractor and its output's hash and the git commit, per-step loss and learning rate, per-epoch training and
validation metrics, `config.json`, `history.jsonl`, the label prevalence of the train split
(`data/label_prevalence.json` and `.csv`: what the registry's drift report compares), and the best model as an MLflow
pyfunc (`medklip.tracking.pyfunc`: code from `mlflow_model.py` plus the safetensors weights, with a signature and an
input example; nothing pickled). Evaluation adds `mean_auc`, `accuracy`, `auc/<entity>`... of the report split
(test), `gate_mean_auc`, `metrics.json`, `predictions.parquet`, `gate_predictions.parquet` (the promotion split:
what the registry's gate compares), plots and a few heatmaps. The experiment is `MLFLOW_EXPERIMENT_NAME` (default
`medklip`).

Failures: an unreachable server or an artifact store that refuses writes stops `medklip train` before it trains
(`TrackingError`). Metrics are sent by a background thread, so a server lost mid-training never stalls training:
they are kept and retried with backoff, and what is still unsent at the end is written to `<save>/mlflow_pending.jsonl`
and sent by the next command that opens the run (`medklip evaluate`, or a resumed `medklip train`); the end of
training reports it, as it reports a model that could not be logged (evaluate logs it then). Credentials come only
from the environment (AWS_*, MLFLOW_TRACKING_USERNAME/PASSWORD) and are never logged; URIs are logged without
their user-info part.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import mlflow
import numpy as np
import requests
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

import medklip
from medklip.config import Config, flatten, to_dict
from medklip.tracking.pyfunc import MODEL_URI_TAG, log_model

logger = logging.getLogger(__name__)

RUN_ID_FILE = "mlflow_run_id"
PENDING_FILE = "mlflow_pending.jsonl"
LOCAL_STORE = "mlruns"  # the default store, under the working directory, when MLFLOW_TRACKING_URI is unset
BATCH = 1000  # MLflow's limit of values per log_batch call
FLUSH_SECONDS = 2.0  # how often the background thread sends metrics


class TrackingError(RuntimeError):
    """MLflow cannot be used as configured (artifact store refusing writes, unknown run, ...)."""

    exit_code = 2  # what the CLI exits with


class TrackingUnavailable(TrackingError):
    """The MLflow server does not answer or went away: worth retrying later."""

    exit_code = 75  # EX_TEMPFAIL: orchestrators retry this one, not the deterministic failures


# --- connection ---------------------------------------------------------------------------------------------------
def redact(uri: str) -> str:
    """`uri` without a user:password part, safe to log."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI`, or the local store `./mlruns/mlflow.db` (SQLite; artifacts in `./mlruns/artifacts`)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{(Path.cwd() / LOCAL_STORE / 'mlflow.db').as_posix()}"


def connect() -> MlflowClient:
    """A client for `tracking_uri()`, checked: a server must answer its health endpoint.

    MLflow retries a failing request up to 7 times with exponential backoff (minutes); our own callers retry, so
    unless `MLFLOW_HTTP_REQUEST_MAX_RETRIES` is set, a request is retried twice here.

    Raises:
        TrackingUnavailable: the server does not answer.
    """
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        try:
            response = requests.get(uri.rstrip("/") + "/health", timeout=10)
            response.raise_for_status()
        except requests.RequestException as error:
            raise TrackingUnavailable(
                f"the MLflow tracking server at {redact(uri)} (MLFLOW_TRACKING_URI) does not answer: "
                f"{type(error).__name__}. Start it, or unset MLFLOW_TRACKING_URI to track in ./{LOCAL_STORE}/."
            ) from None  # the chained urllib3 error repeats the URI, user-info included
    elif uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    return MlflowClient(uri)


def experiment_id(client: MlflowClient) -> str:
    """The id of `MLFLOW_EXPERIMENT_NAME` (default `medklip`), created if needed."""
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "medklip")
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):  # next to the database, not wherever the process happens to run
        location = (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # created by a concurrent run in the meantime
        return client.get_experiment_by_name(name).experiment_id


def _artifact_store(run) -> str:
    """Where the run's artifacts land, for error messages: the S3 bucket when it can be known."""
    uri = run.info.artifact_uri
    if uri.startswith("s3://"):
        return f"S3 bucket '{urlsplit(uri).netloc}' ({uri})"
    destination = os.environ.get("MLFLOW_ARTIFACTS_DESTINATION")  # the variable `mlflow server` reads
    if uri.startswith("mlflow-artifacts:") and destination:
        bucket = f"S3 bucket '{urlsplit(destination).netloc}' ({destination})" if destination.startswith("s3:") else ""
        return f"the server's artifact store, {bucket or destination}"
    return f"the artifact store at {uri} (for a proxying server: its --artifacts-destination)"


def check_artifact_store(client: MlflowClient, run, text: str, artifact_file: str) -> None:
    """Writes one small artifact of `run`, turning a refused write into an error that names the bucket.

    Raises:
        TrackingError: the write failed (bad S3 credentials, missing bucket, ...).
    """
    try:
        client.log_text(run.info.run_id, text, artifact_file)
    except Exception as error:  # boto3, MLflow and HTTP errors alike; the message below names the store
        raise TrackingError(
            f"MLflow cannot store artifacts of run {run.info.run_id} in {_artifact_store(run)}: {reason(error)}. "
            "Check the S3 credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY of whoever writes: this process, or "
            "the MLflow server when it proxies artifacts), the bucket and MLFLOW_S3_ENDPOINT_URL."
        ) from None


def reason(error: BaseException) -> str:
    """A one-line reason for an MLflow/boto/HTTP error, without URIs' user-info."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    text = re.sub(r"//[^/@\s]+@", "//", text)
    return text[:300]


def run_url(run_id: str) -> str | None:
    """The MLflow UI page of a run, when tracking goes to a server."""
    uri = tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return None
    experiment = MlflowClient(uri).get_run(run_id).info.experiment_id
    return f"{redact(uri).rstrip('/')}/#/experiments/{experiment}/runs/{run_id}"


def git_commit() -> str | None:
    """The source commit: `MEDKLIP_GIT_COMMIT` (set in container images), else `git rev-parse` of this checkout."""
    if os.environ.get("MEDKLIP_GIT_COMMIT"):
        return os.environ["MEDKLIP_GIT_COMMIT"]
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def data_tags(data_dir: str | Path, boxes: str | Path | None = None) -> dict[str, str]:
    """Tags that pin the training data: prepared folder fingerprint and source, extractor and triplets hash, and the
    hash of the lesion boxes file when training uses one (`train.boxes`)."""
    from medklip.labels.extract import file_sha256, read_summary

    root = Path(data_dir)
    tags = {"medklip.data_dir": str(root.resolve())}
    manifest_path = root / "manifest.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        tags["medklip.data_fingerprint"] = str(manifest.get("fingerprint"))
        tags["medklip.data_source"] = redact(str(manifest.get("source")))
        tags["medklip.data_images"] = str(manifest.get("n_images"))
        tags["medklip.split_scheme"] = split_scheme(manifest)
        grouping = manifest.get("grouping") or {}
        tags["medklip.split_grouping"] = str(grouping.get("key") or "image id (no patient or study id)")
    triplets = root / "triplets.parquet"
    if triplets.is_file():
        tags["medklip.extractor"] = str(read_summary(triplets).get("extractor"))
        tags["medklip.triplets_sha256"] = file_sha256(triplets)
    if boxes and Path(boxes).is_file():
        tags["medklip.boxes_sha256"] = file_sha256(boxes)
    return tags


def split_scheme(manifest: dict) -> str:
    """What decides each row's split (source, seed, fractions, grouping key, format) as one JSON string: two
    folders with the same scheme put a given patient in the same split (the assignment is a hash of the group)."""
    settings = manifest.get("settings") or {}
    scheme = {key: settings.get(key) for key in ("split_seed", "val_fraction", "test_fraction", "gate_fraction")}
    scheme.update(source=redact(str(manifest.get("source"))), format=manifest.get("format"))
    scheme["grouping"] = (manifest.get("grouping") or {}).get("key")
    return json.dumps(scheme, sort_keys=True)


PREVALENCE_FILE = "data/label_prevalence.json"


def training_prevalence(data_dir: str | Path) -> dict | None:
    """The label prevalence of a prepared folder's train split (`medklip.evaluation.drift.label_prevalence`), with
    the folder and its fingerprint; None when the folder or its triplets cannot be read."""
    from medklip.data.prepare import PreparedData
    from medklip.data.sources import DataError
    from medklip.evaluation.drift import label_prevalence
    from medklip.labels.extract import load_labels

    try:
        data = PreparedData(data_dir)
        labels = load_labels(data)["existence"][data.rows("train")]
    except (DataError, OSError, ValueError):
        return None
    fingerprint = data.manifest.get("fingerprint")
    return {"split": "train", "data_dir": str(data.root.resolve()), "data_fingerprint": fingerprint,
            **label_prevalence(labels)}  # fmt: skip


def log_prevalence(client: MlflowClient, run_id: str, prevalence: dict) -> None:
    """`data/label_prevalence.json` (what the registry reads) and a `.csv` beside it (for people)."""
    client.log_text(run_id, json.dumps(prevalence, indent=2), PREVALENCE_FILE)
    lines = ["entity,n_pos,n_neg,n_unlabelled,prevalence"]
    for entity, counts in prevalence["entities"].items():
        share = "" if counts["prevalence"] is None else f"{counts['prevalence']:.6f}"
        lines.append(f"{entity},{counts['n_pos']},{counts['n_neg']},{counts['n_unlabelled']},{share}")
    client.log_text(run_id, "\n".join(lines) + "\n", PREVALENCE_FILE.replace(".json", ".csv"))


# --- metrics in the background ------------------------------------------------------------------------------------
class MetricQueue:
    """Sends metrics from a background thread, in order, in batches; keeps and retries them while MLflow is away.

    Training only appends to a list, so it never waits on the network. `close` waits a bounded time for the rest.
    """

    def __init__(self, client: MlflowClient, run_id: str):
        self.client, self.run_id = client, run_id
        self.last_error: str | None = None
        self.sent = 0
        self._pending: list[Metric] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._deadline: float | None = None
        self._failures = 0
        self._thread = threading.Thread(target=self._run, name="mlflow-metrics", daemon=True)
        self._thread.start()

    def put(self, metrics: list[Metric]) -> None:
        with self._lock:
            self._pending.extend(metrics)
            full = len(self._pending) >= BATCH
        if full:
            self._wake.set()

    def _run(self) -> None:
        delay = FLUSH_SECONDS
        while True:
            if self._deadline is not None:
                delay = min(delay, max(0.0, self._deadline - time.monotonic()))
            self._wake.wait(delay)
            self._wake.clear()
            with self._lock:
                batch = self._pending[:BATCH]
            closing = self._deadline is not None
            if not batch:
                if closing:
                    return
                delay = FLUSH_SECONDS
                continue
            try:
                self.client.log_batch(self.run_id, metrics=batch)
            except Exception as error:  # whatever the server or network does, training goes on; we retry
                if self._failures == 0:
                    logger.warning(
                        "MLflow: cannot send metrics (%s); keeping them and retrying while training goes on",
                        reason(error),
                    )
                self._failures += 1
                self.last_error = reason(error)
                if closing and time.monotonic() >= self._deadline:
                    return
                delay = min(30.0, 2.0 ** min(self._failures, 5))
                continue
            with self._lock:
                del self._pending[: len(batch)]
                more = bool(self._pending)
            self.sent += len(batch)
            if self._failures:
                logger.info("MLflow: reachable again after %d failed attempts; sending kept metrics", self._failures)
                self._failures = 0
            delay = 0.0 if more else FLUSH_SECONDS

    def close(self, timeout: float | None = None) -> list[Metric]:
        """Waits up to `timeout` seconds (default `MEDKLIP_MLFLOW_FLUSH_TIMEOUT`, 60) for the queue to drain;
        returns what could not be sent."""
        if timeout is None:
            timeout = float(os.environ.get("MEDKLIP_MLFLOW_FLUSH_TIMEOUT", "60"))
        self._deadline = time.monotonic() + timeout
        self._wake.set()
        self._thread.join(timeout + 30)
        with self._lock:
            return list(self._pending)


def _metrics(values: dict, step: int) -> list[Metric]:
    now = int(time.time() * 1000)
    return [
        Metric(key, float(value), now, step)
        for key, value in values.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
    ]


def _write_pending(folder: Path, metrics: list[Metric]) -> Path:
    path = folder / PENDING_FILE
    with open(path, "a") as handle:
        for metric in metrics:
            handle.write(json.dumps({"key": metric.key, "value": metric.value, "timestamp": metric.timestamp,
                                     "step": metric.step}) + "\n")  # fmt: skip
    return path


def send_pending(client: MlflowClient, run_id: str, folder: Path) -> int:
    """Sends metrics a lost server left in `<folder>/mlflow_pending.jsonl`; removes the file when all went."""
    path = folder / PENDING_FILE
    if not path.is_file():
        return 0
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    metrics = [Metric(r["key"], r["value"], r["timestamp"], r["step"]) for r in records]
    for start in range(0, len(metrics), BATCH):
        client.log_batch(run_id, metrics=metrics[start : start + BATCH])
    path.unlink()
    logger.info("MLflow: sent %d metric values kept from an earlier connection loss", len(metrics))
    return len(metrics)


# --- the training run ---------------------------------------------------------------------------------------------
class TrainingRun:
    """Rank 0's MLflow run for one `--save` folder: created once, resumed with the folder.

    Usage (what `medklip.train.main` does):
        run = TrainingRun.start(save_dir, config, data_dir)   # raises TrackingError before any training
        run.log_metrics({"loss": 0.7}, step=12)               # never blocks
        problems = run.finish(save_dir / "model_best.safetensors")   # [] when everything reached MLflow
    """

    def __init__(self, client: MlflowClient, run_id: str, save_dir: Path):
        self.client, self.run_id, self.save_dir = client, run_id, save_dir
        self.queue = MetricQueue(client, run_id)

    @classmethod
    def start(cls, save_dir: str | Path, config: Config, data_dir: str | Path, world_size: int = 1) -> TrainingRun:
        """Creates (or, when `<save>/mlflow_run_id` exists, resumes) the run and logs params, tags and config.json.

        Raises:
            TrackingError: MLflow or its artifact store cannot be used; nothing has been trained yet.
        """
        save_dir = Path(save_dir)
        client = connect()
        id_file = save_dir / RUN_ID_FILE
        resumed = id_file.is_file()
        run_id = id_file.read_text().strip() if resumed else None
        try:
            run_id = cls._open(client, run_id, save_dir, config, data_dir, world_size)
        except TrackingError:
            raise
        except Exception as error:  # the server went away or refused a call while the run was being set up
            raise TrackingUnavailable(
                f"MLflow at {redact(tracking_uri())} failed while setting up the run: {reason(error)}"
            ) from None
        if not resumed:  # only a run set up completely is resumed by the next command
            save_dir.mkdir(parents=True, exist_ok=True)
            temporary = id_file.with_name(f".{id_file.name}.tmp")
            temporary.write_text(run_id + "\n")
            os.replace(temporary, id_file)
        logger.info("MLflow: run %s in %s", run_id, redact(tracking_uri()))
        return cls(client, run_id, save_dir)

    @staticmethod
    def _open(client: MlflowClient, run_id: str | None, save_dir: Path, config: Config, data_dir, world_size) -> str:
        params = {key: str(value) for key, value in flatten(to_dict(config)).items()}
        tags = data_tags(data_dir, config.train.boxes)
        tags.update({"medklip.version": medklip.__version__, "medklip.world_size": str(world_size)})
        tags["medklip.save_dir"] = str(save_dir.resolve())
        commit = git_commit()
        if commit:
            tags["mlflow.source.git.commit"] = commit
        if run_id:
            try:
                run = client.get_run(run_id)
            except MlflowException as error:
                raise TrackingError(
                    f"{save_dir / RUN_ID_FILE} names run {run_id}, which {redact(tracking_uri())} does not know "
                    f"({reason(error)}): was it trained against another MLFLOW_TRACKING_URI? Remove the file to "
                    "start a new run."
                ) from None
            client.update_run(run_id, status="RUNNING")
            changed = {k: v for k, v in params.items() if k in run.data.params and run.data.params[k] != v}
            params = {k: v for k, v in params.items() if k not in run.data.params}
            tags.update({f"medklip.resumed_with.{key}": value for key, value in changed.items()})
            send_pending(client, run_id, save_dir)
            logger.info("MLflow: resuming run %s", run_id)
        else:
            run = client.create_run(experiment_id(client), run_name=save_dir.name, tags=tags)
            run_id = run.info.run_id
        items = [Param(key, value[:6000]) for key, value in params.items()]
        for start in range(0, len(items), 100):  # MLflow's limit of params per call
            client.log_batch(run_id, params=items[start : start + 100])
        client.log_batch(run_id, tags=[RunTag(key, value) for key, value in tags.items()])
        try:
            check_artifact_store(client, run, json.dumps(to_dict(config), indent=2), "config.json")
        except TrackingError as error:
            client.set_tag(run_id, "medklip.error", str(error)[:5000])
            client.set_terminated(run_id, "FAILED")
            raise
        prevalence = training_prevalence(data_dir)
        if prevalence is not None:  # without triplets training fails next, with its own clear error
            log_prevalence(client, run_id, prevalence)
        return run_id

    def log_metrics(self, values: dict, step: int) -> None:
        self.queue.put(_metrics(values, step))

    def finish(self, best_weights: Path | None, failed: str | None = None) -> list[str]:
        """Sends what is left, logs the history and the model, ends the run; returns problems to report."""
        problems = []
        unsent = self.queue.close()
        if unsent:
            path = _write_pending(self.save_dir, unsent)
            problems.append(
                f"{len(unsent)} metric values did not reach MLflow ({self.queue.last_error}); kept in {path}, they "
                "are sent by the next `medklip evaluate` or `medklip train` of this folder"
            )
        try:
            for name in ("history.jsonl", "model_best.json"):
                if (self.save_dir / name).is_file():
                    self.client.log_artifact(self.run_id, str(self.save_dir / name))
            if failed:
                self.client.set_tag(self.run_id, "medklip.error", failed[:5000])
            elif best_weights is not None and best_weights.is_file():
                log_model(self.client, self.run_id, best_weights)
            self.client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")
        except Exception as error:  # the checkpoints are safe on disk; say what MLflow is missing
            problems.append(
                f"MLflow run {self.run_id} is incomplete ({reason(error)}): history/model not logged; "
                "`medklip evaluate` of this folder logs the model once MLflow is back"
            )
        return problems


# --- evaluation ---------------------------------------------------------------------------------------------------
def evaluation_metrics(metrics: dict) -> dict[str, float]:
    """The numbers of a `metrics.json` as flat MLflow metric names."""
    flat = {key: metrics.get(key) for key in ("mean_auc", "accuracy", "n_test", "n_entities_with_auc")}
    if metrics.get("mean_auc_ci95"):
        flat["mean_auc_ci95_low"], flat["mean_auc_ci95_high"] = metrics["mean_auc_ci95"]
    promotion = metrics.get("promotion") or {}
    flat["gate_mean_auc"], flat["gate_n"] = promotion.get("mean_auc"), promotion.get("n")
    for entity, values in metrics.get("per_entity", {}).items():
        for name in ("auc", "f1"):
            flat[f"{name}/{entity}"] = values.get(name)
    if metrics.get("grounding"):
        flat["pointing_game"] = metrics["grounding"].get("overall")
        flat["pointing_game_attainable"] = metrics["grounding"].get("attainable")
    return {key: value for key, value in flat.items() if value is not None}


def run_id_for(weights: str | Path) -> str | None:
    """The MLflow run of the folder holding `weights`, if it was trained with tracking."""
    path = Path(weights).parent / RUN_ID_FILE
    return path.read_text().strip() if path.is_file() else None


def log_evaluation(weights: str | Path, out: str | Path, metrics: dict, tags: dict[str, str], heatmaps: int = 6):
    """Logs `medklip evaluate`'s results into the run of the weights' folder; returns the run id or None.

    Also sends metrics kept from a lost connection and logs the model if training could not.

    Raises:
        TrackingError: the run's server is unreachable or does not know the run.
    """
    weights, out = Path(weights), Path(out)
    run_id = run_id_for(weights)
    if run_id is None:
        logger.info("no %s beside %s: evaluation results are not logged to MLflow", RUN_ID_FILE, weights)
        return None
    client = connect()
    try:
        run = client.get_run(run_id)
    except MlflowException as error:
        raise TrackingError(
            f"run {run_id} (from {weights.parent / RUN_ID_FILE}) is not in {redact(tracking_uri())}: {reason(error)}"
        ) from None
    try:
        send_pending(client, run_id, weights.parent)
        client.log_batch(run_id, metrics=_metrics(evaluation_metrics(metrics), step=0))
        client.log_batch(run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()])
        tables = [out / "metrics.json", out / "predictions.parquet", out / "gate_predictions.parquet"]
        for path in sorted(out.glob("*.png")) + tables:
            if path.is_file():
                client.log_artifact(run_id, str(path), "evaluation")
        for path in sorted((out / "heatmaps").glob("*.png"))[:heatmaps]:
            client.log_artifact(run_id, str(path), "evaluation/heatmaps")
        if MODEL_URI_TAG not in run.data.tags and weights.name == "model_best.safetensors":
            log_model(client, run_id, weights)
    except Exception as error:  # the results are on disk; say so rather than show MLflow's traceback
        raise TrackingUnavailable(
            f"the evaluation is saved in {out}, but logging it to run {run_id} failed ({reason(error)}); run the "
            "same `medklip evaluate` again once MLflow is reachable"
        ) from None
    logger.info("MLflow: evaluation logged to run %s", run_id)
    return run_id
