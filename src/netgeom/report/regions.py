"""The regions study in the report: its table, figures and headline numbers."""

from __future__ import annotations

from netgeom.report import tables
from netgeom.report.context import Figure, ReportContext
from netgeom.report.tables import noise_key
from netgeom.report.per_sample import width_and_epoch_figures

HEADLINE_LABELS = {
    "regions_density_vs_test_error_rho": "Spearman ρ over widths: linear-region density vs test error",
    "regions_absolute_deviation_vs_test_error_rho": "Spearman ρ over widths: absolute deviation from the affine interpolation vs test error",
}

SHOWN = ["crossings", "density", "absolute_deviation"]


def report(context: ReportContext) -> list[Figure]:
    table = tables.study_table(context.layout.study_root("regions"), context.runs)
    if table.empty:
        return []
    return width_and_epoch_figures(context, "regions", table[table["measure"].isin(SHOWN)], "Linear regions along closed paths")


def metrics(context: ReportContext) -> dict[str, dict[str, float]]:
    """Headline, per noise level: does a measure follow the test error across widths? Spearman's
    rho over the widths of the final-checkpoint mean (all paths) against the test error, for the
    density and the absolute deviation (the seed: deviation follows double descent, density not)."""
    from scipy.stats import spearmanr

    table = tables.study_table(context.layout.study_root("regions"), context.runs)
    if table.empty:
        return {}
    final = tables.final_epochs(table)
    final = final[final["group"] == "all"]
    out: dict[str, dict[str, float]] = {}
    for (measure, noise), group in final[final["measure"].isin(["density", "absolute_deviation"])].groupby(["measure", "noise"]):
        by_width = group.groupby("width")[["value", "test_error"]].mean()
        if len(by_width) >= 3 and by_width["value"].nunique() > 1 and by_width["test_error"].nunique() > 1:
            rho = spearmanr(by_width["value"], by_width["test_error"]).statistic
            out.setdefault(noise_key(noise), {})[f"regions_{measure}_vs_test_error_rho"] = float(rho)
    return out
