"""The `kubernetes` execution backend: a `Step` becomes Jobs rendered from our Kustomize templates (k8s/).

    launcher = KubernetesLauncher.from_overlay("k8s/overlays/prod")     # `kubectl kustomize`, once
    objects = launcher.render(step, run_key="retrain-1a2b3c4d")          # Job (+ headless Service for M nodes)
    launcher.run(step, logger)                                           # submit, wait, stream logs, clean up

Rendering fills the step's command into the template of its name (`medklip-<step>`), names everything after the
flow run, and sets nodes and GPUs: one node runs `torchrun --standalone --nproc-per-node G`; M nodes use the Indexed
Job template with M completions, the headless Service named after the Job for DNS, node 0 as the c10d rendezvous
endpoint. Submission and watching are prefect-kubernetes' (`KubernetesJob`, `run_namespaced_job`); we add only the
Service and, when a Job fails, a diagnosis read from its pods (image pull, OOM, unschedulable, deadline).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import subprocess
from pathlib import Path

import yaml

from tasks.step import Step, StepError

TORCHRUN_FLAGS_END = "-m"  # the multi-node template's torchrun flags end where the module to run begins


def _env(container: dict, name: str, value: str) -> None:
    """Sets (or adds) a literal env var of a container."""
    for item in container.setdefault("env", []):
        if item["name"] == name:
            item.clear()
            item.update(name=name, value=value)
            return
    container["env"].append({"name": name, "value": value})


def _set_gpus(pod: dict, container: dict, gpus: int) -> None:
    """`gpus` GPUs per pod; with none, also drop the GPU node selector and toleration of a GPU overlay."""
    for kind in ("requests", "limits"):
        container.setdefault("resources", {}).setdefault(kind, {}).pop("nvidia.com/gpu", None)
        if gpus:
            container["resources"][kind]["nvidia.com/gpu"] = str(gpus)
    if not gpus:
        pod.pop("nodeSelector", None)
        pod["tolerations"] = [t for t in pod.get("tolerations", []) if t.get("key") != "nvidia.com/gpu"]
        if not pod["tolerations"]:
            del pod["tolerations"]


class KubernetesLauncher:
    """Renders and runs steps as Kubernetes Jobs in the namespace of the rendered overlay."""

    name = "kubernetes"

    def __init__(self, manifests: list[dict], extract_shards: int | None = None):
        # Extraction pods in parallel; the weekly run's new reports are few, a first run's many.
        self.extract_shards = extract_shards or int(os.environ.get("MEDKLIP_EXTRACT_SHARDS", "4"))
        self.templates = {(obj["kind"], obj["metadata"]["name"]): obj for obj in manifests}
        jobs = [obj for obj in manifests if obj["kind"] == "Job"]
        if not jobs:
            raise StepError("no Job templates in the Kubernetes manifests")
        self.namespace = jobs[0]["metadata"].get("namespace", "default")

    @classmethod
    def from_overlay(cls, overlay: str | Path, extract_shards: int | None = None) -> KubernetesLauncher:
        """Templates from `kubectl kustomize OVERLAY`, or from an already rendered YAML file."""
        overlay = Path(overlay)
        if overlay.is_file():
            text = overlay.read_text()
        else:
            try:
                text = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True, text=True,
                                      check=True).stdout  # fmt: skip
            except (OSError, subprocess.CalledProcessError) as error:
                raise StepError(f"cannot render {overlay} with kubectl kustomize: {error}") from error
        return cls([doc for doc in yaml.safe_load_all(text) if doc], extract_shards)

    def _template(self, kind: str, name: str) -> dict:
        if (kind, name) not in self.templates:
            raise StepError(f"no {kind} template named {name} in the Kubernetes manifests")
        return copy.deepcopy(self.templates[(kind, name)])

    def _job(self, template: str, kind: str, run_key: str) -> dict:
        """A runnable copy of a Job template, named `medklip-<kind>-<run_key>` and labelled with the run."""
        job = self._template("Job", template)
        job["metadata"]["name"] = f"medklip-{kind}-{run_key}".lower()[:52]  # pod hostnames <job>-<index> stay within 63
        job["metadata"].setdefault("labels", {})["medklip/run"] = run_key
        job["spec"]["suspend"] = False
        return job

    def render_extract(self, step: Step, run_key: str, shards: int) -> list[dict]:
        """Extraction as an Indexed Job of `shards` pods (pod I: shard I/N of the reports) and then a merge Job."""
        args = list(step.args)
        if "--data" not in args:
            raise StepError("extract: sharding needs the prepared folder (--data DIR)")
        data = args.pop(args.index("--data") + 1)
        args.remove("--data")
        shard_file = f"{data}/triplet-shards/shard-$(JOB_COMPLETION_INDEX).parquet"
        indexed = self._job("medklip-extract", "extract", run_key)
        merge = self._job("medklip-extract-merge", "extract-merge", run_key)
        for job in (indexed, merge):
            job["spec"]["template"]["spec"]["containers"][0]["command"] = ["python"]
        container = indexed["spec"]["template"]["spec"]["containers"][0]
        container["args"] = [*args, f"--reports={data}/reports.parquet", f"--out={shard_file}",
                             "--shard=$(JOB_COMPLETION_INDEX)/$(SHARDS)"]  # fmt: skip
        _env(container, "SHARDS", str(shards))
        indexed["spec"]["completions"] = indexed["spec"]["parallelism"] = shards
        shard_files = [f"{data}/triplet-shards/shard-{index}.parquet" for index in range(shards)]
        merge["spec"]["template"]["spec"]["containers"][0]["args"] = [
            "-m", "medklip.cli", "extract", "merge", "--out", f"{data}/triplets.parquet", *shard_files
        ]  # fmt: skip
        return [indexed, merge]

    def render(self, step: Step, run_key: str) -> list[dict]:
        """The objects that run `step` for the flow run `run_key`: [Job] or [Service, Job] for M > 1 nodes;
        extraction is sharded over `extract_shards` pods ([Job, merge Job]) when that is more than 1."""
        if step.name == "extract" and self.extract_shards > 1:
            return self.render_extract(step, run_key, self.extract_shards)
        if step.nodes > 1 and not step.distributed:
            raise StepError(f"{step.name}: only training runs on several nodes")
        multinode = step.nodes > 1
        template = "medklip-train-multinode" if multinode else f"medklip-{step.name}"
        job = self._job(template, step.name, run_key)
        name = job["metadata"]["name"]
        pod = job["spec"]["template"]["spec"]
        container = pod["containers"][0]
        args = step.args  # after `python`: ["-m", "medklip.cli", ...] or, for training, ["-m", "medklip.train", ...]
        processes = max(1, step.gpus_per_node or step.processes)
        objects = []
        if not step.distributed:
            container["command"], container["args"] = ["python"], args
            if job["spec"].get("completionMode") == "Indexed":  # a one-pod run of an indexed template
                for key in ("completionMode", "completions", "parallelism"):
                    job["spec"].pop(key, None)
        elif not multinode:
            container["command"] = ["torchrun"]
            container["args"] = ["--standalone", "--nproc-per-node=$(NPROC_PER_NODE)", *args]
            _env(container, "NPROC_PER_NODE", str(processes))
        else:
            service = self._template("Service", pod["subdomain"])
            service["metadata"]["name"] = name
            service["spec"]["selector"] = {"batch.kubernetes.io/job-name": name}
            pod["subdomain"] = name
            flags = container["args"][: container["args"].index(TORCHRUN_FLAGS_END)]
            container["args"] = [*flags, *args]
            job["spec"]["completions"] = job["spec"]["parallelism"] = step.nodes
            job["spec"]["backoffLimit"] = max(job["spec"].get("backoffLimit", 0), 3 * step.nodes)
            for key, value in {"NNODES": step.nodes, "NPROC_PER_NODE": processes, "MASTER_ADDR": f"{name}-0.{name}",
                               "RDZV_ID": name}.items():  # fmt: skip
                _env(container, key, str(value))
            objects.append(service)
        if step.distributed:
            _set_gpus(pod, container, step.gpus_per_node)
        for key, value in step.env.items():
            _env(container, key, value)
        return [*objects, job]

    def run(self, step: Step, logger: logging.Logger | logging.LoggerAdapter) -> list[str]:
        """Submits the rendered objects, waits for each Job in turn (prefect-kubernetes), removes the Service.

        Jobs are named after the flow run plus a random suffix, so a retried task never meets its failed Job.

        Raises:
            StepError: a Job failed; the message says why when its pods tell (see `diagnose`).
        """
        import uuid

        from prefect.runtime import flow_run

        run_key = f"{str(flow_run.id or 'manual')[:8]}-{uuid.uuid4().hex[:5]}"
        return asyncio.run(self._run(self.render(step, run_key), step.name, logger))

    async def _run(self, objects: list[dict], name: str, logger) -> list[str]:
        from prefect_kubernetes.credentials import KubernetesCredentials
        from prefect_kubernetes.jobs import KubernetesJob, read_namespaced_job_status
        from prefect_kubernetes.pods import list_namespaced_pod
        from prefect_kubernetes.services import create_namespaced_service, delete_namespaced_service

        credentials = KubernetesCredentials()  # in-cluster config in a flow-run pod, else the local kubeconfig
        services = [obj for obj in objects if obj["kind"] == "Service"]
        for service in services:
            await create_namespaced_service.fn(credentials, service, namespace=self.namespace)
        lines: list[str] = []
        try:
            for job in (obj for obj in objects if obj["kind"] == "Job"):  # in order: shards, then their merge
                job_name = job["metadata"]["name"]
                job_run = await KubernetesJob(v1_job=job, namespace=self.namespace, credentials=credentials).atrigger()
                try:
                    await job_run.await_for_completion(print_func=lambda line: logger.info("%s | %s", name, line))
                except RuntimeError as error:
                    selector = f"batch.kubernetes.io/job-name={job_name}"
                    pods = await list_namespaced_pod.fn(credentials, namespace=self.namespace, label_selector=selector)
                    status = await read_namespaced_job_status.fn(credentials, job_name, namespace=self.namespace)
                    reason = diagnose((status.to_dict().get("status") or {}), pods.to_dict()["items"]) or error
                    raise StepError(f"{name} ({job_name}): {reason}") from error
                logs = await job_run.afetch_result()
                lines += [line for text in logs.values() for line in str(text).splitlines()]
        finally:
            for service in services:
                await delete_namespaced_service.fn(credentials, service["metadata"]["name"], namespace=self.namespace)
        return lines[-200:]


def diagnose(job_status: dict, pods: list[dict]) -> str | None:
    """Why a Job failed, in words, from its status and its pods (kubernetes client `to_dict()` shapes)."""
    for condition in job_status.get("conditions") or []:
        if condition.get("type") == "Failed" and condition.get("reason") == "DeadlineExceeded":
            return f"deadline exceeded: the Job ran longer than activeDeadlineSeconds ({condition.get('message')})"
    for pod in pods:
        status = pod.get("status") or {}
        name = (pod.get("metadata") or {}).get("name", "a pod")
        for condition in status.get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("reason") == "Unschedulable":
                message = condition.get("message") or ""
                lack = " (not enough GPUs in the cluster)" if "nvidia.com/gpu" in message else ""
                return f"{name} cannot be scheduled{lack}: {message}"
        for container in status.get("container_statuses") or []:
            state = container.get("state") or {}
            last = container.get("last_state") or {}
            waiting = state.get("waiting") or {}
            if waiting.get("reason") in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName"):
                return f"{name} cannot pull its image {container.get('image')}: {waiting.get('message')}"
            for terminated in (state.get("terminated") or {}, last.get("terminated") or {}):
                if terminated.get("reason") == "OOMKilled":
                    return f"{name} was killed for running out of memory (OOMKilled): raise the memory limit"
    return None
