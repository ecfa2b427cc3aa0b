"""Stage `curvature`: the Hessian of a trained run's training loss, and its loss surface.

For each selected checkpoint and each sample group (`curvature.groups`: all, clean, noisy of a
seeded training subset of `curvature.samples`), the top-k Hessian eigenvalues (Lanczos), the
trace (Hutchinson, with its standard error) and the spectral density (stochastic Lanczos
quadrature), the model in eval mode (BN with the trained statistics). For the final checkpoint,
the loss and accuracy along a 1-D cut and on a 2-D grid of filter-normalised directions (Li et
al.), the grid written in `curvature.surface.shards` pieces as each finishes: a rerun after a
crash computes only the missing pieces (they wait under .netgeom/staging/studies/curvature/<run>,
outside the DVC outputs, until all are there); the pieces go over `execution.workers`. Everything runs
on `execution.device` (the model, the subset's batches, the Krylov vectors); the subset and every
probe are drawn on the CPU, so a GPU measures the same samples with the same probes.

Writes artifacts/studies/curvature/<run>/: spectrum.parquet (epoch, group, rank, eigenvalue),
curvature.parquet (epoch, group, samples, lambda_max, trace, trace_se, steps), density.parquet
(epoch, group, node, weight), line.parquet (x, loss, accuracy: the 1-D cut along the first
direction, `curvature.surface.line` points), surface shards shard-<i>-of-<n>.parquet (x, y, loss, accuracy) with
surface.json (what they belong to: a changed run or surface setting discards them) and
summary.json (per epoch: lambda_max, trace by group).
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from netgeom.execution import run_units
from netgeom.groups.curvature import CurvatureParams
from netgeom.errors import NetgeomError
from netgeom.io import atomic_write_json, atomic_write_parquet, read_json
from netgeom.layout import Layout
from netgeom.params import Params, execution_identity
from netgeom.progress import note
from netgeom.runs import Cell, cell_run, checkpoint_selection, load_run_data, load_weights, model_for_run, study_device
from netgeom.provenance import run_digest
from netgeom.code import code_digest
from netgeom.stages.pieces import keep_pieces_of, publish_pieces
from netgeom.stages.study_common import read_shards, shard_file, write_shard
from netgeom.studies import curvature as study
from netgeom.summary import Summary, write_summary


def _subset(data, p: CurvatureParams, device: torch.device | None = None) -> dict[str, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Batches of the seeded subset per group (a group with no sample is left out), chosen on the
    CPU and moved to `device` when given."""
    t = data.train
    g = torch.Generator().manual_seed(p.seed)
    chosen = torch.randperm(len(t.y), generator=g)[: p.samples]
    x, y, noisy = (v.cpu()[chosen] for v in (t.x, t.y, t.is_noisy))
    if device is not None:
        x, y, noisy = x.to(device), y.to(device), noisy.to(device)
    masks = {"all": torch.ones_like(noisy), "clean": ~noisy, "noisy": noisy}
    out = {}
    for group in p.groups:
        xs, ys = x[masks[group]], y[masks[group]]
        if len(ys):
            out[group] = [(xs[i : i + p.batch_size], ys[i : i + p.batch_size]) for i in range(0, len(ys), p.batch_size)]
    return out


def _all_batches(data, p: CurvatureParams, device: torch.device | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The whole seeded subset's batches: the loss the surface and its 1-D cut are drawn of."""
    return _subset(data, p.model_copy(update={"groups": ["all"]}), device)["all"]


def _spectrum(model, batches, p: CurvatureParams, device: torch.device) -> tuple[dict, list[float], tuple[np.ndarray, np.ndarray]]:
    matvec, dim = study.hessian_operator(model, batches)
    top, steps = study.top_eigenvalues(matvec, dim, k=min(p.top_k, dim), tol=p.tol, max_steps=p.max_steps, seed=p.seed, device=device)
    trace, trace_se = study.hutchinson_trace(matvec, dim, probes=p.trace_probes, seed=p.seed, device=device)
    density = study.spectral_density(matvec, dim, probes=p.density_probes, steps=p.density_steps, seed=p.seed, device=device)
    row = {"samples": sum(len(b[1]) for b in batches), "lambda_max": float(top[0]), "trace": trace, "trace_se": trace_se, "steps": steps}
    return row, [float(v) for v in top], density


def surface_grid(p: CurvatureParams) -> list[tuple[float, float]]:
    axis = np.linspace(-p.surface.span, p.surface.span, p.surface.resolution)
    return [(float(a), float(b)) for b in axis for a in axis]


def _surface_directions(params_now, p: CurvatureParams) -> list:
    """The two seeded filter-normalised directions of the 2-D surface; the 1-D cut follows the first."""
    g = torch.Generator().manual_seed(p.seed)
    return [study.filter_normalized_direction(params_now, g), study.filter_normalized_direction(params_now, g)]


def compute_surface_shard(params: Params, layout: Layout, cell: Cell, folder: Path, index: int, count: int) -> None:
    """One piece of the grid (points index, index + count, ...), written when done (module level: it pickles)."""
    p: CurvatureParams = params.curvature
    settings, source = cell_run(params, layout, cell)
    device = study_device(params)
    model = model_for_run(source.info, source.final_checkpoint(), device)
    params_now = study.parameters_of(model)
    directions = _surface_directions(params_now, p)
    batches = _all_batches(load_run_data(settings, layout, source), p, device)
    points = surface_grid(p)[index::count]
    values = study.surface(model, params_now, directions, points, batches)
    table = pd.DataFrame([{"x": x, "y": y, "loss": loss, "accuracy": acc} for (x, y), (loss, acc) in zip(points, values)])
    write_shard(folder, index, count, table)


def line_cut(model, batches, p: CurvatureParams) -> pd.DataFrame:
    """Loss and accuracy along the surface's first direction, `surface.line` points over [-span, span]."""
    params_now = study.parameters_of(model)
    first = _surface_directions(params_now, p)[:1]
    steps = np.linspace(-p.surface.span, p.surface.span, p.surface.line)
    values = study.surface(model, params_now, first, [(float(a),) for a in steps], batches)
    return pd.DataFrame({"x": steps, "loss": [v[0] for v in values], "accuracy": [v[1] for v in values]})


def _same_surface(manifest: Path, identity: dict) -> bool:
    """The previous result's pieces belong to this surface (an unreadable manifest is a lost cache: said, not fatal)."""
    try:
        return manifest.exists() and read_json(manifest) == identity
    except NetgeomError as exc:
        note(f"{exc}; computing its surface pieces again")
        return False


def fill_surface(params: Params, layout: Layout, cell: Cell, source, previous: Path, folder: Path) -> int:
    """The 2-D grid's pieces in `folder`, computing only those neither in the `previous` result
    (for the same surface) nor staged; the number of grid points. Pieces are computed into the
    staging folder (DVC deletes `previous` before it re-runs the stage, not the staging folder)
    and copied into `folder` once all are done; the staging folder goes last, so a crash anywhere
    leaves every finished piece somewhere."""
    p: CurvatureParams = params.curvature
    count = p.surface.shards
    identity = {"run": run_digest(source.info), "epoch": source.checkpoints[-1][0], "seed": p.seed, "samples": p.samples,
                "batch_size": p.batch_size, "surface": p.surface.model_dump(mode="json"),
                **execution_identity(params.execution, study_device(params).type), "code": code_digest(__name__)}
    staging = layout.study_staging_dir("curvature", source.name)
    # pieces are reused only for the same surface computed by the same code: staged ones outlive
    # a code change (DVC deletes the outputs when netgeom's code changes, not the staging folder),
    # and a direct `netgeom curvature` finds the previous result whatever changed
    keep_pieces_of(staging, identity, manifest="surface.json", pattern="shard-*.parquet")
    if _same_surface(previous / "surface.json", identity):
        for piece in previous.glob("shard-*.parquet"):
            os.link(piece, folder / piece.name)  # the same filesystem, as publish_dir needs
    atomic_write_json(folder / "surface.json", identity)
    missing = [(i, count) for i in range(count) if not (shard_file(folder, i, count).exists() or shard_file(staging, i, count).exists())]
    if 0 < len(missing) < count:
        note(f"curvature: {source.name}: {count - len(missing)} of {count} surface pieces found from an earlier run; computing the other {len(missing)}")
    run_units(partial(compute_surface_shard, params, layout, cell, staging), missing, params.execution.backend, params.execution.workers,
              params.execution.address)
    publish_pieces(staging, folder, manifest="surface.json")
    return len(read_shards(folder, count))


def run(params: Params, layout: Layout, cell: Cell) -> Summary:
    p: CurvatureParams = params.curvature
    settings, source = cell_run(params, layout, cell)
    previous = layout.study_dir("curvature", source.name)
    device = study_device(params)
    model = model_for_run(source.info).to(device)
    data = load_run_data(settings, layout, source)
    groups = _subset(data, p, device)
    rows, spectrum, density = [], [], []
    summary = Summary()
    for epoch, path in checkpoint_selection(source, p.checkpoints, "curvature.checkpoints"):
        load_weights(model, path)
        for group, batches in groups.items():
            row, top, (nodes, weights) = _spectrum(model, batches, p, device)
            rows.append({"epoch": epoch, "group": group, **row})
            spectrum += [{"epoch": epoch, "group": group, "rank": r, "eigenvalue": v} for r, v in enumerate(top)]
            density += [{"epoch": epoch, "group": group, "node": float(n), "weight": float(w)} for n, w in zip(nodes, weights)]
            for measure in ("lambda_max", "trace"):
                summary.epochs.setdefault(epoch, {}).setdefault(measure, {})[group] = row[measure]
    with layout.building(previous) as folder:
        atomic_write_parquet(folder / "curvature.parquet", pd.DataFrame(rows))
        atomic_write_parquet(folder / "spectrum.parquet", pd.DataFrame(spectrum))
        atomic_write_parquet(folder / "density.parquet", pd.DataFrame(density))
        if p.surface.line:  # at the final checkpoint, the one the model holds after the loop
            load_weights(model, source.final_checkpoint())
            atomic_write_parquet(folder / "line.parquet", line_cut(model, _all_batches(data, p, device), p))
        if p.surface.resolution:
            summary.extra["surface_points"] = fill_surface(params, layout, cell, source, previous, folder)
        write_summary(folder, summary)
    return summary


def describe(summary: Summary) -> str:
    final = summary.final()
    lam, trace = final["lambda_max"], final["trace"]
    return "curvature: " + "; ".join(f"{g}: top eigenvalue {lam[g]:.4g}, trace {trace[g]:.4g}" for g in lam)
