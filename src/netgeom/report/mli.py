"""The MLI paper's SGD-vs-Adam x BN comparison in the report."""

from __future__ import annotations

from netgeom.io import read_parquet
from netgeom.report import figures_interpolation as figures
from netgeom.report.context import Figure, ReportContext


def report(context: ReportContext) -> list[Figure]:
    root = context.layout.study_root("mli")
    if not (root / "fractions.parquet").exists():
        return []
    fractions = read_parquet(root / "fractions.parquet")
    context.write_table("mli_fractions", fractions)
    caption = "; ".join(
        f"{row['optimizer']}{' + BN' if row['batch_norm'] else ''}: {row['n_non_monotonic']}/{row['n_converged']} non-monotonic"
        for row in fractions.to_dict("records")
    )
    path = figures.mli_preset(read_parquet(root / "curves.parquet"), fractions, context.figure_path("mli_preset"))
    return [Figure(path, "MLI: SGD vs Adam, with and without BN", caption)]
