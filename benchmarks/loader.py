"""Training-batch throughput: prepared uint8 shards + batched augmentation versus per-sample PIL decoding.

    python benchmarks/loader.py [--n 512] [--size 512] [--batch-size 64] [--workers 2] [--epochs 2]

Both paths read the same synthetic radiographs (PNG files of `--size` px, as a hospital folder or an image mirror
holds them), apply the same augmentation (random resized crop with scale 0.6-1 and ratio 3/4-4/3, rotation up to 10
degrees, brightness and contrast +-0.2, no flip) and deliver (B, 1, 224, 224) float batches through a DataLoader
with the same number of workers.

- ours: `medklip data prepare` once (not timed; it is done once per data version), then `CXRDataset` over the
  memory-mapped shards, whole batches built by one `grid_sample`.
- baseline: the usual path: a Dataset that opens each PNG with PIL per sample and runs torchvision's per-sample
  transforms, batched by the default collate.

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

from medklip import synthetic
from medklip.augment import AugmentConfig
from medklip.data import CXRDataset, make_loader
from medklip.prepare import PrepareConfig, prepare


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


def images_per_second(loader: DataLoader, epochs: int) -> float:
    next(iter(loader))  # start-up (worker spawn, first file opens) is not throughput
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
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)  # the work happens in the loader workers; the main process only receives batches
    config = AugmentConfig()
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "source"
        synthetic.generate(source, n=args.n, seed=0, size=args.size, workers=args.workers)
        prepare(f"folder://{source}", Path(tmp) / "prepared", PrepareConfig(workers=args.workers))

        ours_dataset = CXRDataset(Path(tmp) / "prepared", split=None, image_size=224, augment=config)
        ours_loader, _ = make_loader(ours_dataset, args.batch_size, shuffle=True, num_workers=args.workers)
        ours = images_per_second(ours_loader, args.epochs)

        baseline_dataset = PngDataset(source, config, image_size=224)
        baseline_loader = DataLoader(baseline_dataset, args.batch_size, shuffle=True, num_workers=args.workers)
        baseline = images_per_second(baseline_loader, args.epochs)
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
