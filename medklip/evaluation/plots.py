"""Evaluation and training figures as PNG files: per-finding AUC, ROC curves, loss curves, grounding, attention maps.

Every function draws one figure, writes it to `path` (creating the folder) and returns the path. Figures are built
with matplotlib's object-oriented API on the Agg canvas (`matplotlib.figure.Figure`, never `pyplot`), so nothing
needs a display, no global backend is switched for the importing program, and nothing stays registered after saving.

    from medklip.evaluation import plots
    plots.plot_auc_per_entity(report["per_entity"], "results/auc_per_entity.png")
    plots.plot_roc_curves(probabilities, labels, "results/roc.png", top=6)
    plots.plot_loss_curve([json.loads(line) for line in open("checkpoints/history.jsonl")], "results/loss.png")
    plots.plot_pointing_game(metrics["grounding"], "results/pointing_game.png")
    plots.overlay_heatmap(image, heatmap, "effusion", "results/effusion.png", probability=0.91, box=(40, 120, 90, 170))
"""

from __future__ import annotations

import logging
import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import roc_auc_score, roc_curve

from medklip.evaluation.metrics import MIN_CASES_FOR_CI, too_few_for_ci
from medklip.vocabulary import ENTITIES, QUALIFIER_ENTITIES

logger = logging.getLogger(__name__)

DPI = 120
CHANCE_STYLE = {"color": "0.45", "linestyle": "--", "linewidth": 1.0}


def _label(entity: str) -> str:
    """Entity name as shown to a reader: "enlarged_cardiac_silhouette" -> "enlarged cardiac silhouette"."""
    return entity.replace("_", " ")


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI, bbox_inches="tight", facecolor="white")
    figure.clear()  # a Figure without pyplot has no manager to close; clearing frees its artists now
    logger.info("wrote %s", path)
    return path


def _message(axes, text: str) -> None:
    axes.text(0.5, 0.5, text, ha="center", va="center", transform=axes.transAxes, fontsize=12, color="0.3")


def _number_column(axes, positions: np.ndarray, rows: Sequence[str], header: str) -> None:
    """A monospace column right of the axes: one text per bar (x in axes fraction, y at the bar), a bold header."""
    column = axes.get_yaxis_transform()
    for position, text in zip(positions, rows, strict=True):
        axes.text(1.02, position, text, transform=column, va="center", fontsize=8.5, family="monospace")
    axes.text(
        1.02, 1.0, header, transform=axes.transAxes, va="bottom", fontsize=8.5, family="monospace", fontweight="bold"
    )


def plot_auc_per_entity(per_entity: Mapping[str, Mapping], path: str | Path) -> Path:
    """Horizontal bars of ROC AUC per finding, best at the top, with 95% CI whiskers and case counts.

    Entities whose AUC is None (only one class among their labels) are listed in a footnote, not drawn. Bars are
    coloured by where their 95% CI lies: above 0.5 (dark blue), across it (light blue), below it (red). The figure
    grows with the number of bars (about a quarter inch each), so all 75 entities stay legible.

    Args:
        per_entity: {entity: {"auc": float | None, "auc_ci95": [lo, hi] | None, "n_pos": int, "n_neg": int, ...}}.
        path: PNG to write.

    Returns:
        The path written.
    """
    scored = sorted(
        ((entity, stats) for entity, stats in per_entity.items() if stats.get("auc") is not None),
        key=lambda item: item[1]["auc"],
    )  # ascending: barh draws the first at the bottom, so the best ends up on top
    # Only findings a reader expects scored are listed as unscored; qualifier words ("tip", "low", "clear") are not.
    unscored = [
        entity for entity, stats in per_entity.items() if stats.get("auc") is None and entity not in QUALIFIER_ENTITIES
    ]
    qualifiers = [
        entity for entity, stats in per_entity.items() if entity in QUALIFIER_ENTITIES and stats.get("auc") is None
    ]
    count = len(scored)

    figure = Figure(figsize=(9.5, max(3.2, 1.4 + 0.26 * count)))
    axes = figure.add_subplot()
    if count:
        aucs = np.array([stats["auc"] for _, stats in scored], dtype=float)
        intervals = [stats.get("auc_ci95") for _, stats in scored]
        too_few = np.array([too_few_for_ci(stats) for _, stats in scored])
        has_ci = np.array([ci is not None and None not in ci for ci in intervals]) & ~too_few
        low = np.array([ci[0] if ok else np.nan for ci, ok in zip(intervals, has_ci, strict=True)], dtype=float)
        high = np.array([ci[1] if ok else np.nan for ci, ok in zip(intervals, has_ci, strict=True)], dtype=float)
        colors = np.select(
            [too_few, ~has_ci, low > 0.5, high < 0.5],
            ["silver", "tab:gray", "tab:blue", "lightcoral"],
            default="lightsteelblue",
        )
        positions = np.arange(count)
        axes.barh(positions, aucs, height=0.7, color=colors, edgecolor="none")
        if has_ci.any():
            errors = np.vstack([np.clip(aucs - low, 0, None), np.clip(high - aucs, 0, None)])[:, has_ci]
            axes.errorbar(
                aucs[has_ci], positions[has_ci], xerr=errors, fmt="none", ecolor="black", elinewidth=1, capsize=2.5
            )
        axes.set_yticks(positions, [_label(entity) for entity, _ in scored])
        axes.set_ylim(-0.6, count - 0.4)
        numbers = []  # the exact values beside the bars
        for (_, stats), lo, hi, ok, few in zip(scored, low, high, has_ci, too_few, strict=True):
            interval = f"[{lo:.2f}-{hi:.2f}]" if ok else "n too small" if few else " " * 11
            cases = f"{stats.get('n_pos', '?'):>5} / {stats.get('n_neg', '?'):<5}"
            numbers.append(f"{stats['auc']:.2f} {interval}  {cases}")
        _number_column(axes, positions, numbers, "AUC  [95% CI]     pos / neg")
        legend = [Line2D([], [], **CHANCE_STYLE, label="chance (0.5)")]
        kinds = (
            ("tab:blue", "95% CI above chance"),
            ("lightsteelblue", "95% CI includes chance"),
            ("lightcoral", "95% CI below chance"),
            ("tab:gray", "no CI"),
            ("silver", f"n too small: under {MIN_CASES_FOR_CI} positives or negatives, no CI shown"),
        )
        legend += [Patch(color=color, label=label) for color, label in kinds if (colors == color).any()]
        axes.legend(
            handles=legend, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=len(legend), fontsize=8, frameon=False
        )
        title = f"ROC AUC per finding: mean {aucs.mean():.3f} over {count} scored of {len(per_entity)} findings"
    else:
        axes.set_yticks([])
        _message(axes, "No finding could be scored\n(every finding has only one class in the labels)")
        title = f"ROC AUC per finding: none of {len(per_entity)} findings could be scored"
    axes.axvline(0.5, **CHANCE_STYLE)
    axes.set_xlim(0, 1)
    axes.set_xlabel("ROC AUC (area under the ROC curve; 0.5 = chance, 1 = perfect)")
    axes.set_ylabel("finding")
    axes.grid(axis="x", alpha=0.3)
    axes.set_title(title, fontsize=11, pad=22 if count else 6)  # room for the legend row above the bars
    if unscored:
        names = ", ".join(_label(entity) for entity in unscored)
        note = f"Findings not scored (only one class among their test labels, {len(unscored)}): {names}."
        if qualifiers:
            note += (
                f" Not listed: {len(qualifiers)} words that qualify a finding rather than name one (normal, tip, ...)."
            )
        note = textwrap.fill(note, width=110)
        axes.annotate(
            note,
            xy=(0, 0),
            xycoords="axes fraction",
            xytext=(0, -36),
            textcoords="offset points",
            va="top",
            ha="left",
            fontsize=8,
            color="0.25",
        )
    return _save(figure, path)


def plot_pointing_game(grounding: Mapping, path: str | Path) -> Path:
    """Horizontal bars of the pointing game's hit rate per finding, best at the top, with the grid's ceiling.

    Each bar is the share of a finding's lesions whose attention peak fell inside the lesion box; a black tick marks
    the share any map on the model's patch grid could hit at all (`attainable`, when the result has it), and a
    right-hand column gives the counts. So a finding the model misses (bar far below its tick) reads apart from one
    the grid cannot resolve (tick near zero: thin devices, small nodules on a coarse grid).

    Args:
        grounding: a `medklip.model.grounding.pointing_game_from_truth` / `merge_pointing_results` result: {"overall",
            "n", "hits", ["attainable"], "per_entity": {entity: {"hit_rate", "n", "hits", ["attainable",
            "n_attainable"]}}}.
        path: PNG to write.

    Returns:
        The path written.
    """
    rows = sorted(
        ((entity, stats) for entity, stats in grounding.get("per_entity", {}).items() if stats.get("n")),
        key=lambda item: (item[1]["hit_rate"], item[1]["n"]),
    )  # ascending: barh draws the first at the bottom
    count = len(rows)
    figure = Figure(figsize=(9.0, max(3.2, 1.4 + 0.3 * count)))
    axes = figure.add_subplot()
    if count:
        positions = np.arange(count)
        rates = np.array([stats["hit_rate"] for _, stats in rows], dtype=float)
        axes.barh(positions, rates, height=0.7, color="tab:blue", edgecolor="none", label="hit rate")
        ceilings = np.array([stats.get("attainable", np.nan) for _, stats in rows], dtype=float)
        bounded = ~np.isnan(ceilings)
        if bounded.any():
            axes.plot(
                ceilings[bounded], positions[bounded], "|", color="black", markersize=14, markeredgewidth=2.5,
                label="attainable on the patch grid",
            )  # fmt: skip
        axes.set_yticks(positions, [_label(entity) for entity, _ in rows])
        axes.set_ylim(-0.6, count - 0.4)
        numbers = [
            f"{stats['hit_rate']:.2f}  {stats['hits']:>4} / {stats['n']:<4}"
            + (f"  {stats['n_attainable']:>10}" if "n_attainable" in stats else "")
            for _, stats in rows
        ]
        _number_column(axes, positions, numbers, "rate  hits / n    " + ("attainable" if bounded.any() else ""))
        axes.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, fontsize=8, frameon=False)
        title = f"Pointing game per finding: {grounding['overall']:.3f} over {grounding['n']} lesions"
        if grounding.get("attainable") is not None:
            title += f" (at most {grounding['attainable']:.3f} on the patch grid)"
    else:
        axes.set_yticks([])
        _message(axes, "No rendered lesion to point at\n(no truth box among the scored images)")
        title = "Pointing game per finding: no lesions"
    axes.set_xlim(0, 1.02)  # a ceiling of 1 stays visible beside the frame
    label = "share of lesions whose attention peak lies inside the lesion box"
    if grounding.get("train_boxes"):
        label += "\n(a location-supervised model: its attention was trained on the boxes of some training images)"
    axes.set_xlabel(label)
    axes.set_ylabel("finding")
    axes.grid(axis="x", alpha=0.3)
    axes.set_title(title, fontsize=11, pad=22 if count else 6)
    return _save(figure, path)


def plot_prevalence_shift(shift: Mapping, path: str | Path, limit: int = 25) -> Path:
    """Bars of the largest label-prevalence changes since the champion's training data (`evaluation.drift`).

    Entities that moved (beyond the threshold, and p below alpha) are red; the threshold is drawn as dashed lines.

    Args:
        shift: a `medklip.evaluation.drift.prevalence_shift` result.
        path: PNG to write.
        limit: bars drawn, largest changes first.

    Returns:
        The path written.
    """
    rows = [row for row in shift["rows"] if row["difference"] is not None][:limit][::-1]  # largest on top
    figure = Figure(figsize=(9.0, max(3.2, 1.4 + 0.26 * len(rows))))
    axes = figure.add_subplot()
    if rows:
        positions = np.arange(len(rows))
        differences = np.array([row["difference"] for row in rows], dtype=float)
        colors = ["tab:red" if row["moved"] else "tab:gray" for row in rows]
        axes.barh(positions, differences, height=0.7, color=colors, edgecolor="none")
        for sign in (-1, 1):
            axes.axvline(sign * shift["threshold"], color="black", linestyle="--", linewidth=0.8)
        axes.axvline(0, color="black", linewidth=0.6)
        axes.set_yticks(positions, [_label(row["entity"]) for row in rows])
        axes.set_ylim(-0.6, len(rows) - 0.4)
        numbers = [
            f"{row['reference']:.3f} -> {row['current']:.3f}  p={row['p_value']:.1g}" if row["p_value"] is not None
            else f"{row['reference']:.3f} -> {row['current']:.3f}"
            for row in rows
        ]  # fmt: skip
        _number_column(axes, positions, numbers, "before -> now     p")
        limit_x = max(float(np.abs(differences).max()), shift["threshold"]) * 1.15
        axes.set_xlim(-limit_x, limit_x)
        legend = [
            Patch(color="tab:red", label=f"moved (|change| > {shift['threshold']:g}, p < {shift['alpha']:g})"),
            Patch(color="tab:gray", label="within noise or threshold"),
        ]
        axes.legend(handles=legend, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, fontsize=8, frameon=False)
    else:
        axes.set_yticks([])
        _message(axes, "No prevalence to compare")
    axes.set_xlabel("prevalence now - prevalence in the champion's training data (share of images, label present)")
    moved = len(shift["moved"])
    figure.suptitle(
        f"Label drift: {moved} {'entity' if moved == 1 else 'entities'} moved ({shift['n_reference']} -> "
        f"{shift['n_current']} training images)",
        fontsize=10,
    )
    return _save(figure, path)


def _most_positive(labels: np.ndarray, top: int) -> np.ndarray:
    """Column indices of the `top` columns with the most 1 labels among those with both a 1 and a 0 (-1 ignored)."""
    positives = (labels == 1).sum(axis=0)  # (E,)
    negatives = (labels == 0).sum(axis=0)  # (E,)
    drawable = np.flatnonzero((positives > 0) & (negatives > 0))
    return drawable[np.argsort(-positives[drawable], kind="stable")][:top]


def plot_roc_curves(
    scores: np.ndarray,
    labels: np.ndarray,
    path: str | Path,
    top: int = 6,
    entities: Sequence[str] = ENTITIES,
) -> Path:
    """ROC curves of the `top` findings with the most positive images; labels of -1 are left out.

    Only findings with both classes among their known labels can be drawn; ties in the positive count keep the
    vocabulary order.

    Args:
        scores: (N, E) predicted probabilities (or any scores, higher = more likely present).
        labels: (N, E) in {1, 0, -1}; -1 (uncertain or not mentioned) is excluded per finding.
        path: PNG to write.
        top: how many findings to draw.
        entities: the E column names (default: the 75 `ENTITIES`).

    Returns:
        The path written.

    Raises:
        ValueError: if scores and labels disagree in shape or with `entities`.
    """
    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels)
    if scores.shape != labels.shape or scores.ndim != 2 or scores.shape[1] != len(entities):
        raise ValueError(f"need (N, {len(entities)}) scores and labels, got {scores.shape} and {labels.shape}")
    positives = (labels == 1).sum(axis=0)  # (E,)
    negatives = (labels == 0).sum(axis=0)  # (E,)
    chosen = _most_positive(labels, top)

    figure = Figure(figsize=(7.5, 7))
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], **CHANCE_STYLE, label="chance (AUC 0.50)")
    colors = matplotlib.colormaps["tab10"]
    for rank, index in enumerate(chosen):
        known = labels[:, index] >= 0
        truth, predicted = labels[known, index], scores[known, index]
        false_positive_rate, true_positive_rate, _ = roc_curve(truth, predicted)
        area = roc_auc_score(truth, predicted)
        axes.plot(
            false_positive_rate,
            true_positive_rate,
            color=colors(rank % 10),
            linewidth=1.8,
            label=f"{_label(entities[index])}: AUC {area:.2f} ({positives[index]} pos / {negatives[index]} neg)",
        )
    if len(chosen) == 0:
        _message(axes, "No finding has both positive and negative labels")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.01)
    axes.set_aspect("equal")
    axes.set_xlabel("False positive rate (1 - specificity)")
    axes.set_ylabel("True positive rate (sensitivity)")
    axes.set_title(
        f"ROC curves of the {len(chosen)} findings with the most positive images\n"
        f"({scores.shape[0]} images; uncertain or unmentioned labels excluded)",
        fontsize=11,
    )
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=8.5, framealpha=0.9)
    return _save(figure, path)


def _series(history: Sequence[Mapping], key: str) -> np.ndarray:
    """One metric per epoch, NaN where a record lacks it (or holds None), so lines break instead of lying."""
    values = []
    for record in history:
        value = record.get(key)
        values.append(float(value) if isinstance(value, (int, float)) and math.isfinite(value) else np.nan)
    return np.array(values)


def _loss_keys(history: Sequence[Mapping]) -> list[str]:
    """train_*/val_* numeric keys that are not AUCs, totals first: train_loss, val_loss, then the terms."""
    keys: list[str] = []
    for record in history:
        for key, value in record.items():
            is_metric = key.startswith(("train_", "val_")) and "auc" not in key
            if is_metric and isinstance(value, (int, float)) and not isinstance(value, bool) and key not in keys:
                keys.append(key)
    totals = [key for key in ("train_loss", "val_loss") if key in keys]
    return totals + sorted(key for key in keys if key not in totals)


def plot_loss_curve(history: Sequence[Mapping], path: str | Path) -> Path:
    """Training curves from `history.jsonl` records: losses per epoch on top, validation mean AUC below.

    Total losses (train_loss, val_loss) are thick lines; other train_*/val_* terms (existence, position, ...) thin
    dashed ones. Missing keys or None values leave gaps; every point has a marker, so one epoch still shows.

    Args:
        history: one dict per epoch, e.g. {"epoch": 1, "train_loss": 1.2, "train_existence": 0.6, "val_mean_auc": 0.7}.
        path: PNG to write.

    Returns:
        The path written.
    """
    history = list(history)
    epochs = np.array([record.get("epoch", index + 1) for index, record in enumerate(history)], dtype=float)
    figure = Figure(figsize=(8.5, 7.5))
    loss_axes, auc_axes = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})

    keys = _loss_keys(history)
    colors = matplotlib.colormaps["tab10"]
    for rank, key in enumerate(keys):
        values = _series(history, key)
        if np.isnan(values).all():
            continue
        total = key in ("train_loss", "val_loss")
        split, term = key.split("_", 1)
        label = f"{'training' if split == 'train' else 'validation'} {'loss (total)' if term == 'loss' else term}"
        loss_axes.plot(
            epochs,
            values,
            marker="o",
            markersize=4,
            color=colors(rank % 10),
            label=label,
            linewidth=2.2 if total else 1.2,
            linestyle="-" if total else "--",
        )
    if keys:
        loss_axes.legend(fontsize=8.5, loc="upper right")
    else:
        _message(loss_axes, "No losses recorded")
    loss_axes.set_ylabel("loss (lower is better)")
    loss_axes.set_title(f"Training history ({len(history)} epoch{'s' if len(history) != 1 else ''})", fontsize=11)
    loss_axes.grid(alpha=0.3)

    auc = _series(history, "val_mean_auc")
    if not np.isnan(auc).all():
        auc_axes.plot(
            epochs, auc, marker="o", markersize=4, color="tab:green", linewidth=2, label="validation mean AUC"
        )
        best = int(np.nanargmax(auc))
        auc_axes.annotate(
            f"best {auc[best]:.3f} (epoch {epochs[best]:g})",
            xy=(epochs[best], auc[best]),
            xytext=(0, -16),
            textcoords="offset points",
            ha="center",
            fontsize=8.5,
        )
        auc_axes.axhline(0.5, **CHANCE_STYLE, label="chance (0.5)")
        auc_axes.legend(fontsize=8.5, loc="lower right")
        auc_axes.set_ylim(min(0.45, float(np.nanmin(auc)) - 0.05), 1.0)
    else:
        _message(auc_axes, "No validation AUC recorded")
    auc_axes.set_ylabel("mean ROC AUC over findings")
    auc_axes.set_xlabel("epoch")
    auc_axes.grid(alpha=0.3)
    auc_axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(history) == 1:  # one point: give the axis some width around it
        auc_axes.set_xlim(epochs[0] - 1, epochs[0] + 1)
    return _save(figure, path)


def overlay_heatmap(
    image: np.ndarray,
    heatmap: np.ndarray,
    title: str,
    path: str | Path,
    probability: float | None = None,
    box: Sequence[float] | None = None,
    max_alpha: float = 0.6,
) -> Path:
    """A grayscale radiograph under a colour attention map, its peak marked, with an optional reference box.

    The map is normalised to its own maximum and stretched over the whole image (the model saw the whole image
    squashed to a square), so a (S, S) map lays correctly over an image of any (H, W). Opacity grows with the map's
    value, up to `max_alpha`, so low-attention regions show the radiograph unobscured.

    Args:
        image: (H, W) uint8 radiograph.
        heatmap: (h, w) float attention map, usually (H, W) or the model's (S, S).
        title: the finding, e.g. "effusion"; P(present) is appended when `probability` is given.
        path: PNG to write.
        probability: the model's probability that the finding is present.
        box: (x0, y0, x1, y1) reference box in `image` pixels, exclusive ends, drawn in green.
        max_alpha: opacity of the map at its maximum.

    Returns:
        The path written.

    Raises:
        ValueError: if image or heatmap is not 2-D.
    """
    image = np.asarray(image)
    heatmap = np.nan_to_num(np.asarray(heatmap, dtype=float), nan=0.0, posinf=0.0, neginf=0.0)
    if image.ndim != 2 or heatmap.ndim != 2:
        raise ValueError(f"need a 2-D image and a 2-D heatmap, got {image.shape} and {heatmap.shape}")
    height, width = image.shape
    extent = (0, width, height, 0)  # pixel i spans [i, i + 1): box edges x0, x1 fall on pixel borders

    figure = Figure(figsize=(7, 7.4))
    axes = figure.add_subplot()
    axes.imshow(image, cmap="gray", vmin=0, vmax=255, extent=extent, interpolation="antialiased")
    colormap = matplotlib.colormaps["jet"]
    peak = float(heatmap.max()) if heatmap.size else 0.0
    legend = []
    if peak > 0:
        normalised = np.clip(heatmap, 0, None) / peak
        colored = colormap(normalised)  # (h, w, 4)
        colored[..., 3] = max_alpha * normalised
        axes.imshow(colored, extent=extent, interpolation="bilinear")
        row, column = np.unravel_index(int(heatmap.argmax()), heatmap.shape)
        peak_x = (column + 0.5) * width / heatmap.shape[1]
        peak_y = (row + 0.5) * height / heatmap.shape[0]
        axes.plot(peak_x, peak_y, marker="+", markersize=16, markeredgewidth=2.5, color="white")
        legend.append(
            Line2D(
                [],
                [],
                marker="+",
                linestyle="",
                markersize=10,
                markeredgewidth=2,
                color="black",
                label="attention peak",
            )
        )
    else:
        title = f"{title} (attention map is flat)"
    if box is not None:
        x0, y0, x1, y1 = (float(value) for value in box)
        axes.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="lime", linewidth=2))
        legend.append(Patch(fill=False, edgecolor="lime", linewidth=2, label="reference box"))
    if legend:
        axes.legend(handles=legend, loc="lower right", fontsize=8.5, framealpha=0.85)
    colorbar = figure.colorbar(
        ScalarMappable(norm=Normalize(0, 1), cmap=colormap),
        ax=axes,
        fraction=0.046,
        pad=0.03,
    )
    colorbar.set_label("attention (fraction of this map's maximum)")
    axes.set_xlim(0, width)
    axes.set_ylim(height, 0)
    axes.set_xlabel("x (pixels)")
    axes.set_ylabel("y (pixels)")
    full_title = title if probability is None else f"{title}: P(present) = {probability:.2f}"
    axes.set_title(full_title, fontsize=12)
    return _save(figure, path)
