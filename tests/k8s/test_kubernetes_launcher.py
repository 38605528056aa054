"""The `kubernetes` launcher without a cluster: what it renders for 1 and 3 nodes (validated strictly), and how it
explains a failed Job from the shapes the Kubernetes API returns."""

from __future__ import annotations

import kubernetes_validate
import pytest

from tasks.kubernetes_launcher import KubernetesLauncher, diagnose
from tasks.step import Step, StepError
from tests.k8s.kubelet import ApiObject, patch_api
from tests.k8s.test_manifests import ROOT, env_of

TRAIN_ARGS = ["-m", "medklip.train", "--data", "/workspace/data/x", "--config", "base", "--save", "/workspace/ckpt/r"]


@pytest.fixture(scope="module")
def prod() -> KubernetesLauncher:
    return KubernetesLauncher.from_overlay(ROOT / "k8s" / "overlays" / "prod")


def train_step(nodes: int, gpus: int) -> Step:
    return Step("train", TRAIN_ARGS, processes=max(1, gpus), nodes=nodes, gpus_per_node=gpus, distributed=True)


def validate(objects: list[dict]) -> None:
    for obj in objects:
        kubernetes_validate.validate(obj, "1.32.0", strict=True)


def test_one_node_renders_a_standalone_torchrun_job_with_its_gpus(prod):
    objects = prod.render(train_step(1, 4), "retrain-1a2b3c4d")
    validate(objects)
    [job] = objects
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert job["metadata"]["name"] == "medklip-train-retrain-1a2b3c4d" and job["spec"]["suspend"] is False
    assert job["metadata"]["namespace"] == "medklip" and job["metadata"]["labels"]["medklip/run"] == "retrain-1a2b3c4d"
    assert container["command"] == ["torchrun"]
    assert container["args"] == ["--standalone", "--nproc-per-node=$(NPROC_PER_NODE)", *TRAIN_ARGS]
    assert env_of(container)["NPROC_PER_NODE"]["value"] == "4"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "4" and pod["nodeSelector"]


def test_three_nodes_render_an_indexed_job_and_its_headless_service(prod):
    objects = prod.render(train_step(3, 8), "retrain-1a2b3c4d")
    validate(objects)
    service, job = objects
    name = "medklip-train-retrain-1a2b3c4d"
    assert service["kind"] == "Service" and service["metadata"]["name"] == name
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == {"batch.kubernetes.io/job-name": name}
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == 3
    assert pod["subdomain"] == name and spec["backoffLimit"] >= 9
    container = pod["containers"][0]
    env = env_of(container)
    assert env["NNODES"]["value"] == "3" and env["NPROC_PER_NODE"]["value"] == "8"
    assert env["MASTER_ADDR"]["value"] == f"{name}-0.{name}" and env["RDZV_ID"]["value"] == name
    assert container["args"][-len(TRAIN_ARGS) :] == TRAIN_ARGS
    assert "--rdzv-backend=c10d" in container["args"] and "--node-rank=$(JOB_COMPLETION_INDEX)" in container["args"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"


def test_cpu_training_on_the_gpu_overlay_asks_for_no_gpu_and_no_gpu_node(prod):
    [job] = prod.render(train_step(1, 0), "cpu-run")
    pod = job["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in str(pod) and "nodeSelector" not in pod
    validate([job])


def test_plain_steps_run_python_with_the_steps_arguments(prod):
    step = Step("evaluate", ["-m", "medklip.cli", "evaluate", "--weights", "/workspace/ckpt/r/model_best.safetensors"])
    [job] = prod.render(step, "retrain-1a2b3c4d")
    validate([job])
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python"] and container["args"] == step.args
    one_pod = KubernetesLauncher(list(prod.templates.values()), extract_shards=1)
    [extract] = one_pod.render(Step("extract", ["-m", "medklip.cli", "extract", "--data", "/workspace/d"]), "r")
    assert "completionMode" not in extract["spec"]  # one pod, the Indexed template made plain
    validate([extract])
    with pytest.raises(StepError, match="only training"):
        prod.render(Step("evaluate", ["-m", "medklip.cli"], nodes=2), "r")
    with pytest.raises(StepError, match="no Job template"):
        prod.render(Step("unknown", ["-m", "x"]), "r")


# --- failure diagnosis, on the shapes `V1Pod.to_dict()` / `V1JobStatus.to_dict()` return -----------------------
def pod(status: dict, name: str = "medklip-train-r-0-abcde") -> dict:
    return {"metadata": {"name": name}, "status": status}


def test_failures_are_explained():
    pull = pod({"container_statuses": [{"image": "ghcr.io/medklip/medklip:0.1.0", "state": {"waiting": {
        "reason": "ImagePullBackOff", "message": "Back-off pulling image"}}}]})  # fmt: skip
    assert "cannot pull its image ghcr.io/medklip/medklip:0.1.0" in diagnose({}, [pull])
    oom = pod({"container_statuses": [{"state": {"running": {}}, "last_state": {"terminated": {
        "reason": "OOMKilled", "exit_code": 137}}}]})  # fmt: skip
    assert "OOMKilled" in diagnose({}, [oom])
    message = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    unschedulable = pod({"conditions": [{"type": "PodScheduled", "reason": "Unschedulable", "message": message}]})
    assert "not enough GPUs" in diagnose({}, [unschedulable])
    deadline = {"conditions": [{"type": "Failed", "reason": "DeadlineExceeded", "message": "Job was active longer"}]}
    assert diagnose(deadline, []).startswith("deadline exceeded")
    assert diagnose({"conditions": [{"type": "Failed", "reason": "BackoffLimitExceeded"}]}, [pod({})]) is None


def test_extraction_is_sharded_over_an_indexed_job_then_merged(prod):
    step = Step("extract", ["-m", "medklip.cli", "extract", "--data", "/workspace/d", "--extractor", "rules",
                            "--cache", "/workspace/.cache/extract"])  # fmt: skip
    indexed, merge = prod.render(step, "retrain-1a2b3c4d")
    validate([indexed, merge])
    assert indexed["spec"]["completionMode"] == "Indexed" and indexed["spec"]["completions"] == prod.extract_shards
    container = indexed["spec"]["template"]["spec"]["containers"][0]
    assert env_of(container)["SHARDS"]["value"] == str(prod.extract_shards) == "4"
    assert container["args"] == [
        "-m", "medklip.cli", "extract", "--extractor", "rules", "--cache", "/workspace/.cache/extract",
        "--reports=/workspace/d/reports.parquet",
        "--out=/workspace/d/triplet-shards/shard-$(JOB_COMPLETION_INDEX).parquet",
        "--shard=$(JOB_COMPLETION_INDEX)/$(SHARDS)",
    ]  # fmt: skip
    merge_args = merge["spec"]["template"]["spec"]["containers"][0]["args"]
    assert merge_args[:6] == ["-m", "medklip.cli", "extract", "merge", "--out", "/workspace/d/triplets.parquet"]
    assert merge_args[6:] == [f"/workspace/d/triplet-shards/shard-{i}.parquet" for i in range(4)]


# --- the launch sequence, with prefect-kubernetes' API calls recorded instead of sent (no cluster here) ----------
@pytest.fixture
def api(monkeypatch):
    """Records what the launcher asks of the Kubernetes API; `api["fail"]` names a Job that fails (OOMKilled)."""
    calls: list[tuple[str, str]] = []
    state = {"calls": calls, "fail": None}

    class Run:
        def __init__(self, name: str):
            self.name = name

        async def await_for_completion(self, print_func=None):
            calls.append(("wait", self.name))
            print_func(f"{self.name} says hello")
            if self.name == state["fail"]:
                raise RuntimeError(f"Job {self.name!r} failed due to ['BackoffLimitExceeded']")

        async def afetch_result(self):
            return {f"{self.name}-0-abcde": f"log of {self.name}"}

    async def trigger(block):
        calls.append(("create job", block.v1_job["metadata"]["name"]))
        return Run(block.v1_job["metadata"]["name"])

    async def create_service(credentials, new_service, namespace="default"):
        calls.append(("create service", new_service["metadata"]["name"]))

    async def delete_service(credentials, service_name, namespace="default"):
        calls.append(("delete service", service_name))

    async def list_pods(credentials, namespace="default", label_selector=""):
        oom = {"container_statuses": [{"state": {}, "last_state": {"terminated": {"reason": "OOMKilled"}}}]}
        return ApiObject(items=[{"metadata": {"name": "pod-0"}, "status": oom}])

    async def job_status(credentials, job_name, namespace="default"):
        return ApiObject(status={"conditions": [{"type": "Failed", "reason": "BackoffLimitExceeded"}]})

    patch_api(monkeypatch, trigger, create_service, delete_service, list_pods, job_status)
    return state


def test_multinode_launch_creates_the_service_first_and_always_removes_it(prod, api):
    import logging

    lines = prod.run(train_step(2, 8), logging.getLogger("test"))
    kinds = [kind for kind, _ in api["calls"]]
    assert kinds == ["create service", "create job", "wait", "delete service"]
    assert api["calls"][0][1] == api["calls"][1][1] == api["calls"][3][1]  # the Service is named like the Job
    assert lines == [f"log of {api['calls'][1][1]}"]


def test_a_failed_job_is_explained_and_the_service_still_removed(prod, api, monkeypatch):
    import logging

    launcher = KubernetesLauncher(list(prod.templates.values()))
    render = launcher.render

    def render_and_fail(step, run_key):  # the Job's name carries a random suffix: mark it once rendered
        objects = render(step, run_key)
        api["fail"] = objects[-1]["metadata"]["name"]
        return objects

    monkeypatch.setattr(launcher, "render", render_and_fail)
    with pytest.raises(StepError, match="OOMKilled"):
        launcher.run(train_step(2, 8), logging.getLogger("test"))
    assert [kind for kind, _ in api["calls"]] == ["create service", "create job", "wait", "delete service"]


def test_sharded_extraction_runs_the_shards_then_the_merge(prod, api):
    import logging

    step = Step("extract", ["-m", "medklip.cli", "extract", "--data", "/workspace/d"])
    prod.run(step, logging.getLogger("test"))
    created = [name for kind, name in api["calls"] if kind == "create job"]
    waited = [name for kind, name in api["calls"] if kind == "wait"]
    assert created == waited and len(created) == 2
    assert created[0].startswith("medklip-extract-") and created[1].startswith("medklip-extract-merge-")
    assert [kind for kind, _ in api["calls"]] == ["create job", "wait", "create job", "wait"]  # one after the other
