"""Training-batch throughput: prepared uint8 shards + batched augmentation versus per-sample PIL decoding.

    python benchmarks/loader.py [--n 512] [--size 512] [--batch-size 64] [--workers 2] [--epochs 2]

Both paths read the same synthetic radiographs (PNG files of `--size` px, as a hospital folder or an image mirror
holds them), apply the same augmentation (random resized crop with scale 0.6-1 and ratio 3/4-4/3, rotation up to 10
degrees, brightness and contrast +-0.2, no flip) and deliver (B, 1, 224, 224) float batches through a DataLoader
with the same number of workers.

- ours: `medklip data prepare` once (not timed; it is done once per data version), then `CXRDataset` over the
  memory-mapped shards: whole uint8 batches, one OpenCV affine warp and one lookup table per image.
- baseline: the usual path: a Dataset that opens each PNG with PIL per sample and runs torchvision's per-sample
  transforms, batched by the default collate (float32, as `ToTensor` gives).

Both loaders are identical DataLoaders (same sampler, workers kept alive, same prefetch), so the figure is the
steady-state cost per image; worker start-up is excluded from both.

The last line printed is JSON: {"ours_img_s", "baseline_img_s", "ratio", ...}.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from medklip.data.augment import AugmentConfig
from medklip.data.dataset import CXRDataset, already_batched, synthetic
from medklip.data.prepare import PrepareConfig, prepare


class PngDataset(Dataset):
    """The baseline: decode the PNG file and augment it, one sample at a time."""

    def __init__(self, root: Path, config: AugmentConfig, image_size: int):
        self.root = root
        self.paths = pd.read_csv(root / "reports.csv")["image"].tolist()
        self.transform = transforms.Compose(
            [
                transforms.RandomResizedCrop(image_size, scale=config.scale, ratio=config.ratio),
                transforms.RandomRotation(config.max_rotation, interpolation=transforms.InterpolationMode.BILINEAR),
                transforms.ColorJitter(brightness=config.brightness, contrast=config.contrast),
                transforms.ToTensor(),
            ]
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        with Image.open(self.root / self.paths[index]) as image:
            return self.transform(image.convert("L"))


def loader(dataset: Dataset, batch_size: int, workers: int, collate_fn=None) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        persistent_workers=True,
        prefetch_factor=4,
        collate_fn=collate_fn,
    )


def images_per_second(loader: DataLoader, epochs: int) -> float:
    for _ in loader:  # a first epoch starts the workers and warms the page cache for both paths
        pass
    count = 0
    start = time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            images = batch["image"] if isinstance(batch, dict) else batch
            assert images.shape[1:] == (1, 224, 224)
            count += images.shape[0]
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=512, help="images")
    parser.add_argument("--size", type=int, default=512, help="side of the source PNGs")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for both paths")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs after one warm-up epoch")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the work happens in the loader workers; the main process only receives batches
    config = AugmentConfig()
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "source"
        synthetic.generate(source, n=args.n, seed=0, size=args.size, workers=args.workers)
        prepare(f"folder://{source}", Path(tmp) / "prepared", PrepareConfig(workers=args.workers))

        ours_dataset = CXRDataset(Path(tmp) / "prepared", split=None, image_size=224, augment=config)
        ours = images_per_second(loader(ours_dataset, args.batch_size, args.workers, already_batched), args.epochs)

        baseline_dataset = PngDataset(source, config, image_size=224)
        baseline = images_per_second(loader(baseline_dataset, args.batch_size, args.workers), args.epochs)
    result = {
        "ours_img_s": round(ours, 1),
        "baseline_img_s": round(baseline, 1),
        "ratio": round(ours / baseline, 2),
        "n": args.n,
        "source_px": args.size,
        "batch_size": args.batch_size,
        "workers": args.workers,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
