"""Evaluate a checkpoint: metrics.json with confidence intervals, plots, attention heatmaps, grounding.

    medklip evaluate --weights checkpoints/demo/model_best.safetensors --data data/demo-test [--out results]
    medklip evaluate --weights W --data DIR --split test            # the default split
    medklip evaluate --weights W --labels chestxray14.csv --label-map chestxray14 --out results/cxr14

On a prepared folder (`--data`), labels come from its `triplets.parquet`; thresholds for F1 and accuracy are chosen on
the folder's `val` split and applied to `--split` (default `test`), never tuned on the scored split. Writes to `--out`:

    metrics.json          mean_auc (over entities with both classes; how many) with a bootstrap CI, accuracy, n_test,
                          per_entity {auc, auc_ci95, f1, threshold, n_pos, n_neg, brier, ece, reason for any null},
                          grounding (pointing game, synthetic data)
    auc_per_entity.png    AUCs with 95% bootstrap whiskers, sorted, n_pos shown
    roc_curve.png         ROC curves of the findings with the most positives
    loss_curve.png        from the training history beside the weights (history.jsonl), when there is one
    pointing_game.png     grounding per finding against the patch grid's ceiling (synthetic data)
    heatmaps/             cross-attention of the top findings over sample test images
    predictions.parquet   per test image: id, the 75 probabilities and labels (the registry's gate compares these)

On synthetic data (a folder with `truth.csv`), `grounding` reports the pointing game: how often the attention peak
of a rendered finding falls inside its lesion box, and `attainable`: the share of boxes that hold some patch's peak
pixel at all, the ceiling of any attention map on the model's patch grid (see `medklip.model.grounding`).

With `--labels`, an external label set (ChestX-ray14 style `Finding Labels` column, or CheXpert style one column per
class) is scored zero-shot through a label map; its rows are split by a hash of the image path into 20% for choosing
thresholds and 80% for scoring.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from medklip.config import PRESETS_DIR
from medklip.data.dataset import CXRDataset, make_loader
from medklip.data.prepare import PreparedData
from medklip.data.sources import DataError, read_reports_csv
from medklip.training.checkpoints import load_model, read_header
from medklip.vocabulary import ENTITIES

logger = logging.getLogger(__name__)

LABEL_MAPS_DIR = PRESETS_DIR / "label_maps"


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
    metrics = evaluate_predictions(
        test_scores, labels[test_rows], val_scores, val_labels[val_rows], n_resamples=n_resamples
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
        "n": len(ids),
        "fingerprint": evaluation_fingerprint(ids, labels[test_rows]),
    }
    out = Path(out)
    _write_outputs(metrics, test_scores, labels[test_rows], out, Path(weights).parent / "history.jsonl")
    write_predictions(out / "predictions.parquet", ids, test_scores, labels[test_rows])
    _write_heatmaps(model, test, test_scores, test_rows, out / "heatmaps", n_heatmaps)
    return metrics


def evaluation_fingerprint(ids: np.ndarray, labels: np.ndarray) -> str:
    """sha256 of the scored images' ids and labels, in id order: equal fingerprints mean the same evaluation data."""
    order = np.argsort(ids, kind="stable")
    digest = hashlib.sha256("\n".join(ids[order]).encode())
    digest.update(np.ascontiguousarray(labels[order], dtype=np.int8).tobytes())
    return digest.hexdigest()


def write_predictions(path: Path, ids: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> None:
    """`predictions.parquet`: id, then `prob:<entity>` and `label:<entity>` for the 75 entities (what the registry's
    promotion gate compares two models on)."""
    columns = {"id": ids}
    columns.update({f"prob:{entity}": scores[:, i].astype(np.float32) for i, entity in enumerate(ENTITIES)})
    columns.update({f"label:{entity}": labels[:, i].astype(np.int8) for i, entity in enumerate(ENTITIES)})
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(columns).to_parquet(path, index=False)


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
    in_val = np.array([int(hashlib.sha256(path.encode()).hexdigest()[:8], 16) % 5 == 0 for path in paths])
    val, test = readable & in_val, readable & ~in_val
    metrics = evaluate_predictions(
        scores[test], labels[test], scores[val], labels[val], entities=list(mapping), n_resamples=n_resamples
    )
    metrics["label_map"] = {label: entity for label, entity in mapping.items()}
    metrics["unreadable"] = [result.error for result in results if result.error]
    metrics["n_val"] = int(val.sum())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    from medklip.evaluation.plots import plot_auc_per_entity

    plot_auc_per_entity(metrics["per_entity"], out / "auc_per_entity.png")
    return metrics
