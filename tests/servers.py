"""Real servers for integration tests, each on a free loopback port, stopped by the test that started it.

with s3_endpoint() as s3:                       # moto_server (moto[server]): an S3-compatible endpoint
    s3.client.create_bucket(Bucket="b")
    with mlflow_server(tmp, artifacts="s3://b/mlflow", s3=s3) as mlflow:
        os.environ["MLFLOW_TRACKING_URI"] = mlflow.url
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

BIN = Path(sys.executable).parent
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test-key-id", "AWS_SECRET_ACCESS_KEY": "test-secret-not-a-real-one"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up in {timeout} s:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    """Stops a server and its workers (each is started in its own process group)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 15)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()


@dataclass
class S3Endpoint:
    url: str
    process: subprocess.Popen

    @property
    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1", **{
            "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        })  # fmt: skip


@contextlib.contextmanager
def s3_endpoint(log_dir: Path, require_auth: bool = False):
    """moto_server; with `require_auth`, it checks credentials and knows none, so every request is refused."""
    port = free_port()
    env = dict(os.environ, **CREDENTIALS)
    if require_auth:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
    log = log_dir / f"moto-{port}.log"
    with open(log, "w") as handle:
        process = subprocess.Popen(
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_until_up(f"http://127.0.0.1:{port}/moto-api/", process, log)
        yield S3Endpoint(f"http://127.0.0.1:{port}", process)
    finally:
        stop(process)


@dataclass
class MlflowServer:
    url: str
    port: int
    process: subprocess.Popen
    command: list[str]
    env: dict
    log: Path

    def kill(self) -> None:
        stop(self.process)

    def restart(self) -> None:
        """Starts the same server again (same port, same database)."""
        with open(self.log, "a") as handle:
            self.process = subprocess.Popen(
                self.command, env=self.env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_until_up(f"{self.url}/health", self.process, self.log)


@contextlib.contextmanager
def mlflow_server(folder: Path, artifacts: str | None = None, s3: S3Endpoint | None = None, proxy: bool = True):
    """`mlflow server` with a SQLite backend; artifacts proxied to `artifacts` (a folder or s3://bucket/prefix), or,
    with `proxy=False`, written by the clients themselves to `artifacts` (direct mode)."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    command += ["--backend-store-uri", f"sqlite:///{folder}/mlflow.db"]
    artifacts = artifacts or str(folder / "artifacts")
    if proxy:
        command += ["--artifacts-destination", artifacts]
    else:
        command += ["--no-serve-artifacts", "--default-artifact-root", artifacts]
    env = dict(os.environ, **CREDENTIALS)
    env.pop("MLFLOW_TRACKING_URI", None)
    if s3 is not None:
        env["MLFLOW_S3_ENDPOINT_URL"] = s3.url
    log = folder / f"mlflow-{port}.log"
    with open(log, "w") as handle:
        process = subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    server = MlflowServer(f"http://127.0.0.1:{port}", port, process, command, env, log)
    try:
        wait_until_up(f"{server.url}/health", process, log)
        yield server
    finally:
        stop(server.process)
