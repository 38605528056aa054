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
from medklip.data.prepare import PrepareConfig, PreparedData, prepare
from medklip.evaluation.drift import label_prevalence
from medklip.evaluation.evaluate import evaluation_fingerprint, read_groups, read_predictions, write_predictions
from medklip.evaluation.predict import predict_files
from medklip.labels.extract import extract_file, file_sha256, load_labels
from medklip.tracking import registry
from medklip.tracking import runs as tracking
from medklip.tracking.pyfunc import MODEL_URI_TAG, log_model
from medklip.training.checkpoints import load_model
from medklip.vocabulary import ENTITIES
from tests.helpers import radiograph_png
from tests.servers import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tracked(tmp_path_factory) -> dict:
    """A debug model trained and evaluated through the CLI, tracked in the session's local store; a quarter of the
    images in the gate split, so that the gate's comparisons have images to resample."""
    root = tmp_path_factory.mktemp("tracked")
    config = PrepareConfig(workers=2, short_side=64, val_fraction=0.2, test_fraction=0.2, gate_fraction=0.25)
    prepare("synthetic://96?seed=7&size=96", root / "data", config)
    extract_file(root / "data/reports.parquet", root / "data/triplets.parquet")
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
    assert {"config.json", "history.jsonl", "model_best.json", "evaluation", "data"} <= artifacts
    assert tags["medklip.split_grouping"] == "image id (no patient or study id)"  # synthetic data has no patients
    assert json.loads(tags["medklip.split_scheme"])["gate_fraction"] == 0.25

    # The label prevalence of the train split, what the registry's drift report compares.
    logged = client().download_artifacts(tracked["run_id"], tracking.PREVALENCE_FILE, str(tracked["root"]))
    prevalence = json.loads(Path(logged).read_text())
    data = PreparedData(tracked["data"])
    expected = label_prevalence(load_labels(data)["existence"][data.rows("train")])
    assert prevalence["entities"] == expected["entities"] and prevalence["n_images"] == len(data.rows("train"))
    assert prevalence["split"] == "train" and prevalence["data_fingerprint"] == manifest["fingerprint"]


def test_evaluate_logs_metrics_json_plots_and_predictions_into_the_training_run(tracked):
    metrics = json.loads((tracked["out"] / "metrics.json").read_text())
    logged = client().get_run(tracked["run_id"]).data
    assert logged.metrics["mean_auc"] == pytest.approx(metrics["mean_auc"])
    assert logged.metrics["accuracy"] == pytest.approx(metrics["accuracy"])
    for entity, values in metrics["per_entity"].items():
        if values["auc"] is not None:
            assert logged.metrics[f"auc/{entity}"] == pytest.approx(values["auc"])
    assert logged.tags["medklip.eval_fingerprint"] == metrics["evaluation_data"]["fingerprint"]
    assert logged.tags["medklip.eval_role"] == "report" and logged.tags["medklip.gate_role"] == "promotion"
    assert logged.tags["medklip.gate_fingerprint"] == metrics["promotion"]["fingerprint"]
    assert logged.metrics["gate_mean_auc"] == pytest.approx(metrics["promotion"]["mean_auc"])
    evaluation = {a.path for a in client().list_artifacts(tracked["run_id"], "evaluation")}
    expected = {"metrics.json", "predictions.parquet", "auc_per_entity.png", "roc_curve.png", "loss_curve.png"}
    expected.add("gate_predictions.parquet")
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
def gate_of(out: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ids, scores, labels, groups) of an evaluation folder's promotion split."""
    return (*read_predictions(out / "gate_predictions.parquet"), read_groups(out / "gate_predictions.parquet"))


def perfect(labels: np.ndarray) -> np.ndarray:
    return np.where(labels == 1, 0.9, 0.1) + np.random.default_rng(0).uniform(0, 0.05, labels.shape)


def evaluated_run(
    tracked, scores: np.ndarray, tags: dict | None = None, out: Path | None = None, gate: bool = True,
    prevalence: dict | None = None, test_scores: np.ndarray | None = None,
) -> str:  # fmt: skip
    """A run with its own logged model (the tracked weights) and the evaluation of `out` (default the tracked one)
    with `scores` as its promotion-split predictions, tagged as `medklip evaluate` tags it; `gate=False`: as an
    evaluation from before split roles (test predictions only)."""
    from medklip.evaluation.metrics import mean_auc

    out = out or tracked["out"]
    metrics = json.loads((out / "metrics.json").read_text())
    mlflow_client = client()
    run_id = mlflow_client.create_run(tracking.experiment_id(mlflow_client)).info.run_id
    log_model(mlflow_client, run_id, tracked["weights"])
    folder = tracked["root"] / run_id
    test_ids, tracked_test_scores, test_labels = read_predictions(out / "predictions.parquet")
    test_scores = tracked_test_scores if test_scores is None else test_scores
    write_predictions(folder / "predictions.parquet", test_ids, test_scores, test_labels)
    mlflow_client.log_artifact(run_id, str(folder / "predictions.parquet"), "evaluation")
    mlflow_client.log_metric(run_id, "mean_auc", mean_auc(test_scores, test_labels))
    run_tags = {key: value for key, value in client().get_run(tracked["run_id"]).data.tags.items()
                if key.startswith(("medklip.data_", "medklip.split_"))}  # fmt: skip
    run_tags.update({f"medklip.eval_{key}": str(value) for key, value in metrics["evaluation_data"].items()})
    if gate:
        ids, _, labels, groups = gate_of(out)
        write_predictions(folder / "gate_predictions.parquet", ids, scores, labels, groups)
        mlflow_client.log_artifact(run_id, str(folder / "gate_predictions.parquet"), "evaluation")
        mlflow_client.log_metric(run_id, "gate_mean_auc", mean_auc(scores, labels))
        promotion = metrics["promotion"]
        run_tags.update(
            {f"medklip.gate_{key}": str(promotion[key] or "") for key in ("dir", "split", "role", "reason")}
        )
        run_tags.update(
            {"medklip.gate_n": str(len(ids)), "medklip.gate_fingerprint": evaluation_fingerprint(ids, labels)}
        )
    for key, value in {**run_tags, **(tags or {})}.items():
        mlflow_client.set_tag(run_id, key, value)
    if prevalence is not None:
        tracking.log_prevalence(mlflow_client, run_id, prevalence)
    return run_id


def test_gate_first_version_is_champion_then_only_a_significantly_better_one_replaces_it(tracked):
    name = "gate-test"
    _, scores, labels, _ = gate_of(tracked["out"])
    first = registry.register(tracked["run_id"], name, n_resamples=200)
    assert first["alias"] == "champion" and "no champion" in first["reason"]

    # Identical promotion-split predictions: not better, however good its test split looks (test decides nothing).
    _, _, test_labels = read_predictions(tracked["out"] / "predictions.parquet")
    same = registry.register(evaluated_run(tracked, scores, test_scores=perfect(test_labels)), name, n_resamples=200)
    assert same["alias"] == "challenger" and same["report"]["mean_auc"] == 1.0
    assert same["comparison"]["difference"] == 0 and same["comparison"]["ci95"] == [0, 0]
    assert "champion's own evaluation" in same["comparison"]["champion_source"]

    better = registry.register(evaluated_run(tracked, perfect(labels)), name, n_resamples=200)
    assert better["alias"] == "champion", better["reason"]
    assert better["comparison"]["ci95"][0] > 0 and better["comparison"]["resampled"] == "groups"
    assert "on the gate split" in better["reason"]

    versions = {record["version"]: record for record in registry.list_versions(name)}
    assert versions[3]["aliases"] == ["challenger", "champion"] and versions[1]["aliases"] == []
    tags = versions[2]["tags"]
    assert tags["gate.decision"] == "challenger" and float(tags["gate.difference"]) == 0
    assert tags["gate.champion_version"] == "1" and "does not beat the margin" in tags["gate.reason"]
    assert (tags["gate.split"], tags["gate.split_role"], tags["gate.outcome"]) == ("gate", "promotion", "compared")
    assert (tags["report.split"], tags["report.role"], tags["report.used_by_decision"]) == ("test", "report", "false")
    assert float(tags["report.mean_auc"]) == 1.0 and tags["gate.n_images"] == str(len(labels))
    assert tags["gate.training_contact"].count("verified: no gate image or patient") == 2
    card = client().download_artifacts(versions[3]["run_id"], "registry/model_card_v3.md", str(tracked["root"]))
    text = Path(card).read_text()
    assert "Decision: champion" in text and "| difference |" in text and "## Report (used by no decision)" in text
    assert "| compared on | gate split (role promotion)" in text
    assert client().get_model_version(name, "3").description == text
    first_card = client().download_artifacts(tracked["run_id"], "registry/model_card_v1.md", str(tracked["root"]))
    assert "Per-entity AUC" in Path(first_card).read_text()  # from the run's evaluation/metrics.json

    # The champion loads by alias and predicts on a radiograph.
    pyfunc = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    probabilities = pyfunc.predict(pd.DataFrame({"image": [tracked["sample"].read_bytes()]}))
    assert probabilities.shape == (1, 75) and ((probabilities >= 0) & (probabilities <= 1)).all().all()


def test_gate_scores_the_champion_on_the_challengers_gate_split_when_it_was_evaluated_elsewhere(tracked):
    name = "gate-rescore"
    _, scores, labels, _ = gate_of(tracked["out"])
    registry.register(evaluated_run(tracked, scores, {"medklip.gate_fingerprint": "some other data"}), name)
    decision = registry.register(evaluated_run(tracked, perfect(labels)), name, n_resamples=200)
    assert "scored here" in decision["comparison"]["champion_source"]
    assert "(gate split)" in decision["comparison"]["champion_source"]
    # The champion, scored here, is the tracked model: its predictions on the gate split are the tracked ones.
    assert decision["comparison"]["mean_auc_b"] == pytest.approx(
        client().get_run(tracked["run_id"]).data.metrics["gate_mean_auc"]
    )
    assert decision["alias"] == "champion"

    unreadable = {"medklip.gate_fingerprint": "x", "medklip.gate_dir": str(tracked["root"] / "gone")}
    registry.register(evaluated_run(tracked, scores, unreadable), "gate-unreadable")
    gone = {"medklip.gate_dir": str(tracked["root"] / "gone")}
    stuck = registry.register(evaluated_run(tracked, perfect(labels), gone), "gate-unreadable")
    assert stuck["alias"] == "challenger" and stuck["outcome"] == "not compared"
    assert stuck["reason"].startswith("not compared: the champion (version 1) was not evaluated on the challenger's")


def test_the_gate_refuses_the_test_split_and_val_when_a_gate_split_exists_and_stores_why(tracked):
    name = "gate-roles"
    _, scores, labels, _ = gate_of(tracked["out"])
    registry.register(evaluated_run(tracked, scores), name)
    # Perfect predictions claimed to be on the promotion split, but the manifest says test's role is report.
    on_test = evaluated_run(tracked, perfect(labels), {"medklip.gate_split": "test", "medklip.gate_role": "promotion"})
    refused = registry.register(on_test, name, n_resamples=100)
    assert (refused["alias"], refused["outcome"], refused["comparison"]) == ("challenger", "refused", None)
    assert refused["reason"] == (
        "refused: the comparison split 'test' has the role report: the test split is reported, never used by a decision"
    )
    on_val = {"medklip.gate_split": "val", "medklip.gate_role": "selection", "medklip.gate_reason": "val is fine"}
    refused = registry.register(evaluated_run(tracked, perfect(labels), on_val), name, n_resamples=100)
    assert refused["outcome"] == "refused" and "'val' has the role selection: it chose model_best" in refused["reason"]
    old = registry.register(evaluated_run(tracked, perfect(labels), gate=False), name, n_resamples=100)
    assert old["outcome"] == "refused" and "no promotion-split predictions" in old["reason"]
    assert "the test split never decides" in old["reason"]

    tags = client().get_model_version(name, str(refused["version"])).tags
    assert tags["gate.outcome"] == "refused" and tags["gate.reason"] == refused["reason"]
    assert str(client().get_model_version_by_alias(name, "champion").version) == "1"  # nothing was promoted
    assert "refused:" in client().get_model_version(name, str(old["version"])).description


@pytest.fixture(scope="module")
def legacy(tracked, tmp_path_factory) -> dict:
    """The tracked folder as an older release wrote it: no gate split (its gate rows are train rows there), no split
    roles, format 2; with the tracked weights evaluated on it (not logged)."""
    import shutil

    root = tmp_path_factory.mktemp("legacy")
    shutil.copytree(tracked["data"], root / "data", ignore=shutil.ignore_patterns("source"))
    table = pd.read_parquet(root / "data/reports.parquet").drop(columns=["split_group"])
    table["split"] = table["split"].replace("gate", "train")
    table.to_parquet(root / "data/reports.parquet", index=False)
    manifest = json.loads((root / "data/manifest.json").read_text())
    for key in ("split_roles", "grouping"):
        del manifest[key]
    manifest["format"] = "medklip-prepared/2"
    manifest["splits"] = table["split"].value_counts().to_dict()
    (root / "data/manifest.json").write_text(json.dumps(manifest))
    flags = ["--data", str(root / "data"), "--out", str(root / "results"), "--resamples", "50", "--no-mlflow"]
    assert main(["evaluate", "--weights", str(tracked["weights"]), *flags]) == 0
    return {"data": root / "data", "out": root / "results", "fingerprint": manifest["fingerprint"]}


def test_a_folder_without_a_gate_split_gates_on_val_with_the_reason_stored(tracked, legacy):
    name = "gate-legacy"
    promotion = json.loads((legacy["out"] / "metrics.json").read_text())["promotion"]
    assert (promotion["split"], promotion["role"]) == ("val", "selection") and "older release" in promotion["reason"]
    _, scores, labels, _ = gate_of(legacy["out"])
    registry.register(evaluated_run(tracked, scores, out=legacy["out"]), name)
    decision = registry.register(evaluated_run(tracked, perfect(labels), out=legacy["out"]), name, n_resamples=200)
    assert decision["outcome"] == "compared" and decision["split"]["split"] == "val"
    assert "on the val split" in decision["reason"] and "optimistic" in decision["reason"]
    tags = client().get_model_version(name, str(decision["version"])).tags
    assert tags["gate.split"] == "val" and "has no gate split" in tags["gate.split_reason"]
    assert "no gate image or patient is in the challenger's train split" in tags["gate.training_contact"]


def test_the_gate_refuses_when_the_champions_training_data_holds_gate_images(tracked, legacy):
    name = "gate-contact"
    _, scores, labels, _ = gate_of(tracked["out"])
    # The champion was trained on the legacy folder, whose train split holds every one of today's gate images.
    trained_on_gate = {"medklip.data_dir": str(legacy["data"]), "medklip.data_fingerprint": legacy["fingerprint"]}
    registry.register(evaluated_run(tracked, scores, trained_on_gate), name)
    decision = registry.register(evaluated_run(tracked, perfect(labels)), name, n_resamples=100)
    assert decision["outcome"] == "refused" and decision["alias"] == "challenger"
    assert f"{len(labels)} gate images" in decision["reason"] and "the champion's training data" in decision["reason"]
    assert str(client().get_model_version_by_alias(name, "champion").version) == "1"


def shifted_labels(n: int, effusion: float) -> np.ndarray:
    labels = np.zeros((n, 75), dtype=np.int8)
    labels[: round(effusion * n), ENTITIES.index("effusion")] = 1
    labels[: n // 5, ENTITIES.index("edema")] = 1  # 20% in both
    return labels


def test_label_drift_since_the_champions_training_data_is_tabled_plotted_and_named_in_the_reason(tracked):
    name = "gate-drift"
    _, scores, labels, _ = gate_of(tracked["out"])
    before, after = label_prevalence(shifted_labels(400, 0.10)), label_prevalence(shifted_labels(500, 0.35))
    registry.register(evaluated_run(tracked, scores, prevalence=before), name)
    challenger = evaluated_run(tracked, perfect(labels), prevalence=after)
    decision = registry.register(challenger, name, n_resamples=200, drift_threshold=0.05)
    shift = decision["drift"]["shift"]
    assert shift["moved"] == ["effusion"] and shift["rows"][0]["difference"] == pytest.approx(0.25)
    assert shift["rows"][0]["p_value"] < 1e-10 and (shift["n_reference"], shift["n_current"]) == (400, 500)
    assert decision["alias"] == "champion"  # drift is reported, it does not decide
    assert "; label drift: 1 entity's prevalence moved by more than 0.05" in decision["reason"]
    assert "effusion 0.100 -> 0.350" in decision["reason"]
    tags = client().get_model_version(name, str(decision["version"])).tags
    assert tags["gate.drift_moved"] == "effusion" and "effusion" in tags["gate.drift"]
    stored = {a.path for a in client().list_artifacts(challenger, "registry")}
    version = decision["version"]
    assert {f"registry/drift_v{version}.{ext}" for ext in ("json", "csv", "png")} <= stored
    table = client().download_artifacts(challenger, f"registry/drift_v{version}.csv", str(tracked["root"]))
    assert Path(table).read_text().splitlines()[1].startswith("effusion,0.1,0.35,0.25,")
    assert "## Label drift" in decision["model_card"]
    assert "| effusion | 0.1000 | 0.3500 | +0.2500 |" in decision["model_card"]


def test_manual_promotion_is_recorded_and_needs_a_reason(tracked, monkeypatch):
    name = "gate-manual"
    _, scores, _, _ = gate_of(tracked["out"])
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
    _, scores, _, _ = gate_of(tracked["out"])
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
