"""Does the `demo` preset learn? Train on 2,000 synthetic images, score 400 images of another seed.

    python benchmarks/demo_learns.py [--workdir /tmp/demo-learns] [--epochs 12]

Prepares `synthetic://2000?seed=0` and `synthetic://400?seed=99`, extracts triplets from both (rules), trains the
`demo` preset with `medklip train` (timed), and scores `model_best.safetensors` on the 400 unseen images:

- `mean_auc_extracted`: mean AUC over entities with both classes, labels from the extracted triplets (-1 masked),
  the way `medklip evaluate` scores real data;
- `mean_auc_findings`: mean AUC over the synthetic findings the generator renders (cardiomegaly, effusion,
  pneumothorax, consolidation, opacity, atelectasis, edema, nodule, mass and the devices), image-level labels from
  `truth.csv` (1 = rendered, 0 = not), over all 400 images.

Target (issue): at least 0.90, with training in at most 10 minutes on a 2-core CPU. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from medklip.checkpoint import load_model
from medklip.data import CXRDataset, make_loader
from medklip.entities import ENTITIES
from medklip.evaluation_metrics import mean_auc
from medklip.train import load_labels, predict

FINDINGS = (
    "cardiomegaly", "effusion", "pneumothorax", "consolidation", "opacity", "atelectasis", "edema", "nodule", "mass",
    "tube", "line", "catheter", "picc", "pacemaker", "lead",
)  # fmt: skip


def medklip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "medklip.cli", *args], check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="/tmp/demo-learns")
    parser.add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
    args = parser.parse_args()
    work = Path(args.workdir)
    for name, uri in (("train", "synthetic://2000?seed=0"), ("test", "synthetic://400?seed=99")):
        medklip("data", "prepare", "--source", uri, "--out", str(work / name))
        medklip("extract", "--data", str(work / name))
    command = [sys.executable, "-m", "medklip.train", "--data", str(work / "train"), "--config", "demo"]
    command += ["--save", str(work / "checkpoints")] + (["--epochs", str(args.epochs)] if args.epochs else [])
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    minutes = (time.perf_counter() - started) / 60

    model = load_model(work / "checkpoints/model_best.safetensors")
    test = CXRDataset(work / "test", split=None, image_size=model.config.image_size)
    loader, _ = make_loader(test, 64, shuffle=False, num_workers=0)
    probabilities, rows = predict(model, loader, torch.device("cpu"), None)
    extracted = load_labels(test.data)["existence"][rows]
    truth = pd.read_csv(work / "test/truth.csv")
    rendered = truth[truth["x0"].notna()].groupby("id")["entity"].apply(set)
    ids = test.data.table["id"].to_numpy()[rows]
    image_labels = np.array([[int(entity in rendered.get(i, set())) for entity in ENTITIES] for i in ids])
    per_finding = {
        name: round(
            float(roc_auc_score(image_labels[:, ENTITIES.index(name)], probabilities[:, ENTITIES.index(name)])), 4
        )
        for name in FINDINGS
        if 0 < image_labels[:, ENTITIES.index(name)].sum() < len(ids)
    }
    result = {
        "mean_auc_extracted": round(mean_auc(probabilities, extracted), 4),
        "mean_auc_findings": round(float(np.mean(list(per_finding.values()))), 4),
        "per_finding_auc": per_finding,
        "train_minutes": round(minutes, 2),
        "n_test": len(rows),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
