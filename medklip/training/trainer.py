"""The training loop: one process of 1..N (DDP), resumable from `<save>/last.json`; the entry point is `medklip.train`.

`Trainer(config, data_dir, save_dir, info, run, validation_score).fit()` trains the `train` split, scores `val` every
epoch with `validation_score(scores, labels)` (the entry point passes `medklip.evaluation.metrics.mean_auc`: training
does not import evaluation), keeps the best model and a resumable training state. Only rank 0 writes.

Split roles (`medklip.data.prepare.SPLIT_ROLES`): training reads `train` (to learn) and `val` (to choose model_best
and for early stopping) and nothing else: the `gate` split, which the registry's promotion gate compares on, and
`test`, which is only reported, are never opened here. Selection by `val_mean_auc` (the default) refuses a val split
that is empty or where no entity has both classes, rather than keep the first epoch silently; `train.select_by=
train_loss` is the explicit option for data without a usable val split (model_best is then the lowest training loss).

Resume, exactly. A run killed at any moment and started again with the same command ends with the same weights as a
run never interrupted (byte for byte with `--deterministic`), because:

- what is saved is explicit (`Trainer.checkpoint`): the weights with their buffers, the optimizer, the scheduler and
  `Progress` (step, epoch, micro-batches done in the epoch, best score, the epoch's running loss sums), written
  atomically by rank 0 at optimizer-step boundaries only (never inside an accumulation window);
- randomness needs no saving: every stream is derived from where training stands. The epoch's order is
  `DistributedSampler`'s permutation of (seed, epoch) for every world size, resumed at the micro-batch where it
  stopped; augmentation and box masks are drawn from (seed, epoch, image); dropout from (seed, rank, epoch,
  micro-batch), reseeded before each micro-batch, and so are the loss's negatives. Creating loaders, workers
  or validation passes therefore shifts nothing;
- an epoch uses whole optimizer steps: the leftover micro-batches (`len(loader) % grad_accumulation`) are dropped by
  design, so no gradient crosses an epoch;
- restore checks that the run has the same shape (world size, batch size, accumulation, seed, train images) and
  refuses otherwise; it drops history lines of epochs the checkpoint has not completed (they are recomputed);
- a resumed run takes the knowledge embeddings from the checkpoint's weights: it needs no text encoder, and a
  changed `--text-encoder` cannot change a run halfway.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from medklip.config import Config, to_dict
from medklip.data.augment import AugmentConfig
from medklip.data.boxes import read_boxes
from medklip.data.dataset import CXRDataset, make_loader
from medklip.data.prepare import PreparedData
from medklip.data.sources import DataError
from medklip.labels.extract import load_labels
from medklip.model.losses import MedKLIPLoss
from medklip.model.network import MedKLIP
from medklip.training import distributed
from medklip.training.allocator import keep_freed_memory
from medklip.training.checkpoints import (
    CheckpointError,
    load_training_state,
    remove_partial_writes,
    save_training_state,
    save_weights,
    saved_knowledge,
    verify_weights,
)
from medklip.vocabulary import ENTITIES, seen_entity_indices

logger = logging.getLogger(__name__)

WALL_TIME_FIELDS = ("img_s",)  # history fields that measure time, not training: kept out of model_best's header


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN); the last good checkpoint is kept."""


@dataclass
class Progress:
    """Where training stands: with the weights, optimizer and scheduler, all that a restart needs."""

    step: int = 0  # optimizer steps taken
    epoch: int = 0  # epochs completed
    batch: int = 0  # micro-batches done in the current epoch (a multiple of grad_accumulation at every checkpoint)
    best_score: float | None = None  # the selection score of model_best (higher is better)
    stale_epochs: int = 0  # epochs since model_best last improved
    sums: dict[str, float] = field(default_factory=dict)  # this epoch's running sums of the loss terms
    shape: dict[str, int] = field(default_factory=dict)  # what a restart must match (world size, batch size, ...)


def autocast_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for fp32.

    "auto" is bf16 on GPUs that support it and fp32 on CPUs; "bf16" forces it on a CPU. On an AVX512-BF16 build
    machine bf16 trains `base` about 1.7x faster (`benchmarks/train_epoch.py --precision bf16`: 11.1 vs 6.6 img/s)
    and `demo` learned as well in one seed (`benchmarks/demo_learns.py --set train.amp=bf16`: mean AUC 0.94 vs
    0.88), but an earlier machine with the same flag measured it slower, so "auto" keeps fp32 on CPUs.
    """
    if setting == "off":
        return None
    if setting == "bf16":
        return torch.bfloat16
    if setting != "auto":
        raise ValueError(f"train.amp must be auto, bf16 or off, got {setting!r}")
    return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on weight matrices and kernels, none on biases and norm parameters (ndim < 2)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_lambda(config: Config, total_steps: int):
    """Linear warm-up from min_lr to lr, then cosine to min_lr, as a factor of lr."""
    floor = config.train.min_lr / config.train.lr
    warmup = max(0, min(config.train.warmup_steps, total_steps - 1))

    def factor(step: int) -> float:
        if step < warmup:
            return floor + (1 - floor) * step / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def derived_seed(*parts: int) -> int:
    """A 63-bit seed that is a pure function of `parts` (numpy's SeedSequence hashing)."""
    high, low = np.random.SeedSequence([int(part) for part in parts]).generate_state(2)
    return (int(high) << 32 | int(low)) & ((1 << 63) - 1)


@torch.no_grad()
def predict(model: torch.nn.Module, loader, device: torch.device, dtype: torch.dtype | None) -> tuple[np.ndarray, ...]:
    """(probabilities (N, 75), rows (N,)) over a loader, in eval mode."""
    model.eval()
    probabilities, rows = [], []
    for batch in loader:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(batch["image"].to(device, non_blocking=True))["exist_logits"]
        probabilities.append(torch.sigmoid(logits.float()).cpu().numpy())
        rows.append(batch["row"].numpy())
    return np.concatenate(probabilities), np.concatenate(rows)


def train(
    config: Config,
    data_dir: str | Path,
    save_dir: str | Path,
    run=None,
    *,
    validation_score: Callable[[np.ndarray, np.ndarray], float | None],
) -> dict:
    """Trains (or resumes) and returns {"best_score", "steps", "epochs", ...}. See the module docstring.

    Args:
        run: rank 0's `medklip.tracking.runs.TrainingRun` to log metrics to, or None.
        validation_score: (scores, labels) of the `val` split -> the number that selects `model_best`, or None.
    """
    info = distributed.setup()
    try:
        return Trainer(config, Path(data_dir), Path(save_dir), info, run, validation_score).fit()
    finally:
        distributed.teardown()


class Trainer:
    """One training run: the data, the model and optimizer, and `Progress`. `fit` is the whole loop."""

    def __init__(self, config: Config, data_dir: Path, save_dir: Path, info, run, validation_score):
        self.config, self.save_dir, self.info, self.run = config, save_dir, info, run
        self.validation_score = validation_score
        settings = config.train
        if info.device.type == "cpu":
            keep_freed_memory()  # activations reuse the heap instead of fresh page-faulted mappings every step
        torch.manual_seed(settings.seed)  # model init: the same on every rank (DDP also broadcasts rank 0's)
        if settings.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's deterministic mode (GPUs)
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        self._build_data(PreparedData(data_dir))
        self._build_model()
        self.progress = Progress(shape=self._shape())

    # --- construction -------------------------------------------------------------------------------------------
    def _build_data(self, data: PreparedData) -> None:
        config, settings = self.config, self.config.train
        self.labels = load_labels(data)
        augment = AugmentConfig(
            scale=settings.augment.scale,
            max_rotation=settings.augment.max_rotation,
            brightness=settings.augment.brightness,
            contrast=settings.augment.contrast,
        )
        self.boxes = read_boxes(settings.boxes, data) if settings.boxes else None
        self.train_set = CXRDataset(
            data, "train", config.model.image_size, augment, self.labels, settings.seed, self.boxes,
            config.model.patch_stride,
        )  # fmt: skip
        self.val_set = CXRDataset(data, "val", config.model.image_size, None, self.labels)
        if len(self.train_set) == 0:
            raise DataError(f"{data.root}: the train split is empty")
        if settings.select_by == "val_mean_auc" and len(self.val_set) == 0:
            raise DataError(
                f"{data.root}: the val split is empty, and model_best is chosen on it (train.select_by=val_mean_auc); "
                "prepare with a validation fraction, or choose by training loss with --set train.select_by=train_loss"
            )
        val_labels = self.labels["existence"][self.val_set.row_numbers]
        if settings.select_by == "val_mean_auc" and not ((val_labels == 1).any(0) & (val_labels == 0).any(0)).any():
            # val_mean_auc would be undefined every epoch, and model_best would silently stay the first epoch's.
            raise DataError(
                f"{data.root}: no entity has both a positive and a negative label among the {len(self.val_set)} val "
                "images, so val_mean_auc cannot choose model_best (train.select_by=val_mean_auc); prepare with a "
                "larger validation fraction, or choose by training loss with --set train.select_by=train_loss"
            )
        drop_last = len(self.train_set) >= settings.batch_size * self.info.world_size
        self.loader, self.sampler = make_loader(
            self.train_set, settings.batch_size, True, settings.num_workers, drop_last, settings.seed
        )
        self.steps_per_epoch = len(self.loader) // settings.grad_accumulation
        if self.steps_per_epoch == 0:
            raise DataError(
                f"{data.root}: {len(self.train_set)} train images make {len(self.loader)} batches per process, fewer "
                f"than one optimizer step of {settings.grad_accumulation} (train.grad_accumulation)"
            )
        self.micro_batches = self.steps_per_epoch * settings.grad_accumulation  # the leftover ones are dropped
        self.val_loader, _ = make_loader(self.val_set, settings.batch_size * 2, False, 0, distributed=False)
        train_labels = self.labels["existence"][self.train_set.row_numbers]
        # Stored with the best model: predictions for entities never seen with both labels are not to be trusted.
        self.label_counts = {
            entity: [int((train_labels[:, i] == 1).sum()), int((train_labels[:, i] == 0).sum())]
            for i, entity in enumerate(ENTITIES)
        }
        if self.info.is_main:
            never_present = [ENTITIES[i] for i in np.flatnonzero(~(train_labels == 1).any(0))]
            logger.info(
                "%d train / %d val images; %d labelled (image, entity) pairs; no positive example (they only learn "
                "from negatives) for %d entities: %s",
                len(self.train_set), len(self.val_set), int((train_labels >= 0).sum()), len(never_present),
                ", ".join(never_present),
            )  # fmt: skip

    def _build_model(self) -> None:
        config, settings, info = self.config, self.config.train, self.info
        knowledge = saved_knowledge(self.save_dir)  # a resumed run keeps its embeddings and needs no text encoder
        # A fresh run: every rank encodes the same knowledge (deterministic).
        model = MedKLIP(config.model, *knowledge) if knowledge else MedKLIP.build(config.model)
        model.set_channels_last(settings.channels_last)
        model.set_gradient_checkpointing(settings.gradient_checkpointing)
        self.module = model.to(info.device)
        self.dtype = autocast_dtype(settings.amp, info.device)
        entity_mask = torch.zeros(75, dtype=torch.bool)
        entity_mask[list(seen_entity_indices(config.model.exclude_unseen))] = True
        self.loss_fn = MedKLIPLoss(config.loss, entity_mask, seed=settings.seed).to(info.device)
        fused = info.device.type == "cuda"
        self.optimizer = torch.optim.AdamW(parameter_groups(model, settings.weight_decay), lr=settings.lr, fused=fused)
        self.total_steps = self.steps_per_epoch * settings.epochs
        if settings.max_steps:
            self.total_steps = min(self.total_steps, settings.max_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(config, self.total_steps))
        self.model = self.module
        if info.enabled:
            device_ids = [info.local_rank] if info.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.module, device_ids=device_ids)

    def _shape(self) -> dict[str, int]:
        settings = self.config.train
        return {
            "world_size": self.info.world_size,
            "batch_size": settings.batch_size,
            "grad_accumulation": settings.grad_accumulation,
            "seed": settings.seed,
            "train_images": len(self.train_set),
        }

    # --- what is saved, and restored in the same order ------------------------------------------------------------
    def checkpoint(self) -> None:
        """Rank 0 writes weights (with buffers), optimizer, scheduler and `Progress` as one step folder."""
        if self.info.is_main:
            state = {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "progress": asdict(self.progress),
            }
            save_training_state(self.save_dir, self.module, self.config, state)

    def restore(self) -> None:
        """Loads `last` when there is one: weights, optimizer, scheduler, then `Progress`; checks the run's shape."""
        if self.info.is_main:
            remove_partial_writes(self.save_dir)  # what a kill mid-write left behind; `last` never points there
        distributed.barrier(self.info)
        state = load_training_state(self.save_dir, self.module)
        if state is None:
            return
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if "progress" not in state:
            raise CheckpointError(f"{self.save_dir / 'last.json'}: written by an older release; resume is not possible")
        saved = Progress(**state["progress"])
        for key, value in self._shape().items():
            if saved.shape.get(key) != value:
                raise CheckpointError(
                    f"cannot resume {self.save_dir / 'last.json'}: it was trained with {key} = {saved.shape.get(key)}, "
                    f"this run has {value}, which changes every later batch; rerun with {saved.shape.get(key)} or "
                    "use a new --save folder"
                )
        self.progress = saved
        if self.info.is_main:
            self._check_outputs()
            logger.info("resumed from %s at step %d (epoch %d)", self.save_dir / "last.json", saved.step, saved.epoch)

    def _check_outputs(self) -> None:
        """model_best must be readable once an epoch is done; history keeps only the epochs the state has done."""
        best = self.save_dir / "model_best.safetensors"
        if self.progress.epoch > 0 or best.exists():
            verify_weights(best)
        history = self.save_dir / "history.jsonl"
        if history.exists():
            lines = [line for line in history.read_text().splitlines() if line.strip()]
            kept = [line for line in lines if json.loads(line)["epoch"] <= self.progress.epoch]
            if len(kept) != len(lines):
                history.write_text("".join(line + "\n" for line in kept))

    # --- the loop -----------------------------------------------------------------------------------------------
    def fit(self) -> dict:
        self.restore()
        if self.info.is_main:
            self.save_dir.mkdir(parents=True, exist_ok=True)
            (self.save_dir / "config.json").write_text(json.dumps(to_dict(self.config), indent=2))
        settings = self.config.train
        while self.progress.epoch < settings.epochs and self.progress.step < self.total_steps:
            started, images = time.perf_counter(), self.train_epoch()
            if self.progress.batch < self.micro_batches:  # max_steps reached mid-epoch: resumable from here
                self.checkpoint()
                break
            if self.end_epoch(images * self.info.world_size / max(1e-9, time.perf_counter() - started)):
                break
        p = self.progress
        return {"best_score": p.best_score, "select_by": settings.select_by, "steps": p.step, "epochs": p.epoch}

    def train_epoch(self) -> int:
        """Trains the current epoch from where `Progress` stands to its end (or to max_steps); returns images seen."""
        p, settings = self.progress, self.config.train
        self.sampler.set_epoch(p.epoch, start=p.batch * settings.batch_size)  # its indices carry the epoch
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        images = 0
        bar = tqdm(
            total=self.micro_batches, initial=p.batch, desc=f"epoch {p.epoch + 1}/{settings.epochs}", unit="batch",
            disable=not self.info.is_main or None,  # None: only on a terminal, never in a log
        )  # fmt: skip
        for batch in itertools.islice(self.loader, self.micro_batches - p.batch):
            loss = self.micro_batch(batch)
            images += len(batch["image"])
            bar.update()
            bar.set_postfix(loss=f"{loss:.3f}")
            if p.batch % settings.grad_accumulation == 0:
                self.optimizer_step(loss)
                if p.step >= self.total_steps:
                    break
        bar.close()
        return images

    def micro_batch(self, batch: dict) -> float:
        """Forward and backward of one micro-batch; its dropout and negatives drawn from (seed, rank, epoch, batch)."""
        p, settings, device = self.progress, self.config.train, self.info.device
        address = (settings.seed, self.info.rank, p.epoch, p.batch)
        torch.manual_seed(derived_seed(*address))  # dropout
        last_micro = (p.batch + 1) % settings.grad_accumulation == 0
        sync = contextlib.nullcontext() if last_micro or not self.info.enabled else self.model.no_sync()
        with sync:
            images = batch["image"].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=self.dtype, enabled=self.dtype is not None):
                outputs = self.model(images, return_attention=self.boxes is not None)
            box_mask = batch["box_mask"].to(device, non_blocking=True) if self.boxes is not None else None
            existence = batch["existence"].to(device, non_blocking=True)
            positions = batch["positions"].to(device, non_blocking=True)
            draw = derived_seed(*address, 1)  # the loss's negatives
            terms = self.loss_fn(outputs, existence, positions, self.module.position_embeddings, draw, box_mask)
            if not torch.isfinite(terms["loss"]):
                raise TrainingError(
                    f"loss is {terms['loss'].item()} at step {p.step} (epoch {p.epoch + 1}); stopping. The last "
                    f"good checkpoint is {self.save_dir / 'last.json'}; lower --lr or check the data."
                )
            (terms["loss"] / settings.grad_accumulation).backward()
        p.batch += 1
        for name, value in terms.items():
            p.sums[name] = p.sums.get(name, 0.0) + float(value.detach())
        p.sums["batches"] = p.sums.get("batches", 0.0) + 1
        return float(terms["loss"].detach())

    def optimizer_step(self, loss: float) -> None:
        p, settings = self.progress, self.config.train
        if settings.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), settings.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        p.step += 1
        if self.run is not None:
            self.run.log_metrics({"loss": loss, "lr": self.scheduler.get_last_lr()[0]}, p.step)
        if p.step % settings.save_every_steps == 0:
            self.checkpoint()

    def end_epoch(self, images_per_second: float) -> bool:
        """Validation, model selection, the history line, then the epoch-end checkpoint; True to stop early."""
        p, settings = self.progress, self.config.train
        record = {"epoch": p.epoch + 1, "step": p.step, "lr": self.scheduler.get_last_lr()[0]}
        record.update({f"train_{name}": p.sums[name] / p.sums["batches"] for name in p.sums if name != "batches"})
        if self.info.is_main:
            if len(self.val_set):
                probabilities, rows = predict(self.module, self.val_loader, self.info.device, self.dtype)
                record["val_mean_auc"] = self.validation_score(probabilities, self.labels["existence"][rows])
            self._select(record)
            with open(self.save_dir / "history.jsonl", "a") as handle:
                handle.write(json.dumps({**record, "img_s": images_per_second}) + "\n")
            if self.run is not None:
                self.run.log_metrics({**record, "img_s": images_per_second}, p.step)
            summary = ", ".join(f"{key}={value:.4g}" for key, value in record.items() if isinstance(value, float))
            logger.info("epoch %d: %s", p.epoch + 1, summary)
        p.stale_epochs = distributed.broadcast(p.stale_epochs, self.info)
        p.epoch, p.batch, p.sums = p.epoch + 1, 0, {}
        self.checkpoint()
        distributed.barrier(self.info)
        patience = settings.early_stopping_patience
        if patience and p.stale_epochs >= patience:
            if self.info.is_main:
                logger.info("early stop: no better %s in %d epochs", settings.select_by, patience)
            return True
        return False

    def _select(self, record: dict) -> None:
        """Writes model_best when this epoch's selection score beats the best so far (or none is written yet)."""
        p = self.progress
        by_loss = self.config.train.select_by == "train_loss"
        score = -record["train_loss"] if by_loss else record.get("val_mean_auc")
        best = self.save_dir / "model_best.safetensors"
        if (score is not None and (p.best_score is None or score > p.best_score)) or not best.exists():
            p.best_score, p.stale_epochs = score, 0
            extra = {"step": p.step, "epoch": p.epoch + 1, "metrics": record, "label_counts": self.label_counts}
            save_weights(self.module, best, self.config, extra)
            described = json.dumps({**extra, "config": to_dict(self.config)}, indent=2)
            (self.save_dir / "model_best.json").write_text(described)
        else:
            p.stale_epochs += 1
