"""Reading prepared data: memory-mapped shards, a torch Dataset that builds whole batches, loaders, inspection.

    from medklip.data.prepare import PreparedData
    from medklip.data.dataset import CXRDataset, make_loader
    data = PreparedData("data/demo")                      # written by `medklip data prepare`
    train = CXRDataset(data, split="train", augment=AugmentConfig())
    loader, sampler = make_loader(train, batch_size=32, shuffle=True, num_workers=2)

The dataset implements `__getitems__`, so the DataLoader hands it a list of indices and it returns a ready batch
dict: `image` (B, 1, S, S) uint8 (the model scales it on its device), `row` (B,) row numbers in `reports.parquet`,
plus any per-row `targets` arrays it was given (labels, from extraction). One code path for 1..N processes: the
shuffled order is `EpochSampler`'s (DistributedSampler's permutation of (seed, epoch)); call
`sampler.set_epoch(epoch)` each epoch: its (epoch, position) indices carry the epoch to the augmentation, so the
loader's workers persist across epochs (`dataset.set_epoch` is for indexing the dataset directly).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, SequentialSampler

from medklip.data.augment import AugmentConfig, full_view, sample_params, warp_batch
from medklip.data.boxes import RowBoxes, patch_mask
from medklip.vocabulary import ENTITIES
from medklip.data.prepare import PreparedData, load_manifest
from medklip.data.sources import DataError

logger = logging.getLogger(__name__)

class CXRDataset(Dataset):
    """Batches of augmented (or plain, for evaluation) images from a `PreparedData`.

    Args:
        data: a prepared folder or its path.
        split: `train`, `val`, `gate`, `test` or None for all rows.
        image_size: output side in pixels (224 for the paper's model).
        augment: random transforms for training; None gives the deterministic evaluation view.
        targets: per-row arrays indexed by table row (e.g. `{"existence": (N, 75) int8}`), added to each batch.
        seed: augmentation seed; with the epoch and the row it fixes every random draw.
        boxes: lesion boxes by table row (`medklip.data.boxes.read_boxes`); each batch then has `box_mask` (B, 75, T)
            bool, the patch tokens inside each entity's boxes in that image's view (all False without boxes).
        patch_stride: pixels per patch token side of the model, for `box_mask`.
    """

    def __init__(
        self,
        data: PreparedData | str | Path,
        split: str | None = "train",
        image_size: int = 224,
        augment: AugmentConfig | None = None,
        targets: dict[str, np.ndarray] | None = None,
        seed: int = 0,
        boxes: dict[int, RowBoxes] | None = None,
        patch_stride: int = 16,
    ):
        self.data = data if isinstance(data, PreparedData) else PreparedData(data)
        self.split = split
        self.row_numbers = self.data.rows(split)
        self.image_size = image_size
        self.augment = augment
        self.targets = {name: torch.as_tensor(np.asarray(values)) for name, values in (targets or {}).items()}
        for name, values in self.targets.items():
            if len(values) != len(self.data):
                raise ValueError(f"target {name!r} has {len(values)} rows, the data has {len(self.data)}")
        self.seed = seed
        self.epoch = 0
        self.boxes = boxes
        self.patch_stride = patch_stride

    def set_epoch(self, epoch: int) -> None:
        """Changes the augmentation draws of plain indices (`EpochSampler`'s pairs carry their own epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.row_numbers)

    def __getitems__(self, indices: list[int] | list[tuple[int, int]]) -> dict[str, torch.Tensor]:
        """The batch of `indices`: positions in the split, drawn with `set_epoch`'s epoch, or (epoch, position)
        pairs as `EpochSampler` yields them, which carry their epoch into persistent loader workers."""
        epoch = self.epoch
        if indices and isinstance(indices[0], tuple):
            [epoch], indices = {pair[0] for pair in indices}, [pair[1] for pair in indices]
        rows = self.row_numbers[np.asarray(indices, dtype=np.int64)]
        images = [self.data.image(int(row)) for row in rows]
        if self.augment is None:
            params = [full_view(*image.shape) for image in images]
        else:
            params = [
                sample_params(np.random.default_rng([self.seed, epoch, int(row)]), *image.shape, self.augment)
                for row, image in zip(rows, images, strict=True)
            ]
        batch = {"image": warp_batch(images, params, self.image_size), "row": torch.from_numpy(rows)}
        if self.boxes is not None:
            side = math.ceil(self.image_size / self.patch_stride)
            masks = np.zeros((len(rows), len(ENTITIES), side * side), dtype=bool)
            for i, (row, p) in enumerate(zip(rows, params, strict=True)):
                if int(row) in self.boxes:
                    masks[i] = patch_mask(*self.boxes[int(row)], p, self.image_size, self.patch_stride)
            batch["box_mask"] = torch.from_numpy(masks)
        index = torch.from_numpy(rows)
        for name, values in self.targets.items():
            batch[name] = values[index]
        return batch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {name: value[0] for name, value in self.__getitems__([index]).items()}


def already_batched(batch):
    """The DataLoader's collate_fn for a dataset whose `__getitems__` returns a whole batch."""
    return batch


class EpochSampler(Sampler[int]):
    """This process's share of an epoch's order, from position `start` on: the sampler that makes resume exact.

    The order is `DistributedSampler`'s, for every world size (one process gets the whole permutation): a
    permutation seeded by (seed, epoch) and split across ranks, so it is a pure function of (seed, epoch, rank, world
    size), not of how many epochs this process has iterated. `set_epoch(epoch, start)` before each epoch; a run
    resumed in the middle of an epoch starts at the sample where it stopped and sees exactly the remaining batches.
    """

    def __init__(self, dataset: Dataset, world_size: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0):
        self.order = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed)
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.order.set_epoch(epoch)
        self.start = start

    def __iter__(self):
        """(epoch, position) pairs: the dataset draws each image's augmentation from its pair, so the loader's
        workers can live across epochs (a copy of the dataset in a worker never sees `set_epoch`)."""
        epoch = self.order.epoch
        return ((epoch, index) for index in itertools.islice(iter(self.order), self.start, None))

    def __len__(self) -> int:
        return max(0, len(self.order) - self.start)


def make_loader(
    dataset: CXRDataset,
    batch_size: int,
    shuffle: bool,
    num_workers: int = 2,
    drop_last: bool = False,
    seed: int = 0,
    distributed: bool | None = None,
) -> tuple[DataLoader, EpochSampler | SequentialSampler]:
    """A DataLoader over `dataset` whose workers build whole batches; DDP-aware.

    Args:
        dataset: the dataset.
        batch_size: images per batch (per process under DDP).
        shuffle: random order, a function of (seed, epoch) (`EpochSampler`); else the dataset's order.
        num_workers: loader processes (0: build batches in the calling process).
        drop_last: drop a final incomplete batch.
        seed: order seed.
        distributed: shard across ranks; default: when torch.distributed is initialised.

    Returns:
        (loader, sampler); call `sampler.set_epoch(epoch)` each epoch when it has that method.
    """
    if distributed is None:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if shuffle or distributed:
        world_size = torch.distributed.get_world_size() if distributed else 1
        rank = torch.distributed.get_rank() if distributed else 0
        sampler = EpochSampler(dataset, world_size, rank, shuffle=shuffle, seed=seed)
    else:
        sampler = SequentialSampler(dataset)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=already_batched,
        drop_last=drop_last,
        pin_memory=torch.cuda.is_available(),
        prefetch_factor=4 if num_workers > 0 else None,
        # Workers started once, not every epoch: forking them from a trainer that holds gigabytes of heap (which
        # `medklip.training.allocator` keeps) cost about a fifth of a CPU epoch in page-table copies and
        # copy-on-write faults. Safe with `EpochSampler` only, whose indices carry the epoch.
        persistent_workers=num_workers > 0 and isinstance(sampler, EpochSampler),
        # The loader draws its workers' base seed from this generator, not from the global RNG; nothing in a batch
        # depends on it (augmentation is drawn from (seed, epoch, image)).
        generator=torch.Generator().manual_seed(seed),
    )
    return loader, sampler


def inspect(root: str | Path) -> dict:
    """Counts and finding frequencies of a prepared folder, as a JSON-ready dict.

    Finding frequencies come from `truth.csv` (synthetic data) and from `triplets.parquet` (extraction output) when
    the folder has them.
    """
    data = PreparedData(root)
    table = data.table
    manifest = data.manifest
    summary = {
        "root": str(data.root),
        "source": manifest["source"],
        "n_images": manifest["n_images"],
        "n_skipped": manifest["n_skipped"],
        "skipped_by_reason": manifest.get("skipped_by_reason", {}),
        "splits": manifest["splits"],
        "image_height_median": int(table["height"].median()),
        "image_width_median": int(table["width"].median()),
        "reports_empty_findings": int((table["findings"].str.strip() == "").sum()),
        "reports_empty_impression": int((table["impression"].str.strip() == "").sum()),
        "duplicate_reports": int(table["report_sha256"].duplicated().sum()),
        "shards": len(manifest["shards"]),
        "shard_bytes": sum((data.root / name).stat().st_size for name in manifest["shards"]),
    }
    for name in ("truth.csv", "triplets.parquet"):
        path = data.root / name
        if path.is_file():
            labels = pd.read_csv(path) if name.endswith(".csv") else pd.read_parquet(path)
            summary[f"findings_{Path(name).stem}"] = _entity_frequencies(labels, n_images=len(table))
    return summary


def _entity_frequencies(labels: pd.DataFrame, n_images: int) -> dict[str, dict[str, int]]:
    """Per entity: images with the finding present, stated absent, uncertain (per image, any position)."""
    id_column = "id" if "id" in labels.columns else "report_id"
    per_image = labels.groupby([id_column, "entity"])["existence"].max().reset_index()
    frequencies = {}
    for entity, group in per_image.groupby("entity"):
        counts = Counter(int(value) for value in group["existence"])
        frequencies[entity] = {"present": counts[1], "absent": counts[0], "uncertain": counts[-1]}
    return dict(sorted(frequencies.items(), key=lambda item: -item[1]["present"]))
