"""The MLI paper's SGD-vs-Adam x BN comparison in the report."""

from __future__ import annotations

from netgeom.io import read_parquet
from netgeom.report import figures_interpolation as figures
from netgeom.report.context import Figure, ReportContext

_OPTIMIZERS = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}
HEADLINE_LABELS = {
    "delta_distance_spearman": "Spearman ρ over converged runs: Δ (largest rise) vs distance travelled",
    **{f"{key}{bn}_non_monotonic": f"{name}{' + BN' if bn else ''}: share of converged runs non-monotonic" for key, name in _OPTIMIZERS.items() for bn in ("", "_bn")},
    **{f"{key}{bn}_converged": f"{name}{' + BN' if bn else ''}: runs converged" for key, name in _OPTIMIZERS.items() for bn in ("", "_bn")},
}


def report(context: ReportContext) -> list[Figure]:
    root = context.layout.study_root("mli")
    if not (root / "fractions.parquet").exists():
        return []
    fractions = read_parquet(root / "fractions.parquet")
    context.write_table("mli_fractions", fractions)
    caption = "; ".join(f"{row['group']}: {row['n_non_monotonic']}/{row['n_converged']} non-monotonic" for row in fractions.to_dict("records"))
    path = figures.mli_preset(read_parquet(root / "curves.parquet"), fractions, context.figure_path("mli_preset"))
    swept = len(fractions) > len(set(zip(fractions["optimizer"], fractions["batch_norm"])))  # lr, depth or arch listed too
    title = "MLI: non-monotonic share per group (optimizer, BN and the swept settings)" if swept else "MLI: SGD vs Adam, with and without BN"
    return [Figure(path, title, caption)]


def metrics(context: ReportContext) -> dict[str, dict[str, float]]:
    """Headline: per optimizer x BN group the fraction of converged runs whose init -> final
    curve is non-monotonic, the number converged, and over every converged run the Spearman
    correlation of Delta with the normalised distance travelled (the paper: Adam travels further
    and breaks MLI more often)."""
    from scipy.stats import spearmanr

    root = context.layout.study_root("mli")
    if not (root / "fractions.parquet").exists():
        return {}
    out: dict[str, float] = {}
    for row in read_parquet(root / "fractions.parquet").to_dict("records"):
        group = row["group_key"]
        if row["n_converged"]:  # no fraction without a converged run (and no NaN in summary.json)
            out[f"{group}_non_monotonic"] = float(row["frac_non_monotonic"])
        out[f"{group}_converged"] = int(row["n_converged"])
    runs = read_parquet(root / "runs.parquet")
    converged = runs[runs["final_train_loss"] <= context.params.mli.max_final_loss].dropna(subset=["delta"])
    if len(converged) >= 3 and converged["delta"].nunique() > 1:
        out["delta_distance_spearman"] = float(spearmanr(converged["delta"], converged["normalised_distance"]).statistic)
    return {"mli": out}
