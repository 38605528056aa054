"""The local stack behind `make up` / `make down`: everything on 127.0.0.1, from the project's own dependencies.

    python infra/local/stack.py up        # S3 endpoint, MLflow server, Prefect server + UI, a process worker
    python infra/local/stack.py status
    python infra/local/stack.py down      # stops what `up` started, by pid

    S3-compatible endpoint (moto_server), bucket `medklip`   http://127.0.0.1:9000   .stack/s3/snapshot/
    MLflow server (SQLite; artifacts -> s3://medklip/mlflow)  http://127.0.0.1:5000   .stack/mlflow/mlflow.db
    Prefect server (API + UI)                                http://127.0.0.1:4200   .stack/prefect/ (PREFECT_HOME)
    Prefect process worker on the work pool `local`                                  .stack/logs/worker.log

`up` twice is harmless: a service whose pid is alive and which answers is left alone. Ports and the state folder
can be moved with STACK_DIR, S3_PORT, MLFLOW_PORT, PREFECT_PORT (the integration test does). `.stack/env` holds the
variables a shell needs to use the stack (`source .stack/env`). moto keeps objects in memory: `down` saves them to
.stack/s3/snapshot/ and `up` puts them back (a crash of the endpoint loses what was written since the last `up`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
STACK = Path(os.environ.get("STACK_DIR", ROOT / ".stack")).resolve()
S3_PORT = int(os.environ.get("S3_PORT", "9000"))
MLFLOW_PORT = int(os.environ.get("MLFLOW_PORT", "5000"))
PREFECT_PORT = int(os.environ.get("PREFECT_PORT", "4200"))
BUCKET = "medklip"
POOL = "local"
# Local-only placeholders: the endpoint is moto on loopback. A real deployment reads these from a Secret.
LOCAL_S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local-stack", "AWS_SECRET_ACCESS_KEY": "local-stack"}


def urls() -> dict[str, str]:
    return {
        "s3": f"http://127.0.0.1:{S3_PORT}",
        "mlflow": f"http://127.0.0.1:{MLFLOW_PORT}",
        "prefect": f"http://127.0.0.1:{PREFECT_PORT}",
    }


def client_env() -> dict[str, str]:
    """What a shell, the worker and its flow runs need to use the stack."""
    return {
        "PREFECT_API_URL": f"{urls()['prefect']}/api",
        "MLFLOW_TRACKING_URI": urls()["mlflow"],
        "MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD": "true",
        "MLFLOW_ARTIFACTS_DESTINATION": f"s3://{BUCKET}/mlflow",
        "DO_NOT_TRACK": "true",  # no telemetry from MLflow or Prefect clients
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }


def services() -> list[dict]:
    """Each service: command, environment, health URL; in start order."""
    prefect_env = {
        "PREFECT_HOME": str(STACK / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_API_URL": f"{urls()['prefect']}/api",
    }
    s3_env = dict(LOCAL_S3_CREDENTIALS)
    mlflow_env = {**LOCAL_S3_CREDENTIALS, "MLFLOW_S3_ENDPOINT_URL": urls()["s3"], "MLFLOW_DISABLE_TELEMETRY": "true"}
    return [
        {
            "name": "s3",
            "port": S3_PORT,
            "port_variable": "S3_PORT",
            "command": [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(S3_PORT)],
            "env": s3_env,
            "health": f"{urls()['s3']}/moto-api/",
        },
        {
            "name": "mlflow",
            "port": MLFLOW_PORT,
            "port_variable": "MLFLOW_PORT",
            "command": [
                str(BIN / "mlflow"),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(MLFLOW_PORT),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{STACK / 'mlflow' / 'mlflow.db'}",
                "--artifacts-destination",
                f"s3://{BUCKET}/mlflow",
            ],  # fmt: skip
            "env": mlflow_env,
            "health": f"{urls()['mlflow']}/health",
        },
        {
            "name": "prefect",
            "port": PREFECT_PORT,
            "port_variable": "PREFECT_PORT",
            "command": [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(PREFECT_PORT)],
            "env": prefect_env,
            "health": f"{urls()['prefect']}/api/health",
        },
        {
            "name": "worker",
            "command": [
                str(BIN / "prefect"),
                "worker",
                "start",
                "--pool",
                POOL,
                "--type",
                "process",
                "--name",
                "local-worker",
                "--install-policy",
                "never",
            ],  # fmt: skip
            "env": {**prefect_env, **client_env()},
            "health": None,
        },
    ]


def pid_file(name: str) -> Path:
    return STACK / "pids" / f"{name}.pid"


def started_at(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), or None if there is none.
    With the pid it names one process for good: a pid the system has since given to another process differs."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[19]


def alive(name: str) -> int | None:
    """The pid of a running service started by `up`, else None: the pid file names the pid and its start time, so a
    pid reused by another process after a reboot or a crash is never taken for ours (and never signalled)."""
    path = pid_file(name)
    if not path.is_file():
        return None
    pid, _, recorded = path.read_text().strip().partition(" ")
    if not pid.isdigit() or not recorded or started_at(int(pid)) != recorded:
        return None
    return int(pid)


def answers(url: str | None) -> bool:
    if url is None:
        return True
    try:
        return requests.get(url, timeout=3).status_code < 500
    except requests.RequestException:
        return False


def listener(port: int) -> str | None:
    """What listens on 127.0.0.1:`port` ("moto_server (pid 4242)"), or None when the port is free.

    Read from /proc: the socket's inode in /proc/net/tcp{,6}, then the process whose fd points at it.
    """
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
            return None
        except OSError:
            pass
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # 0A: LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            if any(os.readlink(fd) in inodes for fd in fd_dir.iterdir()):
                pid = fd_dir.parent.name
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
                return f"{command[:80] or Path(f'/proc/{pid}/comm').read_text().strip()} (pid {pid})"
        except OSError:
            continue
    return "a program this user cannot see"


def check_port(service: dict) -> None:
    """Stops `up` with one line when another program holds the port our service is to listen on."""
    port, variable = service.get("port"), service.get("port_variable")
    if port is None:
        return
    holder = listener(port)
    if holder is not None:
        raise SystemExit(
            f"make up: port {port} (for {service['name']}) is held by {holder}; stop it, or move ours: "
            f"{variable}=<free port> make up"
        )


def wait_healthy(service: dict, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive(service["name"]) is None:
            log = (STACK / "logs" / f"{service['name']}.log").read_text()[-3000:]
            raise SystemExit(f"{service['name']} exited during start-up; its log ends with:\n{log}")
        if answers(service["health"]):
            return
        time.sleep(0.5)
    raise SystemExit(f"{service['name']} did not answer {service['health']} within {timeout:.0f} s")


def start(service: dict) -> None:
    for folder in ("pids", "logs", "s3", "mlflow", "prefect"):
        (STACK / folder).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **service["env"]}
    log = open(STACK / "logs" / f"{service['name']}.log", "a")  # noqa: SIM115 (the child keeps it)
    process = subprocess.Popen(
        service["command"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
    )
    pid_file(service["name"]).write_text(f"{process.pid} {started_at(process.pid)}")


def s3_client():
    import boto3

    return boto3.client("s3", endpoint_url=urls()["s3"], region_name="us-east-1", **{
        "aws_access_key_id": LOCAL_S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": LOCAL_S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    })  # fmt: skip


def restore_s3() -> None:
    """Creates the bucket and puts back the objects saved by the last `down` (moto keeps them in memory only)."""
    s3 = s3_client()
    snapshot = STACK / "s3" / "snapshot"
    buckets = {BUCKET} | ({path.name for path in snapshot.iterdir() if path.is_dir()} if snapshot.is_dir() else set())
    for bucket in sorted(buckets):
        s3.create_bucket(Bucket=bucket)
        for path in sorted((snapshot / bucket).rglob("*")) if (snapshot / bucket).is_dir() else []:
            if path.is_file():
                s3.upload_file(str(path), bucket, path.relative_to(snapshot / bucket).as_posix())


def snapshot_s3() -> None:
    """Saves every object to .stack/s3/snapshot/<bucket>/<key> before the endpoint stops."""
    import shutil

    s3 = s3_client()
    staging = STACK / "s3" / "snapshot.new"
    shutil.rmtree(staging, ignore_errors=True)
    for bucket in s3.list_buckets()["Buckets"]:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket["Name"]):
            for entry in page.get("Contents", []):
                target = staging / bucket["Name"] / entry["Key"]
                target.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket["Name"], entry["Key"], str(target))
    staging.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(STACK / "s3" / "snapshot", ignore_errors=True)
    staging.rename(STACK / "s3" / "snapshot")


def ensure_pool() -> None:
    env = {**os.environ, **client_env(), "PREFECT_HOME": str(STACK / "prefect")}
    prefect = str(BIN / "prefect")
    if subprocess.run([prefect, "work-pool", "inspect", POOL], env=env, capture_output=True).returncode != 0:
        subprocess.run([prefect, "work-pool", "create", POOL, "--type", "process"], env=env, check=True,
                       capture_output=True)  # fmt: skip


def up() -> None:
    running = {s["name"] for s in services() if alive(s["name"]) and answers(s["health"])}
    for service in services():
        if service["name"] not in running:
            check_port(service)  # all ports first: a held one stops `up` before anything starts
    for service in services():
        if service["name"] in running:
            print(f"{service['name']:<8} already running (pid {alive(service['name'])})")
            continue
        if service["name"] == "worker":
            ensure_pool()
        start(service)
        wait_healthy(service)
        if service["name"] == "s3":
            restore_s3()
        print(f"{service['name']:<8} started (pid {alive(service['name'])})")
    (STACK / "env").write_text("".join(f"export {key}={value}\n" for key, value in client_env().items()))
    print(f"\nPrefect UI  {urls()['prefect']}\nMLflow UI   {urls()['mlflow']}\nS3 endpoint {urls()['s3']}")
    print(f"use it from a shell: source {STACK / 'env'}; register the deployments: make deploy")


def down() -> None:
    for service in reversed(services()):
        pid = alive(service["name"])
        if pid is None:
            pid_file(service["name"]).unlink(missing_ok=True)
            continue
        if service["name"] == "s3" and answers(service["health"]):
            snapshot_s3()
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while alive(service["name"]) and time.monotonic() < deadline:
            time.sleep(0.2)
        if alive(service["name"]):
            os.killpg(pid, signal.SIGKILL)
        pid_file(service["name"]).unlink(missing_ok=True)
        print(f"{service['name']:<8} stopped")


def status() -> None:
    report = {s["name"]: {"pid": alive(s["name"]), "answers": answers(s["health"])} for s in services()}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    actions = {"up": up, "down": down, "status": status}
    if len(sys.argv) != 2 or sys.argv[1] not in actions:
        raise SystemExit(f"usage: {sys.argv[0]} up|down|status")
    actions[sys.argv[1]]()
