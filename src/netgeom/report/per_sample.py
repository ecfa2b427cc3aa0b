"""The report view shared by the per-sample studies (smoothness, regions): each measure against
width at the final checkpoint, and across checkpoints at the focus width."""

from __future__ import annotations

import pandas as pd

from netgeom.report import figures, tables
from netgeom.report.context import Figure, ReportContext


def width_and_epoch_figures(context: ReportContext, study: str, table: pd.DataFrame, subject: str) -> list[Figure]:
    """`table`: the study's long table (tables.study_table), written to tables/<study>.csv."""
    context.write_table(study, table)
    final = tables.final_epochs(table)
    by_width = figures.study_vs_width(
        final, context.runs, context.figure_path(f"{study}_vs_width"), f"{subject} against width (final checkpoint)"
    )
    shown = [Figure(by_width, f"{subject} against width", tables.headline(final, study))]
    if context.peak_width is not None:
        width = context.peak_width
        by_epoch = figures.study_vs_epoch(table, context.curves, width, context.figure_path(f"{study}_vs_epoch"), f"{subject} across training, width {width}")
        shown.append(Figure(by_epoch, f"{subject} across training, width {width}", "The same measures at every saved checkpoint."))
    return shown
