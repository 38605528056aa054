"""The platform manifests (infra/k8s) and every long-running workload of ours, validated offline: strict schemas,
pinned images, limits, non-root, credentials only through Secrets, MLflow's auth app and allowed hosts, the
Prefect API auth string, and NetworkPolicies that let only the right components reach each service."""

from __future__ import annotations

import re
import subprocess

import kubernetes_validate
import pytest
import yaml

from tests.k8s.test_manifests import K8S_VERSIONS, ROOT, SECRET_NAME, build, by_name, env_of

WORKLOADS = ("Deployment", "StatefulSet", "Job")


def build_platform() -> list[dict]:
    finished = subprocess.run(["kubectl", "kustomize", str(ROOT / "infra" / "k8s" / "overlays" / "prod")],
                              capture_output=True, text=True, check=True)  # fmt: skip
    return [doc for doc in yaml.safe_load_all(finished.stdout) if doc]


@pytest.fixture(scope="module")
def platform() -> list[dict]:
    return build_platform()


def containers(obj: dict) -> list[dict]:
    return obj["spec"]["template"]["spec"]["containers"]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_platform_objects_validate_strictly(platform, version):
    assert {"Deployment", "StatefulSet", "Service", "NetworkPolicy", "ConfigMap"} <= {o["kind"] for o in platform}
    for obj in platform:
        kubernetes_validate.validate(obj, version, strict=True)
        assert obj["metadata"]["namespace"] == "medklip-platform"


@pytest.mark.parametrize("source", ["platform", "jobs"])
def test_every_workload_is_pinned_limited_non_root_and_gets_credentials_from_secrets(source):
    objects = build_platform() if source == "platform" else build("prod")
    workloads = [obj for obj in objects if obj["kind"] in WORKLOADS]
    assert workloads
    assert not [obj for obj in objects if obj["kind"] == "Secret"]
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, workload["metadata"]["name"]
        for container in containers(workload):
            image = container["image"]
            assert re.fullmatch(r"[\w.\-/]+:[\w.\-]*\d[\w.\-]*", image) and "latest" not in image, image
            assert {"cpu", "memory"} <= container["resources"]["limits"].keys()
            assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            for name, item in env_of(container).items():
                if SECRET_NAME.search(name):
                    assert "secretKeyRef" in item.get("valueFrom", {}), (workload["metadata"]["name"], name)
            command_line = container.get("command", []) + container.get("args", [])
            assert not [arg for arg in command_line if re.search(r"://[^/\s:@]+:[^/\s@]+@", arg)], "user:password@"


def test_mlflow_runs_the_auth_app_on_postgres_with_artifacts_proxied_and_in_cluster_hosts_allowed(platform):
    mlflow = by_name(platform, "Deployment", "mlflow")
    [container] = containers(mlflow)
    args = container["args"]
    assert "--app-name=basic-auth" in args and "--artifacts-destination=s3://medklip/mlflow" in args
    hosts = next(a for a in args if a.startswith("--allowed-hosts=")).split("=", 1)[1].split(",")
    assert "mlflow.medklip-platform.svc.cluster.local" in hosts
    env = env_of(container)
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"]["name"] == "medklip-mlflow-db"
    assert env["MLFLOW_S3_ENDPOINT_URL"]["value"].startswith("http://object-store:")
    assert any(v["secret"]["secretName"] == "medklip-mlflow-auth" for v in mlflow["spec"]["template"]["spec"]["volumes"]
               if "secret" in v)  # fmt: skip


def test_prefect_api_requires_its_auth_string_on_both_ends(platform):
    server = env_of(containers(by_name(platform, "Deployment", "prefect-server"))[0])
    worker = env_of(containers(by_name(build("prod"), "Deployment", "prefect-worker"))[0])
    assert server["PREFECT_SERVER_API_AUTH_STRING"]["valueFrom"]["secretKeyRef"]["name"] == "medklip-prefect-auth"
    assert worker["PREFECT_API_AUTH_STRING"]["valueFrom"]["secretKeyRef"]["name"] == "medklip-prefect-auth"
    assert worker["PREFECT_API_URL"]["value"].startswith("http://prefect-server.medklip-platform.svc")


def allowed_sources(policies: list[dict], pod_labels: dict) -> list[dict]:
    """The `from` peers of every policy selecting a pod with these labels."""
    peers = []
    for policy in policies:
        selector = policy["spec"]["podSelector"].get("matchLabels", {})
        if all(pod_labels.get(k) == v for k, v in selector.items()):
            for rule in policy["spec"].get("ingress", []):
                peers += rule.get("from", [])
    return peers


def test_network_policies_let_only_the_right_components_in(platform):
    policies = [obj for obj in platform if obj["kind"] == "NetworkPolicy"]
    deny = by_name(platform, "NetworkPolicy", "default-deny-ingress")
    assert deny["spec"]["podSelector"] == {} and "ingress" not in deny["spec"]

    def labels(name: str) -> dict:
        kind = "StatefulSet" if name in ("postgres", "object-store") else "Deployment"
        return by_name(platform, kind, name)["spec"]["template"]["metadata"]["labels"]

    def pods(peers: list[dict]) -> set[str]:
        return {p["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for p in peers if "podSelector" in p}

    def namespaces(peers: list[dict]) -> set[str]:
        return {p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for p in peers
                if "namespaceSelector" in p}  # fmt: skip

    assert pods(allowed_sources(policies, labels("postgres"))) == {"prefect-server", "mlflow"}
    assert not namespaces(allowed_sources(policies, labels("postgres")))
    assert pods(allowed_sources(policies, labels("object-store"))) == {"mlflow"}
    for service in ("mlflow", "prefect-server"):
        peers = allowed_sources(policies, labels(service))
        assert namespaces(peers) == {"medklip", "ingress-nginx"} and not pods(peers)
