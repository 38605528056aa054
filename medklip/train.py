"""Train MedKLIP: one entry point for 1 process, N GPUs, or M nodes.

    medklip train --data data/demo --config demo --epochs 12 --batch-size 32 --lr 5e-4 --save checkpoints
    python -m medklip.train --data data/demo --config debug --save checkpoints          # the same
    torchrun --standalone --nproc-per-node 4 -m medklip.train --data DIR --config base --save ckpt   # 4 GPUs
    torchrun --nnodes 2 --node-rank 0 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29400 \\
        -m medklip.train --data DIR --config base --save ckpt                               # node 0 of 2

`--data` is a folder from `medklip data prepare` with `triplets.parquet` from `medklip extract --data DIR`. Training
uses its `train` split and validates on `val` every epoch (mean AUC over entities with both classes). Running the
same command again resumes from `<save>/last.json`; with `--deterministic`, a run killed at any moment and restarted
with the same world size ends with the bytes of an uninterrupted one (`medklip.training.trainer` says how), so
torchrun's `--max-restarts` is safe. Only rank 0 writes. A bad flag, config, data folder or checkpoint is one line
on stderr and exit status 2, before any work where it can be.

The command tracks the run in MLflow (`MLFLOW_TRACKING_URI`, else the local store `./mlruns/`; `--no-mlflow` to
skip): rank 0 creates the run, writes its id to `<save>/mlflow_run_id` (a resumed run logs into the same MLflow run),
and logs params, per-step loss, per-epoch metrics and the best model; see `medklip.tracking.runs`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import yaml

from medklip.config import Config, list_presets, load_config
from medklip.data.sources import DataError
from medklip.evaluation.metrics import mean_auc
from medklip.training.checkpoints import CheckpointError
from medklip.training.trainer import train

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medklip train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, help="prepared folder with triplets.parquet")
    parser.add_argument("--config", default="demo", help=f"preset ({', '.join(list_presets())}) or a YAML file")
    parser.add_argument("--save", default="checkpoints", help="checkpoint folder (resumed if it holds last.json)")
    parser.add_argument("--epochs", type=int, help="train.epochs")
    parser.add_argument("--batch-size", type=int, help="train.batch_size (per process)")
    parser.add_argument("--lr", type=float, help="train.lr")
    parser.add_argument("--seed", type=int, help="train.seed")
    parser.add_argument("--num-workers", type=int, help="train.num_workers")
    parser.add_argument("--max-steps", type=int, help="train.max_steps")
    parser.add_argument("--amp", choices=("auto", "bf16", "off"), help="train.amp")
    parser.add_argument("--text-encoder", help="model.text_encoder: Hub id, local folder or package:<pkg>")
    parser.add_argument("--deterministic", action="store_true", default=None, help="train.deterministic")
    parser.add_argument(
        "--no-mlflow", action="store_true", help="do not track (default: MLFLOW_TRACKING_URI, else ./mlruns)"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="any config key, e.g. --set model.d_model=64"
    )
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    overrides = {
        "train.epochs": args.epochs,
        "train.batch_size": args.batch_size,
        "train.lr": args.lr,
        "train.seed": args.seed,
        "train.num_workers": args.num_workers,
        "train.max_steps": args.max_steps,
        "train.amp": args.amp,
        "train.deterministic": args.deterministic,
        "model.text_encoder": args.text_encoder,
    }
    for item in args.set:
        key, _, value = item.partition("=")
        if not key or not _:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key] = yaml.safe_load(value)  # numbers, booleans and lists as in the preset files
    return load_config(args.config, overrides)


def main(argv: list[str] | None = None) -> int:
    """Trains; a bad input, config or checkpoint is one line on stderr and exit status 2, never a traceback."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    try:
        return _train(args)
    except (CheckpointError, DataError, ValueError) as error:
        print(f"medklip train: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2


def _check_data(data_dir: str) -> None:
    """The checks that need no training: a prepared folder with its triplets (DataError naming what is missing)."""
    from medklip.data.prepare import PreparedData

    data = PreparedData(data_dir)
    if not (data.root / "triplets.parquet").is_file():
        raise DataError(f"{data.root / 'triplets.parquet'} not found: run `medklip extract --data {data.root}` first")


def _train(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    _check_data(args.data)  # before any tracking: a bad input leaves no FAILED run behind
    run = None
    if os.environ.get("RANK", "0") == "0" and not args.no_mlflow:  # only rank 0 talks to MLflow
        from medklip.tracking.runs import TrackingError, TrainingRun

        try:
            run = TrainingRun.start(args.save, config, args.data, world_size=int(os.environ.get("WORLD_SIZE", "1")))
        except TrackingError as error:
            print(f"medklip train: error: {error}", file=sys.stderr)
            return error.exit_code
    try:
        result = train(config, args.data, args.save, run, validation_score=mean_auc)
    except BaseException as error:
        if run is not None:
            for problem in run.finish(None, failed=f"{type(error).__name__}: {error}"):
                logger.warning("MLflow: %s", problem)
        raise
    if run is not None:
        problems = run.finish(Path(args.save) / "model_best.safetensors")
        for problem in problems:
            logger.warning("MLflow: %s", problem)
        result.update(mlflow_run_id=run.run_id, mlflow_problems=problems)
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
