"""The regions study in the report: its table, figures and headline numbers."""

from __future__ import annotations

from netgeom.report import figures, tables
from netgeom.report.context import Figure, ReportContext


def report(context: ReportContext) -> list[Figure]:
    table = tables.study_table(context.layout.study_root("regions"), context.runs)
    if table.empty:
        return []
    table = table[table["measure"].isin(["crossings", "density", "absolute_deviation"])]
    context.write_table("regions", table)
    final = tables.final_epochs(table)
    by_width = figures.study_vs_width(
        final, context.runs, context.figure_path("regions_vs_width"),
        "Linear regions along closed paths: crossings, density and absolute deviation against width (final checkpoint)",
    )
    shown = [Figure(by_width, "Linear regions against width", tables.headline(final, "regions"))]
    if context.peak_width is not None:
        by_epoch = figures.study_vs_epoch(
            table, context.curves, context.peak_width, context.figure_path("regions_vs_epoch"), f"Epoch-wise regions, width {context.peak_width}"
        )
        shown.append(Figure(by_epoch, f"Linear regions across training, width {context.peak_width}", "The same statistics at every saved checkpoint."))
    return shown
