"""Helpers for tests: small images and report folders built on the fly."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image


def radiograph(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth uint8 test image with structure (not a flat field), so resizing and windowing are observable."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    pixels = 128 + 60 * np.sin(x / 17.0) * np.cos(y / 23.0) + rng.normal(0, 5, (height, width))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def write_reports(folder: Path, rows: list[dict], columns=("id", "image", "findings", "impression")) -> Path:
    path = folder / "reports.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        for row in rows:
            writer.writerow({column: row.get(column, "") for column in columns})
    return path


GOOD_REPORT = {"findings": "Heart size is normal. Lungs are clear.", "impression": "No acute process."}


def write_clean_folder(folder: Path, n: int, size: tuple[int, int] = (280, 256)) -> Path:
    """n good images with distinct reports."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        Image.fromarray(radiograph(*size, seed=i)).save(folder / f"images/{i:04d}.png")
        rows.append(
            {"id": f"case{i:04d}", "image": f"images/{i:04d}.png", "findings": f"Finding {i}.", "impression": ""}
        )
    write_reports(folder, rows)
    return folder


def radiograph_png(path: Path) -> Path:
    """A synthetic chest radiograph saved as a 256 px PNG (tests make their own images; the shared samples beside
    the repository are not there on every checkout)."""
    from medklip.data.synthetic import make_case

    Image.fromarray(make_case(seed=0, index=1, size=256).image).save(path)
    return path


def prepared_synthetic(out: Path, n: int, seed: int, size: int = 64, val: float = 0.2, test: float = 0.1) -> Path:
    """A small prepared synthetic data set with its triplets: what training, tracking and launch tests start from."""
    from medklip.data.prepare import PrepareConfig, prepare
    from medklip.labels.extract import extract_file

    config = PrepareConfig(workers=2, short_side=64, val_fraction=val, test_fraction=test)
    prepare(f"synthetic://{n}?seed={seed}&size={size}", out, config)
    extract_file(out / "reports.parquet", out / "triplets.parquet")
    return out


def tiny_text_encoder(folder: Path) -> Path:
    """A 1-layer, 32-wide BERT with random weights (seed 0) and a character WordPiece vocabulary, saved to `folder`:
    a real `transformers` model folder that loads in a fraction of a second (for tests that start many processes)."""
    import json

    import torch
    from transformers import BertConfig, BertModel

    if (folder / "config.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    letters = list("abcdefghijklmnopqrstuvwxyz0123456789")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *".,;:()-/%'\"!?", *letters, *("##" + c for c in letters)]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 64}
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer))
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64,
    )  # fmt: skip
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return folder
