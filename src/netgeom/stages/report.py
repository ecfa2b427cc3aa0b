"""Stage `report`: tables and figures over every run (and every study result) in artifacts/."""

from __future__ import annotations

from netgeom.io import atomic_write, atomic_write_json
from netgeom.layout import Layout
from netgeom.params import Params
from netgeom.report import figures, tables


def peak_width(runs) -> int:
    """The width with the highest final test error at the highest noise level: the
    interpolation threshold, where the epoch-wise view is most telling."""
    noisiest = runs[runs["noise"] == runs["noise"].max()]
    return int(noisiest.groupby("width")["test_error"].mean().idxmax())


def run_report(params: Params, layout: Layout) -> dict:
    runs_root = layout.artifacts / "runs"
    runs = tables.runs_table(runs_root)
    curves = tables.curves_table(runs_root)
    out_tables, out_figures = layout.reports / "tables", layout.reports / "figures"
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
        smoothness = tables.study_table(layout.artifacts / "studies", "smoothness", runs)
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
        summary = {
            row["run"]: {k: row[k] for k in ("train_acc", "test_acc", "train_loss", "test_loss") if k in row}
            for row in runs.to_dict("records")
        }
    atomic_write_json(layout.reports / "summary.json", summary)
    return summary
