"""Layer re-initialisation in the report: the heatmap (checkpoints x layers) for the focus run, the
seed's claim (projection bias against the drop) for every seed of its cell, and every run's sweep
as a table."""

from __future__ import annotations

import pandas as pd

from netgeom.io import read_parquet
from netgeom.report import figures_hyperplanes as figures
from netgeom.report.context import Figure, ReportContext
from netgeom.report.layer_names import run_layer_labels
from netgeom.report.wording import correlation

HEADLINE_LABELS = {
    "bias_init_drop_rho": "Spearman ρ of layer bias against the drop when the layer is reset to its init",
    "bias_init_drop_rho_mean": "Spearman ρ of layer bias against the drop when the layer is reset to its init, mean over seeds",
    "bias_rand_drop_rho": "Spearman ρ of layer bias against the drop when the layer is re-drawn (rand)",
    "bias_rand_drop_rho_mean": "Spearman ρ of layer bias against the drop when the layer is re-drawn (rand), mean over seeds",
}
# The seed's claim is about the reset to init (Zhang et al.'s re-initialisation); a fresh draw
# (their re-randomisation) is the harsher test, which at small scale ruins every layer.
RESETS = {"init": figures.INIT, "rand": figures.RAND}


def report(context: ReportContext) -> list[Figure]:
    root = context.layout.study_root("reinit")
    reported = set(context.runs.get("run", []))
    frames = [read_parquet(f).assign(run=f.parent.name) for f in sorted(root.glob("*/reinit.parquet")) if f.parent.name in reported]
    if not frames:
        return []
    context.write_table("reinit", pd.concat(frames, ignore_index=True))
    run = context.peak_run
    if not run or not (root / run / "reinit.parquet").exists():
        return []
    sweep = read_parquet(root / run / "reinit.parquet")
    sweep = sweep[sweep["group"] == "all"]
    labels = run_layer_labels(context.layout.run_dir(run), sweep["layer"].unique())
    worst = sweep.loc[sweep.groupby("checkpoint", sort=False)["relative_drop"].idxmax()]
    caption = (
        f"{run}, trained accuracy {sweep['trained_accuracy'].mean():.3f}. Relative drop = (trained − reset) / trained "
        "accuracy; negative: the reset model does better. Largest drop per reset source: "
        + "; ".join(f"{figures.checkpoint_label(row.checkpoint)}: {row.relative_drop:.2f} ({labels.get(row.layer, row.layer)})" for row in worst.itertuples())
        + "."
    )
    shown = [Figure(figures.reinit_heatmap(sweep, context.figure_path("reinit_heatmap"), labels), f"Layer re-initialisation, {run}", caption)]
    pairs = replicate_tables(context, run)
    if pairs is not None:
        hyperplanes, sweeps = pairs
        points = figures.bias_and_drop(hyperplanes, sweeps)
        rhos = figures.rank_correlations(points)
        path = figures.bias_vs_reinit(hyperplanes, sweeps, context.figure_path("bias_vs_reinit"), labels=labels)
        seeds = f"{len(rhos)} seeds of {run}'s cell" if len(rhos) > 1 else run
        layers = points["layer"].nunique()
        rho_text = ", ".join(correlation(rho, layers) for rho in rhos.values())
        reset = figures.checkpoint_label(figures.reference_checkpoint(sweeps))
        caption = f"{layers} layers of {seeds} in both studies; Spearman ρ of bias against the drop when the layer is reset to {reset}: {rho_text}."
        shown.append(Figure(path, "Projection bias against re-initialisation drop", caption))
    return shown


def replicate_tables(context: ReportContext, run: str) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """Final-checkpoint hyperplane statistics and re-init sweeps of every replicate of `run`'s cell
    that ran both studies, with a `replicate` column; None when there is none."""
    runs = context.runs
    cell = runs[runs["run"] == run].iloc[0]
    siblings = runs[(runs["width"] == cell["width"]) & (runs["noise"] == cell["noise"])].sort_values("replicate")
    layers, sweeps = [], []
    for row in siblings.itertuples(index=False):
        layer_file = context.layout.study_dir("hyperplanes", row.run) / "layers.parquet"
        sweep_file = context.layout.study_dir("reinit", row.run) / "reinit.parquet"
        if layer_file.exists() and sweep_file.exists():
            sweep = read_parquet(sweep_file)
            layers.append(read_parquet(layer_file).assign(replicate=row.replicate))
            sweeps.append(sweep[sweep["group"] == "all"].assign(replicate=row.replicate))
    if not layers:
        return None
    return pd.concat(layers, ignore_index=True), pd.concat(sweeps, ignore_index=True)


def metrics(context: ReportContext) -> dict[str, dict[str, float]]:
    """Headline: are the biased layers the critical ones? Spearman's rho of the projection bias
    against the drop when the layer is reset to its init (`bias_init_drop_rho_*`, the seed's
    claim) and to a fresh draw (`bias_rand_drop_rho_*`), per seed of the focus cell, and their
    means; each where the sweep has that reset."""
    run = context.peak_run
    pairs = replicate_tables(context, run) if run else None
    if pairs is None:
        return {}
    hyperplanes, sweeps = pairs
    present = set(sweeps["checkpoint"].astype(str))
    values = {}
    for name, checkpoint in RESETS.items():
        if checkpoint not in present:
            continue
        rhos = figures.rank_correlations(figures.bias_and_drop(hyperplanes, sweeps, checkpoint))
        # rho needs three layers; NaN is no JSON number, so a replicate without one is left out
        seeds = {f"bias_{name}_drop_rho_replicate{key if key is not None else 0}": float(rho) for key, rho in rhos.items() if rho == rho}
        if seeds:
            values |= seeds | {f"bias_{name}_drop_rho_mean": sum(seeds.values()) / len(seeds)}
    return {"reinit": values} if values else {}
