"""Grounding: cross-attention maps as image heatmaps, and the pointing game against rendered lesion boxes.

The decoder's cross-attention (`MedKLIP(..., return_attention=True)["attention"]`, (B, layers, 75, T)) says where each
entity query looked among the T = h * w patch tokens. `attention_heatmaps` turns it into one (S, S) map per entity on
the model's input grid; `pointing_game` scores a map as a hit when its peak falls inside the reference box; and
`pointing_game_from_truth` runs the game over every rendered finding of a synthetic `truth.csv`.

The patch grid bounds the score: a heatmap is bilinear between the T patch centres (pixel stride * j, the centre of
each patch's receptive field), so it peaks on one of those T pixels, and a box that holds none of them (a small
nodule between centres on the 8 x 8 grid of a 128 px model) cannot be hit by any map. Given the grid (`tokens=T`),
the results also say how many trials were `attainable` at all: the ceiling any attention could reach.

    out = model(images, return_attention=True)                      # images: (B, 1, S, S)
    heatmaps = attention_heatmaps(out["attention"], images.shape[-1])  # (B, 75, S, S) numpy
    result = pointing_game_from_truth(heatmaps, ids, truth, source_size=256, tokens=out["attention"].shape[-1])
    result["overall"], result["n"], result["attainable"], result["per_entity"]["effusion"]

Coordinates. The evaluation view is the whole source image squashed to S x S without keeping the aspect ratio
(`medklip.data.augment.full_view`), so a source box maps to the model grid by x * S / width and y * S / height
(`rescale_boxes`). Boxes are (x0, y0, x1, y1) in pixels with exclusive ends, as `image[y0:y1, x0:x1]`.

Memory: (B, 75, S, S) float32 is 15 MB per image at S = 224; compute heatmaps and score them one batch at a time and
merge the per-batch results with `merge_pointing_results`.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from medklip.data.boxes import BOX_COLUMNS
from medklip.vocabulary import ENTITIES, entity_index

logger = logging.getLogger(__name__)


def _patch_grid(tokens: int, image_size: int) -> tuple[int, int]:
    """(side, stride) of a square grid of `tokens` patches on an `image_size` input. The stride is the ResNet's, a
    power of two (ceil(S / stride) patches per side, so S / side rounded to one)."""
    side = math.isqrt(tokens)
    if side == 0 or side * side != tokens:
        raise ValueError(f"{tokens} tokens do not form a square patch grid")
    return side, 2 ** max(0, round(math.log2(image_size / side)))


def _interpolation(side: int, image_size: int, stride: int, mode: str) -> torch.Tensor:
    """(S, side): the weight of patch j in pixel p along one axis, patch j sitting on pixel stride * j."""
    place = (torch.arange(image_size, dtype=torch.float64) / stride).clamp(0, side - 1)  # (S,) in patch units
    if mode == "nearest":
        return F.one_hot(torch.floor(place + 0.5).long(), side).float()
    return (1 - (place[:, None] - torch.arange(side)[None, :]).abs()).clamp(min=0).float()  # linear between patches


def attention_heatmaps(attention: torch.Tensor | np.ndarray, image_size: int, mode: str = "bilinear") -> np.ndarray:
    """Cross-attention -> one heatmap per entity on the model's input grid, registered to what each patch sees.

    Averages over decoder layers (and the heads were already averaged by the model), reshapes the T tokens to the
    sqrt(T) x sqrt(T) patch grid (row-major, as the ResNet feature map was flattened), and places patch (i, j) on
    pixel (stride * i, stride * j), the centre of its receptive field: ResNet's stride-2 layers (7 x 7 and 3 x 3
    kernels, padding 3 and 1) centre output j on input pixel 2 j, so the patch at stride 8 or 16 sees a window
    centred on pixel 8 j or 16 j, not on the middle of the j-th 8 or 16 pixel cell (half a patch further right and
    down; tested against the gradient of a token with respect to the image). Between patch centres the map is
    bilinear; beyond the last one it keeps the last patch's value.

    Bilinear is the default: a patch's weight peaks exactly on its centre pixel, so the pointing game's argmax lands
    where the patch looks. `mode="nearest"` gives each pixel the nearest patch's weight (blocky maps, as MedKLIP).

    Args:
        attention: (B, layers, 75, T) attention weights, torch or numpy, any float dtype and device.
        image_size: S, the side of the square model input.
        mode: "bilinear" or "nearest".

    Returns:
        (B, 75, S, S) float32 numpy array, on the CPU; values are attention weights (not normalised per map).

    Raises:
        ValueError: if `attention` is not 4-D, T is not a perfect square, or `mode` is unknown.
    """
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
    weights = torch.as_tensor(attention)
    if weights.ndim != 4:
        raise ValueError(f"attention must be (B, layers, entities, tokens), got shape {tuple(weights.shape)}")
    tokens = weights.shape[-1]
    side, stride = _patch_grid(tokens, image_size)
    averaged = weights.detach().float().mean(dim=1).cpu()  # (B, 75, T)
    grid = averaged.reshape(*averaged.shape[:2], side, side)  # (B, 75, h, w)
    along = _interpolation(side, image_size, stride, mode)  # (S, side), the same for rows and columns
    return torch.einsum("yh,bqhw,xw->bqyx", along, grid, along).numpy()


def rescale_boxes(
    boxes: np.ndarray | Sequence[Sequence[float]], source_height: int, source_width: int, size: int
) -> np.ndarray:
    """Maps (x0, y0, x1, y1) boxes from a source image to the S x S evaluation view (whole image, squashed).

    Args:
        boxes: (N, 4) or (4,) boxes in source pixels.
        source_height: source image height in pixels.
        source_width: source image width in pixels.
        size: S, the side of the model input.

    Returns:
        float64 boxes of the same shape, in model-input pixels (x scaled by S / width, y by S / height).
    """
    scale = np.array([size / source_width, size / source_height, size / source_width, size / source_height])
    return np.asarray(boxes, dtype=np.float64) * scale


def _pixel_span(low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pixel indices [first, stop) whose centres i + 0.5 lie in [low, high); at least the pixel under the middle.

    For integer bounds this is exactly first = low, stop = high (the `image[y0:y1, x0:x1]` convention). A rescaled box
    thinner than a pixel may hold no pixel centre; it then keeps the one pixel under its middle, so it can still be hit.
    """
    first = np.ceil(low - 0.5)
    stop = np.ceil(high - 0.5)
    middle = np.floor((low + high) / 2)
    empty = stop <= first
    return np.where(empty, middle, first), np.where(empty, middle + 1, stop)


def peak_locations(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) pixel indices of each map's maximum; ties go to the first in row-major order (as `np.argmax`).

    Args:
        heatmaps: (N, H, W) maps.

    Returns:
        Two (N,) int arrays: column x and row y of each peak.
    """
    maps = np.asarray(heatmaps)
    flat = maps.reshape(maps.shape[0], -1).argmax(axis=1)  # (N,)
    rows, columns = np.unravel_index(flat, maps.shape[1:])
    return columns.astype(np.int64), rows.astype(np.int64)


def pointing_game(heatmaps: np.ndarray | torch.Tensor, boxes: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Whether each map's peak falls inside its box: x0 <= x < x1 and y0 <= y < y1.

    The box must be in the heatmap's own pixel coordinates (rescale source boxes with `rescale_boxes`). Fractional
    boxes hold the pixels whose centres (x + 0.5, y + 0.5) they contain, which for integer boxes is exactly the rule
    above; a box thinner than one pixel keeps the pixel under its middle. Ties for the peak go to the first pixel in
    row-major order, so a flat map points at the top-left corner.

    Args:
        heatmaps: (N, S, S) maps, one entity per row.
        boxes: (N, 4) boxes (x0, y0, x1, y1), exclusive ends, in the same pixels as the maps.

    Returns:
        (N,) bool hits.

    Raises:
        ValueError: on mismatched lengths, a malformed box array or non-finite heatmap values.
    """
    maps = heatmaps.detach().float().cpu().numpy() if isinstance(heatmaps, torch.Tensor) else np.asarray(heatmaps)
    boxes = np.asarray(boxes, dtype=np.float64)
    if maps.ndim != 3 or boxes.ndim != 2 or boxes.shape[1] != 4 or len(maps) != len(boxes):
        raise ValueError(f"need (N, S, S) heatmaps and (N, 4) boxes, got {maps.shape} and {boxes.shape}")
    if not np.isfinite(maps).all():
        raise ValueError("heatmaps hold NaN or infinite values")
    if len(maps) == 0:
        return np.zeros(0, dtype=bool)
    x, y = peak_locations(maps)
    return _in_boxes(boxes, x, y)


def _in_boxes(boxes: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Whether pixel (x, y) lies in box (x0, y0, x1, y1) by the pixel-centre rule of `_pixel_span`; broadcasts."""
    x_first, x_stop = _pixel_span(boxes[..., 0], boxes[..., 2])
    y_first, y_stop = _pixel_span(boxes[..., 1], boxes[..., 3])
    return (x_first <= x) & (x < x_stop) & (y_first <= y) & (y < y_stop)


@functools.lru_cache(maxsize=8)
def patch_peaks(tokens: int, image_size: int, mode: str = "bilinear") -> np.ndarray:
    """(T, 2) pixel (x, y) where a map that puts all its weight on one patch peaks, for each of the T patches.

    Upsampled exactly as `attention_heatmaps` does, with the same tie rule as `peak_locations`, so a box that holds
    none of these pixels is missed by every heatmap on this grid. Rendered once per grid (T maps of S x S) and cached
    for every later batch; the array is read-only.
    """
    one_hot = torch.eye(tokens).reshape(1, 1, tokens, tokens)  # (B=1, layers=1, "entities"=T, T)
    x, y = peak_locations(attention_heatmaps(one_hot, image_size, mode)[0])
    peaks = np.stack([x, y], axis=1)
    peaks.flags.writeable = False
    return peaks


def _source_size(source_size: int | tuple[int, int] | Mapping[str, tuple[int, int]], image_id: str) -> tuple[int, int]:
    if isinstance(source_size, Mapping):
        height, width = source_size[image_id]
        return int(height), int(width)
    if isinstance(source_size, (int, np.integer)):
        return int(source_size), int(source_size)
    height, width = source_size
    return int(height), int(width)


def pointing_game_from_truth(
    heatmaps: np.ndarray | torch.Tensor,
    ids: Sequence[str],
    truth: pd.DataFrame,
    source_size: int | tuple[int, int] | Mapping[str, tuple[int, int]],
    entities: Iterable[str] | None = None,
    tokens: int | None = None,
) -> dict:
    """The pointing game over every rendered finding of a synthetic `truth.csv`, for one batch of images.

    A trial is one (image, entity) with at least one truth row of existence 1 and a box; rows with existence 0 or -1
    (uncertain findings are rendered too) are not trials. An entity with several boxes in one image (pneumonia in two
    lobes, effusion named at two positions) is one trial, hit when the peak is inside any of its boxes. Ids not in
    `truth` are skipped.

    Args:
        heatmaps: (B, 75, S, S) maps from `attention_heatmaps`, in `ENTITIES` order.
        ids: (B,) image ids, as in truth.csv's `id` column, one per heatmap row.
        truth: the truth table (columns id, entity, position, existence, x0, y0, x1, y1; empty boxes are NaN).
        source_size: size of the source images the boxes are drawn on: one int (square images of that side), one
            (height, width), or a mapping id -> (height, width).
        entities: restrict to these entity names (default: every entity with a box).
        tokens: T, the patch tokens the maps were upsampled from; adds how many trials any map on that grid could
            hit (`attainable`: a box holding one patch's peak pixel, see `patch_peaks`).

    Returns:
        {"overall": hit rate or None when n is 0, "n": trials, "hits": hits,
         "per_entity": {entity: {"hit_rate", "n", "hits"}}} with entities in `ENTITIES` order; with `tokens`, also
        "attainable" (rate) and "n_attainable" overall and per entity.

    Raises:
        ValueError: if heatmaps and ids disagree, an id repeats, or a truth entity is not in `ENTITIES`.
        KeyError: if `source_size` is a mapping without one of the ids that has boxes.
    """
    maps = heatmaps.detach().float().cpu().numpy() if isinstance(heatmaps, torch.Tensor) else np.asarray(heatmaps)
    ids = [str(image_id) for image_id in ids]
    if maps.ndim != 4 or maps.shape[0] != len(ids) or maps.shape[2] != maps.shape[3]:
        raise ValueError(f"need (B, entities, S, S) heatmaps for {len(ids)} ids, got shape {maps.shape}")
    if len(set(ids)) != len(ids):
        raise ValueError("ids repeat within the batch")
    size = maps.shape[-1]
    row_of = {image_id: row for row, image_id in enumerate(ids)}

    boxed = truth[truth["id"].astype(str).isin(list(row_of)) & (truth["existence"] == 1)]
    boxed = boxed.dropna(subset=list(BOX_COLUMNS))
    if entities is not None:
        boxed = boxed[boxed["entity"].isin(set(entities))]

    trial_rows: list[int] = []  # one entry per box: which trial it belongs to
    trial_keys: list[tuple[str, str]] = []
    selected: list[np.ndarray] = []  # (S, S) map per box
    scaled: list[np.ndarray] = []  # (4,) box per box, in heatmap pixels
    trial_of: dict[tuple[str, str], int] = {}
    for image_id, entity, *box in boxed[["id", "entity", *BOX_COLUMNS]].itertuples(index=False):
        key = (str(image_id), str(entity))
        if key not in trial_of:
            trial_of[key] = len(trial_keys)
            trial_keys.append(key)
        height, width = _source_size(source_size, key[0])
        selected.append(maps[row_of[key[0]], entity_index(key[1])])
        scaled.append(rescale_boxes(box, height, width, size))
        trial_rows.append(trial_of[key])

    trial_hits = np.zeros(len(trial_keys), dtype=bool)
    trial_attainable = np.zeros(len(trial_keys), dtype=bool)
    if selected:
        box_hits = pointing_game(np.stack(selected), np.stack(scaled))
        np.logical_or.at(trial_hits, np.asarray(trial_rows), box_hits)
        if tokens is not None:
            peaks = patch_peaks(tokens, size)  # (T, 2)
            inside = _in_boxes(np.stack(scaled)[:, None, :], peaks[:, 0], peaks[:, 1])  # (N boxes, T patches)
            np.logical_or.at(trial_attainable, np.asarray(trial_rows), inside.any(axis=1))

    counts: dict[str, list[int]] = {}
    for (_, entity), hit, attainable in zip(trial_keys, trial_hits, trial_attainable, strict=True):
        counts.setdefault(entity, [0, 0, 0])
        counts[entity][0] += int(hit)
        counts[entity][1] += 1
        counts[entity][2] += int(attainable)
    return _summary({entity: counts[entity] for entity in ENTITIES if entity in counts}, bounded=tokens is not None)


def _summary(counts: Mapping[str, Sequence[int]], bounded: bool) -> dict:
    """{entity: [hits, n, attainable]} -> the result dict of `pointing_game_from_truth` (`attainable` if bounded)."""
    per_entity = {}
    for entity, (hits, n, attainable) in counts.items():
        per_entity[entity] = {"hit_rate": hits / n if n else None, "n": int(n), "hits": int(hits)}
        if bounded:
            per_entity[entity].update(attainable=attainable / n if n else None, n_attainable=int(attainable))
    total_hits = sum(int(c[0]) for c in counts.values())
    total = sum(int(c[1]) for c in counts.values())
    result = {"overall": total_hits / total if total else None, "n": total, "hits": total_hits}
    if bounded and counts:
        total_attainable = sum(int(c[2]) for c in counts.values())
        result.update(attainable=total_attainable / total if total else None, n_attainable=total_attainable)
    return {**result, "per_entity": per_entity}


def merge_pointing_results(results: Iterable[Mapping]) -> dict:
    """Combines per-batch `pointing_game_from_truth` results into one, summing hits and trials per entity.

    Args:
        results: dicts as returned by `pointing_game_from_truth`.

    Returns:
        One dict of the same form over all the batches.
    """
    counts: dict[str, list[int]] = {}
    bounded = True  # every result says how many trials were attainable
    for result in results:
        for entity, stats in result["per_entity"].items():
            counts.setdefault(entity, [0, 0, 0])
            counts[entity][0] += int(stats["hits"])
            counts[entity][1] += int(stats["n"])
            counts[entity][2] += int(stats.get("n_attainable", 0))
            bounded = bounded and "n_attainable" in stats
    order = {entity: index for index, entity in enumerate(ENTITIES)}
    return _summary(dict(sorted(counts.items(), key=lambda item: order.get(item[0], len(order)))), bounded)
