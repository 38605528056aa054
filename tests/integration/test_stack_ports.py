"""`make up` with a port held by another program: one line naming the port, the program and the variable that moves
ours, before anything starts. Each service's port is tried in turn with a foreign listener on it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
LISTENER = "import socket, sys, time; s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); "
LISTENER += "print('ready', flush=True); time.sleep(120)"


def stack_up(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "infra/local/stack.py", "up"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("variable", ["S3_PORT", "MLFLOW_PORT", "PREFECT_PORT"])
def test_a_foreign_listener_stops_make_up_with_one_line(tmp_path, variable):
    ports = {name: str(free_port()) for name in ("S3_PORT", "MLFLOW_PORT", "PREFECT_PORT")}
    foreign = subprocess.Popen([sys.executable, "-c", LISTENER, ports[variable]], stdout=subprocess.PIPE, text=True)
    try:
        assert foreign.stdout.readline().strip() == "ready"
        env = {key: value for key, value in os.environ.items() if not key.startswith(("MLFLOW_", "PREFECT_"))}
        env.update(ports, STACK_DIR=str(tmp_path / "stack"))
        finished = stack_up(env)
    finally:
        foreign.kill()
        foreign.wait()
        subprocess.run([sys.executable, "infra/local/stack.py", "down"], cwd=ROOT, env=env, capture_output=True)
    message = finished.stderr.strip()
    assert finished.returncode != 0
    assert "\n" not in message and "Traceback" not in message, message
    assert f"port {ports[variable]}" in message and f"pid {foreign.pid}" in message, message
    assert f"{variable}=" in message, message
    # `up` checks every port before it starts anything: no service was started, not even those before the held one.
    assert not (tmp_path / "stack" / "pids").exists() or not any((tmp_path / "stack" / "pids").iterdir())


def test_a_free_port_is_not_reported():
    sys.path.insert(0, str(ROOT / "infra" / "local"))
    try:
        import stack
    finally:
        sys.path.pop(0)
    port = free_port()
    assert stack.listener(port) is None
    with socket.socket() as held:
        held.bind(("127.0.0.1", port))
        held.listen()
        assert f"pid {os.getpid()}" in stack.listener(port)  # negative control: a held port is seen, with its owner
