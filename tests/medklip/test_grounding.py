"""Grounding: attention -> heatmaps on the image grid, the pointing game, and scoring against truth.csv boxes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from medklip.config import load_config
from medklip.model.grounding import (
    attention_heatmaps,
    merge_pointing_results,
    patch_peaks,
    pointing_game,
    pointing_game_from_truth,
    rescale_boxes,
)
from medklip.model.network import MedKLIP
from medklip.vocabulary import ENTITIES, entity_index


def uniform_attention(batch: int = 1, layers: int = 2, tokens: int = 196) -> torch.Tensor:
    return torch.full((batch, layers, len(ENTITIES), tokens), 1.0 / tokens)  # (B, layers, 75, T)


def peaked_map(size: int, x: int, y: int) -> np.ndarray:
    heatmap = np.zeros((size, size), dtype=np.float32)
    heatmap[y, x] = 1.0
    return heatmap


# attention_heatmaps


def test_heatmaps_have_one_map_per_entity_at_image_size():
    heatmaps = attention_heatmaps(uniform_attention(batch=3, layers=4), 224)
    assert isinstance(heatmaps, np.ndarray) and heatmaps.dtype == np.float32
    assert heatmaps.shape == (3, 75, 224, 224)
    assert np.allclose(heatmaps, 1.0 / 196)


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_one_hot_attention_on_patch_k_lights_up_that_patch(mode):
    row, column = 3, 10  # patch k = 3 * 14 + 10 of a 14 x 14 grid; 16 px per patch at 224, centred on (160, 48)
    attention = torch.zeros(1, 2, 75, 196)
    attention[0, :, entity_index("effusion"), row * 14 + column] = 1.0
    heatmaps = attention_heatmaps(attention, 224, mode=mode)
    effusion = heatmaps[0, entity_index("effusion")]
    peak_y, peak_x = np.unravel_index(effusion.argmax(), effusion.shape)
    first = 8 if mode == "nearest" else 0  # nearest: a flat 16 px block around the centre, ties to its first pixel
    assert (peak_x, peak_y) == (column * 16 - first, row * 16 - first)
    inside = effusion[row * 16 - 8 : row * 16 + 8, column * 16 - 8 : column * 16 + 8].sum()
    assert inside > 0.5 * effusion.sum()  # most of the mass sits on that patch, not a neighbour
    assert heatmaps[0, entity_index("pneumonia")].max() == 0  # other entities untouched


def test_a_patch_peaks_on_the_pixel_its_receptive_field_is_centred_on():
    attention = torch.zeros(1, 1, 75, 16)
    attention[0, 0, 0, 5] = 1.0  # row 1, column 1 of a 4 x 4 grid; 16 px patches at 64
    heatmap = attention_heatmaps(attention, 64)[0, 0]
    assert np.unravel_index(heatmap.argmax(), heatmap.shape) == (16, 16) and heatmap[16, 16] == 1.0
    assert heatmap[16, 24] == pytest.approx(0.5) and heatmap[16, 32] == 0  # linear to the next patch's centre
    nearest = attention_heatmaps(attention, 64, mode="nearest")[0, 0]
    assert nearest[16, 8:24].tolist() == [1.0] * 16 and nearest[16, 7] == nearest[16, 24] == 0


@pytest.mark.parametrize(("stride", "size"), [(8, 128), (16, 256)])
def test_heatmaps_are_registered_to_where_the_network_looks(stride, size):
    # The gradient of one patch token with respect to the image is centred where the heatmap puts that patch.
    torch.manual_seed(0)
    config = load_config("debug", {"model.patch_stride": stride, "model.image_size": size})
    encoder = MedKLIP(config.model, torch.randn(75, 24), torch.randn(51, 24)).image_encoder.eval()
    images = torch.rand(4, 1, size, size, requires_grad=True)
    side = size // stride
    row, column = side // 2 - 1, side // 2
    (gradient,) = torch.autograd.grad(encoder(images * 255)[:, row * side + column].pow(2).sum(), images)
    weight = gradient.abs().sum(dim=(0, 1))  # (S, S)
    pixels = torch.arange(float(size)) + 0.5  # pixel centres
    centre_y = float((weight.sum(1) * pixels).sum() / weight.sum())
    centre_x = float((weight.sum(0) * pixels).sum() / weight.sum())
    attention = torch.zeros(1, 1, 75, side * side)
    attention[0, 0, 0, row * side + column] = 1.0
    heatmap = attention_heatmaps(attention, size)[0, 0]
    peak_y, peak_x = np.unravel_index(heatmap.argmax(), heatmap.shape)
    assert abs(peak_x + 0.5 - centre_x) < 2 and abs(peak_y + 0.5 - centre_y) < 2  # was off by half a patch


def test_layers_are_averaged():
    attention = uniform_attention(layers=2).clone()
    attention[0, 0, 0] = 0
    attention[0, 0, 0, 0] = 1.0  # layer 0 puts everything on patch 0, layer 1 is uniform
    heatmap = attention_heatmaps(attention, 14, mode="nearest")[0, 0]
    assert heatmap[0, 0] == pytest.approx((1.0 + 1 / 196) / 2)
    assert heatmap[5, 5] == pytest.approx((0 + 1 / 196) / 2)


def test_heatmaps_from_a_real_forward_pass():
    torch.manual_seed(0)
    model = MedKLIP(load_config("debug").model, torch.randn(75, 24), torch.randn(51, 24)).eval()
    with torch.no_grad():
        out = model(torch.randint(0, 256, (2, 1, 64, 64), dtype=torch.uint8), return_attention=True)
    heatmaps = attention_heatmaps(out["attention"], 64)
    assert heatmaps.shape == (2, 75, 64, 64) and np.isfinite(heatmaps).all()
    assert heatmaps.min() >= 0


def test_heatmaps_accept_numpy_and_half_precision():
    attention = uniform_attention(tokens=16).half().numpy()
    assert attention_heatmaps(attention, 32).shape == (1, 75, 32, 32)


@pytest.mark.parametrize(
    ("shape", "mode"),
    [((1, 2, 75, 15), "bilinear"), ((1, 2, 75, 0), "bilinear"), ((2, 75, 16), "bilinear"), ((1, 1, 75, 16), "bicubic")],
)
def test_heatmaps_reject_bad_input(shape, mode):
    with pytest.raises(ValueError):
        attention_heatmaps(torch.zeros(shape), 64, mode=mode)


# pointing_game


@pytest.mark.parametrize(
    ("x", "y", "hit"),
    [
        (15, 15, True),  # inside
        (2, 2, False),  # outside, top-left
        (10, 12, True),  # on x0 and y0: inclusive
        (19, 24, True),  # last pixel inside: x1 - 1, y1 - 1
        (20, 15, False),  # on x1: exclusive
        (15, 25, False),  # on y1: exclusive
        (9, 15, False),  # one left of x0
        (15, 11, False),  # one above y0
    ],
)
def test_pointing_game_box_edges(x, y, hit):
    hits = pointing_game(peaked_map(32, x, y)[None], [[10, 12, 20, 25]])
    assert hits.dtype == bool and hits.tolist() == [hit]


def test_pointing_game_many_rows_and_torch_input():
    heatmaps = np.stack([peaked_map(16, 3, 3), peaked_map(16, 12, 12), peaked_map(16, 0, 15)])
    boxes = [[0, 0, 8, 8], [0, 0, 8, 8], [0, 8, 8, 16]]
    assert pointing_game(heatmaps, boxes).tolist() == [True, False, True]
    assert pointing_game(torch.from_numpy(heatmaps), boxes).tolist() == [True, False, True]


def test_pointing_game_fractional_boxes_use_pixel_centres():
    # pixel 10 spans [10, 11), centre 10.5: in [10.4, 20) but not in [10.6, 20)
    assert pointing_game(peaked_map(32, 10, 5)[None], [[10.4, 0, 20, 32]]).tolist() == [True]
    assert pointing_game(peaked_map(32, 10, 5)[None], [[10.6, 0, 20, 32]]).tolist() == [False]
    # a box thinner than a pixel still holds the pixel under its middle
    assert pointing_game(peaked_map(32, 7, 7)[None], [[7.1, 7.2, 7.4, 7.3]]).tolist() == [True]
    assert pointing_game(peaked_map(32, 8, 7)[None], [[7.1, 7.2, 7.4, 7.3]]).tolist() == [False]


def test_pointing_game_ties_go_to_the_first_pixel():
    flat = np.ones((1, 16, 16))
    assert pointing_game(flat, [[0, 0, 1, 1]]).tolist() == [True]
    assert pointing_game(flat, [[1, 1, 16, 16]]).tolist() == [False]


def test_pointing_game_rejects_bad_input():
    with pytest.raises(ValueError):
        pointing_game(np.zeros((2, 8, 8)), [[0, 0, 1, 1]])
    with pytest.raises(ValueError):
        pointing_game(np.full((1, 8, 8), np.nan), [[0, 0, 1, 1]])
    assert pointing_game(np.zeros((0, 8, 8)), np.zeros((0, 4))).shape == (0,)


# box rescaling and truth.csv


def test_rescale_square_256_source_to_64():
    assert rescale_boxes([64, 128, 192, 256], 256, 256, 64).tolist() == [16, 32, 48, 64]
    assert rescale_boxes([[0, 0, 4, 4], [100, 10, 104, 14]], 256, 256, 64).tolist() == [
        [0, 0, 1, 1],
        [25, 2.5, 26, 3.5],
    ]


def test_rescale_squashes_a_non_square_source():
    # 512 rows x 256 columns squashed to 64 x 64: x scales by 1/4, y by 1/8
    assert rescale_boxes([40, 80, 120, 160], 512, 256, 64).tolist() == [10, 10, 30, 20]


def write_truth(folder: Path, rows: list[tuple]) -> pd.DataFrame:
    """A truth.csv round trip, so dtypes (strings, NaN boxes) are what evaluation will read."""
    frame = pd.DataFrame(rows, columns=["id", "entity", "position", "existence", "x0", "y0", "x1", "y1"])
    frame.to_csv(folder / "truth.csv", index=False)
    return pd.read_csv(folder / "truth.csv")


def test_pointing_game_from_truth_rescales_256_px_boxes_to_64(tmp_path):
    nan = float("nan")
    truth = write_truth(
        tmp_path,
        [
            ("a", "effusion", "left_pleural", 1, 192, 192, 256, 256),  # -> [48, 64): hit at (50, 50)
            ("a", "pneumothorax", "left_apical_lung", 1, 0, 0, 64, 64),  # -> [0, 16): miss, peak at (30, 30)
            ("a", "nodule", "right_lung", 0, 0, 0, 256, 256),  # absent: not a trial
            ("a", "mass", "right_lung", -1, 0, 0, 256, 256),  # uncertain: not a trial
            ("a", "normal", "heart_size", 1, nan, nan, nan, nan),  # no box: not a trial
            ("b", "effusion", "right_pleural", 1, 64, 64, 100, 100),  # -> [16, 25): hit, peak at (20, 20) ...
            ("b", "effusion", "left_pleural", 1, 0, 0, 40, 40),  # -> [0, 10): ... miss: one trial, hit by any box
            ("zzz", "effusion", "left_pleural", 1, 0, 0, 256, 256),  # id not in this batch
        ],
    )
    heatmaps = np.zeros((2, 75, 64, 64), dtype=np.float32)
    heatmaps[0, entity_index("effusion"), 50, 50] = 1
    heatmaps[0, entity_index("pneumothorax"), 30, 30] = 1
    heatmaps[1, entity_index("effusion"), 20, 20] = 1
    result = pointing_game_from_truth(heatmaps, ["a", "b"], truth, source_size=256)
    assert result["n"] == 3 and result["hits"] == 2
    assert result["overall"] == pytest.approx(2 / 3)
    assert result["per_entity"] == {
        "effusion": {"hit_rate": 1.0, "n": 2, "hits": 2},
        "pneumothorax": {"hit_rate": 0.0, "n": 1, "hits": 0},
    }
    only = pointing_game_from_truth(heatmaps, ["a", "b"], truth, source_size=256, entities=["pneumothorax"])
    assert only["n"] == 1 and only["overall"] == 0.0
    # the same boxes read as if the sources were 128 px: every box doubles on the 64 grid and the hits change
    other = pointing_game_from_truth(heatmaps, ["a", "b"], truth, source_size=128)
    assert other["per_entity"]["effusion"]["hits"] == 0  # a: [96, 128) misses 50; b: [32, 50) and [0, 20) miss 20


def test_pointing_game_from_truth_per_image_sizes_and_torch(tmp_path):
    truth = write_truth(tmp_path, [("wide", "cardiomegaly", "heart_size", 1, 200, 100, 300, 200)])
    heatmaps = torch.zeros(1, 75, 64, 64)
    heatmaps[0, entity_index("cardiomegaly"), 20, 40] = 1  # x = 40, y = 20
    # 400 wide x 200 high -> x in [32, 48), y in [32, 64): y = 20 misses
    assert pointing_game_from_truth(heatmaps, ["wide"], truth, {"wide": (200, 400)})["overall"] == 0.0
    # 400 wide x 800 high -> x in [32, 48), y in [8, 16): still a miss; (height, width) order matters
    assert pointing_game_from_truth(heatmaps, ["wide"], truth, {"wide": (800, 400)})["overall"] == 0.0
    # 400 wide x 400 high -> x in [32, 48), y in [16, 32): hit
    assert pointing_game_from_truth(heatmaps, ["wide"], truth, {"wide": (400, 400)})["overall"] == 1.0
    with pytest.raises(KeyError):
        pointing_game_from_truth(heatmaps, ["wide"], truth, {"other": (400, 400)})


def test_pointing_game_from_truth_without_trials_and_bad_ids(tmp_path):
    truth = write_truth(tmp_path, [("a", "effusion", "left_pleural", 0, 0, 0, 10, 10)])
    empty = pointing_game_from_truth(np.zeros((1, 75, 8, 8)), ["a"], truth, 16)
    assert empty == {"overall": None, "n": 0, "hits": 0, "per_entity": {}}
    with pytest.raises(ValueError):
        pointing_game_from_truth(np.zeros((2, 75, 8, 8)), ["a", "a"], truth, 16)
    with pytest.raises(ValueError):
        pointing_game_from_truth(np.zeros((1, 75, 8, 8)), ["a", "b"], truth, 16)


def test_attainable_trials_are_boxes_that_hold_a_patch_centre(tmp_path):
    # 64 px maps from a 4 x 4 patch grid: each patch peaks on its receptive field's centre, pixel 16 j
    assert sorted(set(patch_peaks(16, 64)[:, 0].tolist())) == [0, 16, 32, 48]
    assert patch_peaks(16, 64) is patch_peaks(16, 64)  # rendered once per grid, not once per scored batch
    with pytest.raises(ValueError):
        patch_peaks(16, 64)[0, 0] = 1  # the cached peaks cannot be changed by a caller
    truth = write_truth(
        tmp_path,
        [
            ("a", "nodule", "right_lung", 1, 2, 2, 14, 14),  # between peaks: no map on this grid can hit it
            ("a", "effusion", "left_pleural", 1, 12, 28, 20, 36),  # holds the centre (16, 32) of patch 9
        ],
    )
    attention = torch.zeros(1, 1, 75, 16)
    attention[0, 0, entity_index("effusion"), 9] = 1  # row 2, column 1
    attention[0, 0, entity_index("nodule"), 0] = 1  # the nearest patch to the nodule still misses it
    result = pointing_game_from_truth(attention_heatmaps(attention, 64), ["a"], truth, 64, tokens=16)
    assert result["per_entity"]["effusion"] == {
        "hit_rate": 1.0,
        "n": 1,
        "hits": 1,
        "attainable": 1.0,
        "n_attainable": 1,
    }
    assert result["per_entity"]["nodule"]["hits"] == 0 and result["per_entity"]["nodule"]["attainable"] == 0.0
    assert result["attainable"] == 0.5 and result["n_attainable"] == 1
    merged = merge_pointing_results([result, result])
    assert merged["attainable"] == 0.5 and merged["per_entity"]["effusion"]["n_attainable"] == 2


def test_attainable_means_some_one_patch_map_hits_the_box():
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 56, size=(200, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(0.5, 20, size=(200, 2))], axis=1)  # (200, 4)
    one_patch_maps = attention_heatmaps(torch.eye(16).reshape(1, 1, 16, 16), 64)[0]  # (16 patches, 64, 64)
    hit_by_some = np.stack([pointing_game(np.repeat(m[None], 200, 0), boxes) for m in one_patch_maps]).any(axis=0)
    truth = pd.DataFrame(
        {"id": [f"i{k}" for k in range(200)], "entity": "mass", "position": "right_lung", "existence": 1,
         "x0": boxes[:, 0], "y0": boxes[:, 1], "x1": boxes[:, 2], "y1": boxes[:, 3]}
    )  # fmt: skip
    maps = np.zeros((200, 75, 64, 64), dtype=np.float32)
    result = pointing_game_from_truth(maps, list(truth["id"]), truth, 64, tokens=16)
    assert result["n_attainable"] == hit_by_some.sum() and 0 < hit_by_some.sum() < 200


def test_merge_pointing_results_sums_batches():
    first = {"per_entity": {"pneumothorax": {"hit_rate": 0.5, "n": 2, "hits": 1}}}
    second = {
        "per_entity": {
            "pneumothorax": {"hit_rate": 1.0, "n": 1, "hits": 1},
            "effusion": {"hit_rate": 0.0, "n": 3, "hits": 0},
        }
    }
    merged = merge_pointing_results([first, second])
    assert merged["n"] == 6 and merged["hits"] == 2 and merged["overall"] == pytest.approx(2 / 6)
    assert list(merged["per_entity"]) == ["effusion", "pneumothorax"]  # ENTITIES order
    assert merged["per_entity"]["pneumothorax"] == {"hit_rate": pytest.approx(2 / 3), "n": 3, "hits": 2}
    assert merge_pointing_results([])["overall"] is None
