"""Stage `report`: tables and figures over every run (and every study result) in artifacts/."""

from __future__ import annotations

import pandas as pd

from netgeom.io import atomic_write, atomic_write_json
from netgeom.layout import Layout
from netgeom.params import Params
from netgeom.report import figures, tables
from netgeom.stages.study_common import sync_studies


def interpolation_figures(layout: Layout, runs: pd.DataFrame, out_tables, out_figures, suffix: str) -> None:
    root = layout.study_root("interpolation")
    study = tables.study_table(root, runs)
    if len(study):
        wide = study.pivot_table(index=["run", "width", "noise"], columns="measure", values="value").reset_index()
        atomic_write(out_tables / "interpolation.csv", lambda tmp: wide.to_csv(tmp, index=False))
        curves = pd.concat(
            [pd.read_parquet(f).assign(run=f.parent.name) for f in sorted(root.glob("*/curves.parquet"))], ignore_index=True
        ).merge(runs[["run", "width", "noise"]], on="run")
        monotone = wide[["run"]].assign(monotone=wide["monotone.train"].astype(bool))
        figures.mli_curves(curves, monotone, out_figures / f"mli_curves.{suffix}")
        figures.delta_vs_distance(wide, out_figures / f"delta_vs_distance.{suffix}")
        peak = peak_run(runs)["run"]
        if (root / peak / "landscape.parquet").exists():
            figures.landscape(
                pd.read_parquet(root / peak / "landscape.parquet"), pd.read_parquet(root / peak / "trajectory.parquet"),
                peak, out_figures / f"landscape.{suffix}",
            )
    mli = layout.study_root("mli")
    if (mli / "fractions.parquet").exists():
        fractions = pd.read_parquet(mli / "fractions.parquet")
        atomic_write(out_tables / "mli_fractions.csv", lambda tmp: fractions.to_csv(tmp, index=False))
        figures.mli_preset(pd.read_parquet(mli / "curves.parquet"), fractions, out_figures / f"mli_preset.{suffix}")
    barriers = layout.study_root("barriers") / "barriers.parquet"
    if barriers.exists():
        table = pd.read_parquet(barriers)
        if len(table):
            atomic_write(out_tables / "barriers.csv", lambda tmp: table.to_csv(tmp, index=False))
            figures.barriers(table, out_figures / f"barriers.{suffix}")


def peak_run(runs: pd.DataFrame) -> pd.Series:
    """The run at the double-descent peak: at the highest noise level, the highest test error
    among the runs that interpolate (train error <= 1%), i.e. at or past the threshold. Falls
    back to the highest test error when nothing interpolates."""
    noisiest = runs[runs["noise"] == runs["noise"].max()]
    interpolating = noisiest[noisiest["train_error"] <= 0.01]
    pool = interpolating if len(interpolating) else noisiest
    return pool.loc[pool["test_error"].idxmax()]


def peak_width(runs: pd.DataFrame) -> int:
    return int(peak_run(runs)["width"])


def run_report(params: Params, layout: Layout) -> dict:
    runs_root = layout.runs_root
    runs = tables.runs_table(runs_root)
    curves = tables.curves_table(runs_root)
    out_tables, out_figures = layout.report_tables, layout.report_figures
    out_tables.mkdir(parents=True, exist_ok=True)
    out_figures.mkdir(parents=True, exist_ok=True)
    summary: dict = {}
    if len(runs):
        grid = tables.grid_table(runs, ["train_error", "test_error", "val_error", "train_acc_noisy", "parameters"])
        for name, frame in {"runs": runs, "curves": curves, "grid": grid}.items():
            atomic_write(out_tables / f"{name}.csv", lambda tmp, f=frame: f.to_csv(tmp, index=False))
        suffix = params.report.format
        figures.learning_curves(curves, out_figures / f"learning_curves.{suffix}")
        figures.error_vs_width(runs, out_figures / f"error_vs_width.{suffix}")
        smoothness = tables.study_table(layout.study_root("smoothness"), runs)
        if len(smoothness):
            atomic_write(out_tables / "smoothness.csv", lambda tmp: smoothness.to_csv(tmp, index=False))
            figures.study_vs_width(
                tables.final_epochs(smoothness), runs, out_figures / f"smoothness_vs_width.{suffix}",
                "Double descent in input space: error and Jacobian norms against width (final checkpoint)",
            )
            width = params.report.epochwise_width or peak_width(runs)
            figures.study_vs_epoch(
                smoothness, curves, width, out_figures / f"smoothness_vs_epoch.{suffix}", f"Epoch-wise view, width {width}"
            )
        regions = tables.study_table(layout.study_root("regions"), runs)
        if len(regions):
            regions = regions[regions["measure"].isin(["density", "absolute_deviation", "regions"])]
            atomic_write(out_tables / "regions.csv", lambda tmp: regions.to_csv(tmp, index=False))
            figures.study_vs_width(
                tables.final_epochs(regions), runs, out_figures / f"regions_vs_width.{suffix}",
                "Linear regions along closed paths: density and absolute deviation against width (final checkpoint)",
            )
            width = params.report.epochwise_width or peak_width(runs)
            figures.study_vs_epoch(regions, curves, width, out_figures / f"regions_vs_epoch.{suffix}", f"Epoch-wise regions, width {width}")
        interpolation_figures(layout, runs, out_tables, out_figures, suffix)
        summary = {
            row["run"]: {k: row[k] for k in ("train_acc", "test_acc", "train_loss", "test_loss") if k in row}
            for row in runs.to_dict("records")
        }
    atomic_write_json(layout.report_summary, summary)
    sync_studies(params, layout)
    return summary
