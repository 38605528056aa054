"""Evaluate a checkpoint: metrics.json with confidence intervals, plots, attention heatmaps, grounding.

    medklip evaluate --weights checkpoints/demo/model_best.safetensors --data data/demo-test [--out results]
    medklip evaluate --weights W --data DIR --split test            # the default split
    medklip evaluate --weights W --labels chestxray14.csv --label-map chestxray14 --out results/cxr14

On a prepared folder (`--data`), labels come from its `triplets.parquet`; thresholds for F1 and accuracy are chosen on
the folder's `val` split and applied to `--split` (default `test`), never tuned on the scored split. The split roles
(`medklip.data.prepare.SPLIT_ROLES`) are kept: `--split` is the report, and the folder's promotion split (`gate`, or
`val` with the reason for folders without one) is scored as well into `gate_predictions.parquet`, the only
predictions the registry's gate compares. The mean AUC interval resamples whole patients (split groups). Writes to
`--out`:

    metrics.json          mean_auc (over entities with both classes; how many) with a bootstrap CI, accuracy, n_test,
                          per_entity {auc, auc_ci95, f1, threshold, n_pos, n_neg, brier, ece, reason for any null},
                          grounding (pointing game, synthetic data)
    auc_per_entity.png    AUCs with 95% bootstrap whiskers, sorted, n_pos shown
    roc_curve.png         ROC curves of the findings with the most positives
    loss_curve.png        from the training history beside the weights (history.jsonl), when there is one
    pointing_game.png     grounding per finding against the patch grid's ceiling (synthetic data)
    heatmaps/             cross-attention of the top findings over sample test images
    predictions.parquet   per test image: id, group (hashed patient / split group), the 75 probabilities and labels
    gate_predictions.parquet  the same for the promotion split (what the registry's gate compares); metrics.json's
                          `promotion` says which split, its role, size, fingerprint and mean AUC

On synthetic data (a folder with `truth.csv`), `grounding` reports the pointing game: how often the attention peak
of a rendered finding falls inside its lesion box, and `attainable`: the share of boxes that hold some patch's peak
pixel at all, the ceiling of any attention map on the model's patch grid (see `medklip.model.grounding`).

With `--labels`, an external label set (ChestX-ray14 style `Finding Labels` column, or CheXpert style one column per
class) is scored zero-shot through a label map; its rows are split by a hash of the patient into 20% for choosing
thresholds and 80% for scoring (`zero_shot_split`): the patient is a `Patient ID` / `patient_id` / `subject_id` /
`study_id` column, else `patientNNN` in the image path (CheXpert), else, stated in `metrics["threshold_split"]`, the
image path itself.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from medklip.config import PRESETS_DIR
from medklip.data.dataset import CXRDataset, make_loader
from medklip.data.prepare import PreparedData, hashed_groups, promotion_split
from medklip.data.sources import DataError, read_reports_csv
from medklip.training.checkpoints import load_model, read_header
from medklip.vocabulary import ENTITIES

logger = logging.getLogger(__name__)

LABEL_MAPS_DIR = PRESETS_DIR / "label_maps"
GATE_PREDICTIONS = "gate_predictions.parquet"


@torch.no_grad()
def score_split(model, dataset: CXRDataset, batch_size: int = 64, truth: pd.DataFrame | None = None, progress=False):
    """(probabilities (N, 75), rows (N,), grounding hits) over a dataset; hits only when `truth` is given."""
    from medklip.model.grounding import attention_heatmaps, pointing_game_from_truth

    loader, _ = make_loader(dataset, batch_size, shuffle=False, num_workers=0)
    probabilities, rows, grounding = [], [], []
    table = dataset.data.table
    for batch in tqdm(loader, desc=f"evaluate {dataset.split or 'all'}", unit="batch", disable=not progress or None):
        outputs = model(batch["image"], return_attention=truth is not None)
        probabilities.append(torch.sigmoid(outputs["exist_logits"].float()).numpy())
        rows.append(batch["row"].numpy())
        if truth is not None:
            # Boxes are in source pixels; the model saw the whole image resized to S x S.
            picked = table.iloc[batch["row"].numpy()]
            heights, widths = picked["source_height"], picked["source_width"]
            sizes = {i: (int(h), int(w)) for i, h, w in zip(picked["id"], heights, widths, strict=True)}
            maps = attention_heatmaps(outputs["attention"], dataset.image_size)
            tokens = outputs["attention"].shape[-1]
            grounding.append(pointing_game_from_truth(maps, picked["id"].to_numpy(), truth, sizes, tokens=tokens))
    return np.concatenate(probabilities), np.concatenate(rows), grounding


def predict_split(weights: str | Path, data_dir: str | Path, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, probabilities (N, 75), labels (N, 75)) of a weights file on a prepared folder's split ("all": all rows)."""
    from medklip.labels.extract import load_labels

    model = load_model(weights)
    data = PreparedData(data_dir)
    dataset = CXRDataset(data, None if split == "all" else split, model.config.image_size)
    scores, rows, _ = score_split(model, dataset)
    ids = data.table["id"].astype(str).to_numpy()[rows]
    return ids, scores, load_labels(data)["existence"][rows]


def _promotion(model, data: PreparedData, labels: np.ndarray, split: str, out: Path, n_resamples: int) -> dict:
    """Scores the folder's promotion split into `gate_predictions.parquet`; `metrics["promotion"]`."""
    from medklip.evaluation.metrics import bootstrap_mean_auc

    gate_split, reason = promotion_split(data)
    record = {"split": gate_split, "role": data.split_roles.get(gate_split), "reason": reason,
              "dir": str(data.root.resolve())}  # fmt: skip
    if split in (gate_split, "all"):
        return {**record, "n": 0, "skipped": f"--split {split} already scores the promotion split's images"}
    dataset = CXRDataset(data, gate_split, model.config.image_size)
    if len(dataset) == 0:
        return {**record, "n": 0, "skipped": f"the {gate_split} split is empty"}
    scores, rows, _ = score_split(model, dataset)
    ids = data.table["id"].astype(str).to_numpy()[rows]
    groups = hashed_groups(data.split_groups()[rows])
    mean, low, high = bootstrap_mean_auc(scores, labels[rows], n_resamples, groups=groups)
    write_predictions(out / GATE_PREDICTIONS, ids, scores, labels[rows], groups)
    return {
        **record,
        "n": len(ids),
        "n_groups": len(set(groups)),
        "fingerprint": evaluation_fingerprint(ids, labels[rows]),
        "mean_auc": None if np.isnan(mean) else float(mean),
        "mean_auc_ci95": None if np.isnan(low) else [float(low), float(high)],
    }


def evaluate_folder(
    weights: str | Path,
    data_dir: str | Path,
    out: str | Path,
    split: str = "test",
    n_resamples: int = 1000,
    n_heatmaps: int = 8,
    progress: bool = False,
    threshold_data: str | Path | None = None,
) -> dict:
    """`medklip evaluate --data`: scores `split` ("all" for every row), thresholds from the `val` split of
    `threshold_data` (default: the same folder); returns the metrics dict it writes."""
    from medklip.evaluation.metrics import evaluate_predictions
    from medklip.labels.extract import load_labels
    from medklip.model.grounding import merge_pointing_results

    model = load_model(weights)
    data = PreparedData(data_dir)
    labels = load_labels(data)["existence"]
    size = model.config.image_size
    truth_path = data.root / "truth.csv"
    truth = pd.read_csv(truth_path) if truth_path.is_file() else None
    threshold_folder = PreparedData(threshold_data) if threshold_data else data
    if split == "all" and threshold_folder.root.resolve() == data.root.resolve():
        raise DataError("--split all scores the val split too: give --threshold-data (e.g. the training folder)")
    test = CXRDataset(data, None if split == "all" else split, size)
    val = CXRDataset(threshold_folder, "val", size)
    if len(test) == 0:
        raise DataError(f"{data_dir}: the {split!r} split is empty")
    if len(val) == 0:
        raise DataError(f"{threshold_folder.root}: no 'val' split to choose thresholds on (never the scored split)")
    val_labels = labels if threshold_folder is data else load_labels(threshold_folder)["existence"]
    test_scores, test_rows, grounding = score_split(model, test, truth=truth, progress=progress)
    val_scores, val_rows, _ = score_split(model, val, progress=progress)
    groups = hashed_groups(data.split_groups()[test_rows])
    metrics = evaluate_predictions(
        test_scores, labels[test_rows], val_scores, val_labels[val_rows], n_resamples=n_resamples, groups=groups
    )
    metrics["thresholds_data"] = str(threshold_folder.root)
    metrics["split"] = split
    metrics["weights"] = str(weights)
    metrics["grounding"] = merge_pointing_results(grounding) if truth is not None else None
    if metrics["grounding"] is not None:  # a pointing game of a model whose attention learnt from boxes says so
        metrics["grounding"]["train_boxes"] = read_header(weights)[0].train.boxes
    ids = data.table["id"].astype(str).to_numpy()[test_rows]
    metrics["evaluation_data"] = {
        "dir": str(data.root.resolve()),
        "split": split,
        "role": data.split_roles.get(split, "all splits" if split == "all" else None),
        "n": len(ids),
        "fingerprint": evaluation_fingerprint(ids, labels[test_rows]),
    }
    out = Path(out)
    (out / GATE_PREDICTIONS).unlink(missing_ok=True)  # never a stale one from an earlier evaluation into `out`
    out.mkdir(parents=True, exist_ok=True)
    metrics["promotion"] = _promotion(model, data, labels, split, out, n_resamples)
    metrics["grouping"] = data.manifest.get("grouping")
    _write_outputs(metrics, test_scores, labels[test_rows], out, Path(weights).parent / "history.jsonl")
    write_predictions(out / "predictions.parquet", ids, test_scores, labels[test_rows], groups)
    _write_heatmaps(model, test, test_scores, test_rows, out / "heatmaps", n_heatmaps)
    return metrics


def evaluation_fingerprint(ids: np.ndarray, labels: np.ndarray) -> str:
    """sha256 of the scored images' ids and labels, in id order: equal fingerprints mean the same evaluation data."""
    order = np.argsort(ids, kind="stable")
    digest = hashlib.sha256("\n".join(ids[order]).encode())
    digest.update(np.ascontiguousarray(labels[order], dtype=np.int8).tobytes())
    return digest.hexdigest()


def write_predictions(
    path: Path, ids: np.ndarray, scores: np.ndarray, labels: np.ndarray, groups: np.ndarray | None = None
) -> None:
    """`predictions.parquet`: id, group (hashed split group: the patient, when the source names one), then
    `prob:<entity>` and `label:<entity>` for the 75 entities (what the registry's promotion gate compares)."""
    columns = {"id": ids}
    if groups is not None:
        columns["group"] = np.asarray(groups, dtype=str)
    columns.update({f"prob:{entity}": scores[:, i].astype(np.float32) for i, entity in enumerate(ENTITIES)})
    columns.update({f"label:{entity}": labels[:, i].astype(np.int8) for i, entity in enumerate(ENTITIES)})
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(columns).to_parquet(path, index=False)


def read_groups(path: str | Path) -> np.ndarray | None:
    """(N,) the `group` column of a `predictions.parquet`, in row order; None for files written without one."""
    table = pd.read_parquet(path)
    return table["group"].astype(str).to_numpy() if "group" in table.columns else None


def read_predictions(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids (N,), scores (N, 75), labels (N, 75)) from a `predictions.parquet`."""
    table = pd.read_parquet(path)
    missing = [f"prob:{entity}" for entity in ENTITIES if f"prob:{entity}" not in table.columns]
    if "id" not in table.columns or missing:
        raise DataError(f"{path}: not a predictions file from `medklip evaluate` (missing {missing[:3] or ['id']})")
    scores = table[[f"prob:{entity}" for entity in ENTITIES]].to_numpy(np.float64)
    labels = table[[f"label:{entity}" for entity in ENTITIES]].to_numpy(np.int8)
    return table["id"].astype(str).to_numpy(), scores, labels


def _write_outputs(metrics: dict, scores: np.ndarray, labels: np.ndarray, out: Path, history: Path) -> None:
    from medklip.evaluation.plots import plot_auc_per_entity, plot_loss_curve, plot_pointing_game, plot_roc_curves

    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    plot_auc_per_entity(metrics["per_entity"], out / "auc_per_entity.png")
    plot_roc_curves(scores, labels, out / "roc_curve.png")
    if metrics.get("grounding"):
        plot_pointing_game(metrics["grounding"], out / "pointing_game.png")
    if history.is_file():
        records = [json.loads(line) for line in history.read_text().splitlines() if line.strip()]
        if records:
            plot_loss_curve(records, out / "loss_curve.png")


@torch.no_grad()
def _write_heatmaps(model, dataset: CXRDataset, scores: np.ndarray, rows: np.ndarray, folder: Path, count: int) -> None:
    """Attention overlays of the 3 most likely findings for the first `count` test images; `index.csv` beside them
    names each file's report id (ids become file names through `medklip.safe_paths.file_name`)."""
    from medklip.evaluation.predict import ranked_findings, write_overlays

    table = dataset.data.table
    positions = {int(row): i for i, row in enumerate(dataset.row_numbers)}
    listed = []
    for row, row_scores in list(zip(rows, scores, strict=True))[: max(count, 0)]:
        batch = dataset.__getitems__([positions[int(row)]])
        attention = model(batch["image"], return_attention=True)["attention"][0]
        pixels = batch["image"][0, 0].numpy()
        indices = ranked_findings(model, row_scores, 3)
        report_id = str(table["id"].iat[int(row)])
        for path in write_overlays(attention, pixels, row_scores, report_id, indices, folder):
            listed.append({"id": report_id, "file": Path(path).name})
    if listed:
        pd.DataFrame(listed).to_csv(folder / "index.csv", index=False)


# --- zero-shot on external label sets ---------------------------------------------------------------------------
def load_label_map(name: str | Path) -> dict[str, str]:
    """{external label: entity} from `configs/label_maps/<name>.csv` or a CSV path (columns label,entity)."""
    path = Path(name)
    if not path.suffix:
        path = LABEL_MAPS_DIR / f"{name}.csv"
    if not path.is_file():
        shipped = sorted(p.stem for p in LABEL_MAPS_DIR.glob("*.csv"))
        raise DataError(f"label map {name!r} not found; shipped maps: {shipped}, or give a CSV with label,entity")
    table = read_reports_csv(path, required=("label", "entity"))
    unknown = sorted(set(table["entity"]) - set(ENTITIES))
    if unknown:
        raise DataError(f"{path}: entities not among the 75: {unknown}")
    return dict(zip(table["label"], table["entity"], strict=True))


def external_labels(table: pd.DataFrame, label_map: dict[str, str]) -> np.ndarray:
    """(N, L) labels in {1, 0, -1} for the map's labels: ChestX-ray14 `Finding Labels` or CheXpert columns."""
    names = list(label_map)
    if "Finding Labels" in table.columns:  # "Effusion|Mass" or "No Finding"
        findings = table["Finding Labels"].fillna("").map(lambda text: set(text.split("|")))
        return np.array([[int(name in found) for name in names] for found in findings], dtype=np.int8)
    missing = [name for name in names if name not in table.columns]
    if missing:
        raise DataError(f"label columns {missing} not in the labels file (columns: {list(table.columns)})")
    values = table[names].apply(pd.to_numeric, errors="coerce")  # CheXpert: 1, 0, -1 uncertain, blank unmentioned
    return values.fillna(-1).clip(-1, 1).astype(np.int8).to_numpy()


PATIENT_COLUMNS = ("Patient ID", "patient_id", "PatientID", "subject_id", "study_id")
PATIENT_IN_PATH = re.compile(r"(?:^|/)(patient\d+)(?:/|$)")  # CheXpert: .../patient64541/study1/view1_frontal.jpg


def patient_keys(table: pd.DataFrame) -> tuple[pd.Series, str | None]:
    """(key per row, what it is) of an external label set: the first `PATIENT_COLUMNS` column present, else
    `patientNNN` in every image path, else (what None says) the image path itself."""
    images = table["image"].astype(str).str.replace("\\", "/", regex=False)
    column = next((name for name in PATIENT_COLUMNS if name in table.columns), None)
    if column is not None:
        keys = table[column].astype(str).str.strip()
        return keys.where(keys != "", "image:" + images), f"column {column!r}"  # an empty cell: that image alone
    found = images.str.extract(PATIENT_IN_PATH)[0]
    if len(images) and found.notna().all():
        return found, "patientNNN in the image path"
    return "image:" + images, None


def zero_shot_split(table: pd.DataFrame, val_share: int = 5) -> tuple[np.ndarray, dict]:
    """(in_val (N,) bool, description) of an external label set: 1 in `val_share` patients chooses thresholds, so
    one patient's images all land on one side (`patient_keys`); `description["fallback"]` says when it could not."""
    keys, grouped_by = patient_keys(table)
    in_val = np.array([int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % val_share == 0 for key in keys])
    description = {
        "grouped_by": grouped_by or "image path",
        "fallback": None if grouped_by else "no patient id (no patient column, no patientNNN in the paths): split by "
        "image, so one patient's images may sit on both sides",
        "n_groups": int(keys.nunique()),
        "n_groups_val": int(keys[in_val].nunique()),
    }  # fmt: skip
    return in_val, description


def evaluate_labels(
    weights: str | Path, labels_csv: str | Path, label_map: str, out: str | Path, n_resamples: int = 1000
) -> dict:
    """`medklip evaluate --labels`: zero-shot scores of an external label set (see the module docstring)."""
    from medklip.evaluation.metrics import evaluate_predictions
    from medklip.evaluation.predict import predict_files

    labels_csv = Path(labels_csv)
    mapping = load_label_map(label_map)
    table = read_reports_csv(labels_csv, required=("image",))
    labels = external_labels(table, mapping)
    paths = [str(labels_csv.parent / image) for image in table["image"]]
    model = load_model(weights)
    results = predict_files(model, paths)
    readable = np.array([result.error is None for result in results])
    columns = [ENTITIES.index(entity) for entity in mapping.values()]
    scores = np.zeros((len(results), len(columns)))
    for row, result in enumerate(results):
        if result.probabilities:
            scores[row] = [result.probabilities[ENTITIES[column]] for column in columns]
    in_val, threshold_split = zero_shot_split(table)
    val, test = readable & in_val, readable & ~in_val
    patients = hashed_groups(patient_keys(table)[0])
    metrics = evaluate_predictions(
        scores[test], labels[test], scores[val], labels[val], entities=list(mapping), n_resamples=n_resamples,
        groups=patients[test],
    )  # fmt: skip
    metrics["threshold_split"] = threshold_split
    metrics["label_map"] = {label: entity for label, entity in mapping.items()}
    metrics["unreadable"] = [result.error for result in results if result.error]
    metrics["n_val"] = int(val.sum())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    from medklip.evaluation.plots import plot_auc_per_entity

    plot_auc_per_entity(metrics["per_entity"], out / "auc_per_entity.png")
    return metrics
