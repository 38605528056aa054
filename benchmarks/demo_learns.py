"""Does the `demo` preset learn, and where does it look? Train on 2,000 synthetic images, score 400 of another seed.

    python benchmarks/demo_learns.py [--workdir /tmp/demo-learns] [--epochs 12] [--images 2000] [--boxes 0.1]
        [--set train.amp=bf16 ...] [--no-baseline]

Prepares `synthetic://2000?seed=0` (`--images` changes the count) and `synthetic://400?seed=99`, extracts triplets
from both (rules), trains the `demo` preset with `medklip train` (timed), and scores `model_best.safetensors` on the
400 unseen images:

- `mean_auc_extracted`: mean AUC over entities with both classes, labels from the extracted triplets (-1 masked),
  the way `medklip evaluate` scores real data;
- `mean_auc_findings`: mean AUC over the synthetic findings the generator renders (cardiomegaly, effusion,
  pneumothorax, consolidation, opacity, atelectasis, edema, nodule, mass and the devices), image-level labels from
  `truth.csv` (1 = rendered, 0 = not), over all 400 images;
- `pointing_game`: how often the layer-averaged cross-attention of a rendered finding peaks inside its lesion box
  (`medklip evaluate`'s grounding), with `pointing_game_attainable`, the most any map on the model's patch grid could
  score (16 x 16 for `demo`; 8 x 8 for the baseline).

`--boxes F` trains with location supervision (`train.boxes`, `medklip.data.boxes`): the `truth.csv` boxes of a random
share F of the training split's images (seed 0) go to `<workdir>/train-boxes.csv`, the rest keep image labels only;
the test images' boxes are never trained on. The JSON then has `boxed_train_images`.

The baseline, in the same run: MedKLIP's architecture (`model.patch_stride=16`, `model.attention_token_norm=false`,
`model.attention_sink=false`), trained and scored the same way (`--no-baseline` skips it and halves the time).
Targets (issues): mean AUC at least 0.90 with training in at most 10 minutes on a 2-core CPU; pointing game at
least 0.8. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from medklip.data.dataset import CXRDataset
from medklip.evaluation.evaluate import score_split
from medklip.evaluation.metrics import mean_auc
from medklip.labels.extract import load_labels
from medklip.model.grounding import merge_pointing_results
from medklip.training.checkpoints import load_model
from medklip.vocabulary import ENTITIES

FINDINGS = (
    "cardiomegaly", "effusion", "pneumothorax", "consolidation", "opacity", "atelectasis", "edema", "nodule", "mass",
    "tube", "line", "catheter", "picc", "pacemaker", "lead",
)  # fmt: skip


def medklip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "medklip.cli", *args], check=True, stdout=subprocess.DEVNULL)


def train_and_score(work: Path, name: str, epochs: int | None, *settings: str) -> dict:
    """Trains `demo` into work/name (timed) and scores its best weights on work/test."""
    command = [sys.executable, "-m", "medklip.train", "--data", str(work / "train"), "--config", "demo"]
    command += ["--save", str(work / name), "--no-mlflow"] + (["--epochs", str(epochs)] if epochs else [])
    for setting in settings:
        command += ["--set", setting]
    shutil.rmtree(work / name, ignore_errors=True)  # train from scratch: an old run there would be resumed
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    minutes = (time.perf_counter() - started) / 60

    model = load_model(work / name / "model_best.safetensors")
    test = CXRDataset(work / "test", split=None, image_size=model.config.image_size)
    truth = pd.read_csv(work / "test/truth.csv")
    probabilities, rows, grounding = score_split(model, test, truth=truth)
    extracted = load_labels(test.data)["existence"][rows]
    rendered = truth[truth["x0"].notna()].groupby("id")["entity"].apply(set)
    ids = test.data.table["id"].to_numpy()[rows]
    image_labels = np.array([[int(entity in rendered.get(i, set())) for entity in ENTITIES] for i in ids])
    columns = {finding: ENTITIES.index(finding) for finding in FINDINGS}
    per_finding = {
        finding: round(float(roc_auc_score(image_labels[:, column], probabilities[:, column])), 4)
        for finding, column in columns.items()
        if 0 < image_labels[:, column].sum() < len(ids)
    }
    pointing = merge_pointing_results(grounding)
    return {
        "mean_auc_extracted": round(mean_auc(probabilities, extracted), 4),
        "mean_auc_findings": round(float(np.mean(list(per_finding.values()))), 4),
        "pointing_game": round(pointing["overall"], 4),
        "pointing_game_attainable": round(pointing["attainable"], 4),
        "n_lesions": pointing["n"],
        "per_finding_auc": per_finding,
        "per_finding_pointing_game": {
            entity: round(values["hit_rate"], 3) for entity, values in pointing["per_entity"].items()
        },
        "train_minutes": round(minutes, 2),
        "n_test": len(rows),
    }


def write_train_boxes(work: Path, share: float) -> tuple[Path, int]:
    """The truth boxes of a random `share` of the train split's images (seed 0) as a boxes CSV; (path, images)."""
    table = pd.read_parquet(work / "train/reports.parquet", columns=["id", "split"])
    ids = table.loc[table["split"] == "train", "id"].to_numpy()
    chosen = np.random.default_rng(0).permutation(ids)[: round(share * len(ids))]
    truth = pd.read_csv(work / "train/truth.csv")
    path = work / "train-boxes.csv"
    truth[truth["id"].isin(set(chosen))].to_csv(path, index=False)
    return path, len(chosen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="/tmp/demo-learns")
    parser.add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
    parser.add_argument("--images", type=int, default=2000, help="synthetic training images (the issue's 2,000)")
    parser.add_argument("--boxes", type=float, default=0.0, help="share of train images with boxes (0: none)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the reference decoder")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides for both")
    args = parser.parse_args()
    if not 0 <= args.boxes <= 1:
        parser.error(f"--boxes is a share of the training images, in [0, 1]; got {args.boxes}")
    work = Path(args.workdir)
    for name, uri in (("train", f"synthetic://{args.images}?seed=0"), ("test", "synthetic://400?seed=99")):
        medklip("data", "prepare", "--source", uri, "--out", str(work / name))
        medklip("extract", "--data", str(work / name))
    result: dict = {"train_images": args.images}
    settings: tuple[str, ...] = tuple(args.set)
    if args.boxes:
        boxes, result["boxed_train_images"] = write_train_boxes(work, args.boxes)
        settings += (f"train.boxes={boxes}",)
    if settings:
        result["settings"] = list(settings)
    result.update(train_and_score(work, "checkpoints", args.epochs, *settings))
    if not args.no_baseline:
        reference = ("model.patch_stride=16", "model.attention_token_norm=false", "model.attention_sink=false")
        baseline = train_and_score(work, "checkpoints-reference", args.epochs, *reference, *settings)
        result["baseline_reference"] = {key: value for key, value in baseline.items() if "per_" not in key}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
