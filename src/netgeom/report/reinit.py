"""Layer re-initialisation in the report: the heatmap (checkpoints x layers) and the seed's claim
(projection bias against the drop) for the focus run; every run's sweep as a table."""

from __future__ import annotations

import pandas as pd

from netgeom.io import read_parquet
from netgeom.report import figures_hyperplanes as figures
from netgeom.report.context import Figure, ReportContext


def report(context: ReportContext) -> list[Figure]:
    root = context.layout.study_root("reinit")
    frames = [read_parquet(f).assign(run=f.parent.name) for f in sorted(root.glob("*/reinit.parquet"))]
    if not frames:
        return []
    context.write_table("reinit", pd.concat(frames, ignore_index=True))
    run = context.peak_run
    if not run or not (root / run / "reinit.parquet").exists():
        return []
    sweep = read_parquet(root / run / "reinit.parquet")
    sweep = sweep[sweep["group"] == "all"]
    worst = sweep.loc[sweep.groupby("checkpoint", sort=False)["relative_drop"].idxmax()]
    caption = f"{run}: largest relative accuracy drop per reset source: " + ", ".join(
        f"{row.checkpoint} {row.relative_drop:.2f} ({row.layer})" for row in worst.itertuples()
    )
    shown = [Figure(figures.reinit_heatmap(sweep, context.figure_path("reinit_heatmap")), f"Layer re-initialisation, {run}", caption)]
    layers = context.layout.study_dir("hyperplanes", run) / "layers.parquet"
    if layers.exists():
        hyperplanes = read_parquet(layers)
        points = figures.bias_and_drop(hyperplanes, sweep)
        path = figures.bias_vs_reinit(hyperplanes, sweep, context.figure_path("bias_vs_reinit"))
        shown.append(Figure(path, "Are the biased layers the critical ones?", f"{len(points)} layers of {run} in both studies."))
    return shown
