"""Training for real on tiny synthetic data: checkpoints, resume, bad inputs. Kills at random moments and the
resume guarantee are tests/medklip/test_resume.py."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from medklip.cli import main
from medklip.data.prepare import PrepareConfig, PreparedData, prepare
from medklip.labels.extract import file_sha256
from medklip.tracking.runs import tracking_uri
from medklip.training.checkpoints import load_model, read_header
from tests.helpers import prepared_synthetic

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train")
    return prepared_synthetic(root / "data", 80, seed=3)


def run(data: Path, save: Path, *flags: str) -> int:
    return main(["train", "--data", str(data), "--config", "debug", "--save", str(save), *flags])


def history(save: Path) -> list[dict]:
    return [json.loads(line) for line in (save / "history.jsonl").read_text().splitlines()]


def test_train_writes_checkpoints_history_and_a_loadable_best_model(data, tmp_path):
    save = tmp_path / "ckpt"
    assert run(data, save, "--epochs", "2") == 0
    records = history(save)
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(r["train_loss"] > 0 and "val_mean_auc" in r and "train_box" not in r for r in records)
    config, extra = read_header(save / "model_best.safetensors")
    assert config.model.image_size == 64 and extra["epoch"] in (1, 2)
    model = load_model(save / "model_best.safetensors")
    probabilities = model.probabilities(torch.zeros(2, 1, 64, 64, dtype=torch.uint8))
    assert probabilities.shape == (2, 75) and ((0 <= probabilities) & (probabilities <= 1)).all()
    assert json.loads((save / "last.json").read_text())["step"] == records[-1]["step"]

    # The same command again resumes from `last` and trains the extra epoch only.
    assert run(data, save, "--epochs", "3") == 0
    assert [r["epoch"] for r in history(save)] == [1, 2, 3]


def test_corrupt_checkpoint_is_an_error_not_a_fresh_start(data, tmp_path, capsys):
    save = tmp_path / "ckpt"
    assert run(data, save, "--max-steps", "2") == 0
    step_dir = save / json.loads((save / "last.json").read_text())["dir"]
    (step_dir / "model.safetensors").write_bytes(b"not a checkpoint")
    capsys.readouterr()
    assert run(data, save, "--max-steps", "4") == 2
    [line] = capsys.readouterr().err.strip().splitlines()[-1:]
    assert line.startswith("medklip train: error: cannot resume from") and str(save / "last.json") in line
    assert (step_dir / "model.safetensors").read_bytes() == b"not a checkpoint"  # kept, not overwritten


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--epochs", "0"], "train.epochs = 0 is out of range"),
        (["--batch-size", "0"], "train.batch_size = 0 is out of range"),
        (["--set", "model.d_model=0"], "model.d_model = 0 is out of range"),
        (["--set", "model.num_heads=3"], "model.num_heads = 3 does not divide model.d_model = 32"),
        (["--set", "train.grad_accumulation=0"], "train.grad_accumulation = 0 is out of range"),
        (["--set", "train.min_lr=1"], "train.min_lr = 1 is above train.lr"),
        (["--set", "train.select_by=val_loss"], "train.select_by = 'val_loss': choose from"),
    ],
    ids=lambda value: value[-1] if isinstance(value, list) else None,
)
def test_impossible_settings_are_refused_before_any_work(data, tmp_path, capsys, flags, message):
    assert run(data, tmp_path / "ckpt", *flags) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("medklip train: error: ") and message in err[0], err
    assert not (tmp_path / "ckpt").exists()  # nothing written, no MLflow run opened


def test_an_empty_validation_split_is_an_error_unless_selection_by_training_loss_is_asked(tmp_path, capsys):
    data = prepared_synthetic(tmp_path / "data", 24, seed=5, val=0.0)
    assert run(data, tmp_path / "by-auc", "--epochs", "2", "--no-mlflow") == 2
    [line] = capsys.readouterr().err.strip().splitlines()[-1:]
    assert "the val split is empty" in line and "--set train.select_by=train_loss" in line
    assert run(data, tmp_path / "by-loss", "--epochs", "3", "--no-mlflow", "--set", "train.select_by=train_loss") == 0
    records = history(tmp_path / "by-loss")
    chosen = read_header(tmp_path / "by-loss/model_best.safetensors")[1]["epoch"]
    assert chosen == min(records, key=lambda r: r["train_loss"])["epoch"]
    assert all("val_mean_auc" not in r or r["val_mean_auc"] is None for r in records)


def test_a_val_split_without_any_entity_with_both_classes_is_an_error_not_a_silent_first_epoch(tmp_path, capsys):
    from medklip.labels.extract import extract_file
    from tests.helpers import write_clean_folder

    source = write_clean_folder(tmp_path / "source", 30, size=(80, 80))  # reports "Finding i.": no entity at all
    config = PrepareConfig(workers=1, short_side=64, val_fraction=0.3, test_fraction=0.1, gate_fraction=0.1)
    prepare(f"folder://{source}", tmp_path / "data", config)
    extract_file(tmp_path / "data/reports.parquet", tmp_path / "data/triplets.parquet")
    assert run(tmp_path / "data", tmp_path / "by-auc", "--epochs", "2", "--no-mlflow") == 2
    [line] = capsys.readouterr().err.strip().splitlines()[-1:]
    assert "no entity has both a positive and a negative label among the" in line and "val images" in line
    assert "--set train.select_by=train_loss" in line
    assert not (tmp_path / "by-auc/model_best.safetensors").exists()


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_checkpoint(data, tmp_path, monkeypatch):
    from medklip.model import losses

    save = tmp_path / "ckpt"
    assert run(data, save, "--max-steps", "2", "--set", "train.save_every_steps=1") == 0
    kept = (save / "last.json").read_text()
    original = losses.MedKLIPLoss.forward

    def poisoned(self, *args, **kwargs):
        terms = original(self, *args, **kwargs)
        terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(losses.MedKLIPLoss, "forward", poisoned)
    from medklip.training.trainer import TrainingError

    with pytest.raises(TrainingError, match="loss is nan"):
        run(data, save, "--max-steps", "4")
    assert (save / "last.json").read_text() == kept
    load_model(save / json.loads(kept)["dir"] / "model.safetensors")


def test_boxes_add_a_box_term_and_a_missing_boxes_file_is_a_clear_error(data, tmp_path, capsys):
    save = tmp_path / "boxed"
    assert run(data, save, "--epochs", "1", "--set", f"train.boxes={data / 'truth.csv'}") == 0
    record = history(save)[0]
    assert 0 < record["train_box"] < record["train_loss"] and math.isfinite(record["train_loss"])
    assert read_header(save / "model_best.safetensors")[0].train.boxes == str(data / "truth.csv")
    run_id = (save / "mlflow_run_id").read_text().strip()
    tags = MlflowClient(tracking_uri()).get_run(run_id).data.tags
    assert tags["medklip.boxes_sha256"] == file_sha256(data / "truth.csv")  # which boxes it learnt from
    assert run(data, tmp_path / "none", "--set", f"train.boxes={tmp_path / 'nowhere.csv'}") == 2
    assert "boxes file not found" in capsys.readouterr().err


def test_missing_triplets_is_a_clear_cli_error(tmp_path, capsys):
    prepare("synthetic://10?seed=1&size=64", tmp_path / "data", PrepareConfig(workers=1, short_side=64))
    assert run(tmp_path / "data", tmp_path / "ckpt") == 2
    assert "run `medklip extract --data" in capsys.readouterr().err


def test_torchrun_two_processes_train_with_ddp(data, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "medklip.train", "--data", str(data)]
    command += ["--config", "debug", "--save", str(tmp_path / "ckpt"), "--epochs", "2"]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    records = history(tmp_path / "ckpt")
    assert [r["epoch"] for r in records] == [1, 2]  # one writer: rank 0
    # Each rank sees half of each epoch: 2 ranks x batch 8, so half the steps of a single process.
    assert records[-1]["step"] == 2 * (len(PreparedData(data).rows("train")) // 16)
    load_model(tmp_path / "ckpt/model_best.safetensors")
    # Only rank 0 talks to MLflow: one run for this folder, with one value per epoch.
    from mlflow import MlflowClient

    from medklip.tracking.runs import experiment_id, tracking_uri

    client = MlflowClient(tracking_uri())
    runs = client.search_runs([experiment_id(client)], f"tags.`medklip.save_dir` = '{(tmp_path / 'ckpt').resolve()}'")
    assert len(runs) == 1 and runs[0].data.tags["medklip.world_size"] == "2"
    assert len(client.get_metric_history(runs[0].info.run_id, "val_mean_auc")) == 2


def test_early_stopping_ends_training_when_validation_stops_improving(data, tmp_path, monkeypatch):
    monkeypatch.setattr("medklip.train.mean_auc", lambda scores, labels: 0.5)  # validation AUC never improves
    assert run(data, tmp_path / "ckpt", "--epochs", "5", "--set", "train.early_stopping_patience=1") == 0
    assert [r["epoch"] for r in history(tmp_path / "ckpt")] == [1, 2]


def test_torchrun_max_restarts_resumes_a_killed_worker(data, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    save = tmp_path / "ckpt"
    command = [str(torchrun), "--standalone", "--nproc-per-node", "1", "--max-restarts", "1", "-m", "medklip.train"]
    command += ["--data", str(data), "--config", "debug", "--save", str(save), "--epochs", "4"]
    command += ["--deterministic", "--set", "train.save_every_steps=2"]
    agent = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline, killed = time.time() + 120, False
    while time.time() < deadline and agent.poll() is None and not killed:
        pointer = save / "last.json"
        if pointer.exists() and json.loads(pointer.read_text())["step"] >= 4:
            worker = subprocess.run(["pgrep", "-P", str(agent.pid)], capture_output=True, text=True).stdout.split()
            for pid in worker:
                os.kill(int(pid), signal.SIGKILL)
            killed = bool(worker)
        time.sleep(0.02)
    _, stderr = agent.communicate(timeout=300)
    assert killed and agent.returncode == 0, stderr[-3000:]
    assert [r["epoch"] for r in history(save)] == [1, 2, 3, 4]


@pytest.mark.parametrize("problem", ["missing folder", "no triplets"])
def test_bad_data_is_refused_before_mlflow_opens_a_run(tmp_path, monkeypatch, capsys, problem):
    data = tmp_path / "data"
    if problem == "no triplets":
        prepared_synthetic(data, 8, seed=1)
        (data / "triplets.parquet").unlink()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the default store is ./mlruns, in the cwd
    monkeypatch.chdir(tmp_path)
    before = sorted(path.name for path in tmp_path.iterdir())
    capsys.readouterr()
    assert run(data, tmp_path / "ckpt") == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("medklip train: error: ") and str(data) in line
    assert sorted(path.name for path in tmp_path.iterdir()) == before  # no ./mlruns, no checkpoint folder
