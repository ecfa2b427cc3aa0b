"""Stage `hyperplanes`: are the hyperplanes a run's filters draw biased, and since when?

Weights only (no data). Writes artifacts/studies/hyperplanes/<run>/: layers.parquet (per layer
and checkpoint: mean normalised projection, mass = fraction of filters with projection <= 0,
sign-test and shift-test p-values, distance from init), network.parquet (all layers pooled),
projections.parquet (every filter's raw and normalised projection at every selected checkpoint;
the distribution figure shows the first and the last) and summary.json (the pooled statistics per checkpoint).
"""

from __future__ import annotations

import pandas as pd

from netgeom.groups.hyperplanes import HyperplanesParams
from netgeom.io import atomic_write_parquet
from netgeom.layout import Layout
from netgeom.params import Params
from netgeom.runs import Cell, cell_run, checkpoint_selection, load_state, model_for_run
from netgeom.studies.hyperplanes import evolution_tables, projection_table
from netgeom.summary import Summary, write_summary

SUMMARY_COLUMNS = ("mass", "mean", "sign_pvalue", "distance_fro", "shift_auc")




def run(params: Params, layout: Layout, cell: Cell) -> Summary:
    p: HyperplanesParams = params.hyperplanes
    params, source = cell_run(params, layout, cell)
    name = source.name
    model = model_for_run(source.info)
    selected = dict(checkpoint_selection(source, p.checkpoints, "hyperplanes.checkpoints"))
    if 0 in source.scheduled_epochs:  # the reference for distances and shift tests
        selected.setdefault(0, source.init_checkpoint())
    states = {epoch: load_state(path, fits=model) for epoch, path in sorted(selected.items())}  # weights only: the CPU is enough
    init_epoch = 0 if 0 in states else None
    layers, network = evolution_tables(model, states, init_epoch=init_epoch, with_linear=p.with_linear)
    projections = pd.concat(
        [projection_table(model, state, with_linear=p.with_linear).assign(epoch=e) for e, state in states.items()], ignore_index=True
    )
    summary = Summary()
    for row in network.to_dict("records"):
        summary.epochs[int(row["epoch"])] = {c: {"all": float(row[c])} for c in SUMMARY_COLUMNS if c in row and pd.notna(row[c])}
    with layout.building(layout.study_dir("hyperplanes", name)) as out:
        atomic_write_parquet(out / "layers.parquet", layers)
        atomic_write_parquet(out / "network.parquet", network)
        atomic_write_parquet(out / "projections.parquet", projections)
        write_summary(out, summary)
    return summary


def describe(summary: Summary) -> str:
    first, last = min(summary.epochs), max(summary.epochs)
    mass = lambda e: summary.epochs[e]["mass"]["all"]  # noqa: E731
    return f"hyperplanes: mass (share of filters with projection <= 0) {mass(first):.3f} at epoch {first} -> {mass(last):.3f} at epoch {last}"
