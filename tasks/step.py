"""A step of the pipeline, described once for every execution backend, and how a failed step is reported.

    step = Step("train", ["-m", "medklip.train", "--data", "data/x", ...], processes=1)

A step is a `python -m <module> ...` command with the resources it needs (processes per node, nodes, GPUs);
`tasks/local_launcher.py` runs it here and `tasks/kubernetes_launcher.py` renders it as Jobs (`tasks/launchers.py`
picks one by name). Exit status 75 (EX_TEMPFAIL, what `medklip` returns when MLflow does not answer) is a
`TransientStepError`, retried by the tasks; any other failure is a `StepError`, not retried.
"""

from __future__ import annotations

import re
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


def failure(name: str, returncode: int, lines: list[str]) -> StepError:
    """The error for a failed step: its own error lines first (torchrun buries them under its report and exits 1
    whatever the worker's status, so a worker's 75 is read from that report)."""
    errors = [line for line in lines if "error:" in line.lower() and "errors.html" not in line]
    codes = [int(m.group(1)) for m in (re.search(r"exitcode\s*:\s*(-?\d+)", line) for line in lines) if m]
    detail = "\n".join(errors[-5:] or lines[-15:])
    if returncode == TEMPORARY_FAILURE or TEMPORARY_FAILURE in codes:
        return TransientStepError(f"{name} failed for now (exit 75, worth retrying):\n{detail}")
    return StepError(f"{name} failed with exit status {returncode}:\n{detail}")
