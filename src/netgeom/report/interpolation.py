"""The interpolation (MLI) study in the report: curves, Delta against distance, the landscape."""

from __future__ import annotations

import pandas as pd

from netgeom.io import read_parquet
from netgeom.report import figures_interpolation as figures
from netgeom.report import tables
from netgeom.report.context import Figure, ReportContext
from netgeom.report.tables import noise_key
from netgeom.studies.curve_summaries import non_monotonic_fraction

HEADLINE_LABELS = {
    "mli_non_monotonic": "share of converged runs whose init → final train loss is not monotonic",
    "mli_converged": "runs whose final train loss passes the MLI convergence filter (those the share counts)",
}


def _summary_table(context: ReportContext) -> pd.DataFrame:
    study = tables.study_table(context.layout.study_root("interpolation"), context.runs)
    if study.empty:
        return study
    return study.pivot_table(index=["run", "width", "noise"], columns="measure", values="value").reset_index()


def _curves(context: ReportContext) -> pd.DataFrame:
    root = context.layout.study_root("interpolation")
    return pd.concat(
        [read_parquet(f).assign(run=f.parent.name) for f in sorted(root.glob("*/curves.parquet"))], ignore_index=True
    ).merge(context.runs[["run", "width", "noise"]], on="run")


def _fractions(context: ReportContext, wide: pd.DataFrame) -> pd.DataFrame:
    """Per noise level: runs, converged runs and the non-monotonic share of those (the MLI paper
    counts only runs that converged: a run stuck at a high loss says nothing about the path)."""
    p = context.params.interpolation
    return non_monotonic_fraction(wide, ["noise"], delta="delta.train", final_loss="final_loss.train", max_final_loss=p.max_final_loss, tol=p.tol)


def report(context: ReportContext) -> list[Figure]:
    root = context.layout.study_root("interpolation")
    wide = _summary_table(context)
    if wide.empty:
        return []
    curves = _curves(context)
    context.write_table("interpolation", wide)
    fractions = _fractions(context, wide)
    converged = int(fractions["n_converged"].sum())
    monotone = wide[["run"]].assign(monotone=wide["monotone.train"].astype(bool))
    shown = [
        Figure(
            figures.mli_curves(curves, monotone, context.figure_path("mli_curves")),
            "Monotonic linear interpolation",
            f"Train loss from init (t=0) to the trained weights (t=1); {int((~monotone['monotone']).sum())} of {len(monotone)} "
            "curves are not monotonic (dashed).",
        ),
        Figure(
            figures.delta_vs_distance(wide, context.figure_path("delta_vs_distance")),
            "Non-monotonicity against distance travelled",
            f"Δ (largest rise of the train loss along init → final) against ‖θ_T − θ₀‖ / ‖θ₀‖; "
            f"{int((~wide['monotone.train'].astype(bool)).sum())} of {len(wide)} runs non-monotonic, {int(fractions['n_non_monotonic'].sum())} of "
            f"the {converged} converged (final train loss ≤ {context.params.interpolation.max_final_loss:g}); largest Δ {wide['delta.train'].max():.3g}.",
        ),
    ]
    peak = context.peak_run
    if peak is not None and (root / peak / "landscape.parquet").exists():
        plane_file = root / peak / "plane.parquet"
        second = read_parquet(plane_file).set_index("point").loc["theta_0_other"] if plane_file.exists() else None
        path = figures.landscape(
            read_parquet(root / peak / "landscape.parquet"), read_parquet(root / peak / "trajectory.parquet"), peak,
            context.figure_path("landscape"), second_init=None if second is None else (float(second["x"]), float(second["y"])),
        )
        shown.append(Figure(path, f"Loss landscape, {peak}", "Train loss on the plane through the init θ₀, a second init θ₀′ (square) and the trained weights θ_T, with the training trajectory projected on it."))
    return shown


def metrics(context: ReportContext) -> dict[str, dict[str, float]]:
    """Headline per noise level: how many runs converged and the fraction of those whose
    init -> final train-loss curve is not monotonic (none without a converged run: no NaN)."""
    wide = _summary_table(context)
    if wide.empty:
        return {}
    out = {}
    for row in _fractions(context, wide).to_dict("records"):
        values = {"mli_converged": int(row["n_converged"])}
        if row["n_converged"] > row["n_non_finite"]:
            values["mli_non_monotonic"] = float(row["frac_non_monotonic"])
        out[noise_key(row["noise"])] = values
    return out
