"""`prepare`: bad input is skipped with a reason or converted and kept; reruns do no work; bad CSVs fail clearly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medklip.data.prepare import PrepareConfig, PreparedData, assign_splits, prepare
from medklip.data.sources import DataError, open_source
from tests.helpers import GOOD_REPORT, radiograph, write_clean_folder, write_reports

KEPT = {"good", "rgb", "sixteen_bit", "rgba", "palette", "cmyk", "large"}
SKIPPED = {
    "empty": "empty file",
    "truncated": "corrupt or truncated",
    "not_image": "not an image",
    "missing": "missing file",
    "tiny": "tiny image",
    "no_report": "no report text",
}


def test_messy_folder_keeps_convertible_and_skips_bad_with_reasons(messy_folder, tmp_path):
    out = tmp_path / "prepared"
    manifest = prepare(f"folder://{messy_folder}", out, PrepareConfig(workers=2))
    assert manifest["n_images"] == len(KEPT)
    reasons = {item["id"]: item["reason"] for item in manifest["skipped"]}
    for identifier, reason in SKIPPED.items():
        assert reasons[identifier].startswith(reason), (identifier, reasons[identifier])
    assert [item for item in manifest["skipped"] if item["reason"] == "duplicate id"] == [
        {"id": "good", "path": "images/rgb.jpg", "reason": "duplicate id"}
    ]
    assert manifest["n_skipped"] == len(SKIPPED) + 1
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["n_images"] == manifest["n_images"] and on_disk["fingerprint"] == manifest["fingerprint"]

    data = PreparedData(out)
    assert set(data.table["id"]) == KEPT
    for row, entry in data.table.iterrows():
        image = data.image(row)
        assert image.dtype == np.uint8 and min(image.shape) == 256, entry["id"]
        assert image.std() > 5, f"{entry['id']} lost its content"
    large = data.table.index[data.table["id"] == "large"][0]
    assert data.image(large).shape == (320, 256)  # 4000 x 3200 resized, aspect kept


def test_pixels_match_direct_decoding(clean_folder, tmp_path):
    prepare(f"folder://{clean_folder}", tmp_path / "out", PrepareConfig(workers=1, short_side=128))
    data = PreparedData(tmp_path / "out")
    source = np.asarray(Image.open(clean_folder / "images/0003.png"))
    expected = np.asarray(Image.fromarray(source).resize((128, 140), Image.Resampling.BILINEAR, reducing_gap=2.0))
    row = data.table.index[data.table["id"] == "case0003"][0]
    assert np.array_equal(data.image(row), expected)


def test_second_prepare_does_no_work_and_changes_redo_it(clean_folder, tmp_path):
    out = tmp_path / "out"
    first = prepare(f"folder://{clean_folder}", out, PrepareConfig(workers=1))
    shard = out / first["shards"][0]
    stamp = shard.stat().st_mtime_ns
    again = prepare(f"folder://{clean_folder}", out, PrepareConfig(workers=1))
    assert again["reused"] is True and shard.stat().st_mtime_ns == stamp

    Image.fromarray(radiograph(300, 300, seed=99)).save(clean_folder / "images/0000.png")  # an edited image
    redone = prepare(f"folder://{clean_folder}", out, PrepareConfig(workers=1))
    assert "reused" not in redone and redone["fingerprint"] != first["fingerprint"]
    resized = prepare(f"folder://{clean_folder}", out, PrepareConfig(workers=1, short_side=128))
    assert "reused" not in resized and PreparedData(out).image(0).shape[1] == 128


def test_missing_column_names_the_file(tmp_path):
    write_reports(tmp_path, [{"id": "a", "image": "a.png"}], columns=("id", "image", "findings"))
    with pytest.raises(DataError, match=r"reports\.csv: missing column\(s\) \['impression'\]"):
        open_source(f"folder://{tmp_path}", workdir=tmp_path)


def test_wrong_encoding_names_the_file(tmp_path):
    (tmp_path / "reports.csv").write_bytes(
        "id,image,findings,impression\na,a.png,Épanchement pleural,\n".encode("latin-1")
    )
    with pytest.raises(DataError, match=r"reports\.csv: not valid UTF-8"):
        open_source(f"folder://{tmp_path}", workdir=tmp_path)


def test_unknown_scheme_and_missing_folder_are_clear(tmp_path):
    with pytest.raises(DataError, match="unknown source"):
        open_source("ftp://somewhere", workdir=tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        open_source(f"folder://{tmp_path}/nope", workdir=tmp_path)


def test_all_images_bad_is_an_error_not_an_empty_dataset(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    (source / "x.png").write_bytes(b"")
    write_reports(source, [{"id": "x", "image": "x.png", **GOOD_REPORT}])
    with pytest.raises(DataError, match="no usable images"):
        prepare(f"folder://{source}", tmp_path / "out", PrepareConfig(workers=1))
    assert not (tmp_path / "out/manifest.json").exists()


def test_splits_are_stable_when_data_grows_and_follow_fractions():
    keys = [f"id:{i}" for i in range(5000)]
    hashes = [f"h{i}" for i in range(5000)]
    splits = assign_splits(keys, hashes, 0.1, 0.2, seed=0)
    counts = pd.Series(splits).value_counts(normalize=True)
    assert abs(counts["val"] - 0.1) < 0.02 and abs(counts["test"] - 0.2) < 0.02
    grown = assign_splits(keys + ["id:new"], hashes + ["hnew"], 0.1, 0.2, seed=0)
    assert grown[:5000] == splits
    assert assign_splits(keys, hashes, 0.1, 0.2, seed=1) != splits


def test_rows_sharing_a_report_stay_together_unless_boilerplate():
    keys = ["id:a", "id:b", "id:c"] + [f"id:n{i}" for i in range(200)]
    hashes = ["study", "study", "study"] + ["boilerplate"] * 200
    splits = assign_splits(keys, hashes, 0.3, 0.3, seed=0)
    assert len(set(splits[:3])) == 1  # three views of one study
    assert len(set(splits[3:])) == 3  # "No acute process." from 200 patients spreads over all splits
    grouped = assign_splits(["group:p1", "group:p1", "group:p2"], ["x", "y", "z"], 0.3, 0.3, seed=0)
    assert grouped[0] == grouped[1]


def test_study_id_column_groups_rows(tmp_path):
    source = tmp_path / "source"
    (source / "images").mkdir(parents=True)
    rows = []
    for i in range(40):
        Image.fromarray(radiograph(100, 100, seed=i)).save(source / f"images/{i}.png")
        rows.append({"id": f"r{i}", "image": f"images/{i}.png", "findings": f"Report {i}.", "study_id": f"s{i // 4}"})
    write_reports(source, rows, columns=("id", "image", "findings", "impression", "study_id"))
    prepare(f"folder://{source}", tmp_path / "out", PrepareConfig(workers=1, val_fraction=0.3, test_fraction=0.3))
    table = PreparedData(tmp_path / "out").table
    table["study"] = [f"s{int(identifier[1:]) // 4}" for identifier in table["id"]]
    assert (table.groupby("study")["split"].nunique() == 1).all()
    assert table["split"].nunique() > 1


def test_huggingface_source_from_a_locally_saved_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    import io

    def png(seed: int, size=(200, 180)) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(radiograph(*size, seed=seed)).save(buffer, format="PNG")
        return buffer.getvalue()

    rows = {
        "image": [
            {"bytes": png(0), "path": None},
            {"bytes": png(1), "path": None},
            {"bytes": png(1), "path": None},  # exact duplicate row (same image)
            {"bytes": b"broken", "path": None},
            {"bytes": png(3), "path": None},
        ],
        "findings": ["Small left effusion.", "", "", "Clear lungs.", None],
        "impression": ["Effusion.", "Cardiomegaly.", "Cardiomegaly.", "Normal.", "No acute process."],
    }
    features = datasets.Features(
        {"image": datasets.Image(), "findings": datasets.Value("string"), "impression": datasets.Value("string")}
    )
    saved = tmp_path / "mimic-like"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows, features=features)}).save_to_disk(str(saved))

    manifest = prepare(f"hf://{saved}?split=train", tmp_path / "out", PrepareConfig(workers=1))
    assert manifest["n_images"] == 3
    assert sorted(item["reason"].split(":")[0] for item in manifest["skipped"]) == ["duplicate id", "not an image"]
    table = PreparedData(tmp_path / "out").table
    assert set(table["impression"]) == {"Effusion.", "Cardiomegaly.", "No acute process."}
    assert table["findings"].tolist().count("") == 2  # empty and missing findings are kept as empty text
    assert prepare(f"hf://{saved}?split=train", tmp_path / "out", PrepareConfig(workers=1))["reused"] is True
    with pytest.raises(DataError, match="no split 'test'"):
        open_source(f"hf://{saved}?split=test", workdir=tmp_path)


def test_prepared_folder_is_required(tmp_path):
    with pytest.raises(DataError, match="not a prepared data folder"):
        PreparedData(Path(tmp_path))


def several_images_per_patient(source: Path, patients: int = 30, per_patient: int = 4, column: str = "patient_id"):
    """A folder source where every patient has several images with reports of their own (distinct texts, so the
    shared-report fallback cannot be what keeps them together)."""
    (source / "images").mkdir(parents=True)
    rows = []
    for patient in range(patients):
        for view in range(per_patient):
            name = f"images/p{patient}-{view}.png"
            Image.fromarray(radiograph(80, 80, seed=patient * 10 + view)).save(source / name)
            rows.append({"id": f"p{patient}-{view}", "image": name, "findings": f"Study {view} of patient {patient}.",
                         column: f"P{patient:03d}"})  # fmt: skip
    write_reports(source, rows, columns=("id", "image", "findings", "impression", column))
    return rows


def test_no_patient_crosses_a_split_and_the_manifest_names_the_key_and_the_roles(tmp_path):
    several_images_per_patient(tmp_path / "source")
    config = PrepareConfig(workers=1, short_side=64, val_fraction=0.2, test_fraction=0.2, gate_fraction=0.2)
    manifest = prepare(f"folder://{tmp_path / 'source'}", tmp_path / "out", config)
    table = PreparedData(tmp_path / "out").table
    table["patient"] = table["id"].str.split("-").str[0]
    assert (table.groupby("patient")["split"].nunique() == 1).all()  # every patient in exactly one split
    assert set(table["split"]) == {"train", "val", "gate", "test"}
    assert manifest["split_roles"] == {"train": "training", "val": "selection", "gate": "promotion", "test": "report"}
    assert manifest["grouping"] == {"key": "patient_id", "n_groups": 30, "n_images_grouped_by_key": 120,
                                    "n_images_by_fallback": 0, "fallback": None}  # fmt: skip
    assert manifest["splits"] == table["split"].value_counts().reindex(["train", "val", "gate", "test"]).to_dict()
    assert PreparedData(tmp_path / "out").split_roles["gate"] == "promotion"


def test_patient_groups_before_study_and_a_source_without_either_says_it_fell_back(tmp_path):
    rows = several_images_per_patient(tmp_path / "both", patients=20, per_patient=3)
    for row in rows:
        row["study_id"] = row["id"]  # one study per image: grouping by study would let patients cross splits
    write_reports(tmp_path / "both", rows, columns=("id", "image", "findings", "impression", "patient_id", "study_id"))
    config = PrepareConfig(workers=1, short_side=64, val_fraction=0.3, test_fraction=0.3)
    manifest = prepare(f"folder://{tmp_path / 'both'}", tmp_path / "out-both", config)
    assert manifest["grouping"]["key"] == "patient_id" and manifest["grouping"]["n_groups"] == 20
    table = PreparedData(tmp_path / "out-both").table
    assert (table.groupby(table["id"].str.split("-").str[0])["split"].nunique() == 1).all()

    bare = prepare(f"folder://{write_clean_folder(tmp_path / 'bare', 12)}", tmp_path / "out-bare", config)
    assert bare["grouping"]["key"] is None and bare["grouping"]["n_images_by_fallback"] == 12
    assert "image id" in bare["grouping"]["fallback"]


def test_a_gate_split_takes_train_rows_only_and_keeps_val_and_test_as_they_were():
    keys = [f"group:p{i}" for i in range(4000)]
    hashes = [f"h{i}" for i in range(4000)]
    without = assign_splits(keys, hashes, 0.1, 0.1, seed=0)
    with_gate = assign_splits(keys, hashes, 0.1, 0.1, seed=0, gate_fraction=0.15)
    moved = [(a, b) for a, b in zip(without, with_gate, strict=True) if a != b]
    assert moved and set(moved) == {("train", "gate")}
    assert abs(with_gate.count("gate") / 4000 - 0.15) < 0.02
    with pytest.raises(ValueError, match="gate_fraction"):
        PrepareConfig(val_fraction=0.4, test_fraction=0.4, gate_fraction=0.2)


def test_a_folder_prepared_before_gate_splits_still_reads_and_names_val_with_the_reason(clean_folder, tmp_path):
    from medklip.data.prepare import promotion_split

    prepare(f"folder://{clean_folder}", tmp_path / "out", PrepareConfig(workers=1, gate_fraction=0.0))
    assert promotion_split(PreparedData(tmp_path / "out"))[0] == "val"  # a gate fraction of 0: no gate split
    manifest = json.loads((tmp_path / "out/manifest.json").read_text())
    for key in ("split_roles", "grouping"):
        del manifest[key]
    manifest["format"] = "medklip-prepared/2"
    (tmp_path / "out/manifest.json").write_text(json.dumps(manifest))
    table = pd.read_parquet(tmp_path / "out/reports.parquet").drop(columns=["split_group"])
    table.to_parquet(tmp_path / "out/reports.parquet")
    old = PreparedData(tmp_path / "out")
    assert old.split_roles == {"train": "training", "val": "selection", "test": "report"}
    assert len(old.rows("gate")) == 0 and len(old.split_groups()) == len(old)
    split, reason = promotion_split(old)
    assert split == "val" and "older release (medklip-prepared/2)" in reason and "optimistic" in reason
