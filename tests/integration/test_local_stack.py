"""`make up`, `make deploy`, a run of `retrain-on-demand` started through the Prefect API (what the UI's Run button
does) at the debug preset, the registered version found in MLflow, then `make down`: the whole local stack, on free
ports and a temporary state folder so it never meets a developer's own stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.servers import free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
RUN_DEPLOYMENT = """
import json, sys
from prefect.deployments import run_deployment
from prefect.client.orchestration import get_client
run = run_deployment("retrain/retrain-on-demand", parameters=json.loads(sys.argv[1]), timeout=900)
with get_client(sync_client=True) as client:
    artifacts = client.read_artifacts(limit=20)
summary = next((a.data for a in artifacts if a.key == "retrain-summary" and a.flow_run_id == run.id), "")
print(json.dumps({"state": run.state.type.value, "message": run.state.message, "summary": summary}))
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("stack")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MLFLOW_", "PREFECT_"))}
    env.update(STACK_DIR=str(tmp_path / "stack"), S3_PORT=str(free_port()), MLFLOW_PORT=str(free_port()))
    env.update(PREFECT_PORT=str(free_port()))
    try:
        yield env
    finally:
        down = subprocess.run(["make", "down"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert down.returncode == 0, down.stderr


def make(target: str, env: dict) -> subprocess.CompletedProcess:
    finished = subprocess.run(["make", target], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, f"make {target}:\n{finished.stdout[-3000:]}\n{finished.stderr[-3000:]}"
    return finished


def stack_env(stack: dict) -> dict:
    """The stack's own variables (`.stack/env`) on top of the test's environment."""
    lines = (Path(stack["STACK_DIR"]) / "env").read_text().splitlines()
    return {**stack, **dict(line.removeprefix("export ").split("=", 1) for line in lines)}


def test_make_up_deploy_run_on_demand_and_find_the_version_in_mlflow(stack, tmp_path):
    make("up", stack)
    again = make("up", stack)  # twice is harmless
    assert again.stdout.count("already running") == 4
    make("deploy", stack)
    client_env = stack_env(stack)
    parameters = {"preset": "debug", "source": "synthetic://80?seed=2&size=64", "workdir": str(tmp_path / "work")}
    finished = subprocess.run([sys.executable, "-c", RUN_DEPLOYMENT, json.dumps(parameters)], env=client_env,
                              capture_output=True, text=True, timeout=900)  # fmt: skip
    assert finished.returncode == 0, finished.stderr[-3000:]
    outcome = json.loads(finished.stdout.splitlines()[-1])
    stack_dir = Path(stack["STACK_DIR"])
    worker_log = (stack_dir / "logs/worker.log").read_text()
    assert outcome["state"] == "COMPLETED", worker_log[-5000:]
    assert "medklip v1 is champion" in outcome["message"]
    assert "## Registry" in outcome["summary"] and "#/experiments/" in outcome["summary"]

    mlflow = MlflowClient(client_env["MLFLOW_TRACKING_URI"])
    champion = mlflow.get_model_version_by_alias("medklip", "champion")
    run = mlflow.get_run(champion.run_id)
    assert run.data.params["model.image_size"] == "64" and "mean_auc" in run.data.metrics
    assert (stack_dir / "mlflow/mlflow.db").is_file() and (stack_dir / "prefect").is_dir()

    # State survives a restart: the champion's weights come back from the S3 snapshot.
    make("down", stack)
    make("up", stack)
    local = mlflow.download_artifacts(champion.run_id, "config.json", str(tmp_path))
    assert json.loads(Path(local).read_text())["model"]["image_size"] == 64


CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture
def browser():
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()) and not os.environ.get("CI"):
        pytest.skip("needs Debian's chromium and chromium-driver (CI installs them: .ci/run)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1400,1600"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_prefect_ui_custom_run_of_the_on_demand_deployment_completes(stack, browser, tmp_path):
    """What a user does: open the UI, Run -> Custom run, change parameters, Submit, watch the run complete."""
    import requests
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    make("up", stack)  # harmless when the stack is already up
    make("deploy", stack)
    ui = f"http://127.0.0.1:{stack['PREFECT_PORT']}"

    def element(xpath: str, timeout: float = 60):
        visible = lambda driver: next((e for e in driver.find_elements(By.XPATH, xpath) if e.is_displayed()), False)  # noqa: E731
        wait = WebDriverWait(browser, timeout, poll_frequency=0.3, ignored_exceptions=(StaleElementReferenceException,))
        return wait.until(visible)

    def field(label: str, tag: str):
        return element(f"//label[normalize-space(.)='{label} (Optional)']/following::{tag}[1]")

    browser.get(f"{ui}/deployments")
    element("//a[normalize-space(.)='retrain-on-demand']").click()
    element("//button[normalize-space(.)='Run']").click()
    element("//*[normalize-space(.)='Custom run'][not(*[normalize-space(.)='Custom run'])]").click()
    run_name = element("//label[normalize-space(.)='Run Name']/following::input[1]").get_attribute("value")
    source = field("source", "textarea")
    source.clear()
    source.send_keys("synthetic://80?seed=4&size=64")
    Select(field("preset", "select")).select_by_visible_text("debug")
    workdir = field("workdir", "textarea")
    workdir.clear()
    workdir.send_keys(str(tmp_path / "ui-work"))
    element("//button[normalize-space(.)='Submit']").click()
    run_page = element(f"//a[normalize-space(.)='{run_name}']").get_attribute("href")
    browser.get(run_page)
    element("//*[normalize-space(.)='Completed']", timeout=900)
    browser.save_screenshot(str(tmp_path / "run.png"))

    run_id = run_page.rstrip("/").rsplit("/", 1)[1]
    flow_run = requests.get(f"{ui}/api/flow_runs/{run_id}", timeout=30).json()
    assert flow_run["state"]["type"] == "COMPLETED" and flow_run["parameters"]["preset"] == "debug"
    assert flow_run["parameters"]["source"] == "synthetic://80?seed=4&size=64"
