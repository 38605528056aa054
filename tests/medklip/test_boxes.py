"""Lesion boxes for location supervision: reading the CSV, patch masks through the augmentation, the box loss."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from medklip.config import LossConfig
from medklip.data.augment import AugmentConfig, WarpParams, full_view, sample_params, warp_batch
from medklip.data.boxes import patch_mask, read_boxes
from medklip.data.dataset import CXRDataset
from medklip.data.prepare import PrepareConfig, PreparedData, prepare
from medklip.data.sources import DataError
from medklip.model.grounding import _in_boxes, patch_peaks, rescale_boxes
from medklip.model.losses import MedKLIPLoss
from medklip.vocabulary import ENTITIES, entity_index

NODULE = entity_index("nodule")
EFFUSION = entity_index("effusion")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> PreparedData:
    root = tmp_path_factory.mktemp("boxes")
    prepare("synthetic://30?seed=5&size=96", root / "data", PrepareConfig(workers=1, short_side=64, val_fraction=0.2))
    return PreparedData(root / "data")


def test_full_view_marks_exactly_the_patches_the_pointing_game_counts_as_inside():
    rng = np.random.default_rng(0)
    peaks = patch_peaks(16 * 16, 128)  # (T, 2): where a one-patch heatmap peaks on the 128 px view
    for _ in range(200):
        x0, y0 = rng.uniform(0, 200, 2)
        box = np.array([[x0, y0, x0 + rng.uniform(20, 120), y0 + rng.uniform(20, 120)]])  # source px of a 256 image
        expected = _in_boxes(rescale_boxes(box, 256, 256, 128), peaks[:, 0], peaks[:, 1])[0]
        mask = patch_mask(np.array([NODULE]), box, full_view(256, 256), size=128, stride=8)
        assert mask.shape == (75, 256) and mask[NODULE].any()
        if expected.any():
            assert np.array_equal(mask[NODULE], expected)
        assert not np.delete(mask, NODULE, axis=0).any()


def test_marked_patches_follow_the_box_through_crop_and_rotation():
    image = np.zeros((200, 240), np.uint8)
    box = np.array([[150.0, 40.0, 210.0, 110.0]])
    image[40:110, 150:210] = 255
    config = AugmentConfig(scale=(0.3, 1.0), max_rotation=30, brightness=0, contrast=0)
    checked = 0
    for seed in range(60):
        params = sample_params(np.random.default_rng(seed), *image.shape, config)
        view = warp_batch([image], [params], 96)[0, 0].numpy()
        mask = patch_mask(np.array([EFFUSION]), box, params, size=96, stride=8)[EFFUSION].reshape(12, 12)
        centres = view[::8, ::8]  # the view pixel each patch sits on
        assert (centres[mask] > 60).all()  # every marked patch centre shows the box (its edge: partly)
        # and every patch centre well inside the box (bright, with bright neighbours) is marked
        solid = (view > 250)[::8, ::8] & (np.pad(view, 2, mode="edge")[4::8, 4::8][:12, :12] > 250)
        assert (mask | ~solid).all()
        checked += int(mask.any())
    assert checked > 30


def test_a_box_smaller_than_a_patch_marks_the_nearest_patch_and_one_out_of_view_marks_nothing():
    tiny = np.array([[101.0, 61.0, 104.0, 64.0]])  # 3 px, between the patch centres of a 16 px grid
    mask = patch_mask(np.array([NODULE]), tiny, full_view(256, 256), size=256, stride=16)[NODULE].reshape(16, 16)
    assert mask.sum() == 1 and np.argwhere(mask).tolist() == [[4, 6]]  # pixel (102, 62) -> patch (row 4, col 6)
    crop = WarpParams(0, 0, 100, 100)  # the top-left corner only; the box lies outside it
    assert not patch_mask(np.array([NODULE]), tiny, crop, size=64, stride=8).any()


def write_boxes(path, rows) -> str:
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def test_read_boxes_keeps_present_train_boxes_in_stored_pixels(prepared, tmp_path):
    table = prepared.table
    train = table[table["split"] == "train"]
    val_id = table.loc[table["split"] == "val", "id"].iat[0]
    first, second = train["id"].iat[0], train["id"].iat[1]
    rows = [
        {"id": first, "entity": "nodule", "existence": 1, "x0": 0, "y0": 0, "x1": 48, "y1": 24},
        {"id": first, "entity": "effusion", "existence": 0, "x0": 0, "y0": 0, "x1": 10, "y1": 10},  # absent
        {"id": second, "entity": "effusion", "existence": 1, "x0": None, "y0": None, "x1": None, "y1": None},
        {"id": val_id, "entity": "nodule", "existence": 1, "x0": 0, "y0": 0, "x1": 10, "y1": 10},  # not train
        {"id": "elsewhere", "entity": "nodule", "existence": 1, "x0": 0, "y0": 0, "x1": 10, "y1": 10},
    ]
    boxes = read_boxes(write_boxes(tmp_path / "b.csv", rows), prepared)
    row = int(np.flatnonzero(table["id"].to_numpy() == first)[0])
    assert list(boxes) == [row]
    entities, scaled = boxes[row]
    scale = table["width"].iat[row] / table["source_width"].iat[row]
    assert scale < 1 and entities.tolist() == [NODULE]
    assert np.allclose(scaled, [[0, 0, 48 * scale, 24 * scale]])


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"id": "x", "entity": "nodule", "x0": 0, "y0": 0, "x1": 4}], "missing columns"),
        ([{"id": "x", "entity": "dragon", "x0": 0, "y0": 0, "x1": 4, "y1": 4}], "unknown entities"),
        ([{"id": "x", "entity": "nodule", "x0": 9, "y0": 0, "x1": 4, "y1": 4}], "x1 <= x0"),
        ([{"id": "x", "entity": "nodule", "x0": 0, "y0": 0, "x1": 4, "y1": 4}], "no box belongs"),
    ],
)
def test_bad_boxes_files_are_clear_errors(prepared, tmp_path, rows, message):
    with pytest.raises(DataError, match=message):
        read_boxes(write_boxes(tmp_path / "b.csv", rows), prepared)
    with pytest.raises(DataError, match="not found"):
        read_boxes(tmp_path / "missing.csv", prepared)


def test_dataset_batches_carry_box_masks_for_boxed_images_only(prepared):
    truth = pd.read_csv(prepared.root / "truth.csv")
    boxes = read_boxes(prepared.root / "truth.csv", prepared)
    dataset = CXRDataset(prepared, "train", 64, AugmentConfig(), boxes=boxes, patch_stride=8)
    batch = dataset.__getitems__(list(range(len(dataset))))
    masks = batch["box_mask"]
    assert masks.shape == (len(dataset), 75, 64) and masks.dtype == torch.bool
    boxed = {int(row) for row in boxes}
    rows = batch["row"].tolist()
    assert all(not masks[i].any() for i, row in enumerate(rows) if row not in boxed)
    present = truth[(truth["existence"] == 1) & truth["x0"].notna()]
    marked = {(rows[i], ENTITIES[e]) for i, e in zip(*np.nonzero(masks.any(-1).numpy()), strict=True)}
    ids = prepared.table["id"].to_numpy()
    assert marked and all(entity in set(present.loc[present["id"] == ids[row], "entity"]) for row, entity in marked)
    again = CXRDataset(prepared, "train", 64, AugmentConfig(), boxes=boxes, patch_stride=8)
    assert torch.equal(again.__getitems__(list(range(len(dataset))))["box_mask"], masks)  # deterministic per epoch


def box_terms(attention: torch.Tensor, mask: torch.Tensor, config: LossConfig | None = None, batch: int = 1):
    existence, positions = torch.full((batch, 75), -1), torch.full((batch, 51, 75), -1)
    out = {"exist_logits": torch.zeros(batch, 75), "position_features": torch.zeros(batch, 75, 4)}
    out["attention"] = attention
    return MedKLIPLoss(config or LossConfig())(out, existence, positions, torch.zeros(51, 4), box_mask=mask)


def test_box_loss_is_the_log_share_of_attention_inside_the_box_per_image_and_pulls_it_in():
    mask = torch.zeros(1, 75, 4, dtype=torch.bool)
    mask[0, NODULE, 1] = True
    logits = torch.zeros(1, 2, 75, 4, requires_grad=True)  # 2 layers, 4 patches, uniform attention
    attention = torch.softmax(logits, dim=-1) * 0.8  # the sink takes 0.2
    terms = box_terms(attention, mask)
    assert terms["box"].item() == pytest.approx(np.log(4))  # a quarter of the patch attention is in the box
    assert terms["loss"].item() == pytest.approx(np.log(4))
    terms["loss"].backward()
    assert logits.grad[0, :, NODULE, 1].lt(0).all() and logits.grad[0, :, NODULE, 0].gt(0).all()
    assert logits.grad[0, :, EFFUSION].abs().sum() == 0  # no box, no pull

    inside = torch.zeros(1, 2, 75, 4)
    inside[..., 1] = 0.5
    assert box_terms(inside, mask)["box"].item() == pytest.approx(0.0)
    assert box_terms(attention.detach(), mask, LossConfig(box_weight=0.5))["loss"].item() == pytest.approx(
        0.5 * np.log(4)
    )
    none = box_terms(attention.detach(), torch.zeros_like(mask))
    assert none["box"].item() == 0.0

    # Per image of the batch: a second image without boxes halves the pull; a second boxed entity doubles it.
    pair = torch.cat([attention.detach()] * 2)
    halved = box_terms(pair, torch.cat([mask, torch.zeros_like(mask)]), batch=2)["box"].item()
    assert halved == pytest.approx(np.log(4) / 2)
    both = mask.clone()
    both[0, EFFUSION, 0] = True
    assert box_terms(attention.detach(), both)["box"].item() == pytest.approx(2 * np.log(4))
