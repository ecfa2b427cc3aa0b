"""The smoothness study in the report: its table, figures and headline numbers."""

from __future__ import annotations

from netgeom.report import tables
from netgeom.report.context import Figure, ReportContext
from netgeom.report.per_sample import width_and_epoch_figures
from netgeom.report.tables import double_descent_peak, noise_key

HEADLINE_LABELS = {
    "lipschitz_at_peak": "empirical Lipschitz constant (logits' input-Jacobian operator norm) at the double-descent "
    "peak's width (of the highest test error where no width fits)"
}


def report(context: ReportContext) -> list[Figure]:
    table = tables.study_table(context.layout.study_root("smoothness"), context.runs)
    if table.empty:
        return []
    return width_and_epoch_figures(context, "smoothness", table, "Input-space smoothness (Jacobian norms)")


def metrics(context: ReportContext) -> dict[str, dict[str, float]]:
    """Headline: the mean Lipschitz estimate (operator norm of the logits Jacobian) at the width
    of the double-descent peak, per noise level."""
    table = tables.study_table(context.layout.study_root("smoothness"), context.runs)
    if table.empty or "jacobian_operator.logits" not in set(table["measure"]):
        return {}
    final = tables.final_epochs(table)
    lipschitz = final[(final["measure"] == "jacobian_operator.logits") & (final["group"] == "all")]
    out = {}
    for noise, runs in context.runs.groupby("noise"):
        peak, _ = double_descent_peak(runs)
        at_peak = lipschitz[(lipschitz["noise"] == noise) & (lipschitz["width"] == peak)]["value"]
        if len(at_peak):
            out[noise_key(noise)] = {"lipschitz_at_peak": float(at_peak.mean())}
    return out
