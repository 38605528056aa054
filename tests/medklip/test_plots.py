"""Figures: every plot writes a real, non-blank PNG, copes with the awkward inputs evaluation produces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medklip.evaluation import plots
from medklip.evaluation.metrics import MIN_CASES_FOR_CI
from medklip.vocabulary import ENTITIES, entity_index


def open_png(path: Path, min_side: int = 300) -> np.ndarray:
    """Asserts `path` is a PNG of a sensible size with something drawn on it; returns its RGB pixels."""
    assert path.is_file()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert min(image.size) >= min_side and max(image.size) < 5000
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 0
    assert (pixels.min(axis=-1) < 128).mean() > 0.005  # ink, not just a frame on white
    return pixels


def entity_stats(count: int, unscored: int = 0, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    stats = {}
    for index, entity in enumerate(ENTITIES[:count]):
        if index < unscored:
            stats[entity] = {"auc": None, "auc_ci95": None, "n_pos": 0, "n_neg": 40}
        else:
            auc = float(rng.uniform(0.3, 1.0))
            ci = [max(0.0, auc - 0.1), min(1.0, auc + 0.1)]
            stats[entity] = {"auc": auc, "auc_ci95": ci, "n_pos": int(rng.integers(1, 50)), "n_neg": 40}
    return stats


# per-entity AUC


@pytest.fixture(scope="module")
def all_75(tmp_path_factory) -> np.ndarray:
    """The per-entity AUC plot of all 75 entities, scored (drawn once: it is the slowest figure)."""
    path = tmp_path_factory.mktemp("auc") / "all.png"
    assert plots.plot_auc_per_entity(entity_stats(75), path) == path
    return open_png(path)


def test_auc_plot_for_all_75_entities_grows_with_the_count(tmp_path, all_75):
    few = open_png(plots.plot_auc_per_entity(entity_stats(5), tmp_path / "few.png"))
    assert all_75.shape[0] > 5 * few.shape[0] // 2  # about a quarter inch per bar, not squeezed into a fixed height
    assert all_75.shape[0] / 75 >= 25  # at least 25 px per bar at the saved DPI


def test_auc_plot_does_not_draw_unscored_entities(tmp_path, all_75):
    mostly_unscored = plots.plot_auc_per_entity(entity_stats(75, unscored=60), tmp_path / "unscored.png")
    # 15 bars plus a footnote, not 75 bars with 60 of them at 0 or 0.5
    assert open_png(mostly_unscored).shape[0] < all_75.shape[0] / 2


def test_auc_plot_with_nothing_scored_and_missing_ci(tmp_path):
    open_png(plots.plot_auc_per_entity(entity_stats(10, unscored=10), tmp_path / "none.png"))
    stats = entity_stats(4)
    stats["normal"]["auc_ci95"] = None  # a CI could not be bootstrapped
    del stats["clear"]["n_neg"]
    open_png(plots.plot_auc_per_entity(stats, tmp_path / "partial.png"))
    open_png(plots.plot_auc_per_entity({}, tmp_path / "empty.png"))


def test_auc_plot_creates_the_folder(tmp_path):
    path = plots.plot_auc_per_entity(entity_stats(3), tmp_path / "new" / "folder" / "auc.png")
    open_png(path)


# ROC curves


def synthetic_scores(images: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.choice([1, 0, -1], size=(images, 75), p=[0.2, 0.7, 0.1])
    scores = np.clip(0.3 * labels + rng.normal(0.4, 0.25, labels.shape), 0, 1)
    return scores, labels


def test_roc_curves_with_uncertain_labels(tmp_path):
    scores, labels = synthetic_scores()
    open_png(plots.plot_roc_curves(scores, labels, tmp_path / "roc.png", top=6))


def test_roc_picks_the_most_positive_entities_ignoring_minus_one():
    labels = np.zeros((20, 75), dtype=int)
    labels[:10, entity_index("effusion")] = 1  # 10 positives
    labels[:6, entity_index("edema")] = 1  # 6 positives
    labels[:, entity_index("pneumonia")] = -1
    labels[:15, entity_index("pneumonia")] = 1  # 15 positives but no negatives: cannot be drawn
    labels[:4, entity_index("nodule")] = 1
    labels[4:, entity_index("nodule")] = -1  # 4 positives, no negatives
    labels[:8, entity_index("mass")] = -1  # uncertain: not positive (counted as one, mass would come first)
    labels[8, entity_index("mass")] = 1  # 1 positive
    chosen = [ENTITIES[i] for i in plots._most_positive(labels, top=75)]
    assert chosen == ["effusion", "edema", "mass"]  # pneumonia, nodule and the all-negative columns left out
    assert [ENTITIES[i] for i in plots._most_positive(labels, top=2)] == ["effusion", "edema"]


def test_roc_without_any_drawable_entity_and_bad_shapes(tmp_path):
    labels = np.full((10, 75), -1)
    open_png(plots.plot_roc_curves(np.random.default_rng(0).random((10, 75)), labels, tmp_path / "none.png"))
    with pytest.raises(ValueError):
        plots.plot_roc_curves(np.zeros((10, 74)), np.zeros((10, 74)), tmp_path / "bad.png")


# training history


HISTORY = [
    {"epoch": 1, "step": 50, "lr": 5e-4, "train_existence": 0.52, "train_position": 0.75, "train_loss": 1.27,
     "val_mean_auc": 0.73},
    {"epoch": 2, "step": 100, "lr": 4e-4, "train_existence": 0.28, "train_position": 0.34, "train_loss": 0.62,
     "val_mean_auc": 0.77, "val_loss": 0.7},
    {"epoch": 3, "step": 150, "lr": 3e-4, "train_existence": 0.25, "train_position": 0.30, "train_loss": 0.55,
     "val_mean_auc": None},
]  # fmt: skip


def test_loss_curve_from_history(tmp_path):
    open_png(plots.plot_loss_curve(HISTORY, tmp_path / "loss.png"))


def test_loss_curve_single_epoch(tmp_path):
    open_png(plots.plot_loss_curve(HISTORY[:1], tmp_path / "one.png"))


def test_loss_curve_without_validation_keys(tmp_path):
    history = [{key: value for key, value in record.items() if not key.startswith("val_")} for record in HISTORY]
    open_png(plots.plot_loss_curve(history, tmp_path / "no_val.png"))
    open_png(plots.plot_loss_curve([{"epoch": 1}], tmp_path / "bare.png"))
    open_png(plots.plot_loss_curve([], tmp_path / "empty.png"))


def test_loss_series_leave_gaps_and_totals_come_first():
    assert plots._loss_keys(HISTORY) == ["train_loss", "val_loss", "train_existence", "train_position"]
    val_loss = plots._series(HISTORY, "val_loss")
    assert np.isnan(val_loss[0]) and val_loss[1] == 0.7 and np.isnan(val_loss[2])
    assert np.isnan(plots._series(HISTORY, "val_mean_auc")[2])


# attention overlay


def radiograph(size: int = 128) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    return (100 + 60 * np.sin(x / 9.0) * np.cos(y / 13.0)).astype(np.uint8)


def saturated(pixels: np.ndarray) -> int:
    """Pixels far from gray: the colour heatmap, the colour bar, the box."""
    return int((pixels.max(axis=-1).astype(int) - pixels.min(axis=-1) > 40).sum())


# pointing game


def grounding_result(bounded: bool) -> dict:
    from medklip.model.grounding import merge_pointing_results

    rows = {"effusion": [12, 80, 44], "nodule": [1, 29, 15], "cardiomegaly": [20, 52, 30], "tube": [0, 28, 14]}
    per_entity = {}
    for entity, (hits, n, attainable) in rows.items():
        per_entity[entity] = {"hit_rate": hits / n, "n": n, "hits": hits}
        if bounded:
            per_entity[entity].update(attainable=attainable / n, n_attainable=attainable)
    return merge_pointing_results([{"per_entity": per_entity}])


def test_pointing_game_plot_marks_the_grid_ceiling(tmp_path):
    result = grounding_result(bounded=True)
    assert result["attainable"] == pytest.approx(103 / 189)
    ticked = open_png(plots.plot_pointing_game(result, tmp_path / "ticked.png"))
    plain = open_png(plots.plot_pointing_game(grounding_result(bounded=False), tmp_path / "plain.png"))

    def black_mid_plot(pixels: np.ndarray) -> int:  # black ink inside the bars' area, where the ticks (0.5-0.6) are
        height, width = pixels.shape[:2]
        middle = pixels[int(0.15 * height) : int(0.85 * height), int(0.3 * width) : int(0.6 * width)]
        return int((middle.max(axis=-1) < 60).sum())

    assert black_mid_plot(plain) < 50 < 200 < black_mid_plot(ticked)


def test_pointing_game_plot_without_lesions(tmp_path):
    empty = {"overall": None, "n": 0, "hits": 0, "per_entity": {}}
    open_png(plots.plot_pointing_game(empty, tmp_path / "empty.png"), min_side=200)


def test_overlay_draws_colour_only_where_the_heatmap_is(tmp_path):
    image = radiograph()
    heatmap = np.zeros((32, 32), dtype=np.float32)  # a coarser map: stretched over the whole image
    heatmap[8:12, 20:24] = 0.02
    hot = open_png(plots.overlay_heatmap(image, heatmap, "effusion", tmp_path / "hot.png", probability=0.91))
    flat = open_png(plots.overlay_heatmap(image, np.zeros((32, 32)), "effusion", tmp_path / "flat.png"))
    # both have the colour bar; only the first has a coloured blob on the radiograph
    assert saturated(hot) > saturated(flat) + 500


def test_overlay_with_box(tmp_path):
    image = radiograph()
    heatmap = np.random.default_rng(0).random((128, 128))
    without = open_png(plots.overlay_heatmap(image, heatmap, "nodule", tmp_path / "plain.png"))
    boxed = open_png(plots.overlay_heatmap(image, heatmap, "nodule", tmp_path / "box.png", box=(10, 20, 60, 90)))
    green = (boxed[..., 1] > 200) & (boxed[..., 0] < 80) & (boxed[..., 2] < 80)
    green_before = (without[..., 1] > 200) & (without[..., 0] < 80) & (without[..., 2] < 80)
    assert green.sum() > green_before.sum() + 100


def test_overlay_rejects_colour_images(tmp_path):
    with pytest.raises(ValueError):
        plots.overlay_heatmap(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8)), "x", tmp_path / "bad.png")


def test_pointing_game_plot_says_when_the_attention_was_trained_on_boxes(tmp_path):
    result = grounding_result(bounded=True)
    plain = open_png(plots.plot_pointing_game(result, tmp_path / "plain.png"))
    supervised = open_png(plots.plot_pointing_game({**result, "train_boxes": "boxes.csv"}, tmp_path / "boxed.png"))

    def ink_rows(pixels: np.ndarray) -> int:  # rows with dark text in the bottom tenth, under the x axis
        bottom = pixels[int(0.9 * pixels.shape[0]) :]
        return int(((bottom.max(axis=-1) < 100).sum(axis=1) > 0).sum())

    assert ink_rows(supervised) > ink_rows(plain)


def _texts_of_auc_plot(monkeypatch, tmp_path, stats) -> str:
    """Every text the per-entity AUC figure draws (its numbers column, legend and footnote)."""
    drawn = {}
    save = plots._save

    def keep(figure, path):  # read the texts before _save clears the figure
        found = figure.findobj(match=lambda artist: hasattr(artist, "get_text"))
        drawn["texts"] = [artist.get_text() for artist in found]
        return save(figure, path)

    monkeypatch.setattr(plots, "_save", keep)
    plots.plot_auc_per_entity(stats, tmp_path / "auc.png")
    return "\n\n".join(drawn["texts"])


def test_auc_plot_says_n_too_small_instead_of_a_certain_looking_interval(monkeypatch, tmp_path):
    stats = {
        "effusion": {"auc": 1.0, "auc_ci95": [1.0, 1.0], "n_pos": 12, "n_neg": 4},  # [1.00-1.00] on 4 negatives
        "edema": {"auc": 0.8, "auc_ci95": [0.7, 0.9], "n_pos": 40, "n_neg": 60},
    }
    text = _texts_of_auc_plot(monkeypatch, tmp_path, stats)
    assert "1.00 n too small" in text and "[1.00-1.00]" not in text
    assert "0.80 [0.70-0.90]" in text  # enough cases: the interval is shown
    assert f"under {MIN_CASES_FOR_CI} positives or negatives" in text


def test_auc_plot_lists_only_findings_as_not_scored(monkeypatch, tmp_path):
    stats = {
        entity: {"auc": None, "auc_ci95": None, "n_pos": 0, "n_neg": 30} for entity in ("effusion", "tip", "clear")
    }
    stats["edema"] = {"auc": 0.8, "auc_ci95": [0.7, 0.9], "n_pos": 40, "n_neg": 60}
    text = _texts_of_auc_plot(monkeypatch, tmp_path, stats)
    footnote = next(line for line in text.split("\n\n") if "not scored" in line).replace("\n", " ")
    assert "effusion" in footnote and "tip" not in footnote.split("Not listed")[0]
    assert "clear" not in footnote.split("Not listed")[0] and "Not listed: 2 words" in footnote
