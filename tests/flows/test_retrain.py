"""The retrain flow under `prefect_test_harness`, at the debug preset, with MLflow in the session's local store."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.exceptions import ParameterTypeError
from prefect.states import Completed, Failed
from prefect.testing.utilities import prefect_test_harness

from flows.retrain import Promotion, retrain
from medklip.tracking.runs import TrackingUnavailable
from tasks.local_launcher import LocalLauncher
from tasks.step import Step, StepError, TransientStepError
from tasks.steps import transient

SOURCE = "synthetic://80?seed=1&size=64"


@pytest.fixture(scope="module", autouse=True)
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def run(workdir: Path, **parameters):
    parameters = {"source": SOURCE, "preset": "debug", "workdir": str(workdir), **parameters}
    return retrain(**parameters, return_state=True)


async def summary_artifact() -> str:
    async with get_client() as client:
        artifacts = await client.read_artifacts(limit=50)
    return next(a.data for a in artifacts if a.key == "retrain-summary")


@pytest.mark.slow
def test_a_debug_run_trains_evaluates_registers_and_a_rerun_skips_unchanged_data(tmp_path):
    import asyncio

    first = run(tmp_path, promotion=Promotion(model_name="flow-test", resamples=100))
    assert first.is_completed(), first.message
    result = first.result()
    assert result["outcomes"]["prepare"] == "prepared" and result["outcomes"]["extract"] == "extracted"
    assert result["decision"]["alias"] == "champion" and "flow-test v1 is champion" in first.message
    assert (Path(result["checkpoints"]) / "model_best.safetensors").is_file()
    assert (Path(result["results"]) / "metrics.json").is_file()
    text = asyncio.run(summary_artifact())
    assert "mean AUC" in text and "flow-test version 1: champion" in text and result["run_id"] in text

    # Location supervision from the Prefect UI: the synthetic data's own truth boxes (only train images use them).
    truth = Path(result["metrics"]["evaluation_data"]["dir"]) / "truth.csv"
    boxes = str(truth.relative_to(tmp_path.resolve()))
    second = run(tmp_path, epochs=1, boxes=boxes, promotion=Promotion(model_name="flow-test", resamples=100))
    assert second.is_completed(), second.message
    assert second.result()["metrics"]["grounding"]["train_boxes"] == str(truth)
    outcomes = second.result()["outcomes"]
    assert outcomes["prepare"] == outcomes["extract"] == "skipped (unchanged)"
    assert second.result()["checkpoints"] != result["checkpoints"]  # each run trains into its own folder
    assert second.result()["decision"]["version"] == 2


@pytest.mark.slow
def test_two_runs_at_once_do_not_corrupt_each_other(tmp_path):
    states = {}

    def start(name: str) -> None:
        states[name] = run(tmp_path, promotion=Promotion(register_model=False))

    threads = [threading.Thread(target=start, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert all(state.is_completed() for state in states.values()), [s.message for s in states.values()]
    a, b = (states[name].result() for name in ("a", "b"))
    assert a["checkpoints"] != b["checkpoints"]
    # The shared data folder is consistent: the same prepared data and labels, so the same evaluation images.
    assert a["metrics"]["evaluation_data"]["fingerprint"] == b["metrics"]["evaluation_data"]["fingerprint"]


@pytest.mark.parametrize(
    "parameters",
    [
        {"epochs": 0},
        {"preset": "huge"},
        {"lr": -1.0},
        {"nodes": 0},
        {"gpus_per_node": 99},
        {"backend": "ssh"},
        {"nodes": 65},
        {"promotion": {"margin": 5}},
        {"source": ""},
    ],
)
def test_invalid_parameters_are_refused_before_anything_starts(parameters):
    with pytest.raises(ParameterTypeError):
        retrain.validate_parameters(parameters)


def test_several_nodes_on_the_local_backend_fail_before_any_step(tmp_path):
    state = run(tmp_path, nodes=2)
    assert state.is_failed() and "backend=kubernetes" in state.message
    assert not (tmp_path / "data").exists()


def test_the_kubernetes_backend_renders_from_the_overlay(monkeypatch):
    from tasks.kubernetes_launcher import KubernetesLauncher
    from tasks.launchers import make_launcher

    monkeypatch.setenv("MEDKLIP_K8S_OVERLAY", str(Path(__file__).resolve().parents[2] / "k8s/overlays/dev"))
    launcher = make_launcher("kubernetes")
    assert isinstance(launcher, KubernetesLauncher) and launcher.namespace == "medklip-dev"
    assert retrain.validate_parameters({"backend": "kubernetes", "nodes": 3})["nodes"] == 3


def test_defaults_and_a_debug_override_validate():
    assert retrain.validate_parameters({})["preset"] == "demo"
    assert retrain.validate_parameters({"preset": "debug", "epochs": 2})["epochs"] == 2


def test_only_transient_failures_are_retried():
    assert transient(None, None, Failed(data=TransientStepError("MLflow away")))
    assert transient(None, None, Failed(data=TrackingUnavailable("server does not answer")))
    assert not transient(None, None, Failed(data=StepError("bad data")))
    assert not transient(None, None, Failed(data=ValueError("bug")))
    assert not transient(None, None, Completed(data=1))


def test_local_launcher_maps_exit_codes_and_refuses_several_nodes():
    import logging

    logger = logging.getLogger("test")
    launcher = LocalLauncher()
    assert launcher.run(Step("ok", ["-c", "print('hello')"]), logger) == ["hello"]
    with pytest.raises(TransientStepError):
        launcher.run(Step("later", ["-c", "import sys; sys.exit(75)"]), logger)
    with pytest.raises(StepError, match="exit status 2") as error:
        launcher.run(Step("bad", ["-c", "import sys; print('why it failed'); sys.exit(2)"]), logger)
    assert "why it failed" in str(error.value) and not isinstance(error.value, TransientStepError)
    with pytest.raises(StepError, match="one node"):
        launcher.command(Step("train", ["-m", "medklip.train"], nodes=2, distributed=True))
    assert launcher.command(Step("train", ["-m", "medklip.train"], processes=2, distributed=True))[1:6] == [
        "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"
    ]  # fmt: skip


def test_flow_module_runs_as_a_script_help():
    finished = subprocess.run([sys.executable, "-m", "flows.retrain", "--help"], capture_output=True, text=True)
    assert finished.returncode == 0 and "--preset" in finished.stdout


@pytest.mark.slow
def test_a_step_log_has_one_line_per_epoch_and_no_progress_bars(tmp_path):
    import logging

    from tests.helpers import prepared_synthetic

    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    logger = logging.getLogger("test.step-log")
    logger.addHandler(Collect())
    logger.setLevel(logging.INFO)
    data = prepared_synthetic(tmp_path / "data", 24, seed=2)
    args = ["-m", "medklip.cli", "train", "--data", str(data), "--config", "debug", "--epochs", "3", "--no-mlflow"]
    LocalLauncher().run(Step("train", [*args, "--save", str(tmp_path / "ckpt")]), logger)
    assert sum(" epoch " in line and ": " in line.split(" epoch ", 1)[1] for line in lines) >= 3, lines
    bars = [line for line in lines if "batch/s" in line or "it/s" in line or "%|" in line]
    assert not bars, bars  # a progress bar redrawn into a log is dozens of lines per epoch
    assert len(lines) < 40, lines
