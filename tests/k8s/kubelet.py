"""A stand-in for the cluster in tests: what the kubelet would start for each pod of a rendered Job, run on this
machine. Only the differences a cluster makes are mapped: cluster DNS names (node 0 of a multi-node Job, the MLflow
Service) become loopback or the test's own store, `/workspace` becomes a local folder, and the container's
`python`/`torchrun` are this virtualenv's.

    pods = pod_processes(job, templates, workspace, {"MASTER_ADDR": "127.0.0.1"})   # [(argv, env, cwd)] per index
    cluster = FakeCluster(templates, workspace)        # prefect-kubernetes' API calls answered by running the pods
    cluster.install(monkeypatch)
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate

COMPLETION_INDEX = "metadata.annotations['batch.kubernetes.io/job-completion-index']"


def expand(text: str, env: dict) -> str:
    """`$(NAME)` references replaced from the container's environment, as the kubelet does."""
    return re.sub(r"\$\((\w+)\)", lambda match: env[match.group(1)], text)


def pod_processes(
    job: dict, templates: dict, workspace: Path, overrides: dict[str, str] | None = None
) -> list[tuple[list[str], dict, Path]]:
    """(argv, env, working directory) of each pod of `job` (one per completion index), as the kubelet builds them.

    Env: the ConfigMaps of `envFrom`, then the container's `env` (literal values, the completion index from the pod
    annotation, optional Secrets left unset as the kubelet does when they are missing), then `overrides` (this
    machine's names for cluster addresses). A required Secret that is missing fails, as the pod would.
    """
    container = job["spec"]["template"]["spec"]["containers"][0]
    pods = []
    for index in range(job["spec"].get("completions") or 1):
        env = dict(os.environ)
        for source in container.get("envFrom", []):
            env.update(templates[("ConfigMap", source["configMapRef"]["name"])]["data"])
        for item in container.get("env", []):
            reference = item.get("valueFrom", {})
            if "value" in item:
                env[item["name"]] = expand(item["value"], env)
            elif reference.get("fieldRef", {}).get("fieldPath") == COMPLETION_INDEX:
                env[item["name"]] = str(index)
            elif not reference.get("secretKeyRef", {}).get("optional"):
                raise AssertionError(f"{job['metadata']['name']}: env {item['name']} needs {reference}")
        env.update(overrides or {})
        binary = Path(sys.executable).with_name(container["command"][0])
        arguments = [*container["command"][1:], *container.get("args", [])]
        argv = [str(binary), *(_local(expand(arg, env), workspace) for arg in arguments)]
        pods.append((argv, env, Path(_local(container.get("workingDir", str(workspace)), workspace))))
    return pods


def start(pods: list[tuple[list[str], dict, Path]]) -> list[subprocess.Popen]:
    """Starts the pods of `pod_processes`, output and errors together in one text pipe each."""
    return [
        subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for argv, env, cwd in pods
    ]


def _local(text: str, workspace: Path) -> str:
    return text.replace("/workspace", str(workspace))


def patch_api(monkeypatch, trigger, create_service, delete_service, list_pods, job_status) -> None:
    """Routes the prefect-kubernetes calls `KubernetesLauncher` makes to these coroutines."""
    import prefect_kubernetes.jobs as jobs
    import prefect_kubernetes.pods as pods
    import prefect_kubernetes.services as services

    monkeypatch.setattr(jobs.KubernetesJob, "atrigger", trigger)
    monkeypatch.setattr(services.create_namespaced_service, "fn", create_service)
    monkeypatch.setattr(services.delete_namespaced_service, "fn", delete_service)
    monkeypatch.setattr(pods.list_namespaced_pod, "fn", list_pods)
    monkeypatch.setattr(jobs.read_namespaced_job_status, "fn", job_status)


class FakeCluster:
    """prefect-kubernetes' calls answered by running each Job's pods here, all indexes at once.

    A Job is validated strictly first; a multi-node Job's node 0 is reachable only through its headless Service, so
    the Service must exist (created before the Job, selecting the Job's pods) for the pods to be started with
    MASTER_ADDR on loopback. `calls` records what was asked, in order.
    """

    def __init__(self, templates: dict, workspace: Path, overrides: dict[str, str]):
        self.templates = templates
        self.workspace = workspace
        self.overrides = overrides
        self.services: dict[str, dict] = {}
        self.calls: list[tuple[str, str]] = []
        self.runs: list[_JobRun] = []  # each Job started, in order

    def install(self, monkeypatch) -> None:
        cluster = self

        async def trigger(block):
            return await asyncio.to_thread(cluster.start, block.v1_job)

        async def create_service(credentials, new_service, namespace="default"):
            kubernetes_validate.validate(new_service, "1.32.0", strict=True)
            cluster.calls.append(("create service", new_service["metadata"]["name"]))
            cluster.services[new_service["metadata"]["name"]] = new_service

        async def delete_service(credentials, service_name, namespace="default"):
            cluster.calls.append(("delete service", service_name))
            del cluster.services[service_name]

        async def list_pods(credentials, namespace="default", label_selector=""):
            job = label_selector.split("=", 1)[1]
            return ApiObject(items=[pod for run in cluster.runs if run.name == job for pod in run.pods()])

        async def job_status(credentials, job_name, namespace="default"):
            return ApiObject(status={"conditions": [{"type": "Failed", "reason": "BackoffLimitExceeded"}]})

        patch_api(monkeypatch, trigger, create_service, delete_service, list_pods, job_status)

    def start(self, job: dict) -> _JobRun:
        kubernetes_validate.validate(job, "1.32.0", strict=True)
        name = job["metadata"]["name"]
        self.calls.append(("create job", name))
        overrides = dict(self.overrides)
        pod = job["spec"]["template"]["spec"]
        if "subdomain" in pod:  # node 0 is <job>-0.<subdomain>: only a Service selecting the Job's pods resolves it
            service = self.services.get(pod["subdomain"])
            assert service and service["spec"]["selector"] == {"batch.kubernetes.io/job-name": name}, "no Service"
            assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
            overrides["MASTER_ADDR"] = "127.0.0.1"
        processes = start(pod_processes(job, self.templates, self.workspace, overrides))
        self.runs.append(_JobRun(job, processes, self.calls))
        return self.runs[-1]


class _JobRun:
    """What `KubernetesJob.atrigger` returns: wait for the pods, then their logs."""

    def __init__(self, job: dict, processes: list[subprocess.Popen], calls: list):
        self.job, self.name = job, job["metadata"]["name"]
        self.processes, self.calls, self.logs = processes, calls, {}

    async def await_for_completion(self, print_func=print):
        self.calls.append(("wait", self.name))
        outputs = await asyncio.to_thread(lambda: [process.communicate(timeout=600)[0] for process in self.processes])
        for index, output in enumerate(outputs):
            self.logs[f"{self.name}-{index}-abcde"] = output
            for line in output.splitlines():
                print_func(line)
        if any(process.returncode for process in self.processes):
            raise RuntimeError(f"Job {self.name!r} failed due to ['BackoffLimitExceeded']")

    async def afetch_result(self):
        return self.logs

    def pods(self) -> list[dict]:
        """The pods as `V1Pod.to_dict()` shows them once they ended."""
        pods = []
        for index, process in enumerate(self.processes):
            ended = {"exit_code": process.returncode, "reason": "Error" if process.returncode else "Completed"}
            status = {"container_statuses": [{"state": {"terminated": ended}}]}
            pods.append({"metadata": {"name": f"{self.name}-{index}-abcde"}, "status": status})
        return pods


class ApiObject(dict):
    """What the kubernetes client returns: `to_dict()` gives the dict."""

    def to_dict(self) -> dict:
        return dict(self)
