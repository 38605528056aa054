"""`medklip evaluate` and `medklip predict` end to end, on a model trained here on synthetic data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from medklip.cli import main
from medklip.data.sources import DataError
from medklip.evaluation.evaluate import load_label_map, read_groups, read_predictions, zero_shot_split
from tests.helpers import prepared_synthetic

pytestmark = pytest.mark.slow
SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cxr-samples"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("evaluate")
    prepared_synthetic(root / "data", 96, seed=5, size=96, val=0.25, test=0.25)
    assert main(["train", "--data", str(root / "data"), "--config", "debug", "--save", str(root / "ckpt")]) == 0
    return root / "data", root / "ckpt/model_best.safetensors"


def valid_png(path: Path) -> bool:
    with Image.open(path) as image:
        image.verify()
    return path.stat().st_size > 1000


def test_evaluate_writes_metrics_plots_heatmaps_and_grounding(trained, tmp_path, capsys):
    data, weights = trained
    out = tmp_path / "results"
    assert (
        main(["evaluate", "--weights", str(weights), "--data", str(data), "--out", str(out), "--resamples", "200"]) == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"mean_auc", "accuracy", "n_test", "per_entity"} <= metrics.keys()
    assert metrics["n_test"] == int((pd.read_parquet(data / "reports.parquet")["split"] == "test").sum())
    per_entity = metrics["per_entity"]
    assert len(per_entity) == 75
    for entity, values in per_entity.items():
        if values["auc"] is None:
            assert values["reason"], entity  # never a silent null, never a fake 0.5
        else:
            low, high = values["auc_ci95"]
            assert 0 <= low <= values["auc"] <= high <= 1
    scored = [v["auc"] for v in per_entity.values() if v["auc"] is not None]
    assert metrics["mean_auc"] == pytest.approx(sum(scored) / len(scored))
    assert 0 <= metrics["grounding"]["overall"] <= 1 and metrics["grounding"]["n"] > 0
    assert metrics["grounding"]["train_boxes"] is None  # image labels only: not a location-supervised model
    for name in ("auc_per_entity.png", "roc_curve.png", "loss_curve.png", "pointing_game.png"):
        assert valid_png(out / name), name
    heatmaps = sorted((out / "heatmaps").glob("*.png"))
    assert heatmaps and valid_png(heatmaps[0])
    assert "mean AUC" in capsys.readouterr().out

    # The report split (test) and the promotion split (gate) are scored apart: the gate compares only the latter.
    table = pd.read_parquet(data / "reports.parquet")
    assert metrics["evaluation_data"]["role"] == "report"
    promotion = metrics["promotion"]
    assert (promotion["split"], promotion["role"], promotion["reason"]) == ("gate", "promotion", None)
    ids, scores, _ = read_predictions(out / "gate_predictions.parquet")
    assert promotion["n"] == len(ids) == int((table["split"] == "gate").sum()) > 0
    assert set(ids) == set(table.loc[table["split"] == "gate", "id"])
    assert set(ids).isdisjoint(read_predictions(out / "predictions.parquet")[0])
    groups = read_groups(out / "gate_predictions.parquet")
    assert len(groups) == len(ids) and all(len(group) == 16 for group in groups)  # hashed: no patient id in artifacts
    assert metrics["mean_auc_ci_resampled"] == "groups"


def test_predict_on_real_radiographs_with_a_bad_file_among_them(trained, tmp_path, capsys):
    if not SAMPLES.is_dir():
        pytest.skip(f"{SAMPLES} is not present beside the repository")
    _, weights = trained
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    images = [str(path) for path in sorted(SAMPLES.glob("*.png"))] + [str(bad)]
    code = main(["predict", "--weights", str(weights), *images, "--json", "--heatmap", str(tmp_path / "maps")])
    captured = capsys.readouterr()
    results = json.loads(captured.out)
    assert code == 1 and "notes.png" in captured.err
    assert [r["image"] for r in results] == images
    for result in results[:-1]:
        assert len(result["probabilities"]) == 75
        assert all(0 <= p <= 1 for p in result["probabilities"].values())
        assert result["top_findings"] and result["top_findings"][0]["positions"]
        assert all(valid_png(Path(path)) for path in result["heatmaps"])
    assert "not an image" in results[-1]["error"] and "probabilities" not in results[-1]


def test_predict_says_each_bad_file_once(trained, tmp_path, capsys):
    data, weights = trained
    good = sorted((data / "source").rglob("*.png"))[0]
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    code = main(["predict", "--weights", str(weights), str(good), str(bad)])
    captured = capsys.readouterr()
    assert code == 1
    assert (captured.out + captured.err).count("notes.png") == 1, captured
    assert captured.err.strip().startswith("medklip predict: ") and str(good) in captured.out


def test_zero_shot_on_a_chestxray14_style_label_set(trained, tmp_path):
    data, weights = trained
    source = data / "source"
    truth = pd.read_csv(source / "truth.csv")
    rendered = truth[truth["x0"].notna()].groupby("id")["entity"].apply(set)
    names = {"effusion": "Effusion", "cardiomegaly": "Cardiomegaly", "atelectasis": "Atelectasis"}
    rows = []
    for image in sorted((source / "images").glob("*.png")):
        found = [names[e] for e in sorted(rendered.get(image.stem, set())) if e in names]
        shutil.copy(image, tmp_path / image.name)
        rows.append({"image": image.name, "Finding Labels": "|".join(found) or "No Finding"})
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    out = tmp_path / "cxr14"
    command = ["evaluate", "--weights", str(weights), "--labels", str(tmp_path / "labels.csv")]
    assert main([*command, "--label-map", "chestxray14", "--out", str(out), "--resamples", "100"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["per_entity"]) == set(load_label_map("chestxray14"))
    assert metrics["label_map"]["Fibrosis"] == "tail_abnorm_obs"
    assert metrics["per_entity"]["Fibrosis"]["auc"] is None  # no positives in this set: not a fake number
    assert metrics["n_test"] + metrics["n_val"] == len(rows)
    assert metrics["threshold_split"]["grouped_by"] == "image path" and metrics["threshold_split"]["fallback"]


def test_zero_shot_threshold_split_keeps_each_patient_on_one_side():
    # ChestX-ray14 names the patient in a column; CheXpert in the path; without either the split says it is by image.
    images = [f"{patient:08d}_{view:03d}.png" for patient in range(60) for view in range(4)]
    cxr14 = pd.DataFrame({"image": images, "Patient ID": [name[:8] for name in images]})
    in_val, description = zero_shot_split(cxr14)
    sides = pd.Series(in_val).groupby(cxr14["Patient ID"]).nunique()
    assert (sides == 1).all() and 0 < in_val.sum() < len(images)  # no patient on both sides, both sides used
    assert description["grouped_by"] == "column 'Patient ID'" and description["fallback"] is None
    assert description["n_groups"] == 60

    paths = [f"CheXpert-v1.0/valid/patient{p:05d}/study{s}/view1_frontal.jpg" for p in range(50) for s in (1, 2)]
    chexpert = pd.DataFrame({"image": paths})
    in_val, description = zero_shot_split(chexpert)
    assert (pd.Series(in_val).groupby(chexpert["image"].str.extract(r"(patient\d+)")[0]).nunique() == 1).all()
    assert description["grouped_by"] == "patientNNN in the image path" and description["n_groups"] == 50

    _, description = zero_shot_split(pd.DataFrame({"image": ["a.png", "b.png"]}))
    assert description["grouped_by"] == "image path"
    assert "one patient's images may sit on both sides" in description["fallback"]


def test_label_maps_ship_and_bad_ones_are_refused(tmp_path):
    assert load_label_map("chexpert")["Pleural Effusion"] == "effusion"
    (tmp_path / "mine.csv").write_text("label,entity\nFoo,not_an_entity\n")
    with pytest.raises(DataError, match="not among the 75"):
        load_label_map(tmp_path / "mine.csv")
    with pytest.raises(DataError, match="shipped maps"):
        load_label_map("mimic")
