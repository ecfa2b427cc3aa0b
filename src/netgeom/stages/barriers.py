"""Stage `barriers`: loss and accuracy barriers between seed replicates of each grid cell, before
and after Git Re-Basin weight matching (endpoints evaluated directly, BN recomputed inside, the
`interpolation` group's curve settings).

Writes artifacts/studies/barriers/: barriers.parquet (one row per pair, split and matching) and
curves.parquet.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pandas as pd

from netgeom.io import atomic_write_parquet
from netgeom.layout import Layout
from netgeom.params import Params
from netgeom.runs import (
    Cell,
    cell_run,
    load_run_data,
    load_state,
    model_for_run,
    study_device,
)
from netgeom.stages.interpolation import barrier_curve, calibration
from netgeom.studies import curve_summaries as cs
from netgeom.studies.alignment import align
from netgeom.studies.interpolation import curve_values
from netgeom.summary import Summary, write_summary

COLUMNS = ["run_a", "run_b", "width", "noise", "matching", "split", "loss_barrier", "accuracy_barrier"]




def replicate_pairs(params: Params) -> list[tuple[Cell, Cell]]:
    """Every pair of seed replicates of each (width, noise) grid cell."""
    g = params.grid
    return [
        (Cell(w, n, a), Cell(w, n, b))
        for w, n in itertools.product(g.widths, g.noise)
        for a, b in itertools.combinations(sorted(g.seed_offsets), 2)
    ]


def barrier_rows(curve: pd.DataFrame, pair: dict) -> list[dict]:
    rows = []
    for split in curve["split"].unique():
        t, loss = curve_values(curve, split, "loss")
        _, acc = curve_values(curve, split, "accuracy")
        rows.append({**pair, "split": split, "loss_barrier": cs.loss_barrier(t, loss), "accuracy_barrier": cs.accuracy_barrier(t, acc)})
    return rows


def pair_barriers(
    run_a, run_b, data, settings, *, match: bool, seed: int, device, pair: dict, splits: Sequence[str] | None = None,
    sinkhorn_temperature: float | None = None,
) -> tuple[list[pd.DataFrame], list[dict]]:
    """The linear path between two finished runs' final weights, as is, (with `match`) after
    weight matching B to A and (with a `sinkhorn_temperature`) after Sinkhorn matching: (curves,
    barrier rows), each tagged with `pair` and its `matching` ("none" / "weights" / "sinkhorn");
    `splits` keeps only those splits of the curve."""
    model = model_for_run(run_a.info, device=device)
    state_a, state_b = (load_state(run.final_checkpoint(), device, fits=model) for run in (run_a, run_b))
    candidates = {"none": state_b}
    recalibrated = {"calibration_inputs": calibration(data, settings), "bn_batch_size": settings.bn_batch_size, "seed": seed}
    if match:
        candidates["weights"] = align(model, state_a, state_b, **recalibrated).state
    if sinkhorn_temperature is not None:
        candidates["sinkhorn"] = align(model, state_a, state_b, **recalibrated, method="sinkhorn", temperature=sinkhorn_temperature).state
    curves, rows = [], []
    for matching, state in candidates.items():
        curve = barrier_curve(model, state_a, state, data, settings)
        if splits is not None:
            curve = curve[curve["split"].isin(splits)]
        tagged = {**pair, "matching": matching}
        curves.append(curve.assign(**tagged))
        rows += barrier_rows(curve, tagged)
    return curves, rows


def run(params: Params, layout: Layout) -> Summary:
    p, curve_settings = params.barriers, params.interpolation
    rows, curves = [], []
    device = study_device(params)
    for cell_a, cell_b in replicate_pairs(params):
        (pa, run_a), (_, run_b) = cell_run(params, layout, cell_a), cell_run(params, layout, cell_b)
        data = load_run_data(pa, layout, run_a, run_b, device=device)  # replicates: the same data, their own seeds
        pair = {"run_a": run_a.name, "run_b": run_b.name, "width": cell_a.width, "noise": cell_a.noise}
        more_curves, more_rows = pair_barriers(
            run_a, run_b, data, curve_settings, match=p.matching, seed=params.seed, device=device, pair=pair,
            sinkhorn_temperature=p.sinkhorn_temperature,
        )
        curves += more_curves
        rows += more_rows
    table = pd.DataFrame(rows, columns=COLUMNS)
    with layout.building(layout.study_root("barriers")) as folder:
        atomic_write_parquet(folder / "barriers.parquet", table)
        atomic_write_parquet(folder / "curves.parquet", pd.concat(curves, ignore_index=True) if curves else pd.DataFrame())
        summary = Summary(extra={"pairs": int(len(table) and table[["run_a", "run_b"]].drop_duplicates().shape[0])})
        if len(table):
            means = table.groupby(["matching", "split"])["loss_barrier"].mean()
            summary.extra["mean_loss_barrier"] = {f"{m}.{s}": float(v) for (m, s), v in means.items()}
        write_summary(folder, summary)
    return summary


def describe(summary: Summary) -> str:
    if not summary.extra.get("pairs"):
        return "barriers: no pairs (set grid.seed_offsets to two or more replicates)"
    means = {k: v for k, v in summary.extra["mean_loss_barrier"].items() if k.endswith(".train")}
    return "barriers: mean train loss barrier " + ", ".join(f"{k.removesuffix('.train')}={v:.4g}" for k, v in means.items())
