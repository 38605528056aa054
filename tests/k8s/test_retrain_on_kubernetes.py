"""The retrain flow end to end with `backend=kubernetes`: flow -> tasks -> KubernetesLauncher -> prefect-kubernetes,
whose API calls a stand-in cluster (`tests/k8s/kubelet.py`) answers by running every rendered pod here: prepare,
four extraction shards at once and their merge, two-node torchrun training behind its headless Service, evaluation;
then the flow registers the model. No cluster exists on this machine; everything but the API server and the
kubelet is the real thing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from prefect.testing.utilities import prefect_test_harness

from flows.retrain import Promotion, retrain
from tasks.kubernetes_launcher import KubernetesLauncher
from tests.k8s.kubelet import FakeCluster
from tests.k8s.test_manifests import ROOT
from tests.servers import free_port

pytestmark = pytest.mark.slow
OVERLAY = ROOT / "k8s" / "overlays" / "dev"


@pytest.fixture
def cluster(tmp_path, monkeypatch) -> FakeCluster:
    monkeypatch.setenv("MEDKLIP_K8S_OVERLAY", str(OVERLAY))
    templates = KubernetesLauncher.from_overlay(OVERLAY).templates
    overrides = {  # the cluster's names for MLflow and the rendezvous port, as this machine has them
        "MLFLOW_TRACKING_URI": os.environ["MLFLOW_TRACKING_URI"],
        "MASTER_PORT": str(free_port()),
        "MEDKLIP_DIST_TIMEOUT_S": "120",
    }
    fake = FakeCluster(templates, tmp_path, overrides)
    fake.install(monkeypatch)
    return fake


def test_the_flow_runs_every_step_as_jobs_and_trains_on_two_nodes(tmp_path, cluster):
    with prefect_test_harness(server_startup_timeout=120):
        state = retrain(source="synthetic://80?seed=3&size=64", preset="debug", backend="kubernetes", nodes=2,
                        workdir=str(tmp_path), promotion=Promotion(model_name="k8s-flow-test", resamples=100),
                        return_state=True)  # fmt: skip
    assert state.is_completed(), state.message
    result = state.result()

    created = [name for kind, name in cluster.calls if kind == "create job"]
    assert [name.split("-")[1] for name in created] == ["prepare", "extract", "extract", "train", "evaluate"]
    assert created[2].startswith("medklip-extract-merge-")
    train = cluster.runs[3].job
    assert train["spec"]["completionMode"] == "Indexed" and train["spec"]["completions"] == 2
    name = train["metadata"]["name"]
    started = cluster.calls.index(("create job", name))
    assert cluster.calls[started - 1] == ("create service", name)  # node 0's DNS name exists before the pods
    assert ("delete service", name) in cluster.calls[started:] and not cluster.services

    shards = sorted(path.name for path in (tmp_path / "data").glob("*/triplet-shards/shard-*.parquet"))
    assert shards == [f"shard-{index}.parquet" for index in range(4)]
    [data] = (tmp_path / "data").iterdir()
    train_rows = json.loads((data / "manifest.json").read_text())["splits"]["train"]
    [record] = [json.loads(line) for line in (Path(result["checkpoints"]) / "history.jsonl").read_text().splitlines()]
    assert record["step"] == train_rows // (8 * 2)  # world size 2: each step sees 2 x batch 8 images
    assert result["metrics"]["n_test"] > 0 and result["decision"]["alias"] == "champion"
