"""Against a real `mlflow server` whose artifacts go to a real S3 endpoint (moto_server), both started here.

Covers: train -> evaluate -> register -> load `models:/medklip@champion` through the server with the weights landing
in the bucket by multipart upload; a server lost mid-training (back during training, and back only afterwards);
bad S3 credentials (proxied and direct artifact modes); credentials never in logs, params or tags.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from medklip.evaluation.predict import predict_files
from medklip.training.checkpoints import load_model
from tests.helpers import prepared_synthetic, radiograph_png
from tests.servers import BIN, mlflow_server, s3_endpoint

pytestmark = pytest.mark.slow
SECRET = "sentinel-secret-5f1e9c"  # must never show up in any output, param, tag or artifact
BUCKET = "medklip-artifacts"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mlflow-data")
    return prepared_synthetic(root / "data", 80, seed=11, val=0.25, test=0.25)


def client_env(tracking_uri: str, **extra) -> dict:
    """What a training job gets: the server's URI and credentials-like variables that must never leak."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "MLFLOW_"))}
    env.update(MLFLOW_TRACKING_URI=tracking_uri, MLFLOW_TRACKING_PASSWORD=SECRET, MLFLOW_TRACKING_USERNAME="medklip")
    env.update(MLFLOW_EXPERIMENT_NAME="medklip-integration", AWS_SECRET_ACCESS_KEY=SECRET, AWS_ACCESS_KEY_ID="x")
    env.update(extra)
    return env


def medklip(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "medklip"), *args], env=env, capture_output=True, text=True, timeout=timeout)


def train_args(data: Path, save: Path, *flags: str) -> list[str]:
    return ["train", "--data", str(data), "--config", "debug", "--save", str(save), *flags]


def test_train_evaluate_register_and_load_the_champion_through_a_server_with_s3_artifacts(data, tmp_path):
    with s3_endpoint(tmp_path) as s3:
        s3.client.create_bucket(Bucket=BUCKET)
        with mlflow_server(tmp_path / "mlflow", artifacts=f"s3://{BUCKET}/mlflow", s3=s3) as server:
            env = client_env(server.url, MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD="true")
            env.update(
                MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE=str(5 << 20), MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE=str(5 << 20)
            )
            save = tmp_path / "ckpt"
            outputs = [medklip(env, *train_args(data, save, "--epochs", "2"))]
            weights = save / "model_best.safetensors"
            outputs.append(medklip(env, "evaluate", "--weights", str(weights), "--data", str(data),
                                   "--out", str(tmp_path / "results"), "--resamples", "100"))  # fmt: skip
            run_id = (save / "mlflow_run_id").read_text().strip()
            outputs.append(medklip(env, "registry", "register", "--run-id", run_id))
            for finished in outputs:
                assert finished.returncode == 0, finished.stderr[-3000:]
            assert "champion" in outputs[-1].stdout

            previous = mlflow.get_tracking_uri()  # earlier tests in this process may have set one
            mlflow.set_tracking_uri(server.url)
            try:
                pyfunc = mlflow.pyfunc.load_model("models:/medklip@champion")
            finally:
                mlflow.set_tracking_uri(previous)
            sample = radiograph_png(tmp_path / "sample.png")
            probabilities = pyfunc.predict(pd.DataFrame({"image": [sample.read_bytes()]}))
            expected = predict_files(load_model(weights), [str(sample)])[0].probabilities  # the local best model
            assert probabilities.iloc[0].tolist() == pytest.approx(list(expected.values()), abs=1e-5)

            objects = {o["Key"]: o for o in s3.client.list_objects_v2(Bucket=BUCKET)["Contents"]}
            assert weights.stat().st_size > 5 << 20, "the test needs weights over the multipart threshold"
            stored = [o for key, o in objects.items() if key.endswith("model_best.safetensors")]
            assert stored and stored[0]["Size"] == weights.stat().st_size
            assert "-" in stored[0]["ETag"], "uploaded in parts (a multipart ETag is <md5>-<parts>)"
            body = s3.client.get_object(Bucket=BUCKET, Key=stored[0]["Key"])["Body"].read()
            assert body == weights.read_bytes()
            assert any(key.endswith(f"{run_id}/artifacts/config.json") for key in objects)
            assert any(key.endswith("evaluation/predictions.parquet") for key in objects)

            # Credentials appear nowhere: command output, params, tags, small artifacts.
            run = MlflowClient(server.url).get_run(run_id)
            texts = [f.stdout + f.stderr for f in outputs] + list(run.data.params.values())
            texts += list(run.data.tags.values()) + [(save / "mlflow_run_id").read_text()]
            for key, entry in objects.items():
                if entry["Size"] < 1 << 20:
                    texts.append(s3.client.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode(errors="replace"))
            assert not [text for text in texts if SECRET in text]


def wait_for(path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_server_lost_mid_training_and_back_before_the_end_loses_nothing(data, tmp_path):
    with mlflow_server(tmp_path / "mlflow") as server:
        save = tmp_path / "ckpt"
        env = client_env(server.url)
        process = subprocess.Popen([str(BIN / "medklip"), *train_args(data, save, "--epochs", "12")],
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        wait_for(save / "mlflow_run_id")
        server.kill()
        wait_for(save / "history.jsonl")  # training goes on without the server
        server.restart()
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
        assert "cannot send metrics" in stderr and json.loads(stdout.splitlines()[-1])["mlflow_problems"] == []
        run_id = (save / "mlflow_run_id").read_text().strip()
        history = [json.loads(line) for line in (save / "history.jsonl").read_text().splitlines()]
        client = MlflowClient(server.url)
        assert len(client.get_metric_history(run_id, "loss")) == history[-1]["step"]
        assert len(client.get_metric_history(run_id, "val_mean_auc")) == 12
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and "medklip.model_uri" in run.data.tags
        assert not (save / "mlflow_pending.jsonl").exists()


def test_server_lost_until_after_training_is_reported_and_caught_up_by_evaluate(data, tmp_path):
    with mlflow_server(tmp_path / "mlflow") as server:
        save = tmp_path / "ckpt"
        env = client_env(server.url, MEDKLIP_MLFLOW_FLUSH_TIMEOUT="3")
        process = subprocess.Popen([str(BIN / "medklip"), *train_args(data, save, "--epochs", "3")],
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        wait_for(save / "mlflow_run_id")
        server.kill()
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]  # training itself succeeded
        problems = json.loads(stdout.splitlines()[-1])["mlflow_problems"]
        assert any("did not reach MLflow" in p for p in problems) and "mlflow_pending.jsonl" in stderr
        history = [json.loads(line) for line in (save / "history.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in history] == [1, 2, 3]
        load_model(save / "model_best.safetensors")  # checkpoints intact

        server.restart()
        evaluated = medklip(env, "evaluate", "--weights", str(save / "model_best.safetensors"), "--data", str(data),
                            "--out", str(tmp_path / "results"), "--resamples", "50")  # fmt: skip
        assert evaluated.returncode == 0, evaluated.stderr[-3000:]
        run_id = (save / "mlflow_run_id").read_text().strip()
        client = MlflowClient(server.url)
        assert len(client.get_metric_history(run_id, "val_mean_auc")) == 3  # the kept metrics arrived
        assert len(client.get_metric_history(run_id, "loss")) == history[-1]["step"]
        assert (
            "medklip.model_uri" in client.get_run(run_id).data.tags
            and "mean_auc" in client.get_run(run_id).data.metrics
        )
        assert not (save / "mlflow_pending.jsonl").exists()


def test_bad_s3_credentials_stop_training_with_an_error_naming_the_bucket(data, tmp_path):
    with s3_endpoint(tmp_path, require_auth=True) as locked:
        # Proxied artifacts: the server's credentials are refused; the client names the bucket the server uses.
        with mlflow_server(tmp_path / "proxied", artifacts="s3://locked-bucket/mlflow", s3=locked) as server:
            env = client_env(server.url, MLFLOW_ARTIFACTS_DESTINATION="s3://locked-bucket/mlflow")
            finished = medklip(env, *train_args(data, tmp_path / "a"))
            assert finished.returncode == 2, finished.stderr[-3000:]
            assert "S3 bucket 'locked-bucket'" in finished.stderr and SECRET not in finished.stderr
            assert not (tmp_path / "a/last.json").exists()
        # Direct artifacts: this process writes to S3 with its own (bad) credentials.
        with mlflow_server(tmp_path / "direct", artifacts="s3://locked-bucket/direct", proxy=False) as server:
            env = client_env(server.url, MLFLOW_S3_ENDPOINT_URL=locked.url)
            finished = medklip(env, *train_args(data, tmp_path / "b"))
            assert finished.returncode == 2, finished.stderr[-3000:]
            assert "S3 bucket 'locked-bucket'" in finished.stderr and SECRET not in finished.stderr
            assert "InvalidAccessKeyId" in finished.stderr or "AccessDenied" in finished.stderr
            assert not (tmp_path / "b/last.json").exists()
