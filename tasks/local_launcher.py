"""The `local` execution backend: a step runs as a subprocess of this machine, training through torchrun.

LocalLauncher().run(step, logger)      # streams the step's output to the logger; raises StepError on failure
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections import deque

from tasks.step import Step, StepError, failure


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
        # The child's output is a pipe, so it draws no progress bars: the log gets its summary lines (one per epoch).
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **step.env}
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
