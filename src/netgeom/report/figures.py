"""Figures of the double-descent grid and its studies; every public function saves to `path` and
returns it, and has a `*_figure` twin that returns the matplotlib Figure instead (for tests and
notebooks).

Input tables are the ones `netgeom.report.tables` builds:
- runs: one row per run: run, width, noise, replicate, train_error, test_error (final epoch);
- curves: one row per run and evaluated epoch: epoch, width, noise, replicate, train_error, test_error;
- study (long): run, epoch, measure, group ("all" | "clean" | "noisy"), value, width, noise,
  replicate, test_error, train_error.
Replicates are averaged (a band shows +-1 std where there are several).
Interpolation figures (MLI curves, Delta, barriers, landscape, MLI preset) are in
`figures_interpolation`, and re-exported here.
"""

from __future__ import annotations

from pathlib import Path
from textwrap import fill

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from netgeom.report.figures_interpolation import (  # noqa: F401  (one import place for the report stage)
    barriers,
    barriers_figure,
    delta_vs_distance,
    delta_vs_distance_figure,
    landscape,
    landscape_figure,
    mli_curves,
    mli_curves_figure,
    mli_preset,
    mli_preset_figure,
)
from netgeom.report.wording import measure_label, measure_name
from netgeom.report.figure_style import (
    GROUP_COLOURS,
    SPLIT_STYLES,
    categorical_palette,
    epoch_axis,
    house_style,
    legend_outside,
    legend_right,
    line_handle,
    mean_and_std,
    measure_axis,
    noise_label,
    plot_mean_line,
    require_columns,
    save,
    sorted_values,
    width_axis,
    width_palette,
)

SPLITS = ("test", "train")
GROUP_STYLES = {"all": "-.", "clean": "-", "noisy": ":"}


def _error_long(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """train_error / test_error columns -> rows with split ("train" | "test") and error."""
    long = table.melt(id_vars=keys, value_vars=["train_error", "test_error"], var_name="split", value_name="error")
    long["split"] = long["split"].str.removesuffix("_error")
    return long


# --------------------------------------------------------------------------- learning curves


def learning_curves_figure(curves: pd.DataFrame) -> Figure:
    """Error against epoch: columns = noise levels, rows = test / train error, one line per width
    (sequential colours, legend = the trained widths), mean over replicates."""
    require_columns(curves, ["epoch", "width", "noise", "train_error", "test_error"], "curves")
    widths, noises = sorted_values(curves["width"]), sorted_values(curves["noise"])
    colours = width_palette(widths)
    long = _error_long(curves, ["epoch", "width", "noise"])
    with house_style():
        figure, axes = plt.subplots(2, len(noises), figsize=(4.2 * len(noises), 6.0), sharex=True, sharey="row", squeeze=False)
        for col, noise in enumerate(noises):
            for row, split in enumerate(SPLITS):
                axis = axes[row, col]
                part = long[(long["noise"] == noise) & (long["split"] == split)]
                for width in widths:
                    stats = mean_and_std(part[part["width"] == width], ["epoch"], "error")
                    plot_mean_line(axis, stats, "epoch", label=str(width), colour=colours[width], linewidth=1.3)
                axis.set_title(f"{noise_label(noise)}: {split} error")
                axis.set_ylabel(f"{split} error")
                epoch_axis(axis, curves["epoch"].max())
                if row == 0:
                    axis.set_xlabel("")
        legend_right(figure, [line_handle(str(w), colours[w]) for w in widths], title="width")
        figure.suptitle("Learning curves: error against epoch, one line per width")
        figure.tight_layout()
    return figure


def learning_curves(curves: pd.DataFrame, path: Path) -> Path:
    return save(learning_curves_figure(curves), path)


# --------------------------------------------------------------------------- error against width


def error_vs_width_figure(runs: pd.DataFrame) -> Figure:
    """Final test (solid) and train (dashed) error against width, one line per noise level and split."""
    require_columns(runs, ["width", "noise", "train_error", "test_error"], "runs")
    widths, noises = sorted_values(runs["width"]), sorted_values(runs["noise"])
    colours = categorical_palette(noises)
    long = _error_long(runs, ["width", "noise"])
    with house_style():
        figure, axis = plt.subplots(figsize=(6.4, 4.0))
        for noise in noises:
            for split in SPLITS:
                stats = mean_and_std(long[(long["noise"] == noise) & (long["split"] == split)], ["width"], "error")
                plot_mean_line(
                    axis, stats, "width", label=f"{noise_label(noise)}, {split}", colour=colours[noise],
                    linestyle=SPLIT_STYLES[split], marker="o" if split == "test" else "s", markersize=4,
                    markerfacecolor=colours[noise] if split == "test" else "white",
                )  # fmt: skip
        width_axis(axis, widths)
        axis.set_ylabel("error (1 - accuracy)")
        axis.set_ylim(bottom=0)
        axis.set_title("Final train and test error against width")
        legend_outside(axis, title="final error")
    return figure


def error_vs_width(runs: pd.DataFrame, path: Path) -> Path:
    return save(error_vs_width_figure(runs), path)


# --------------------------------------------------------------------------- study measures


def _measures(table: pd.DataFrame) -> list[str]:
    return sorted(table["measure"].unique())


def _group_handles(groups) -> list:
    return [line_handle(f"{g} samples", GROUP_COLOURS[g]) for g in groups]


def study_vs_width_figure(table: pd.DataFrame, runs: pd.DataFrame, title: str) -> Figure:
    """Rows = noise levels; first column the final train/test error, then each measure at the final
    checkpoint for all / clean / noisy samples, all against width."""
    require_columns(table, ["measure", "group", "value", "width", "noise"], "study")
    require_columns(runs, ["width", "noise", "train_error", "test_error"], "runs")
    measures, noises = _measures(table), sorted_values(table["noise"])
    widths = sorted_values(pd.concat([table["width"], runs["width"]]))
    groups = [g for g in GROUP_COLOURS if g in set(table["group"])]
    errors = _error_long(runs, ["width", "noise"])
    with house_style():
        figure, axes = plt.subplots(len(noises), len(measures) + 1, figsize=(3.6 * (len(measures) + 1), 2.9 * len(noises)), squeeze=False)
        for r, noise in enumerate(noises):
            for split in SPLITS:
                stats = mean_and_std(errors[(errors["noise"] == noise) & (errors["split"] == split)], ["width"], "error")
                plot_mean_line(axes[r, 0], stats, "width", label=f"{split} error", colour="0.15", linestyle=SPLIT_STYLES[split], marker="o", markersize=3)
            axes[r, 0].set_title(f"{noise_label(noise)}\ntrain and test error", fontsize="medium")
            axes[r, 0].set_ylabel("error (1 - accuracy)")
            for c, measure in enumerate(measures, start=1):
                part = table[(table["noise"] == noise) & (table["measure"] == measure)]
                for group in groups:
                    stats = mean_and_std(part[part["group"] == group], ["width"], "value")
                    if len(stats):
                        plot_mean_line(axes[r, c], stats, "width", label=group, colour=GROUP_COLOURS[group], marker="o", markersize=3)
                axes[r, c].set_title(f"{noise_label(noise)}\n{fill(measure_label(measure), 34)}", fontsize="medium")
                measure_axis(axes[r, c], part["value"], measure_name(measure))
            for axis in axes[r]:
                width_axis(axis, widths)
        handles = [line_handle(f"{s} error", "0.15", SPLIT_STYLES[s]) for s in SPLITS] + _group_handles(groups)
        legend_right(figure, handles)
        figure.suptitle(title)
        figure.tight_layout()
    return figure


def study_vs_width(table: pd.DataFrame, runs: pd.DataFrame, path: Path, title: str) -> Path:
    return save(study_vs_width_figure(table, runs, title), path)


def _epochwise_groups(part: pd.DataFrame) -> list[str]:
    """Clean and noisy samples where the run has both; "all" only where it is the one group."""
    present = set(part["group"])
    split = [g for g in ("clean", "noisy") if g in present]
    return split or (["all"] if "all" in present else [])


def study_vs_epoch_figure(table: pd.DataFrame, curves: pd.DataFrame, width: int, title: str) -> Figure:
    """One width across checkpoints: train/test error, then each measure for clean (solid) and noisy
    (dotted) samples; colour = noise level. One legend, right of the panels."""
    require_columns(table, ["epoch", "measure", "group", "value", "width", "noise"], "study")
    require_columns(curves, ["epoch", "width", "noise", "train_error", "test_error"], "curves")
    measures = _measures(table)
    table, curves = table[table["width"] == width], curves[curves["width"] == width]
    noises = sorted_values(pd.concat([table["noise"], curves["noise"]]))
    colours = categorical_palette(noises)
    errors = _error_long(curves, ["epoch", "noise"])
    max_epoch = max(table["epoch"].max() if len(table) else 0, curves["epoch"].max() if len(curves) else 0)
    used_groups: set[str] = set()
    with house_style():
        figure, axes = plt.subplots(1, len(measures) + 1, figsize=(3.6 * (len(measures) + 1), 3.2), squeeze=False)
        for noise in noises:
            for split in SPLITS:
                stats = mean_and_std(errors[(errors["noise"] == noise) & (errors["split"] == split)], ["epoch"], "error")
                plot_mean_line(axes[0, 0], stats, "epoch", label=f"{noise_label(noise)}, {split}", colour=colours[noise], linestyle=SPLIT_STYLES[split])
        axes[0, 0].set_title(f"width {width}\ntrain and test error", fontsize="medium")
        axes[0, 0].set_ylabel("error (1 - accuracy)")
        for c, measure in enumerate(measures, start=1):
            for noise in noises:
                part = table[(table["measure"] == measure) & (table["noise"] == noise)]
                for group in _epochwise_groups(part):
                    used_groups.add(group)
                    stats = mean_and_std(part[part["group"] == group], ["epoch"], "value")
                    plot_mean_line(axes[0, c], stats, "epoch", label=f"{noise_label(noise)}, {group}", colour=colours[noise], linestyle=GROUP_STYLES[group], marker="o", markersize=3)
            axes[0, c].set_title(f"width {width}\n{fill(measure_label(measure), 34)}", fontsize="medium")
            measure_axis(axes[0, c], table.loc[table["measure"] == measure, "value"], measure_name(measure))
        for axis in axes[0]:
            epoch_axis(axis, max_epoch)
        handles = [line_handle(noise_label(n), colours[n]) for n in noises]
        handles += [line_handle(f"{s} error", "0.3", SPLIT_STYLES[s]) for s in SPLITS]
        handles += [line_handle(f"{g} samples", "0.3", GROUP_STYLES[g]) for g in GROUP_STYLES if g in used_groups]
        legend_right(figure, handles)
        figure.suptitle(title)
        figure.tight_layout()
    return figure


def study_vs_epoch(table: pd.DataFrame, curves: pd.DataFrame, width: int, path: Path, title: str) -> Path:
    return save(study_vs_epoch_figure(table, curves, width, title), path)

