"""Our Kubernetes manifests, validated offline: every overlay builds with `kubectl kustomize`, every object validates
strictly against the Kubernetes schema, and the policies hold (limits, non-root, pinned images, no plaintext
secrets, GPUs in prod training, the multi-node Indexed Job wiring, a minimal worker Role, the work pool template)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ("dev", "prod")
K8S_VERSIONS = ("1.32.0", "1.37.0")  # the kubectl on our machines, and the newest schema kubernetes-validate has
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|CREDENTIAL", re.IGNORECASE)


def build(overlay: str) -> list[dict]:
    finished = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "k8s" / "overlays" / overlay)], capture_output=True, text=True, check=True
    )
    return [doc for doc in yaml.safe_load_all(finished.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request) -> tuple[str, list[dict]]:
    return request.param, build(request.param)


def jobs(objects: list[dict]) -> list[dict]:
    return [obj for obj in objects if obj["kind"] == "Job"]


def by_name(objects: list[dict], kind: str, name: str) -> dict:
    return next(obj for obj in objects if obj["kind"] == kind and obj["metadata"]["name"] == name)


def env_of(container: dict) -> dict:
    return {item["name"]: item for item in container.get("env", [])}


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_of_every_overlay_validates_strictly(overlay, version):
    name, objects = overlay
    kinds = {obj["kind"] for obj in objects}
    assert {"Job", "Service", "ServiceAccount", "Role", "RoleBinding", "PersistentVolumeClaim"} <= kinds
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)  # raises on any schema error or unknown field
        assert obj["metadata"]["namespace"] == {"dev": "medklip-dev", "prod": "medklip"}[name]


def test_every_container_is_pinned_limited_non_root_and_read_only(overlay):
    _, objects = overlay
    for job in jobs(objects):
        pod = job["spec"]["template"]["spec"]
        assert job["spec"]["suspend"] is True, "templates must be idle when applied with kubectl apply -k"
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            image = container["image"]
            assert re.fullmatch(r"[\w.\-/]+:[\w.\-]+", image) and not image.endswith(":latest"), image
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= container["resources"][kind].keys(), (job["metadata"]["name"], kind)
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
            assert security["capabilities"]["drop"] == ["ALL"]
            mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
            assert {"/workspace", "/tmp", "/dev/shm"} <= mounts
        shm = next(volume for volume in pod["volumes"] if volume["name"] == "shm")
        assert shm["emptyDir"]["medium"] == "Memory"


def test_no_plaintext_secrets(overlay):
    _, objects = overlay
    assert not [obj for obj in objects if obj["kind"] == "Secret"], "Secrets are created by the operator, not here"
    for job in jobs(objects):
        for container in job["spec"]["template"]["spec"]["containers"]:
            for name, item in env_of(container).items():
                if SECRET_NAME.search(name):
                    assert "value" not in item and "secretKeyRef" in item["valueFrom"], name
    config = next(obj for obj in objects if obj["kind"] == "ConfigMap")
    assert not [key for key in config["data"] if SECRET_NAME.search(key)]


def test_prod_training_requests_gpus_on_gpu_nodes_and_dev_requests_none():
    prod, dev = build("prod"), build("dev")
    for name in ("medklip-train", "medklip-train-multinode"):
        pod = by_name(prod, "Job", name)["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
        assert env_of(container)["NPROC_PER_NODE"]["value"] == "8"  # one process per GPU
        assert pod["nodeSelector"] and pod["tolerations"][0]["key"] == "nvidia.com/gpu"
        shm = next(volume for volume in pod["volumes"] if volume["name"] == "shm")
        assert shm["emptyDir"]["sizeLimit"] == "64Gi"
    for job in jobs(dev):
        assert "nvidia.com/gpu" not in json.dumps(job)
    for name in ("medklip-prepare", "medklip-evaluate"):
        assert "nvidia.com/gpu" not in json.dumps(by_name(prod, "Job", name))


def test_multinode_training_is_an_indexed_job_behind_a_headless_service(overlay):
    _, objects = overlay
    job = by_name(objects, "Job", "medklip-train-multinode")
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = env_of(container)
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == int(env["NNODES"]["value"])
    service = by_name(objects, "Service", pod["subdomain"])
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == {"batch.kubernetes.io/job-name": job["metadata"]["name"]}
    assert env["MASTER_ADDR"]["value"] == f"{job['metadata']['name']}-0.{service['metadata']['name']}"
    index = env["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert index == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    args = container["args"]
    assert container["command"] == ["torchrun"]
    assert {"--rdzv-backend=c10d", "--node-rank=$(JOB_COMPLETION_INDEX)", "--nnodes=$(NNODES)"} <= set(args)
    assert "--rdzv-endpoint=$(MASTER_ADDR):$(MASTER_PORT)" in args
    assert any(arg.startswith("--max-restarts=") for arg in args)
    assert env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"]["value"] == "1"  # restarts otherwise can hang (see the template)
    assert pod["restartPolicy"] == "OnFailure" and spec["backoffLimit"] >= spec["completions"]


def test_extraction_is_an_indexed_job_writing_one_shard_per_index(overlay):
    _, objects = overlay
    job = by_name(objects, "Job", "medklip-extract")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == int(env_of(container)["SHARDS"]["value"])
    assert "--shard=$(JOB_COMPLETION_INDEX)/$(SHARDS)" in container["args"]
    assert any("shard-$(JOB_COMPLETION_INDEX).parquet" in arg for arg in container["args"])


def test_worker_role_grants_exactly_what_launching_and_watching_jobs_needs():
    objects = build("prod")
    assert not [obj for obj in objects if obj["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    role = by_name(objects, "Role", "prefect-worker")
    granted = {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
               for resource in rule["resources"] for verb in rule["verbs"]}  # fmt: skip
    assert not [g for g in granted if "*" in g or g[1] in ("secrets", "pods/exec", "configmaps")]
    needed = {("batch", "jobs", "create"), ("batch", "jobs", "watch"), ("batch", "jobs", "delete"),
              ("", "services", "create"), ("", "services", "delete"), ("", "pods", "list"), ("", "pods", "watch"),
              ("", "pods/log", "get"), ("", "events", "list")}  # fmt: skip
    assert needed <= granted
    binding = by_name(objects, "RoleBinding", "prefect-worker")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "prefect-worker", "namespace": "medklip"}]


def test_work_pool_base_job_template_renders_gpu_variables_through_prefect_kubernetes():
    from prefect.testing.utilities import prefect_test_harness
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    template = json.loads((ROOT / "k8s" / "work-pool" / "base-job-template.json").read_text())
    values = {
        "gpu_count": 2,
        "node_selector": {"nvidia.com/gpu.present": "true"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "shm_size": "16Gi",
        "namespace": "medklip",
        "name": "retrain-flow",
    }
    with prefect_test_harness(server_startup_timeout=120):  # rendering resolves variables through a Prefect API
        configuration = asyncio.run(KubernetesWorkerJobConfiguration.from_template_and_values(template, values))
    manifest = configuration.job_manifest
    pod = manifest["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert pod["nodeSelector"] == values["node_selector"] and pod["tolerations"] == values["tolerations"]
    assert next(v for v in pod["volumes"] if v["name"] == "shm")["emptyDir"]["sizeLimit"] == "16Gi"
    assert container["securityContext"]["runAsNonRoot"] is True and pod["serviceAccountName"] == "prefect-worker"
    assert container["image"].endswith(":0.1.0")
    manifest["metadata"]["name"] = "retrain-flow-abc12"  # what the worker sets from generateName
    # prefect-kubernetes insists on pod-level `completions`/`parallelism` in its templates (it validates the
    # template against its own default, which has them); the API server drops these unknown pod fields. Strictly
    # validated is everything else.
    assert pod.pop("completions") == 1 and pod.pop("parallelism") == 1
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(manifest, version, strict=True)
