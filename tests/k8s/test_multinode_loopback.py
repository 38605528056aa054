"""Multi-node training for real on one machine: two torchrun agents run exactly the command and environment that the
rendered multi-node Job gives its two pods (node ranks from JOB_COMPLETION_INDEX, c10d rendezvous at node 0,
--max-restarts), with the only differences a cluster would make: node 0's DNS name is 127.0.0.1, the rendezvous
port is a free one, /workspace is a temporary folder and MLflow is the test store."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tasks.kubernetes_launcher import KubernetesLauncher
from tasks.step import Step
from tests.helpers import prepared_synthetic
from tests.k8s import kubelet
from tests.k8s.test_manifests import ROOT, env_of
from tests.servers import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("workspace")
    prepared_synthetic(root / "data", 80, seed=5)
    return root


def pod_processes(workspace: Path, save: str, *train_flags: str) -> list[tuple[list[str], dict, Path]]:
    """(command, env, cwd) of each pod of the rendered 2-node Job, as the kubelet would build them."""
    launcher = KubernetesLauncher.from_overlay(ROOT / "k8s" / "overlays" / "dev")
    args = ["-m", "medklip.train", "--data", "/workspace/data", "--config", "debug", "--save", save, *train_flags]
    service, job = launcher.render(Step("train", args, nodes=2, distributed=True), "loopback")
    master = env_of(job["spec"]["template"]["spec"]["containers"][0])["MASTER_ADDR"]["value"]
    assert master == f"{job['metadata']['name']}-0.{service['metadata']['name']}"
    overrides = {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "MLFLOW_TRACKING_URI": os.environ["MLFLOW_TRACKING_URI"],
        "MEDKLIP_DIST_TIMEOUT_S": "60",  # a collective left waiting by a killed peer fails within a minute
    }
    return kubelet.pod_processes(job, launcher.templates, workspace, overrides)


def finish(agents: list[subprocess.Popen], timeout: float) -> list[str]:
    """The agents' outputs once both exit; after `timeout` seconds in all, both are killed (a hang fails fast)."""
    deadline = time.time() + timeout
    outputs = []
    for agent in agents:
        try:
            outputs.append(agent.communicate(timeout=max(1.0, deadline - time.time()))[0])
        except subprocess.TimeoutExpired:
            for other in agents:
                other.kill()
            outputs.append(agent.communicate()[0])
    return outputs


def history(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_torchrun_agents_train_the_debug_preset_for_one_epoch(workspace):
    pods = pod_processes(workspace, "/workspace/ckpt-2nodes", "--epochs", "1")
    assert "--rdzv-backend=c10d" in pods[0][0] and "--node-rank=1" in pods[1][0] and "--nnodes=2" in pods[0][0]
    agents = kubelet.start(pods)
    outputs = finish(agents, timeout=240)
    assert [agent.returncode for agent in agents] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    records = history(workspace / "ckpt-2nodes/history.jsonl")
    train_rows = int(json.loads((workspace / "data/manifest.json").read_text())["splits"]["train"])
    assert [r["epoch"] for r in records] == [1]
    # world size 2: DistributedSampler pads the epoch to an even split, and each rank drops its last short batch of 8
    assert records[-1]["step"] == math.ceil(train_rows / 2) // 8
    assert (workspace / "ckpt-2nodes/model_best.safetensors").is_file()


def test_a_killed_worker_is_restarted_and_training_resumes_and_finishes(workspace):
    save = workspace / "ckpt-killed"
    flags = ["--epochs", "4", "--set", "train.save_every_steps=2", "--no-mlflow"]  # restarts are the subject here
    pods = pod_processes(workspace, "/workspace/ckpt-killed", *flags)
    agents = kubelet.start(pods)
    killed, deadline = False, time.time() + 240
    while not killed and time.time() < deadline and all(agent.poll() is None for agent in agents):
        pointer = save / "last.json"
        if pointer.exists() and json.loads(pointer.read_text())["step"] >= 2:
            workers = subprocess.run(["pgrep", "-P", str(agents[1].pid)], capture_output=True, text=True).stdout
            for pid in workers.split():
                os.kill(int(pid), signal.SIGKILL)
            killed = bool(workers.split())
        time.sleep(0.05)
    outputs = finish(agents, timeout=240)
    assert killed, "training ended before a worker could be killed"
    assert [agent.returncode for agent in agents] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert "resumed from" in outputs[0] + outputs[1]  # torchrun restarted the workers; they resumed from last.json
    assert [r["epoch"] for r in history(save / "history.jsonl")] == [1, 2, 3, 4]
