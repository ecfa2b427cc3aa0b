"""The curvature study in the report: sharpness (top Hessian eigenvalue, trace) against width
beside the test error, on clean and noisy samples, across epochs, and the focus run's spectral
density, 1-D cut and 2-D loss surface."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from netgeom.io import read_parquet
from netgeom.report.context import Figure, ReportContext
from netgeom.report.figure_style import house_style, save
from netgeom.report.tables import noise_key, per_run_table
from netgeom.stages.study_common import read_shards
from netgeom.studies.curvature import smoothed_density

HEADLINE_LABELS = {
    "curvature_lambda_max": "top Hessian eigenvalue of the training loss, widest width (final checkpoint)",
    "curvature_trace": "Hessian trace of the training loss, widest width (final checkpoint)",
}


def curvature_table(context: ReportContext) -> pd.DataFrame:
    return per_run_table(context.layout.study_root("curvature"), "curvature.parquet", context.runs, ["width", "noise", "replicate", "test_error"])


def _final(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["epoch"] == table.groupby("run")["epoch"].transform("max")]


LABELS = {"lambda_max": "top Hessian eigenvalue", "trace": "Hessian trace", "test_error": "test error"}


def _panels(curves, columns: tuple[str, ...], x: str, path, *, log_y: bool = False) -> object:
    """One panel per column of `columns` against `x` (width on a log2 axis), one line per
    (label, linestyle, frame) of `curves`."""
    with house_style():
        figure, axes = plt.subplots(1, len(columns), figsize=(4.4 * len(columns) + 1, 3.6))
        for label, linestyle, frame in curves:
            for ax, column in zip(axes, columns):
                ax.plot(frame[x], frame[column], marker="o", linestyle=linestyle, label=label)
        for ax, column in zip(axes, columns):
            if x == "width":
                ax.set_xscale("log", base=2)
            if log_y:
                ax.set_yscale("log")
            ax.set_xlabel(x)
            ax.set_ylabel(LABELS[column])
        axes[-1].legend(loc="best", fontsize="small")
        figure.tight_layout()
    return save(figure, path)


def _by_width(part: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    return part.groupby("width", as_index=False)[columns].mean().sort_values("width")


def sharpness_figure(final: pd.DataFrame, path) -> object:
    columns = ("lambda_max", "trace", "test_error")
    curves = [(f"label noise {noise:.0%}", "-", _by_width(part, list(columns))) for noise, part in final[final["group"] == "all"].groupby("noise")]
    return _panels(curves, columns, "width", path)


def groups_figure(final: pd.DataFrame, path) -> object:
    """Top eigenvalue and trace of the loss on the clean and on the noisy samples against width."""
    columns = ("lambda_max", "trace")
    curves = [(f"{group} samples, label noise {noise:.0%}", "--" if group == "noisy" else "-", _by_width(part, list(columns)))
              for (noise, group), part in final[final["noise"] > 0].groupby(["noise", "group"])]
    return _panels(curves, columns, "width", path, log_y=True)


def epochs_figure(table: pd.DataFrame, path) -> object:
    """Top eigenvalue and trace of one run's training loss at each checkpoint, per sample group."""
    curves = [(f"{group} samples", "-", part.sort_values("epoch")) for group, part in table.groupby("group")]
    return _panels(curves, ("lambda_max", "trace"), "epoch", path)


def line_figure(line: pd.DataFrame, path) -> object:
    with house_style():
        figure, ax = plt.subplots(figsize=(5.5, 3.6))
        ax.plot(line["x"], line["loss"], color="C0")
        ax.set_yscale("log")
        ax.set_xlabel("step along direction 1 (filter-normalised)")
        ax.set_ylabel("train loss", color="C0")
        twin = ax.twinx()
        twin.plot(line["x"], line["accuracy"], color="C1", linestyle="--")
        twin.set_ylabel("train accuracy", color="C1")
        ax.axvline(0, color="grey", linewidth=0.5)
        figure.tight_layout()
    return save(figure, path)


def surface_figure(surface: pd.DataFrame, path) -> object:
    grid = surface.pivot_table(index="y", columns="x", values="loss")
    with house_style():
        figure, ax = plt.subplots(figsize=(5, 4.2))
        contours = ax.contourf(grid.columns, grid.index, np.log10(grid.to_numpy()), levels=20, cmap="viridis")
        ax.contour(grid.columns, grid.index, np.log10(grid.to_numpy()), levels=10, colors="white", linewidths=0.5)
        ax.plot([0], [0], marker="*", color="red", markersize=10)
        figure.colorbar(contours, ax=ax, label="log10 train loss")
        ax.set_xlabel("direction 1 (filter-normalised)")
        ax.set_ylabel("direction 2")
    return save(figure, path)


def density_figure(density: pd.DataFrame, path) -> object:
    with house_style():
        figure, ax = plt.subplots(figsize=(5.5, 3.6))
        for (epoch, group), part in density.groupby(["epoch", "group"]):
            nodes, weights = part["node"].to_numpy(), part["weight"].to_numpy()
            span = max(nodes.max() - nodes.min(), 1e-6)
            grid = np.linspace(nodes.min() - 0.05 * span, nodes.max() + 0.05 * span, 600)
            ax.plot(grid, smoothed_density(nodes, weights, grid, 0.01 * span) + 1e-12, label=f"epoch {epoch}, {group}")
        ax.set_yscale("log")
        ax.set_xlabel("Hessian eigenvalue")
        ax.set_ylabel("density (smoothed)")
        ax.legend(loc="best", fontsize="small")
    return save(figure, path)


def report(context: ReportContext) -> list[Figure]:
    table = curvature_table(context)
    if table.empty:
        return []
    context.write_table("curvature", table)
    final = _final(table)
    widest = final[final["width"] == final["width"].max()]
    caption = "; ".join(f"label noise {row.noise:.0%} width {row.width}: top eigenvalue {row.lambda_max:.4g}, trace "
                        f"{row.trace:.4g} ± {row.trace_se:.2g}" for row in widest[widest["group"] == "all"].itertuples())
    figures = [Figure(sharpness_figure(final, context.figure_path("curvature_sharpness")),
                      "Sharpness of the training loss and test error against width", caption)]
    if final["group"].nunique() > 1 and (final["noise"] > 0).any():
        figures.append(Figure(groups_figure(final, context.figure_path("curvature_groups")),
                              "Sharpness of the loss on the clean and on the noisy training samples against width",
                              "Each group's own Hessian (the loss averaged over its samples only); dashed: the noisy samples."))
    run = context.peak_run
    mine = table[table["run"] == run] if run else table.iloc[:0]
    if mine["epoch"].nunique() > 1:
        figures.append(Figure(epochs_figure(mine, context.figure_path("curvature_epochs")), f"Sharpness across training, {run}",
                              "Top Hessian eigenvalue and trace of the training loss at each checkpoint, per sample group."))
    folder = context.layout.study_dir("curvature", run) if run else None
    if folder is not None and (folder / "line.parquet").exists():
        line = read_parquet(folder / "line.parquet")
        figures.append(Figure(line_figure(line, context.figure_path("curvature_line")), f"1-D cut of the training loss, {run}",
                              f"Along the surface's first filter-normalised direction; loss {line['loss'].min():.3g} to {line['loss'].max():.3g}."))
    if folder is not None and (folder / "density.parquet").exists():
        density = read_parquet(folder / "density.parquet")
        figures.append(Figure(density_figure(density, context.figure_path("curvature_density")),
                              f"Hessian spectral density, {run}", "Stochastic Lanczos quadrature, smoothed with a Gaussian of 1% of the range."))
        count = context.params.curvature.surface.shards
        surface = read_shards(folder, count) if context.params.curvature.surface.resolution else None
        if surface is not None and not surface.empty:
            figures.append(Figure(surface_figure(surface, context.figure_path("curvature_surface")),
                                  f"Training loss around the final weights, {run}",
                                  f"Two filter-normalised random directions (Li et al.); the star is the trained model; "
                                  f"loss {surface['loss'].min():.3g} to {surface['loss'].max():.3g}."))
    return figures


def metrics(context: ReportContext) -> dict[str, dict[str, float]]:
    table = curvature_table(context)
    if table.empty:
        return {}
    final = _final(table)
    final = final[(final["group"] == "all") & (final["width"] == final["width"].max())]
    return {noise_key(noise): {"curvature_lambda_max": float(g["lambda_max"].mean()), "curvature_trace": float(g["trace"].mean())}
            for noise, g in final.groupby("noise")}
