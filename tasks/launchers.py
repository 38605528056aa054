"""Execution backends: how one step (a `medklip` command) runs. The flow describes steps; a launcher runs them.

    step = Step("train", ["-m", "medklip.train", "--data", "data/x", ...], processes=1)
    LocalLauncher().run(step, logger)      # a subprocess here; training through torchrun

A step is described once (command, processes per node, nodes, GPUs); the `kubernetes` backend
(`tasks/kubernetes_launcher.py`) renders the same `Step` as Jobs. Exit status 75 (EX_TEMPFAIL, what `medklip`
returns when MLflow does not answer) is a `TransientStepError`, retried by the tasks; any other failure is a
`StepError`, not retried.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from collections import deque
from dataclasses import dataclass, field

TEMPORARY_FAILURE = 75


class StepError(RuntimeError):
    """A step failed in a way that running it again would not fix (bad data, bad parameters, a bug)."""


class TransientStepError(StepError):
    """A step failed for a reason that may pass (a service away); worth retrying."""


@dataclass
class Step:
    """One `python -m <module> ...` command of the pipeline, with the resources it needs."""

    name: str  # prepare, extract, train, evaluate
    args: list[str]  # after `python`: e.g. ["-m", "medklip.cli", "data", "prepare", ...]
    processes: int = 1  # per node; > 1 or distributed: launched through torchrun
    nodes: int = 1
    gpus_per_node: int = 0
    distributed: bool = False  # torchrun even for one process (the training step)
    env: dict[str, str] = field(default_factory=dict)


class LocalLauncher:
    """Runs steps as subprocesses of this machine; training through `torchrun --standalone`."""

    name = "local"

    def command(self, step: Step) -> list[str]:
        if step.nodes != 1:
            raise StepError(f"{step.name}: the local backend runs one node, {step.nodes} asked; use backend=kubernetes")
        if not step.distributed:
            return [sys.executable, *step.args]
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]
        return [*launcher, str(step.processes), *step.args]

    def run(self, step: Step, logger: logging.Logger | logging.LoggerAdapter) -> list[str]:
        """Runs the step, streaming its output lines to `logger`; returns the last 200 lines.

        Raises:
            TransientStepError: exit status 75.
            StepError: any other non-zero exit status.
        """
        command = self.command(step)
        logger.info("%s: %s", step.name, " ".join(command))
        # Progress bars go to the log: one line per 15 s per bar, not one per redraw.
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_MININTERVAL": "15", **step.env}
        tail: deque[str] = deque(maxlen=200)
        with subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, errors="replace"
        ) as process:
            for line in process.stdout:
                line = line.rstrip("\n")
                if line.strip():
                    tail.append(line)
                    logger.info("%s | %s", step.name, line)
        if process.returncode != 0:
            raise failure(step.name, process.returncode, list(tail))
        return list(tail)


def failure(name: str, returncode: int, lines: list[str]) -> StepError:
    """The error for a failed step: its own error lines first (torchrun buries them under its report and exits 1
    whatever the worker's status, so a worker's 75 is read from that report)."""
    errors = [line for line in lines if "error:" in line.lower() and "errors.html" not in line]
    codes = [int(m.group(1)) for m in (re.search(r"exitcode\s*:\s*(-?\d+)", line) for line in lines) if m]
    detail = "\n".join(errors[-5:] or lines[-15:])
    if returncode == TEMPORARY_FAILURE or TEMPORARY_FAILURE in codes:
        return TransientStepError(f"{name} failed for now (exit 75, worth retrying):\n{detail}")
    return StepError(f"{name} failed with exit status {returncode}:\n{detail}")


def make_launcher(backend: str):
    """The launcher called `backend`: `local`, or `kubernetes` with the templates of `MEDKLIP_K8S_MANIFESTS` (a
    rendered YAML file, as baked into the image) or else of the overlay `MEDKLIP_K8S_OVERLAY` (k8s/overlays/prod)."""
    if backend == "local":
        return LocalLauncher()
    if backend == "kubernetes":
        from tasks.kubernetes_launcher import KubernetesLauncher

        source = os.environ.get("MEDKLIP_K8S_MANIFESTS") or os.environ.get("MEDKLIP_K8S_OVERLAY", "k8s/overlays/prod")
        return KubernetesLauncher.from_overlay(source)
    raise StepError(f"unknown backend {backend!r}: local or kubernetes")
