"""The container image's Dockerfile (no Docker engine here to build it): pinned bases, the uid the manifests run
as, no credentials baked in, and the launcher's templates rendered from k8s/."""

from __future__ import annotations

import re

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
