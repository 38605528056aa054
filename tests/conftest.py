"""Shared fixtures: small image folders with every kind of bad input, built fresh by each test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import GOOD_REPORT, radiograph, write_clean_folder, write_reports


@pytest.fixture(autouse=True, scope="session")
def mlflow_store(tmp_path_factory) -> Path:
    """`medklip train` tracks by default: during the tests, into a throwaway local store, never ./mlruns."""
    store = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}/mlflow.db")
        patch.setenv("MLFLOW_EXPERIMENT_NAME", "medklip-tests")
        yield store


@pytest.fixture
def messy_folder(tmp_path: Path) -> Path:
    """A folder source with good images in every odd format and every kind of bad file.

    Kept: good, rgb, sixteen_bit, rgba, palette, cmyk, large. Skipped: empty, truncated, not_image, missing, tiny,
    no_report (a good image whose report is blank), duplicate (an id seen before).
    """
    folder = tmp_path / "messy"
    (folder / "images").mkdir(parents=True)
    base = radiograph(300, 260)
    Image.fromarray(base).save(folder / "images/good.png")
    Image.fromarray(np.stack([base, base // 2, base], axis=-1)).save(folder / "images/rgb.jpg", quality=90)
    gradient = (np.linspace(0, 4095, 320 * 300).reshape(320, 300)).astype(np.uint16)  # 12-bit data in 16 bits
    Image.fromarray(gradient).save(folder / "images/sixteen_bit.png")
    rgba = np.dstack([base, base, base, np.full_like(base, 200)])
    Image.fromarray(rgba, mode="RGBA").save(folder / "images/rgba.png")
    Image.fromarray(base).convert("P").save(folder / "images/palette.png")
    Image.fromarray(base).convert("CMYK").save(folder / "images/cmyk.jpg")
    Image.fromarray(radiograph(4000, 3200, seed=1)).save(folder / "images/large.png", compress_level=1)
    (folder / "images/empty.png").write_bytes(b"")
    good_bytes = (folder / "images/good.png").read_bytes()
    (folder / "images/truncated.png").write_bytes(good_bytes[: len(good_bytes) // 2])
    (folder / "images/not_image.png").write_text("this is a radiology report, not a picture")
    Image.fromarray(radiograph(40, 300)).save(folder / "images/tiny.png")
    names = {
        "good": "images/good.png",
        "rgb": "images/rgb.jpg",
        "sixteen_bit": "images/sixteen_bit.png",
        "rgba": "images/rgba.png",
        "palette": "images/palette.png",
        "cmyk": "images/cmyk.jpg",
        "large": "images/large.png",
        "empty": "images/empty.png",
        "truncated": "images/truncated.png",
        "not_image": "images/not_image.png",
        "missing": "images/missing.png",
        "tiny": "images/tiny.png",
    }
    rows = [{"id": key, "image": path, **GOOD_REPORT} for key, path in names.items()]
    rows.append({"id": "no_report", "image": "images/good.png", "findings": "  ", "impression": ""})
    rows.append({"id": "good", "image": "images/rgb.jpg", **GOOD_REPORT})  # duplicate id
    write_reports(folder, rows)
    return folder


@pytest.fixture
def clean_folder(tmp_path: Path) -> Path:
    return write_clean_folder(tmp_path / "clean", 24)
