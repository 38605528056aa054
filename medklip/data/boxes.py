"""Lesion boxes for location supervision: read a boxes table, and mark the patch tokens each box covers in a view.

MedKLIP learns where to look from image-level labels alone, and on our synthetic data its cross-attention settles
near thin or small findings rather than on them (README, Evaluation). Where a share of the training images has boxes
(hospital sets such as RSNA Pneumonia, VinDr-CXR, or ChestX-ray14's bounding boxes), `train.boxes: FILE` adds a
term that pulls each boxed finding's attention into its box (`medklip.model.losses`, `loss.box_weight`); images without
boxes train as before.

The file is a CSV with one row per box: `id` (as in the prepared folder), `entity` (one of the 75), and `x0, y0,
x1, y1` in the source image's pixels with exclusive ends (`image[y0:y1, x0:x1]`); an `existence` column, if there is
one, keeps only its rows of 1. A synthetic folder's `truth.csv` has this form. Only the boxes of the train split are
used, so evaluation never sees a box it trained on.

    boxes = read_boxes("boxes.csv", data)                 # {row: (entity indices (n,), boxes (n, 4) in stored px)}
    mask = patch_mask(*boxes[row], params, size=128, stride=8)   # (75, T) bool: the tokens inside each box
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pandas as pd

from medklip.data.augment import WarpParams, output_to_input
from medklip.vocabulary import ENTITIES, entity_index
from medklip.data.sources import DataError

if TYPE_CHECKING:
    from medklip.data.prepare import PreparedData

logger = logging.getLogger(__name__)

BOX_COLUMNS = ("x0", "y0", "x1", "y1")  # a box in pixels, exclusive ends
RowBoxes = tuple[np.ndarray, np.ndarray]  # (n,) entity indices, (n, 4) boxes in stored-image pixels


def read_boxes(path: str | Path, data: PreparedData, split: str = "train") -> dict[int, RowBoxes]:
    """Boxes of one split's images, keyed by table row, rescaled from source to stored pixels.

    Args:
        path: the boxes CSV (see the module docstring).
        data: the prepared folder whose ids the CSV names.
        split: only images of this split keep their boxes.

    Returns:
        {row: (entity indices (n,) int64, boxes (n, 4) float64 as x0, y0, x1, y1 in the stored image's pixels)}.

    Raises:
        DataError: if the file is missing or malformed, names an unknown entity, or leaves no box in the split.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: boxes file not found")
    table = pd.read_csv(path)
    missing = [column for column in ("id", "entity", *BOX_COLUMNS) if column not in table.columns]
    if missing:
        raise DataError(f"{path}: missing columns {missing}; need id, entity, x0, y0, x1, y1 (source pixels)")
    if "existence" in table.columns:
        table = table[table["existence"] == 1]
    table = table.dropna(subset=list(BOX_COLUMNS))
    unknown = sorted(set(table["entity"].astype(str)) - set(ENTITIES))
    if unknown:
        raise DataError(f"{path}: unknown entities {unknown[:5]}; boxes must name one of the 75 (medklip.vocabulary)")
    bad = table[(table["x1"] <= table["x0"]) | (table["y1"] <= table["y0"])]
    if len(bad):
        raise DataError(f"{path}: {len(bad)} boxes with x1 <= x0 or y1 <= y0, e.g. id {bad['id'].iat[0]}")

    rows = data.rows(split)
    info = data.table.iloc[rows]
    row_of = dict(zip(info["id"].astype(str), rows, strict=True))
    table = table[table["id"].astype(str).isin(row_of)]
    if table.empty:
        raise DataError(f"{path}: no box belongs to an image of the {split} split of {data.root}")
    sizes = data.table[["height", "width", "source_height", "source_width"]].to_numpy(np.float64)
    boxes: dict[int, RowBoxes] = {}
    for image_id, group in table.groupby(table["id"].astype(str), sort=False):
        row = int(row_of[image_id])
        height, width, source_height, source_width = sizes[row]
        scale = np.array([width / source_width, height / source_height] * 2)
        entities = np.array([entity_index(name) for name in group["entity"].astype(str)], dtype=np.int64)
        boxes[row] = (entities, group[list(BOX_COLUMNS)].to_numpy(np.float64) * scale)
    logger.info("%s: %d boxes on %d of %d %s images", path, len(table), len(boxes), len(rows), split)
    return boxes


def patch_mask(entities: np.ndarray, boxes: np.ndarray, params: WarpParams, size: int, stride: int) -> np.ndarray:
    """(75, T) bool: for each entity, the patch tokens of the (size, size) view whose centres fall in one of its boxes.

    Patch (i, j) of the ceil(size / stride)-sided grid sits on view pixel (stride * j, stride * i), as in
    `medklip.model.grounding`; the view's affine map (crop, rotation, resize) carries it to the stored image, where the box
    holds it when the pixel's centre lies inside (x0 <= x + 0.5 < x1). A box that holds no patch centre (a nodule
    smaller than a patch) marks the patch nearest to its middle, if that middle is in the view; a box cropped out of
    the view marks nothing.
    """
    side = math.ceil(size / stride)
    grid = np.arange(side, dtype=np.float64) * stride
    centres = np.stack(np.meshgrid(grid, grid), axis=-1).reshape(-1, 2)  # (T, 2) view (x, y), row-major
    matrix = output_to_input(params, size)
    points = centres @ matrix[:, :2].T + matrix[:, 2] + 0.5  # (T, 2) pixel centres in the stored image
    x0, y0, x1, y1 = (boxes[:, k : k + 1] for k in range(4))  # (n, 1) each
    inside = (x0 <= points[:, 0]) & (points[:, 0] < x1) & (y0 <= points[:, 1]) & (points[:, 1] < y1)  # (n, T)
    empty = ~inside.any(axis=1)
    if empty.any():
        middles = np.stack([(x0 + x1)[:, 0] / 2 - 0.5, (y0 + y1)[:, 0] / 2 - 0.5], axis=1)[empty]  # (m, 2) indices
        inverse = cv2.invertAffineTransform(matrix)  # stored image -> view
        view = middles @ inverse[:, :2].T + inverse[:, 2]
        seen = ((view >= -0.5) & (view < size - 0.5)).all(axis=1)
        nearest = np.clip(np.rint(view / stride), 0, side - 1).astype(np.int64)  # (m, 2) patch (j, i)
        for box, (j, i), keep in zip(np.flatnonzero(empty), nearest, seen, strict=True):
            inside[box, i * side + j] = keep
    mask = np.zeros((len(ENTITIES), side * side), dtype=bool)
    np.logical_or.at(mask, entities, inside)
    return mask
