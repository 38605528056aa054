"""Execution backends by name: `local` (a subprocess here) or `kubernetes` (Jobs from our templates in k8s/).

    launcher = make_launcher("local")
    launcher.run(Step("train", ["-m", "medklip.train", ...], distributed=True), logger)

The flow describes steps (`tasks/step.py`); a launcher runs them (`tasks/local_launcher.py`,
`tasks/kubernetes_launcher.py`).
"""

from __future__ import annotations

import os

from tasks.local_launcher import LocalLauncher
from tasks.step import StepError


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
