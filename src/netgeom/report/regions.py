"""The regions study in the report: its table, figures and headline numbers."""

from __future__ import annotations

from netgeom.report import tables
from netgeom.report.context import Figure, ReportContext
from netgeom.report.per_sample import width_and_epoch_figures

SHOWN = ["crossings", "density", "absolute_deviation"]


def report(context: ReportContext) -> list[Figure]:
    table = tables.study_table(context.layout.study_root("regions"), context.runs)
    if table.empty:
        return []
    return width_and_epoch_figures(context, "regions", table[table["measure"].isin(SHOWN)], "Linear regions along closed paths")
