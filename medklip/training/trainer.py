"""The training loop: one process of 1..N (DDP), resumable from `<save>/last.json`; the entry point is `medklip.train`.

`train(config, data_dir, save_dir, run, validation_score)` trains the `train` split, scores `val` every epoch with
`validation_score(scores, labels)` (the entry point passes `medklip.evaluation.metrics.mean_auc`: training does not
import evaluation), keeps the best model and a resumable training state. Only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from medklip.config import Config, to_dict
from medklip.data.augment import AugmentConfig
from medklip.data.boxes import read_boxes
from medklip.data.dataset import CXRDataset, already_batched, make_loader
from medklip.data.prepare import PreparedData
from medklip.data.sources import DataError
from medklip.labels.extract import load_labels
from medklip.model.losses import MedKLIPLoss
from medklip.model.network import MedKLIP
from medklip.training import distributed
from medklip.training.checkpoints import load_training_state, save_training_state, save_weights
from medklip.vocabulary import ENTITIES, seen_entity_indices

logger = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN); the last good checkpoint is kept."""


class _SkipFirst(Sampler):
    """Yields the wrapped sampler's indices after the first `skip` (resuming mid-epoch)."""

    def __init__(self, sampler: Sampler, skip: int):
        self.sampler, self.skip = sampler, skip

    def __iter__(self):
        iterator = iter(self.sampler)
        for _ in range(self.skip):
            next(iterator, None)
        yield from iterator

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)


def autocast_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for fp32.

    "auto" is bf16 on GPUs that support it and fp32 on CPUs: on this project's build machine (avx512_bf16) bf16
    autocast measured slower than fp32 for every preset (base: 5.4 vs 7.0 img/s), so "bf16" forces it instead.
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
    if config.train.lr <= 0 or config.train.min_lr < 0:
        raise ValueError(f"train.lr must be > 0 and train.min_lr >= 0, got {config.train.lr} and {config.train.min_lr}")
    floor = config.train.min_lr / config.train.lr
    warmup = max(0, min(config.train.warmup_steps, total_steps - 1))

    def factor(step: int) -> float:
        if step < warmup:
            return floor + (1 - floor) * step / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


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
    """Trains (or resumes) and returns {"best_val_mean_auc", "steps", "epochs", ...}. See the module docstring.

    Args:
        run: rank 0's `medklip.tracking.runs.TrainingRun` to log metrics to, or None.
        validation_score: (scores, labels) of the `val` split -> the number that selects `model_best`, or None.
    """
    info = distributed.setup()
    try:
        return _train(config, Path(data_dir), Path(save_dir), info, run, validation_score)
    finally:
        distributed.teardown()


def _train(
    config: Config, data_dir: Path, save_dir: Path, info: distributed.DistributedInfo, run, validation_score
) -> dict:
    train_config = config.train
    seed_everything(train_config.seed + info.rank, train_config.deterministic)
    data = PreparedData(data_dir)
    labels = load_labels(data)
    augment = AugmentConfig(
        scale=train_config.augment.scale,
        max_rotation=train_config.augment.max_rotation,
        brightness=train_config.augment.brightness,
        contrast=train_config.augment.contrast,
    )
    boxes = read_boxes(train_config.boxes, data) if train_config.boxes else None
    train_set = CXRDataset(
        data, "train", config.model.image_size, augment, labels, train_config.seed, boxes, config.model.patch_stride
    )
    val_set = CXRDataset(data, "val", config.model.image_size, None, labels)
    if len(train_set) == 0:
        raise DataError(f"{data_dir}: the train split is empty")
    train_labels = labels["existence"][train_set.row_numbers]
    never_present = [ENTITIES[i] for i in np.flatnonzero(~(train_labels == 1).any(0))]
    # Stored with the best model: predictions for entities never seen with both labels are not to be trusted.
    label_counts = {
        entity: [int((train_labels[:, i] == 1).sum()), int((train_labels[:, i] == 0).sum())]
        for i, entity in enumerate(ENTITIES)
    }
    if info.is_main:
        logger.info(
            "%d train / %d val images; %d labelled (image, entity) pairs; no positive example (they only learn "
            "from negatives) for %d entities: %s",
            len(train_set), len(val_set), int((train_labels >= 0).sum()), len(never_present), ", ".join(never_present),
        )  # fmt: skip

    # Every rank encodes the same knowledge (deterministic); DDP then broadcasts rank 0's parameters and buffers.
    model = MedKLIP.build(config.model)
    model.set_channels_last(train_config.channels_last)
    model.set_gradient_checkpointing(train_config.gradient_checkpointing)
    model.to(info.device)
    dtype = autocast_dtype(train_config.amp, info.device)

    entity_mask = torch.zeros(75, dtype=torch.bool)
    entity_mask[list(seen_entity_indices(config.model.exclude_unseen))] = True
    loss_fn = MedKLIPLoss(config.loss, entity_mask, seed=train_config.seed).to(info.device)
    optimizer = torch.optim.AdamW(
        parameter_groups(model, train_config.weight_decay), lr=train_config.lr, fused=info.device.type == "cuda"
    )
    drop_last = len(train_set) >= train_config.batch_size * info.world_size
    train_loader, sampler = make_loader(
        train_set, train_config.batch_size, True, train_config.num_workers, drop_last, train_config.seed
    )
    steps_per_epoch = max(1, len(train_loader) // train_config.grad_accumulation)
    total_steps = steps_per_epoch * train_config.epochs
    if train_config.max_steps:
        total_steps = min(total_steps, train_config.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config, total_steps))

    state = {"step": 0, "epoch": 0, "batches_done": 0, "best_auc": -1.0, "stale_epochs": 0, "sums": {}}
    resumed = load_training_state(save_dir, model)
    if resumed is not None:
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        torch.set_rng_state(resumed["rng_cpu"])
        if torch.cuda.is_available() and "rng_cuda" in resumed:
            torch.cuda.set_rng_state_all(list(resumed["rng_cuda"]))
        state = {key: resumed[key] for key in state}
        if info.is_main:
            logger.info("resumed from %s at step %d (epoch %d)", save_dir / "last.json", state["step"], state["epoch"])
    if info.enabled:
        model = DistributedDataParallel(model, device_ids=[info.local_rank] if info.device.type == "cuda" else None)
    module = getattr(model, "module", model)
    if info.is_main:
        save_dir.mkdir(parents=True, exist_ok=True)
        (save_dir / "config.json").write_text(json.dumps(to_dict(config), indent=2))

    def checkpoint_state() -> dict:
        saved = {**state, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
        saved["rng_cpu"] = torch.get_rng_state()
        if torch.cuda.is_available():
            saved["rng_cuda"] = torch.stack(torch.cuda.get_rng_state_all())
        return saved

    val_loader, _ = make_loader(val_set, train_config.batch_size * 2, shuffle=False, num_workers=0, distributed=False)
    history_path = save_dir / "history.jsonl"
    stop = False
    while state["epoch"] < train_config.epochs and not stop:
        epoch = state["epoch"]
        train_set.set_epoch(epoch)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        loader = train_loader
        if state["batches_done"]:  # resuming mid-epoch: the same order, minus the batches already trained on
            skip = _SkipFirst(sampler, state["batches_done"] * train_config.batch_size)
            loader = DataLoader(
                train_set,
                train_config.batch_size,
                sampler=skip,
                num_workers=train_config.num_workers,
                collate_fn=already_batched,
                drop_last=drop_last,
                generator=torch.Generator(),  # leave the global RNG (dropout) alone, as make_loader does
            )
        model.train()
        started, images_seen = time.perf_counter(), 0
        bar = tqdm(
            total=len(train_loader),
            initial=state["batches_done"],
            desc=f"epoch {epoch + 1}/{train_config.epochs}",
            unit="batch",
            disable=not info.is_main,
        )
        for batch in loader:
            micro = state["batches_done"] % train_config.grad_accumulation
            last_micro = micro == train_config.grad_accumulation - 1
            sync = contextlib.nullcontext() if (last_micro or not info.enabled) else model.no_sync()
            images = batch["image"].to(info.device, non_blocking=True)
            existence = batch["existence"].to(info.device, non_blocking=True)
            positions = batch["positions"].to(info.device, non_blocking=True)
            with sync:
                with torch.autocast(info.device.type, dtype=dtype, enabled=dtype is not None):
                    outputs = model(images, return_attention=boxes is not None)
                box_mask = batch["box_mask"].to(info.device, non_blocking=True) if boxes is not None else None
                terms = loss_fn(outputs, existence, positions, module.position_embeddings, state["step"], box_mask)
                if not torch.isfinite(terms["loss"]):
                    raise TrainingError(
                        f"loss is {terms['loss'].item()} at step {state['step']} (epoch {epoch + 1}); stopping. "
                        f"The last good checkpoint is {save_dir / 'last.json'}; lower --lr or check the data."
                    )
                (terms["loss"] / train_config.grad_accumulation).backward()
            state["batches_done"] += 1
            for name, value in terms.items():
                state["sums"][name] = state["sums"].get(name, 0.0) + float(value.detach())
            state["sums"]["batches"] = state["sums"].get("batches", 0.0) + 1
            images_seen += len(images)
            if last_micro:
                if train_config.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), train_config.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                state["step"] += 1
                if run is not None:
                    run.log_metrics({"loss": terms["loss"].item(), "lr": scheduler.get_last_lr()[0]}, state["step"])
                if info.is_main and state["step"] % train_config.save_every_steps == 0:
                    save_training_state(save_dir, model, config, checkpoint_state())
            bar.update()
            throughput = images_seen * info.world_size / (time.perf_counter() - started)
            bar.set_postfix(loss=f"{terms['loss'].item():.3f}", img_s=f"{throughput:.0f}")
            if train_config.max_steps and state["step"] >= train_config.max_steps:
                stop = True
                break
        bar.close()
        if state["batches_done"] < len(train_loader):  # stopped by max_steps mid-epoch: resumable from here
            if info.is_main:
                save_training_state(save_dir, model, config, checkpoint_state())
            break
        sums = state["sums"]
        record = {"epoch": epoch + 1, "step": state["step"], "lr": scheduler.get_last_lr()[0]}
        record.update({f"train_{name}": sums[name] / sums["batches"] for name in sums if name != "batches"})
        record["img_s"] = images_seen * info.world_size / max(1e-9, time.perf_counter() - started)
        if info.is_main:
            if len(val_set):
                probabilities, rows = predict(module, val_loader, info.device, dtype)
                record["val_mean_auc"] = validation_score(probabilities, labels["existence"][rows])
            improved = record.get("val_mean_auc") is not None and record["val_mean_auc"] > state["best_auc"]
            if improved or not (save_dir / "model_best.safetensors").exists():
                state["best_auc"] = record.get("val_mean_auc") or -1.0
                state["stale_epochs"] = 0
                extra = {"step": state["step"], "epoch": epoch + 1, "metrics": record, "label_counts": label_counts}
                save_weights(module, save_dir / "model_best.safetensors", config, extra)
                (save_dir / "model_best.json").write_text(json.dumps({**extra, "config": to_dict(config)}, indent=2))
            else:
                state["stale_epochs"] += 1
            with open(history_path, "a") as handle:
                handle.write(json.dumps(record) + "\n")
            if run is not None:
                run.log_metrics(record, state["step"])
            summary = ", ".join(f"{key}={value:.4g}" for key, value in record.items() if isinstance(value, float))
            logger.info("epoch %d: %s", epoch + 1, summary)
        patience = train_config.early_stopping_patience
        stale = distributed.broadcast(state["stale_epochs"], info)
        state.update({"epoch": epoch + 1, "batches_done": 0, "sums": {}, "stale_epochs": stale})
        if patience and stale >= patience:
            if info.is_main:
                logger.info("early stop: no better validation AUC in %d epochs", patience)
            stop = True
        if info.is_main:
            save_training_state(save_dir, model, config, checkpoint_state())
        distributed.barrier(info)
    return {"best_val_mean_auc": state["best_auc"], "steps": state["step"], "epochs": state["epoch"]}
