"""The container image's Dockerfile (no Docker engine here to build it): hadolint-clean, pinned bases and
dependency versions, the uid the manifests run as, no credentials baked in, and the launcher's templates rendered
from k8s/."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import requires
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.k8s.test_manifests import ROOT, SECRET_NAME, build

DOCKERFILE = (ROOT / "infra" / "Dockerfile").read_text()


def instructions(name: str) -> list[str]:
    return [line.split(None, 1)[1] for line in DOCKERFILE.splitlines() if line.startswith(f"{name} ")]


def test_base_images_are_pinned_and_the_image_runs_as_the_manifests_uid():
    for base in instructions("FROM"):
        image = base.split()[0]
        assert re.search(r":[\w.\-]*\d", image) and not image.endswith(":latest"), image
    assert instructions("USER")[-1] == "10001:10001"
    uids = {
        job["spec"]["template"]["spec"]["securityContext"]["runAsUser"] for job in build("prod") if job["kind"] == "Job"
    }
    assert uids == {10001}


def test_no_credentials_are_baked_in():
    code = [line for line in DOCKERFILE.splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in code if SECRET_NAME.search(line)]
    assert (
        '--output", "/k8s-prod.yaml' in DOCKERFILE and "MEDKLIP_K8S_MANIFESTS=/opt/medklip/k8s-prod.yaml" in DOCKERFILE
    )


def test_hadolint_finds_nothing():
    hadolint = Path(sys.executable).with_name("hadolint")
    finished = subprocess.run([hadolint, "--no-color", ROOT / "infra" / "Dockerfile"], capture_output=True, text=True)
    assert finished.returncode == 0, finished.stdout + finished.stderr


def test_dependencies_install_at_pinned_versions_that_satisfy_pyproject():
    assert "--constraint constraints.txt" in DOCKERFILE
    lines = [line for line in (ROOT / "infra" / "constraints.txt").read_text().splitlines() if line.strip()]
    pins = {canonicalize_name(name): version for name, version in (line.split("==", 1) for line in lines)}
    assert len(pins) == len(lines), "every line of infra/constraints.txt pins one version"
    for requirement in (Requirement(text) for text in requires("medklip") if "extra ==" not in text):
        version = pins.get(canonicalize_name(requirement.name))
        assert version and requirement.specifier.contains(version), (requirement, version)
