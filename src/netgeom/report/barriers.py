"""Barriers between seed replicates in the report."""

from __future__ import annotations

from netgeom.io import read_parquet
from netgeom.report import figures_interpolation as figures
from netgeom.report.context import Figure, ReportContext


def report(context: ReportContext) -> list[Figure]:
    path = context.layout.study_root("barriers") / "barriers.parquet"
    if not path.exists():
        return []
    table = read_parquet(path)
    if table.empty:
        return []
    context.write_table("barriers", table)
    means = table[table["split"] == "train"].groupby("matching")["loss_barrier"].mean()
    caption = "Mean train-loss barrier between replicates: " + ", ".join(f"{k} {v:.3g}" for k, v in means.items())
    return [Figure(figures.barriers(table, context.figure_path("barriers")), "Barriers between seed replicates", caption)]
