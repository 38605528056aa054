"""The prepared-data Dataset, batched augmentation and loaders (single process and DistributedSampler)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medklip.data.augment import AugmentConfig, WarpParams, full_view, sample_params, warp_batch
from medklip.data.dataset import CXRDataset, make_loader
from medklip.data.prepare import PrepareConfig, PreparedData, prepare
from tests.helpers import radiograph, write_clean_folder


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> PreparedData:
    root = tmp_path_factory.mktemp("data")
    write_clean_folder(root / "source", 40)
    prepare(f"folder://{root / 'source'}", root / "prepared", PrepareConfig(workers=1, val_fraction=0.2))
    return PreparedData(root / "prepared")


def test_full_view_is_a_plain_resize():
    image = radiograph(256, 300)
    warped = warp_batch([image], [full_view(*image.shape)], 224)
    reference = F.interpolate(torch.from_numpy(image).float()[None, None], size=(224, 224), mode="bilinear")
    assert warped.shape == (1, 1, 224, 224) and warped.dtype == torch.uint8
    assert (warped.float() - reference).abs().max() <= 1.5  # fixed-point interpolation, then rounding to uint8


def test_rotation_by_90_degrees_is_exact_and_different_sizes_share_a_batch():
    square = radiograph(64, 64)
    wide = radiograph(64, 100, seed=1)
    warped = warp_batch([square, wide], [WarpParams(0, 0, 64, 64, angle=90), full_view(64, 100)], 64)
    assert torch.equal(warped[0, 0], torch.from_numpy(np.rot90(square).copy()))
    assert warped[1].float().std() > 10  # a full view of the wide image, not a padded corner


def test_no_horizontal_flip_left_stays_left():
    image = np.zeros((256, 256), np.uint8)
    image[:, :100] = 255  # bright patient-right side (image left)
    config = AugmentConfig(max_rotation=10)
    params = [sample_params(np.random.default_rng(i), 256, 256, config) for i in range(64)]
    batch = warp_batch([image] * 64, params, 224)
    left, right = batch[..., :60].float().mean(dim=(1, 2, 3)), batch[..., -60:].float().mean(dim=(1, 2, 3))
    assert bool((left > right).all())


def test_crop_boxes_stay_inside_the_image_and_respect_scale():
    config = AugmentConfig()
    for seed in range(200):
        p = sample_params(np.random.default_rng(seed), 256, 320, config)
        assert 0 <= p.x0 and p.x0 + p.width <= 320 + 1e-6 and 0 <= p.y0 and p.y0 + p.height <= 256 + 1e-6
        assert 0.6 * 256 * 320 - 1 <= p.width * p.height <= 256 * 320 + 1
        assert abs(p.angle) <= 10 and 0.8 <= p.brightness <= 1.2


def test_dataset_batches_are_deterministic_per_epoch_and_carry_targets(prepared):
    existence = np.arange(len(prepared) * 3).reshape(len(prepared), 3)
    dataset = CXRDataset(prepared, "train", image_size=96, augment=AugmentConfig(), targets={"existence": existence})
    batch = dataset.__getitems__([0, 1, 2])
    assert batch["image"].shape == (3, 1, 96, 96) and batch["image"].dtype == torch.uint8
    assert batch["image"].float().std() > 10
    assert torch.equal(batch["existence"], torch.as_tensor(existence)[batch["row"]])
    assert torch.equal(dataset.__getitems__([0, 1, 2])["image"], batch["image"])
    dataset.set_epoch(1)
    assert not torch.equal(dataset.__getitems__([0, 1, 2])["image"], batch["image"])
    single = dataset[0]
    assert single["image"].shape == (1, 96, 96)
    with pytest.raises(ValueError, match="has 2 rows"):
        CXRDataset(prepared, "train", targets={"existence": existence[:2]})


def test_evaluation_view_has_no_randomness(prepared):
    dataset = CXRDataset(prepared, "val", image_size=64)
    first = dataset.__getitems__([0, 1])["image"]
    dataset.set_epoch(5)
    assert torch.equal(first, dataset.__getitems__([0, 1])["image"])


def test_loader_with_workers_gives_the_same_batches_as_in_process(prepared):
    """Over several epochs (drawn, with resume offsets), with the workers started once and kept: the epoch reaches
    them through the sampler's indices, never through the dataset copies they hold."""
    dataset = CXRDataset(prepared, "train", image_size=64, augment=AugmentConfig())
    in_process, sampler_a = make_loader(dataset, batch_size=8, shuffle=True, num_workers=0, seed=3)
    with_workers, sampler_b = make_loader(dataset, batch_size=8, shuffle=True, num_workers=2, seed=3)
    assert with_workers.persistent_workers
    generator = random.Random(5)
    plan = [(0, 0), (1, 0)] + [(generator.randrange(2, 50), 8 * generator.randrange(0, 3)) for _ in range(2)]
    first_images = None
    for epoch, start in plan:
        sampler_a.set_epoch(epoch, start)
        sampler_b.set_epoch(epoch, start)
        batches_a, batches_b = list(in_process), list(with_workers)
        assert sum(len(b["row"]) for b in batches_a) == len(dataset) - start
        for a, b in zip(batches_a, batches_b, strict=True):
            assert torch.equal(a["row"], b["row"]) and torch.equal(a["image"], b["image"])
        views = {int(r): image for batch in batches_b for r, image in zip(batch["row"], batch["image"], strict=True)}
        if first_images is None:
            first_images = views
        else:  # a later epoch draws new views: workers that kept epoch 0's draws would fail here
            assert all(not torch.equal(first_images[row], image) for row, image in views.items())
    assert dataset.epoch == 0  # nothing was set on the dataset itself


def test_distributed_sampler_partitions_the_split(prepared):
    dataset = CXRDataset(prepared, "train", image_size=32)
    seen = []
    for rank in range(2):
        sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=0)
        sampler.set_epoch(1)
        loader = torch.utils.data.DataLoader(dataset, batch_size=4, sampler=sampler, collate_fn=lambda batch: batch)
        seen.append(torch.cat([batch["row"] for batch in loader]))
    rows = set(torch.cat(seen).tolist())
    assert rows == set(dataset.row_numbers.tolist())
    assert len(seen[0]) == len(seen[1])


def test_splits_are_disjoint_and_cover_the_data(prepared):
    parts = [set(prepared.rows(split).tolist()) for split in ("train", "val", "gate", "test")]
    assert sum(len(part) for part in parts) == len(prepared) and len(set().union(*parts)) == len(prepared)
    with pytest.raises(ValueError, match="unknown split"):
        prepared.rows("training")


def test_crop_box_selects_that_region_and_intensity_factors_apply():
    image = radiograph(64, 128)
    crop = warp_batch([image], [WarpParams(64, 0, 64, 64)], 64)[0, 0]
    assert torch.equal(crop, torch.from_numpy(image[:, 64:].copy()))  # right half, same scale: exact
    brighter = warp_batch([image], [WarpParams(0, 0, 128, 64, brightness=1.2)], 64)[0, 0].float().mean()
    plain = warp_batch([image], [WarpParams(0, 0, 128, 64)], 64)[0, 0].float().mean()
    flatter = warp_batch([image], [WarpParams(0, 0, 128, 64, contrast=0.5)], 64)[0, 0].float()
    assert brighter > plain * 1.15 and flatter.std() < 0.6 * warp_batch([image], [full_view(64, 128)], 64).float().std()
