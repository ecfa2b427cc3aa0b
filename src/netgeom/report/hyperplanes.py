"""The hyperplane study in the report: projection distributions at init vs the end, and the mass
of every layer across checkpoints, for the focus run; the pooled mass of every run as a table."""

from __future__ import annotations

import pandas as pd

from netgeom.io import read_parquet
from netgeom.report import figures_hyperplanes as figures
from netgeom.report.context import Figure, ReportContext
from netgeom.report.layer_names import run_layer_labels
from netgeom.report.tables import noise_key, per_run_table

HEADLINE_LABELS = {
    "hyperplane_mass": "hyperplane mass at the final checkpoint (share of projections ≤ 0; 0.5 = unbiased)",
    "hyperplane_mass_init": "hyperplane mass at init",
}


def network_table(context: ReportContext) -> pd.DataFrame:
    return per_run_table(context.layout.study_root("hyperplanes"), "network.parquet", context.runs, ["width", "noise", "replicate"])


def report(context: ReportContext) -> list[Figure]:
    network = network_table(context)
    if network.empty:
        return []
    context.write_table("hyperplanes", network)
    run = context.peak_run
    folder = context.layout.study_dir("hyperplanes", run) if run else None
    if folder is None or not (folder / "layers.parquet").exists():
        return []
    layers, projections = read_parquet(folder / "layers.parquet"), read_parquet(folder / "projections.parquet")
    labels = run_layer_labels(context.layout.run_dir(run), layers["layer"].unique())
    layers, projections = (frame.assign(layer=frame["layer"].map(labels)) for frame in (layers, projections))
    first, last = layers["epoch"].min(), layers["epoch"].max()
    ends = layers[layers["epoch"].isin([first, last])].pivot_table(index="layer", columns="epoch", values="mass", sort=False)
    caption = f"{run}: share of filters with projection ≤ 0 (mass; 0.5 = unbiased), epoch {first} → {last}: " + "; ".join(
        f"{layer}: {row[first]:.2f} → {row[last]:.2f}" for layer, row in ends.iterrows()
    )
    return [
        Figure(figures.projection_distributions(projections, context.figure_path("hyperplane_projections")),
               f"Filter projections on the diagonal, {run}", caption),
        Figure(figures.mass_across_epochs(layers, context.figure_path("hyperplane_mass")),
               f"Hyperplane bias across training, {run}", "Mass per layer at every saved checkpoint."),
    ]


def metrics(context: ReportContext) -> dict[str, dict[str, float]]:
    """Headline: the pooled mass of the final checkpoints (and of the inits), mean over the runs of a noise level."""
    network = network_table(context)
    if network.empty:
        return {}
    final = network[network["epoch"] == network.groupby("run")["epoch"].transform("max")]
    out = {noise_key(noise): {"hyperplane_mass": float(group["mass"].mean())} for noise, group in final.groupby("noise")}
    for noise, group in network[network["epoch"] == 0].groupby("noise"):  # the reference: unbiased at init?
        out.setdefault(noise_key(noise), {})["hyperplane_mass_init"] = float(group["mass"].mean())
    return out
