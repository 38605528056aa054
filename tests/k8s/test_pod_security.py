"""Pod Security, offline: every kustomization under k8s/ and infra/k8s/ is rendered with `kubectl kustomize` and the
work pool's job template is read as it is. Every namespace our objects and the work pool's flow-run pods live in is
a Namespace object labelled for the `restricted` Pod Security Standard, every pod template (every container and
init container) passes that standard's checks, and a Secret a pod cannot work without is never `optional`. The
checkers are small pure functions; negative controls feed them broken specs, so they are known to report each kind
of violation."""

from __future__ import annotations

import copy
import json
import os

import kubernetes_validate
import pytest

from tests.k8s.test_manifests import K8S_VERSIONS, ROOT, build, env_of

KUSTOMIZATIONS = sorted(
    path.parent.relative_to(ROOT).as_posix()
    for tree in ("k8s", "infra/k8s")
    for path in (ROOT / tree).rglob("kustomization.yaml")
)
WORK_POOL_TEMPLATE = ROOT / "k8s" / "work-pool" / "base-job-template.json"

POD_SECURITY_MODES = ("enforce", "audit", "warn")
# Namespace name -> why one of its components cannot run under `restricted`. None needs `baseline` today.
BASELINE_NAMESPACES: dict[str, str] = {}

# Where each kind keeps its pod spec; an object of any other kind must not hold containers (checked).
POD_SPEC_PATHS = {
    "Pod": ("spec",),
    "Job": ("spec", "template", "spec"),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "ReplicationController": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
# The volume types the restricted standard allows (hostPath is not one of them).
RESTRICTED_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"
}  # fmt: skip
ALLOWED_SECCOMP_TYPES = ("RuntimeDefault", "Localhost")

# The step Jobs that log to MLflow (the basic-auth app): training's rank 0 creates the run, evaluation logs into it.
MLFLOW_COMPONENTS = ("train", "evaluate")
MLFLOW_CREDENTIALS = {"MLFLOW_TRACKING_USERNAME": "username", "MLFLOW_TRACKING_PASSWORD": "password"}
MLFLOW_SECRET = "medklip-mlflow-client"
# (kustomization, Secret) -> why its pods work without that Secret, so it may be referenced as `optional`.
OPTIONAL_SECRETS = {
    ("k8s/overlays/dev", MLFLOW_SECRET): "a dev MLflow may run without the basic-auth app "
    "(k8s/overlays/dev/mlflow-credentials-optional.yaml)",
}


def render(kustomization: str) -> list[dict]:
    """`kubectl kustomize ROOT/KUSTOMIZATION` (test_manifests.build takes a path relative to k8s/overlays)."""
    return build(os.path.relpath(ROOT / kustomization, ROOT / "k8s" / "overlays"))


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {kustomization: render(kustomization) for kustomization in KUSTOMIZATIONS}


def work_pool_pod() -> dict:
    """The pod spec of the flow-run Job in the work pool's base job template (unrendered Prefect variables)."""
    template = json.loads(WORK_POOL_TEMPLATE.read_text())
    return template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]


def work_pool_namespace() -> str:
    """The namespace the work pool creates flow-run Jobs in unless a deployment sets another."""
    return json.loads(WORK_POOL_TEMPLATE.read_text())["variables"]["properties"]["namespace"]["default"]


def pod_spec(obj: dict) -> dict | None:
    """The pod spec of a workload object, None for a kind without one."""
    path = POD_SPEC_PATHS.get(obj["kind"])
    if path is None:
        return None
    spec = obj
    for key in path:
        spec = spec[key]
    return spec


def holds_containers(value) -> bool:
    """Whether a `containers` list appears anywhere in `value`."""
    if isinstance(value, dict):
        return "containers" in value or any(holds_containers(item) for item in value.values())
    if isinstance(value, list):
        return any(holds_containers(item) for item in value)
    return False


def pods_of(rendered: dict[str, list[dict]]) -> list[tuple[str, str, dict]]:
    """(source, `<kind>/<name>`, pod spec) of every pod template: each kustomization's, then the work pool's."""
    pods = []
    for kustomization, objects in rendered.items():
        for obj in objects:
            name = f"{obj['kind']}/{obj['metadata']['name']}"
            spec = pod_spec(obj)
            assert spec is not None or not holds_containers(obj), (
                f"{kustomization}: {name}: containers in a kind the checks skip"
            )
            if spec is not None:
                pods.append((kustomization, name, spec))
    pods.append((WORK_POOL_TEMPLATE.relative_to(ROOT).as_posix(), "Job/job_manifest", work_pool_pod()))
    return pods


def pod_security_violations(pod: dict) -> list[str]:
    """What keeps a pod spec from the `restricted` Pod Security Standard, one line per field and container: host
    namespaces, volume types, non-root, seccomp, privileged, privilege escalation, capabilities, host ports. A
    container inherits runAsNonRoot and seccompProfile from the pod's securityContext, as the admission check does."""
    problems = [f"spec.{field} must not be true" for field in ("hostNetwork", "hostPID", "hostIPC") if pod.get(field)]
    for volume in pod.get("volumes", []):
        for volume_type in sorted(set(volume) - {"name"} - RESTRICTED_VOLUME_TYPES):
            problems.append(f"volume {volume['name']}: {volume_type} volumes are not allowed")
    pod_context = pod.get("securityContext", {})
    if pod_context.get("runAsNonRoot") is False:
        problems.append("spec.securityContext.runAsNonRoot must not be false")
    if pod_context.get("runAsUser") == 0:
        problems.append("spec.securityContext.runAsUser must not be 0")
    pod_seccomp = pod_context.get("seccompProfile", {}).get("type")
    if pod_seccomp is not None and pod_seccomp not in ALLOWED_SECCOMP_TYPES:
        problems.append(
            f"spec.securityContext.seccompProfile.type must be RuntimeDefault or Localhost, is {pod_seccomp}"
        )
    for kind in ("initContainers", "containers"):
        for container in pod.get(kind, []):
            where = f"{kind[:-1]} {container['name']}: securityContext"
            context = container.get("securityContext", {})
            if context.get("privileged"):
                problems.append(f"{where}.privileged must not be true")
            if context.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}.allowPrivilegeEscalation must be false")
            capabilities = context.get("capabilities", {})
            if "ALL" not in capabilities.get("drop", []):
                problems.append(f"{where}.capabilities.drop must include ALL")
            if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
                problems.append(f"{where}.capabilities.add may hold NET_BIND_SERVICE only")
            if context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is not True:
                problems.append(f"{where}.runAsNonRoot must be true (here or in the pod's securityContext)")
            if context.get("runAsUser") == 0:
                problems.append(f"{where}.runAsUser must not be 0")
            seccomp = context.get("seccompProfile", {}).get("type", pod_seccomp)
            if seccomp not in ALLOWED_SECCOMP_TYPES:
                problems.append(
                    f"{where}.seccompProfile.type must be RuntimeDefault or Localhost (here or in the pod's "
                    f"securityContext), is {seccomp}"
                )
            for port in container.get("ports", []):
                if port.get("hostPort"):
                    problems.append(f"{kind[:-1]} {container['name']}: ports: hostPort {port['hostPort']} not allowed")
    return problems


def namespace_violations(namespace: dict) -> list[str]:
    """Pod Security labels a Namespace lacks: enforce, audit and warn `restricted` (`baseline` where allow-listed)."""
    name, labels = namespace["metadata"]["name"], namespace["metadata"].get("labels", {})
    allowed = {"restricted", "baseline"} if name in BASELINE_NAMESPACES else {"restricted"}
    problems = []
    for mode in POD_SECURITY_MODES:
        label = f"pod-security.kubernetes.io/{mode}"
        if labels.get(label) not in allowed:
            problems.append(
                f"Namespace/{name}: label {label} must be {' or '.join(sorted(allowed))}, is {labels.get(label)}"
            )
    return problems


def listed(value) -> list:
    """A list field of a pod spec, or none where the work pool's template has a Prefect variable (`"{{ env }}"`) in
    its place: the worker fills that in from a deployment's job variables, not from this file."""
    return value if isinstance(value, list) else []


def optional_secret_references(pod: dict) -> list[tuple[str, str]]:
    """(Secret name, where) of every reference to a Secret marked `optional: true` in a pod spec: env secretKeyRef,
    envFrom secretRef (every container and init container), secret volumes and projected secret sources."""
    references = []
    for kind in ("initContainers", "containers"):
        for container in pod.get(kind, []):
            where = f"{kind[:-1]} {container['name']}"
            for item in listed(container.get("env", [])):
                secret = item.get("valueFrom", {}).get("secretKeyRef", {})
                if secret.get("optional"):
                    references.append((secret["name"], f"{where}: env {item['name']}: secretKeyRef {secret['name']}"))
            for source in listed(container.get("envFrom", [])):
                if source.get("secretRef", {}).get("optional"):
                    references.append((source["secretRef"]["name"], f"{where}: envFrom secretRef"))
    for volume in pod.get("volumes", []):
        projected = [source.get("secret", {}) for source in volume.get("projected", {}).get("sources", [])]
        for secret in [volume.get("secret", {}), *projected]:
            if secret.get("optional"):
                name = secret.get("secretName", secret.get("name"))
                references.append((name, f"volume {volume['name']}: secret {name}"))
    return references


def test_every_base_and_overlay_is_rendered():
    expected = {"k8s/base", "k8s/overlays/dev", "k8s/overlays/prod", "infra/k8s/base", "infra/k8s/overlays/prod"}
    assert expected <= set(KUSTOMIZATIONS), KUSTOMIZATIONS


def test_every_namespace_in_use_is_defined_and_enforces_restricted(rendered):
    namespaces = {}
    for kustomization, objects in rendered.items():
        for obj in objects:
            if obj["kind"] == "Namespace":
                namespaces.setdefault(obj["metadata"]["name"], []).append((kustomization, obj))
    in_use = {f"the work pool's default namespace ({WORK_POOL_TEMPLATE.name})": work_pool_namespace()}
    for kustomization, objects in rendered.items():
        for obj in objects:
            if "namespace" in obj["metadata"]:
                in_use[f"{kustomization}: {obj['kind']}/{obj['metadata']['name']}"] = obj["metadata"]["namespace"]
    problems = [f"{user}: namespace {name} is no Namespace object of any kustomization"
                for user, name in in_use.items() if name not in namespaces]  # fmt: skip
    for definitions in namespaces.values():
        for kustomization, namespace in definitions:
            problems += [f"{kustomization}: {problem}" for problem in namespace_violations(namespace)]
            for version in K8S_VERSIONS:
                kubernetes_validate.validate(namespace, version, strict=True)
    assert not problems, "\n".join(problems)
    assert {"medklip", "medklip-dev", "medklip-platform"} <= namespaces.keys()
    assert not set(BASELINE_NAMESPACES) - namespaces.keys(), "allow-listed for baseline, but not defined"


def test_every_pod_template_passes_the_restricted_standard(rendered):
    pods = pods_of(rendered)
    assert {"Job", "Deployment", "StatefulSet"} <= {name.split("/")[0] for _, name, _ in pods}
    assert WORK_POOL_TEMPLATE.relative_to(ROOT).as_posix() in {source for source, _, _ in pods}
    problems = [
        f"{source}: {name}: {problem}" for source, name, pod in pods for problem in pod_security_violations(pod)
    ]
    assert not problems, "\n".join(problems)


def test_secrets_a_pod_needs_are_required(rendered):
    problems, allowances_used = [], set()
    for source, name, pod in pods_of(rendered):
        for secret, reference in optional_secret_references(pod):
            if (source, secret) in OPTIONAL_SECRETS:
                allowances_used.add((source, secret))
            else:
                problems.append(
                    f"{source}: {name}: {reference} is optional (require it, or say why in OPTIONAL_SECRETS)"
                )
    assert not problems, "\n".join(problems)
    assert allowances_used == OPTIONAL_SECRETS.keys(), "an allowance in OPTIONAL_SECRETS matches no reference"


def test_only_the_jobs_that_log_to_mlflow_get_its_credentials(rendered):
    checked, problems = 0, []
    for kustomization in KUSTOMIZATIONS:
        if not kustomization.startswith("k8s/"):
            continue
        for job in (obj for obj in rendered[kustomization] if obj["kind"] == "Job"):
            where = f"{kustomization}: Job/{job['metadata']['name']}"
            env = env_of(job["spec"]["template"]["spec"]["containers"][0])
            if job["metadata"]["labels"]["app.kubernetes.io/component"] not in MLFLOW_COMPONENTS:
                problems += [
                    f"{where}: env {name}: never talks to MLflow" for name in MLFLOW_CREDENTIALS if name in env
                ]
                continue
            checked += 1
            for name, key in MLFLOW_CREDENTIALS.items():
                secret = env.get(name, {}).get("valueFrom", {}).get("secretKeyRef", {})
                if (secret.get("name"), secret.get("key")) != (MLFLOW_SECRET, key):
                    problems.append(f"{where}: env {name} must come from secretKeyRef {MLFLOW_SECRET}/{key}")
    assert checked >= 9, "train, train-multinode and evaluate in the base and both overlays"
    assert not problems, "\n".join(problems)


# Negative controls: a pod spec that passes, and one broken field at a time, each reported as exactly one line.

RESTRICTED_POD = {
    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
    "containers": [
        {
            "name": "step",
            "image": "medklip:1",
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        }
    ],
    "volumes": [{"name": "tmp", "emptyDir": {}}],
}


def broken(path: tuple, value) -> dict:
    """A copy of RESTRICTED_POD with the field at `path` set to `value`, or removed where `value` is None."""
    pod = copy.deepcopy(RESTRICTED_POD)
    parent = pod
    for key in path[:-1]:
        parent = parent[key]
    if value is None:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return pod


def test_the_checker_passes_a_restricted_pod():
    assert pod_security_violations(RESTRICTED_POD) == []
    assert optional_secret_references(RESTRICTED_POD) == []


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("containers", 0, "securityContext", "privileged"), True,
         "container step: securityContext.privileged must not be true"),
        (("volumes", 0), {"name": "host", "hostPath": {"path": "/"}}, "volume host: hostPath volumes are not allowed"),
        (("securityContext", "seccompProfile"), None,
         "container step: securityContext.seccompProfile.type must be RuntimeDefault or Localhost (here or in the "
         "pod's securityContext), is None"),
        (("securityContext", "runAsNonRoot"), None,
         "container step: securityContext.runAsNonRoot must be true (here or in the pod's securityContext)"),
        (("containers", 0, "securityContext", "runAsNonRoot"), False,
         "container step: securityContext.runAsNonRoot must be true (here or in the pod's securityContext)"),
        (("containers", 0, "securityContext", "allowPrivilegeEscalation"), None,
         "container step: securityContext.allowPrivilegeEscalation must be false"),
        (("containers", 0, "securityContext", "capabilities"), {"drop": ["NET_RAW"]},
         "container step: securityContext.capabilities.drop must include ALL"),
        (("containers", 0, "securityContext", "runAsUser"), 0,
         "container step: securityContext.runAsUser must not be 0"),
        (("hostNetwork",), True, "spec.hostNetwork must not be true"),
        (("initContainers",), [{"name": "init", "image": "busybox:1", "securityContext": {"capabilities": {
            "drop": ["ALL"]}}}], "initContainer init: securityContext.allowPrivilegeEscalation must be false"),
    ],
    ids=["privileged", "hostPath", "no-seccomp", "no-runAsNonRoot", "container-runAsNonRoot-false",
         "privilege-escalation", "capabilities-kept", "root-uid", "hostNetwork", "init-container"],
)  # fmt: skip
def test_the_checker_reports_each_broken_field(path, value, expected):
    assert pod_security_violations(broken(path, value)) == [expected]


def test_the_checker_reports_unlabelled_namespaces_and_optional_secrets():
    unlabelled = {"kind": "Namespace", "metadata": {"name": "scratch", "labels": {
        "pod-security.kubernetes.io/enforce": "baseline"}}}  # fmt: skip
    assert namespace_violations(unlabelled) == [
        f"Namespace/scratch: label pod-security.kubernetes.io/{mode} must be restricted, is {value}"
        for mode, value in (("enforce", "baseline"), ("audit", None), ("warn", None))
    ]
    reference = {"secretKeyRef": {"name": MLFLOW_SECRET, "key": "password", "optional": True}}
    pod = broken(("containers", 0, "env"), [{"name": "MLFLOW_TRACKING_PASSWORD", "valueFrom": reference}])
    assert optional_secret_references(pod) == [
        (MLFLOW_SECRET, f"container step: env MLFLOW_TRACKING_PASSWORD: secretKeyRef {MLFLOW_SECRET}")
    ]
