"""MLflow tracking and the registry against a local store (SQLite + files): no server needed.

The real server, S3 and connection-loss cases are in tests/integration/test_mlflow_server.py.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from medklip.cli import main
from medklip.config import flatten, load_config, to_dict
from medklip.data.images import decode_image
from medklip.evaluation.evaluate import read_predictions, write_predictions
from medklip.evaluation.predict import predict_files
from medklip.labels.extract import file_sha256
from medklip.tracking import registry
from medklip.tracking import runs as tracking
from medklip.tracking.pyfunc import MODEL_URI_TAG, log_model
from medklip.training.checkpoints import load_model
from medklip.vocabulary import ENTITIES
from tests.helpers import prepared_synthetic, radiograph_png
from tests.servers import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tracked(tmp_path_factory) -> dict:
    """A debug model trained and evaluated through the CLI, tracked in the session's local store."""
    root = tmp_path_factory.mktemp("tracked")
    prepared_synthetic(root / "data", 96, seed=7, size=96, val=0.25, test=0.25)
    save = root / "ckpt"
    assert main(["train", "--data", str(root / "data"), "--config", "debug", "--save", str(save), "--epochs", "2"]) == 0
    weights = save / "model_best.safetensors"
    out = root / "results"
    flags = ["--weights", str(weights), "--data", str(root / "data"), "--out", str(out), "--resamples", "100"]
    assert main(["evaluate", *flags]) == 0
    run_id = (save / "mlflow_run_id").read_text().strip()
    sample = radiograph_png(root / "sample.png")
    return {"root": root, "data": root / "data", "save": save, "weights": weights, "out": out, "run_id": run_id,
            "sample": sample}  # fmt: skip


def client() -> MlflowClient:
    return MlflowClient(tracking.tracking_uri())


def test_training_run_holds_config_fingerprints_and_per_step_and_per_epoch_metrics(tracked):
    run = client().get_run(tracked["run_id"])
    assert run.info.status == "FINISHED"
    config = load_config("debug", {"train.epochs": 2})
    assert run.data.params == {key: str(value) for key, value in flatten(to_dict(config)).items()}
    manifest = json.loads((tracked["data"] / "manifest.json").read_text())
    tags = run.data.tags
    assert tags["medklip.data_fingerprint"] == manifest["fingerprint"]
    assert tags["medklip.extractor"].startswith("rules/")
    assert tags["medklip.triplets_sha256"] == file_sha256(tracked["data"] / "triplets.parquet")
    assert len(tags["mlflow.source.git.commit"]) == 40
    history = [json.loads(line) for line in (tracked["save"] / "history.jsonl").read_text().splitlines()]
    losses = client().get_metric_history(tracked["run_id"], "loss")
    assert sorted(m.step for m in losses) == list(range(1, history[-1]["step"] + 1))  # every optimizer step
    validation = client().get_metric_history(tracked["run_id"], "val_mean_auc")
    assert [m.value for m in sorted(validation, key=lambda m: m.step)] == pytest.approx(
        [r["val_mean_auc"] for r in history]
    )
    artifacts = {a.path for a in client().list_artifacts(tracked["run_id"])}
    assert {"config.json", "history.jsonl", "model_best.json", "evaluation"} <= artifacts


def test_evaluate_logs_metrics_json_plots_and_predictions_into_the_training_run(tracked):
    metrics = json.loads((tracked["out"] / "metrics.json").read_text())
    logged = client().get_run(tracked["run_id"]).data
    assert logged.metrics["mean_auc"] == pytest.approx(metrics["mean_auc"])
    assert logged.metrics["accuracy"] == pytest.approx(metrics["accuracy"])
    for entity, values in metrics["per_entity"].items():
        if values["auc"] is not None:
            assert logged.metrics[f"auc/{entity}"] == pytest.approx(values["auc"])
    assert logged.tags["medklip.eval_fingerprint"] == metrics["evaluation_data"]["fingerprint"]
    evaluation = {a.path for a in client().list_artifacts(tracked["run_id"], "evaluation")}
    expected = {"metrics.json", "predictions.parquet", "auc_per_entity.png", "roc_curve.png", "loss_curve.png"}
    expected.add("pointing_game.png")  # the data is synthetic, with lesion boxes
    assert {f"evaluation/{name}" for name in expected} <= evaluation
    assert client().list_artifacts(tracked["run_id"], "evaluation/heatmaps")
    ids, scores, labels = read_predictions(tracked["out"] / "predictions.parquet")
    assert scores.shape == labels.shape == (metrics["n_test"], 75)


def test_resumed_training_logs_into_the_same_run(tracked, tmp_path):
    import shutil

    save = tmp_path / "ckpt"
    shutil.copytree(tracked["save"], save)
    run_id = (save / "mlflow_run_id").read_text().strip()
    assert (
        main(["train", "--data", str(tracked["data"]), "--config", "debug", "--save", str(save), "--epochs", "3"]) == 0
    )
    assert (save / "mlflow_run_id").read_text().strip() == run_id
    validation = client().get_metric_history(run_id, "val_mean_auc")
    assert len(validation) == 3
    assert client().get_run(run_id).data.tags["medklip.resumed_with.train.epochs"] == "3"


def test_logged_model_is_code_plus_safetensors_and_predicts_bytes_base64_and_arrays(tracked, tmp_path):
    model_uri = client().get_run(tracked["run_id"]).data.tags[MODEL_URI_TAG]
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(tmp_path)))
    assert list(local.rglob("*.safetensors")) and not list(local.rglob("*.pkl")), "weights, not a pickle"
    assert (local / "mlflow_model.py").is_file() or list(local.rglob("mlflow_model.py"))
    info = mlflow.models.get_model_info(model_uri)
    assert info.signature.inputs.input_names() == ["image"]
    assert info.signature.outputs.input_names() == list(ENTITIES)

    pyfunc = mlflow.pyfunc.load_model(model_uri)
    data = tracked["sample"].read_bytes()
    frame = pd.DataFrame({"image": [data, base64.b64encode(data).decode(), decode_image(data)]})
    predicted = pyfunc.predict(frame)
    assert list(predicted.columns) == list(ENTITIES) and len(predicted) == 3
    # The weights the model holds (a resumed training may have logged a better one into the same run since).
    [weights] = local.rglob("*.safetensors")
    expected = predict_files(load_model(weights), [str(tracked["sample"])])[0].probabilities
    for row in range(3):
        assert predicted.iloc[row].to_numpy() == pytest.approx([expected[e] for e in ENTITIES], abs=1e-5)
    with pytest.raises(Exception, match="image 0"):
        pyfunc.predict(pd.DataFrame({"image": [b"not an image"]}))


def test_unreachable_server_is_an_error_before_training(tracked, tmp_path, monkeypatch, capsys):
    port = free_port()  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://user:hunter2@127.0.0.1:{port}")
    save = tmp_path / "ckpt"
    assert (
        main(["train", "--data", str(tracked["data"]), "--config", "debug", "--save", str(save)]) == 75
    )  # retry later
    error = capsys.readouterr().err
    assert f"127.0.0.1:{port}" in error and "does not answer" in error and "hunter2" not in error
    assert not (save / "last.json").exists()


# --- registry -----------------------------------------------------------------------------------------------------
def evaluated_run(tracked, scores: np.ndarray, tags: dict | None = None) -> str:
    """A run with its own logged model (the tracked weights), a mean AUC and a predictions file of `scores`."""
    from medklip.evaluation.metrics import mean_auc

    ids, _, labels = read_predictions(tracked["out"] / "predictions.parquet")
    mlflow_client = client()
    experiment = tracking.experiment_id(mlflow_client)
    run_id = mlflow_client.create_run(experiment).info.run_id
    log_model(mlflow_client, run_id, tracked["weights"])
    folder = tracked["root"] / run_id
    write_predictions(folder / "predictions.parquet", ids, scores, labels)
    mlflow_client.log_artifact(run_id, str(folder / "predictions.parquet"), "evaluation")
    mlflow_client.log_metric(run_id, "mean_auc", mean_auc(scores, labels))
    source = client().get_run(tracked["run_id"]).data.tags
    run_tags = {key: value for key, value in source.items() if key.startswith("medklip.eval_")}
    for key, value in {**run_tags, **(tags or {})}.items():
        mlflow_client.set_tag(run_id, key, value)
    return run_id


def test_gate_first_version_is_champion_then_only_a_significantly_better_one_replaces_it(tracked):
    name = "gate-test"
    _, scores, labels = read_predictions(tracked["out"] / "predictions.parquet")
    first = registry.register(tracked["run_id"], name, n_resamples=200)
    assert first["alias"] == "champion" and "no champion" in first["reason"]

    same = registry.register(evaluated_run(tracked, scores), name, n_resamples=200)  # identical predictions
    assert same["alias"] == "challenger"
    assert same["comparison"]["difference"] == 0 and same["comparison"]["ci95"] == [0, 0]
    assert "champion's own evaluation" in same["comparison"]["champion_source"]

    perfect = np.where(labels == 1, 0.9, 0.1) + np.random.default_rng(0).uniform(0, 0.05, labels.shape)
    better = registry.register(evaluated_run(tracked, perfect), name, n_resamples=200)
    assert better["alias"] == "champion", better["reason"]
    assert better["comparison"]["ci95"][0] > 0

    versions = {record["version"]: record for record in registry.list_versions(name)}
    assert versions[3]["aliases"] == ["challenger", "champion"] and versions[1]["aliases"] == []
    tags = versions[2]["tags"]
    assert tags["gate.decision"] == "challenger" and float(tags["gate.difference"]) == 0
    assert tags["gate.champion_version"] == "1" and "does not beat the margin" in tags["gate.reason"]
    card = client().download_artifacts(versions[3]["run_id"], "registry/model_card_v3.md", str(tracked["root"]))
    text = Path(card).read_text()
    assert "Decision: champion" in text and "| difference |" in text
    assert client().get_model_version(name, "3").description == text
    first_card = client().download_artifacts(tracked["run_id"], "registry/model_card_v1.md", str(tracked["root"]))
    assert "Per-entity AUC" in Path(first_card).read_text()  # from the run's evaluation/metrics.json

    # The champion loads by alias and predicts on a radiograph.
    pyfunc = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    probabilities = pyfunc.predict(pd.DataFrame({"image": [tracked["sample"].read_bytes()]}))
    assert probabilities.shape == (1, 75) and ((probabilities >= 0) & (probabilities <= 1)).all().all()


def test_gate_scores_the_champion_on_the_challengers_data_when_it_was_evaluated_elsewhere(tracked):
    name = "gate-rescore"
    _, scores, labels = read_predictions(tracked["out"] / "predictions.parquet")
    registry.register(evaluated_run(tracked, scores, {"medklip.eval_fingerprint": "some other data"}), name)
    perfect = np.where(labels == 1, 0.9, 0.1)
    decision = registry.register(evaluated_run(tracked, perfect), name, n_resamples=200)
    assert "scored here" in decision["comparison"]["champion_source"]
    # The champion, scored here, is the tracked model: its predictions on the same split are the tracked ones.
    assert decision["comparison"]["mean_auc_b"] == pytest.approx(
        client().get_run(tracked["run_id"]).data.metrics["mean_auc"]
    )
    assert decision["alias"] == "champion"

    unreadable = {"medklip.eval_fingerprint": "x", "medklip.eval_dir": str(tracked["root"] / "gone")}
    registry.register(evaluated_run(tracked, scores, unreadable), "gate-unreadable")
    stuck = registry.register(evaluated_run(tracked, perfect, {"medklip.eval_dir": str(tracked["root"] / "gone")}),
                              "gate-unreadable")  # fmt: skip
    assert stuck["alias"] == "challenger" and stuck["reason"].startswith("not compared")


def test_manual_promotion_is_recorded_and_needs_a_reason(tracked, monkeypatch):
    name = "gate-manual"
    _, scores, _ = read_predictions(tracked["out"] / "predictions.parquet")
    registry.register(evaluated_run(tracked, scores), name)
    registry.register(evaluated_run(tracked, scores), name)
    with pytest.raises(ValueError, match="reason"):
        registry.promote(2, "  ", name)
    monkeypatch.setenv("MEDKLIP_REVIEWER", "dr.reviewer")
    assert main(["registry", "promote", "--name", name, "--version", "2", "--reason", "reader study passed"]) == 0
    tags = client().get_model_version(name, "2").tags
    assert tags["promotion.reason"] == "reader study passed" and tags["promotion.by"] == "dr.reviewer"
    assert tags["promotion.previous_champion"] == "1"
    assert str(client().get_model_version_by_alias(name, "champion").version) == "2"


def test_registry_list_json_and_clear_errors(tracked, capsys):
    name = "gate-list"
    _, scores, _ = read_predictions(tracked["out"] / "predictions.parquet")
    registry.register(evaluated_run(tracked, scores), name)
    registry.register(evaluated_run(tracked, scores), name)
    capsys.readouterr()
    assert main(["registry", "list", "--name", name, "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["version"] for r in records] == [2, 1]
    assert records[0]["aliases"] == ["challenger"] and records[1]["aliases"] == ["champion"]
    assert records[0]["tags"]["gate.decision"] == "challenger"
    assert main(["registry", "list", "--name", name]) == 0
    assert "challenger" in capsys.readouterr().out
    assert main(["registry", "promote", "--name", name, "--version", "9", "--reason", "x"]) == 2
    assert "version 9" in capsys.readouterr().err
    unevaluated = client().create_run(tracking.experiment_id(client())).info.run_id
    assert main(["registry", "register", "--run-id", unevaluated]) == 2
    assert "run `medklip evaluate`" in capsys.readouterr().err
