"""Figures of the star-domain study: is one star model linearly connected to held-out models?

Input tables (one row per pair / per curve point):
- barriers: kind ("star" = star <-> held-out, "regular" = regular <-> regular), anchors (number of
  anchors the star was trained on; NaN for regular pairs), model_a, model_b, split ("train" |
  "test"), matching ("none" | "weights" | "sinkhorn"), loss_barrier, accuracy_barrier;
- curves: kind, model_a, model_b, split, matching, t, loss, accuracy (optionally anchors).
Each public function saves to `path` and returns it; its `*_figure` twin returns the Figure.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from netgeom.report.figure_style import (
    house_style,
    legend_right,
    line_handle,
    mean_and_std,
    require_columns,
    save,
    sorted_values,
    width_axis,
)
from netgeom.studies.star import hypothesis_test

KINDS = ("star", "regular")
KIND_COLOURS = {"star": "#de8f05", "regular": "#0173b2"}
KIND_LABELS = {"star": "star ↔ held-out", "regular": "regular ↔ regular"}
BARRIER_COLUMNS = ["kind", "anchors", "width", "split", "matching"]
VALUE_LABELS = {"loss_barrier": "loss barrier", "accuracy_barrier": "accuracy barrier"}


def _ordered(values, preferred) -> list:
    """`preferred` first (those present), then any others in sorted order."""
    present = set(values)
    return [v for v in preferred if v in present] + sorted(present - set(preferred))


def _splits(table: pd.DataFrame) -> list[str]:
    return _ordered(table["split"], ("train", "test"))


def _matchings(table: pd.DataFrame) -> list[str]:
    return _ordered(table["matching"], ("none", "weights", "sinkhorn"))


def largest_star(table: pd.DataFrame) -> pd.DataFrame:
    """Regular pairs plus the star pairs of the star trained on the most anchors (the hypothesis'
    star); smaller stars belong to the barrier-vs-anchors figure."""
    star = table["kind"] == "star"
    if "anchors" not in table or not star.any() or table.loc[star, "anchors"].isna().all():
        return table
    most = table.loc[star, "anchors"].max()
    return table[~star | (table["anchors"] == most)]


def _kind_legend(figure: Figure) -> None:
    legend_right(figure, [Patch(facecolor=KIND_COLOURS[k], edgecolor="black", label=KIND_LABELS[k]) for k in KINDS], title="pairs")


def _p_value_label(tests: pd.DataFrame, width, split: str, matching: str) -> str:
    row = tests[(tests["width"] == width) & (tests["split"] == split) & (tests["matching"] == matching)]
    if row.empty or pd.isna(row["p_value"].iloc[0]):
        return f"{matching}\n(no test)"
    return f"{matching}\np = {row['p_value'].iloc[0]:.2g}"


def box_and_points(axis, x: float, values: np.ndarray, colour, half_width: float = 0.16) -> None:
    """A box (quartiles, whiskers at 1.5 IQR) with every value drawn on it as a point; the points'
    sideways jitter is seeded so the figure is the same on every run."""
    if len(values) == 0:
        return
    axis.boxplot(
        values, positions=[x], widths=2 * half_width, orientation="vertical", showfliers=False, manage_ticks=False,
        boxprops={"color": colour, "linewidth": 1.2}, whiskerprops={"color": colour}, capprops={"color": colour},
        medianprops={"color": colour, "linewidth": 2.0},
    )  # fmt: skip
    jitter = np.random.default_rng(len(values)).uniform(-0.7 * half_width, 0.7 * half_width, len(values))
    axis.scatter(x + jitter, values, s=16, color=colour, edgecolor="black", linewidth=0.4, alpha=0.85, zorder=3)


def star_barrier_distributions_figure(barriers: pd.DataFrame, tests: pd.DataFrame | None = None, value: str = "loss_barrier") -> Figure:
    """The two barrier populations side by side: one panel per width (row) and split (column),
    boxes + points per matching, star <-> held-out (orange) against regular <-> regular (blue);
    each tick label carries the one-sided Mann-Whitney p-value of "star barriers are smaller" from
    `tests` (the star stage's tests.parquet: by width, split, matching), computed the same way
    (`studies.star.hypothesis_test`) when not given."""
    require_columns(barriers, [*BARRIER_COLUMNS, value], "star barriers")
    data = largest_star(barriers)
    if tests is None:
        tests = hypothesis_test(data, by=["width", "split", "matching"], value=value)
    require_columns(tests, ["width", "split", "matching", "p_value"], "star tests")
    widths, splits, matchings = sorted_values(data["width"]), _splits(data), _matchings(data)
    anchors = data.loc[data["kind"] == "star", "anchors"].max()
    with house_style():
        figure, axes = plt.subplots(len(widths), len(splits), figsize=(4.4 * len(splits), 3.6 * len(widths)), sharey=True, squeeze=False)
        for r, width in enumerate(widths):
            for axis, split in zip(axes[r], splits):
                part = data[(data["split"] == split) & (data["width"] == width)]
                for x, matching in enumerate(matchings):
                    for offset, kind in zip((-0.2, 0.2), KINDS):
                        values = part.loc[(part["matching"] == matching) & (part["kind"] == kind), value].dropna().to_numpy()
                        box_and_points(axis, x + offset, values, KIND_COLOURS[kind])
                axis.axhline(0.0, color="0.4", linewidth=0.8)
                axis.set_xlim(-0.6, len(matchings) - 0.4)
                axis.set_xticks(range(len(matchings)), [_p_value_label(tests, width, split, m) for m in matchings])
                axis.set_xlabel("weight matching  (p: one-sided Mann-Whitney U,\nstar barriers smaller than regular ones)")
                axis.set_ylabel(f"{VALUE_LABELS.get(value, value)} on {split}")
                axis.set_title(f"width {width}, {split} split")
        _kind_legend(figure)
        star_note = f"star trained on {anchors:g} anchors" if pd.notna(anchors) else "no star pairs"
        figure.suptitle(f"Barriers: star ↔ held-out vs regular ↔ regular ({star_note})")
        figure.tight_layout()
    return figure


def star_barrier_distributions(barriers: pd.DataFrame, path: Path, tests: pd.DataFrame | None = None, value: str = "loss_barrier") -> Path:
    return save(star_barrier_distributions_figure(barriers, tests, value), path)


def star_barrier_vs_anchors_figure(barriers: pd.DataFrame, value: str = "loss_barrier") -> Figure:
    """Star <-> held-out barrier (mean +- std over held-out models) against the number of anchors
    the star was trained on (log2 axis), one panel per split, colour = matching; the dotted line and
    band are the regular <-> regular barrier (mean +- std) it is compared with."""
    require_columns(barriers, [*BARRIER_COLUMNS, value], "star barriers")
    star, regular = barriers[barriers["kind"] == "star"], barriers[barriers["kind"] == "regular"]
    splits, matchings = _splits(barriers), _matchings(barriers)
    colours = dict(zip(matchings, ["#de8f05", "#029e73", "#cc78bc", "#ca9161"]))
    anchors = [int(a) for a in sorted_values(star["anchors"])] or [1]
    with house_style():
        figure, axes = plt.subplots(1, len(splits), figsize=(4.4 * len(splits), 3.6), sharey=True, squeeze=False)
        for axis, split in zip(axes[0], splits):
            for matching in matchings:
                colour = colours[matching]
                stats = mean_and_std(star[(star["split"] == split) & (star["matching"] == matching)], ["anchors"], value)
                axis.errorbar(stats["anchors"], stats["mean"], yerr=stats["std"], color=colour, marker="o", markersize=4, capsize=3)
                reference = regular.loc[(regular["split"] == split) & (regular["matching"] == matching), value]
                if len(reference):
                    mean, std = reference.mean(), reference.std() if len(reference) > 1 else 0.0
                    axis.axhline(mean, color=colour, linestyle=":", linewidth=1.4)
                    axis.axhspan(mean - std, mean + std, color=colour, alpha=0.12, linewidth=0)
            axis.axhline(0.0, color="0.4", linewidth=0.8)
            width_axis(axis, anchors, label="anchors the star was trained on (log2 scale)")
            axis.set_ylabel(f"{VALUE_LABELS.get(value, value)} on {split} (mean ± std)")
            axis.set_title(f"{split} split")
        handles = [line_handle(f"star ↔ held-out, matching {m}", colours[m], marker="o") for m in matchings]
        handles += [line_handle(f"regular ↔ regular, matching {m}", colours[m], ":") for m in matchings]
        legend_right(figure, handles)
        figure.suptitle("Star ↔ held-out barrier against the number of anchors")
        figure.tight_layout()
    return figure


def star_barrier_vs_anchors(barriers: pd.DataFrame, path: Path, value: str = "loss_barrier") -> Path:
    return save(star_barrier_vs_anchors_figure(barriers, value), path)


def first_pairs(curves: pd.DataFrame, kind: str, count: int) -> list[tuple]:
    """The first `count` (model_a, model_b) pairs of a kind, in sorted order (deterministic)."""
    pairs = curves.loc[curves["kind"] == kind, ["model_a", "model_b"]].drop_duplicates()
    return [tuple(p) for p in pairs.sort_values(["model_a", "model_b"]).head(count).itertuples(index=False)]


def star_curves_figure(curves: pd.DataFrame, split: str = "train", pairs: int = 3) -> Figure:
    """Loss along the straight line between two models (t = 0: model_a, t = 1: model_b) for the
    first `pairs` star -> held-out and regular -> regular pairs; one panel per matching."""
    require_columns(curves, ["kind", "model_a", "model_b", "split", "matching", "t", "loss"], "star curves")
    data = largest_star(curves[curves["split"] == split])
    matchings = _matchings(data)
    with house_style():
        figure, axes = plt.subplots(1, len(matchings), figsize=(4.4 * len(matchings), 3.6), sharey=True, squeeze=False)
        for axis, matching in zip(axes[0], matchings):
            part = data[data["matching"] == matching]
            for kind in KINDS:
                for model_a, model_b in first_pairs(part, kind, pairs):
                    line = part[(part["kind"] == kind) & (part["model_a"] == model_a) & (part["model_b"] == model_b)].sort_values("t")
                    axis.plot(line["t"], line["loss"], color=KIND_COLOURS[kind], linewidth=1.2, alpha=0.9, label=f"{model_a} → {model_b}")
            axis.set_xlabel("t  (0 = model_a: star or regular, 1 = model_b)")
            axis.set_ylabel(f"{split} loss")
            axis.set_title(f"matching: {matching}")
        legend_right(figure, [line_handle(KIND_LABELS[k], KIND_COLOURS[k]) for k in KINDS], title=f"first {pairs} pairs of each")
        figure.suptitle(f"{split.capitalize()} loss along linear paths: star → held-out vs regular → regular")
        figure.tight_layout()
    return figure


def star_curves(curves: pd.DataFrame, path: Path, split: str = "train", pairs: int = 3) -> Path:
    return save(star_curves_figure(curves, split, pairs), path)
