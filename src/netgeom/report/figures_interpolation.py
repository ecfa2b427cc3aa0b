"""Figures of linear interpolation in weight space: MLI curves, Delta, replicate barriers, the
2-D landscape and the MLI preset. Each public function saves to `path` and returns it; its
`*_figure` twin returns the Figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.colors as mcolors
from matplotlib import patheffects
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator

from netgeom.report.figure_style import (
    categorical_palette,
    house_style,
    legend_outside,
    legend_right,
    line_handle,
    mean_and_std,
    noise_label,
    require_columns,
    save,
    sorted_values,
    width_axis,
    width_palette,
)

T_LABEL = r"interpolation coefficient t  (0 = init $\theta_0$, 1 = trained $\theta_T$)"
MONOTONE_STYLES = {True: "-", False: "--"}


def _wide_range(values: pd.Series, ratio: float = 100.0) -> bool:
    """Positive values spanning more than `ratio`: worth a log axis."""
    values = values[np.isfinite(values)]
    return len(values) > 0 and values.min() > 0 and values.max() / values.min() > ratio


# --------------------------------------------------------------------------- MLI curves


def mli_curves_figure(curves: pd.DataFrame, monotone: pd.DataFrame) -> Figure:
    """Train loss from init (t=0) to the final weights (t=1): one panel per noise level, one line
    per run coloured by width; dashed = not monotonic.

    curves: t, split, loss, curve ("init-final" is drawn), run, width, noise; monotone: run, monotone.
    """
    require_columns(curves, ["t", "split", "loss", "curve", "run", "width", "noise"], "interpolation curves")
    require_columns(monotone, ["run", "monotone"], "monotone")
    data = curves[(curves["curve"] == "init-final") & (curves["split"] == "train")].merge(monotone, on="run")
    widths, noises = sorted_values(data["width"]), sorted_values(data["noise"])
    colours = width_palette(widths)
    with house_style():
        figure, axes = plt.subplots(1, len(noises), figsize=(4.2 * len(noises), 3.4), sharey=True, squeeze=False)
        for axis, noise in zip(axes[0], noises):
            for run, line in data[data["noise"] == noise].groupby("run", sort=True):
                line = line.sort_values("t")
                flat = bool(line["monotone"].iloc[0])
                axis.plot(line["t"], line["loss"], color=colours[line["width"].iloc[0]], linestyle=MONOTONE_STYLES[flat], linewidth=1.2, label=run)
            axis.set_title(noise_label(noise))
            axis.set_xlabel(T_LABEL)
            axis.set_ylabel("train loss")
            if _wide_range(data["loss"]):
                axis.set_yscale("log")
        handles = [line_handle(str(w), colours[w]) for w in widths]
        handles += [line_handle("monotonic", "0.3", "-"), line_handle("not monotonic", "0.3", "--")]
        legend_right(figure, handles, title="width")
        figure.suptitle("Monotonic linear interpolation: train loss along init → final")
        figure.tight_layout()
    return figure


def mli_curves(curves: pd.DataFrame, monotone: pd.DataFrame, path: Path) -> Path:
    return save(mli_curves_figure(curves, monotone), path)


# --------------------------------------------------------------------------- Delta against distance


def _marker_sizes(widths: Sequence) -> dict:
    """Marker area grows with log2(width), from 18 to 120 points^2."""
    logs = np.log2(np.asarray(widths, dtype=np.float64))
    span = logs.max() - logs.min() if len(logs) > 1 else 1.0
    return {w: 18 + 102 * (l - logs.min()) / (span or 1.0) for w, l in zip(widths, logs)}


def delta_vs_distance_figure(summary: pd.DataFrame, delta: str = "delta.train") -> Figure:
    """Delta (largest rise of the train loss along init -> final) against ||θ_T - θ_0|| / ||θ_0||;
    colour = noise level, size = width; a symlog y axis so small rises are visible beside Δ = 0.

    summary: run, width, noise, normalised_distance, delta.train (and optionally monotone.train).
    """
    require_columns(summary, ["width", "noise", "normalised_distance", delta], "interpolation summary")
    widths, noises = sorted_values(summary["width"]), sorted_values(summary["noise"])
    colours, sizes = categorical_palette(noises), _marker_sizes(widths)
    positive = summary.loc[summary[delta] > 0, delta]
    linthresh = float(positive.min()) if len(positive) else 1e-3
    with house_style():
        figure, axis = plt.subplots(figsize=(6.4, 4.0))
        axis.axhline(0.0, color="0.4", linewidth=1.0, linestyle="--", zorder=1)
        for noise in noises:
            part = summary[summary["noise"] == noise].sort_values("width")
            axis.scatter(
                part["normalised_distance"], part[delta], s=part["width"].map(sizes), color=colours[noise],
                edgecolor="black", linewidth=0.6, alpha=0.9, zorder=3, label=noise_label(noise),
            )  # fmt: skip
        if not len(positive):  # the points all sit on the dashed line: say so where the eye goes
            axis.text(0.5, 0.6, "every run is monotonic: Δ = 0", transform=axis.transAxes, ha="center", fontsize=10, color="0.25")
        axis.set_yscale("symlog", linthresh=linthresh, linscale=1.0)
        top = float(summary[delta].max()) if len(positive) else linthresh
        axis.set_ylim(-0.3 * linthresh, top * 3 if top > 0 else linthresh)
        axis.set_xlabel(r"distance travelled  $\|\theta_T - \theta_0\| \,/\, \|\theta_0\|$")
        axis.set_ylabel("Δ: largest rise of train loss\nalong init → final (symlog scale)")
        axis.set_title("Δ against distance travelled in weight space (dashed: Δ = 0, monotonic)")
        noise_handles = [plt.scatter([], [], s=60, color=colours[n], edgecolor="black", label=noise_label(n)) for n in noises]
        size_handles = [plt.scatter([], [], s=sizes[w], color="0.7", edgecolor="black", label=f"width {w}") for w in widths]
        legend_outside(axis, noise_handles + size_handles)
    return figure


def delta_vs_distance(summary: pd.DataFrame, path: Path) -> Path:
    return save(delta_vs_distance_figure(summary), path)


# --------------------------------------------------------------------------- replicate barriers


def barriers_figure(table: pd.DataFrame, split: str = "train") -> Figure:
    """Loss barrier between seed replicates against width (mean +- std over pairs): colour =
    matching (none / weights), marker and line style = noise level.

    table: width, noise, matching, split, loss_barrier (one row per replicate pair).
    """
    require_columns(table, ["width", "noise", "matching", "split", "loss_barrier"], "barriers")
    data = table[table["split"] == split]
    widths, noises = sorted_values(data["width"]), sorted_values(data["noise"])
    matchings = sorted_values(data["matching"])
    colours = categorical_palette(matchings)
    styles = dict(zip(noises, ["-", "--", ":", "-."] * len(noises)))
    markers = dict(zip(noises, ["o", "s", "^", "D"] * len(noises)))
    with house_style():
        figure, axis = plt.subplots(figsize=(6.4, 4.0))
        axis.axhline(0.0, color="0.4", linewidth=0.8)
        for matching in matchings:
            for noise in noises:
                stats = mean_and_std(data[(data["matching"] == matching) & (data["noise"] == noise)], ["width"], "loss_barrier")
                axis.errorbar(
                    stats["width"], stats["mean"], yerr=stats["std"], color=colours[matching], linestyle=styles[noise],
                    marker=markers[noise], markersize=4, capsize=2, label=f"matching: {matching}, {noise_label(noise)}",
                )  # fmt: skip
        width_axis(axis, widths)
        axis.set_ylabel(f"{split}-loss barrier (mean ± std over pairs)")
        axis.set_title(f"{split.capitalize()}-loss barrier between seed replicates")
        legend_outside(axis)
    return figure


def barriers(table: pd.DataFrame, path: Path) -> Path:
    return save(barriers_figure(table), path)


# --------------------------------------------------------------------------- landscape


def _loss_norm(values: np.ndarray):
    return mcolors.LogNorm(vmin=values.min(), vmax=values.max()) if _wide_range(pd.Series(values.ravel())) else None


def _mark(axis, xy, label: str, marker: str, colour: str, text_offset=(6, 6)) -> None:
    axis.plot(*xy, marker=marker, markersize=10, color=colour, markeredgecolor="black", linestyle="none", label=label, zorder=5)
    axis.annotate(label.split(" ")[0], xy, xytext=text_offset, textcoords="offset points", fontsize=9, fontweight="bold",
                  color="white", path_effects=_outline(), zorder=6)  # fmt: skip


def _outline(width: float = 2.5) -> list:
    """A dark stroke around white text and lines, readable on any colour of the map."""
    return [patheffects.withStroke(linewidth=width, foreground="black")]


def landscape_figure(grid: pd.DataFrame, trajectory: pd.DataFrame, run: str, *, second_init: tuple[float, float] | None = None) -> Figure:
    """Train loss on the plane through θ₀ (origin), θ_T (on the x axis) and a second init θ₀′
    (Gram-Schmidt: x = distance along θ_T − θ₀, y = the orthogonal part of θ₀′ − θ₀; both in
    weight-space distance units), the projected training trajectory and the linear path.

    grid: x, y, split, loss; trajectory: epoch, x, y (checkpoints in order); second_init: θ₀′'s
    plane coordinates (not in the tables today; marked when given).
    """
    require_columns(grid, ["x", "y", "split", "loss"], "landscape")
    require_columns(trajectory, ["epoch", "x", "y"], "trajectory")
    data = grid[grid["split"] == "train"].pivot_table(index="y", columns="x", values="loss")
    path = trajectory.sort_values("epoch")
    start, end = path.iloc[0], path.iloc[-1]
    with house_style():
        figure, axis = plt.subplots(figsize=(6.8, 5.0))
        norm = _loss_norm(data.to_numpy())
        levels = np.geomspace(np.nanmin(data.values), np.nanmax(data.values), 21) if norm else 20
        contour = axis.contourf(data.columns, data.index, data.values, levels=levels, cmap="viridis", norm=norm)
        bar = figure.colorbar(contour, ax=axis, label="train loss" + (" (log scale)" if norm else ""))
        if norm:
            bar.ax.yaxis.set_major_locator(LogLocator())
            bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
        axis.plot(path["x"], path["y"], color="white", marker=".", markersize=5, linewidth=1.4, label="training trajectory (projected)", path_effects=_outline(3.0))
        axis.plot([start["x"], end["x"]], [start["y"], end["y"]], color="#ff5c5c", linestyle="--", linewidth=1.5, label=r"linear path $\theta_0 \to \theta_T$")
        _mark(axis, (start["x"], start["y"]), rf"$\theta_0$ init (epoch {int(start['epoch'])})", "o", "#0173b2")
        _mark(axis, (end["x"], end["y"]), rf"$\theta_T$ final (epoch {int(end['epoch'])})", "*", "#de8f05")
        if second_init is not None:
            _mark(axis, second_init, r"$\theta_0'$ second init", "s", "#cc78bc")
        if 0.25 < np.ptp(data.index) / max(np.ptp(data.columns), 1e-12) < 4:
            axis.set_aspect("equal", adjustable="box")  # same distance units on both axes
        axis.set_xlabel(r"direction $\theta_0 \to \theta_T$  (weight-space distance from $\theta_0$)")
        axis.set_ylabel("direction to the second init $\\theta_0'$, orthogonalised\n(weight-space distance)")
        axis.set_title(rf"Train-loss landscape on the plane ($\theta_0$, $\theta_0'$, $\theta_T$), {run}")
        axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
        axis.grid(False)
    return figure


def landscape(grid: pd.DataFrame, trajectory: pd.DataFrame, run: str, path: Path, *, second_init: tuple[float, float] | None = None) -> Path:
    return save(landscape_figure(grid, trajectory, run, second_init=second_init), path)


# --------------------------------------------------------------------------- MLI preset


def _preset_group(optimizer: str, batch_norm: bool) -> str:
    return f"{optimizer} + BN" if batch_norm else optimizer


def _with_group(frame: pd.DataFrame) -> pd.DataFrame:
    if "group" in frame:
        return frame
    return frame.assign(group=[_preset_group(o, b) for o, b in zip(frame["optimizer"], frame["batch_norm"])])


def _bar_note(row: pd.Series) -> str:
    counted = int(row["n_converged"]) - int(row.get("n_non_finite", 0))
    if counted <= 0:
        return "no converged\nruns"
    return f"{int(row['n_non_monotonic'])}/{counted}"


def mli_preset_figure(curves: pd.DataFrame, fractions: pd.DataFrame) -> Figure:
    """Left: init -> final train-loss curves, colour = optimizer (+ BN), one line per seed. Right:
    fraction of converged runs that are non-monotonic per group, each bar annotated "k/n"
    (non-monotonic / converged), "no converged runs" where n = 0.

    curves: t, split, loss, optimizer, batch_norm, seed; fractions: optimizer, batch_norm,
    n_converged, n_non_finite, n_non_monotonic, frac_non_monotonic; both may carry a `group`
    label (the stage's, naming the other axes it sweeps), else optimizer (+ BN) names the group.
    """
    require_columns(curves, ["t", "split", "loss", "optimizer", "batch_norm", "seed"], "mli curves")
    require_columns(fractions, ["optimizer", "batch_norm", "n_converged", "n_non_monotonic", "frac_non_monotonic"], "mli fractions")
    if "group" not in fractions:
        fractions = fractions.sort_values(["optimizer", "batch_norm"])
    curves, fractions = (_with_group(frame) for frame in (curves, fractions))
    bars = fractions.reset_index(drop=True)  # the stage's order: its swept axes, then optimizer and BN
    colours = categorical_palette(list(bars["group"]))
    data = curves[curves["split"] == "train"]
    with house_style():
        figure, (left, right) = plt.subplots(1, 2, figsize=(10.5, 3.8), gridspec_kw={"width_ratios": [1.3, 1]})
        for (group, seed), line in data.groupby(["group", "seed"], sort=False):
            line = line.sort_values("t")
            left.plot(line["t"], line["loss"], color=colours.get(group, "0.5"), linewidth=1.2, label=f"{group}, seed {seed}")
        if _wide_range(data["loss"], ratio=20):
            left.set_yscale("log")
        left.set_xlabel(T_LABEL)
        left.set_ylabel("train loss")
        left.set_title("Train loss from init to trained (one line per seed)")
        heights = bars["frac_non_monotonic"].fillna(0.0)
        right.bar(bars["group"], heights, color=[colours[g] for g in bars["group"]], edgecolor="black", linewidth=0.6)
        for x, (_, row) in enumerate(bars.iterrows()):
            note = _bar_note(row)
            right.annotate(note, (x, heights[x]), xytext=(0, 3), textcoords="offset points", ha="center", va="bottom", fontsize=8,
                           color="#b00020" if "\n" in note else "0.1")  # fmt: skip
        right.set_ylim(0, 1.15)
        right.set_ylabel("fraction non-monotonic (of converged runs)")
        right.set_xlabel("optimizer (+ batch norm)" if len(bars) <= 4 else "group")
        if len(bars) > 4:  # long group names side by side would overprint
            plt.setp(right.get_xticklabels(), rotation=35, ha="right")
        right.set_title("Non-monotonic runs per group (k/n annotated)")
        legend_right(figure, [line_handle(g, colours[g]) for g in bars["group"]], title="group")
        figure.tight_layout()
    return figure


def mli_preset(curves: pd.DataFrame, fractions: pd.DataFrame, path: Path) -> Path:
    return save(mli_preset_figure(curves, fractions), path)
