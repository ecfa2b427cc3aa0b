"""Stages `interpolation` (MLI per run) and `barriers` (between seed replicates).

interpolation -> artifacts/studies/interpolation/<run>/: curves.parquet (t, split, loss,
accuracy, curve = init-final | random-R), landscape.parquet (the plane through theta_0,
theta_0', theta_T), trajectory.parquet (the checkpoints projected on it), summary.json.

barriers -> artifacts/studies/barriers/: barriers.parquet (one row per pair of replicates of a
grid cell, split and matching on/off) and curves.parquet.

run_curve is the ad-hoc form (`netgeom curve A B`, not a DVC stage): the curve between any two
checkpoints of trained runs, endpoints evaluated directly, optionally after weight matching.
"""

from __future__ import annotations

import itertools
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field

from netgeom.errors import NetgeomError
from netgeom.io import atomic_write_json, atomic_write_parquet
from netgeom.layout import Layout
from netgeom.params import DataParams, Group, NoiseParams, Params, validate
from netgeom.stages.study_common import open_run
from netgeom.stages.train import Cell, Run, cell_name, cell_params, load_cell_data, model_for_run
from netgeom.studies import curve_summaries as cs
from netgeom.studies.alignment import align
from netgeom.studies.interpolation import (
    check_same_architecture,
    curve_values,
    interpolation_curve,
    logit_path,
    plane_landscape,
    random_init_curves,
)
from netgeom.training.checkpoints import find_checkpoint, load_checkpoint


class LandscapeParams(Group):
    resolution: int = Field(11, ge=0, description="grid points per axis (0 = skip the landscape)")
    margin: float = Field(0.2, ge=0)


class InterpolationParams(Group):
    points: int = Field(25, ge=2)
    bn: Literal["interpolate", "recompute", "frozen"] = "recompute"
    calibration_samples: int = Field(512, ge=1)
    eval_samples: int | None = Field(None, ge=1, description="cap on samples per split (null = all)")
    tol: float = Field(0.0, ge=0, description="a curve is non-monotonic when Delta > tol")
    gauss_samples: int = Field(64, ge=0, description="samples for the Gauss length (0 = skip)")
    random_inits: int = Field(2, ge=0)
    landscape: LandscapeParams = LandscapeParams()
    matching: bool = True
    batch_size: int = Field(1024, ge=1)


def interpolation_params(params: Params) -> InterpolationParams:
    return validate(params.interpolation, InterpolationParams, prefix="interpolation.")


def _eval_sets(data, p: InterpolationParams) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    cap = p.eval_samples
    return {name: (x[:cap], y[:cap]) for name, (x, y) in data.eval_sets().items()}


def _calibration(data, p: InterpolationParams) -> torch.Tensor:
    """The fixed training subset BN statistics are recomputed on (and weight matching uses)."""
    return data.train.x[: p.calibration_samples]


def _summarise_curve(curve: pd.DataFrame, tol: float) -> dict[str, float]:
    out = {}
    for split in curve["split"].unique():
        t, loss = curve_values(curve, split, "loss")
        _, acc = curve_values(curve, split, "accuracy")
        found = cs.bumps(t, loss, tol)
        out[f"delta.{split}"] = cs.largest_rise(loss)
        out[f"monotone.{split}"] = float(cs.is_monotone(loss, tol))
        out[f"bumps.{split}"] = float(len(found))
        out[f"bump_height.{split}"] = max((b.height for b in found), default=0.0)
        out[f"bump_width.{split}"] = max((b.width for b in found), default=0.0)
        out[f"loss_barrier.{split}"] = cs.loss_barrier(t, loss)
        out[f"accuracy_barrier.{split}"] = cs.accuracy_barrier(t, acc)
    return out


def run_interpolation(params: Params, layout: Layout, cell: Cell) -> dict:
    p = interpolation_params(params)
    params = cell_params(params, cell)
    name = cell_name(params, cell)
    run = open_run(layout, name)
    data = load_cell_data(params, layout)
    checkpoints = run.checkpoints
    states = {epoch: load_checkpoint(path)[0] for epoch, path in checkpoints}
    first, last = checkpoints[0][0], checkpoints[-1][0]
    theta_0, theta_T = states[first], states[last]
    model = model_for_run(run.info)
    eval_sets = _eval_sets(data, p)
    options = {"n": p.points, "bn": p.bn, "calibration_inputs": _calibration(data, p), "batch_size": p.batch_size}

    curves = [interpolation_curve(model, theta_0, theta_T, eval_sets, **options).assign(curve="init-final")]
    summary = _summarise_curve(curves[0], p.tol)
    summary["distance"] = cs.weight_distance(theta_0, theta_T)
    summary["normalised_distance"] = cs.normalised_weight_distance(theta_0, theta_T)

    def fresh_init(r: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(10_000 + params.seed * 100 + r)  # never the run's own seed
        return model_for_run(run.info).state_dict()

    if p.random_inits:
        random = random_init_curves(model, fresh_init, theta_T, {"train": eval_sets["train"]}, repeats=p.random_inits, **options)
        for r, frame in random.groupby("init"):
            curves.append(frame.drop(columns="init").assign(curve=f"random-{r}"))
        summary["random_init_delta.train"] = float(
            np.mean([cs.largest_rise(curve_values(f, "train", "loss")[1]) for _, f in random.groupby("init")])
        )
    if p.gauss_samples:
        x = data.train.x[: p.gauss_samples]
        path = logit_path(model, theta_0, theta_T, x)
        summary["gauss_length"] = float(cs.gauss_length(path, n_points=max(p.points, 51)))
        alphas = np.linspace(0, 1, p.points)
        summary["logit_linearity"] = float(cs.logit_linearity(alphas, cs.sample_path(path, alphas)))
    progress = cs.training_progress([states[e] for e, _ in checkpoints], theta_T, theta_0)

    folder = layout.study_dir("interpolation", name)
    atomic_write_parquet(folder / "curves.parquet", pd.concat(curves, ignore_index=True))
    if p.landscape.resolution and p.random_inits:
        plane = cs.plane_through(theta_0, fresh_init(0), theta_T)
        trajectory = cs.project_onto_plane(plane, [states[e] for e, _ in checkpoints])
        landscape = plane_landscape(
            model, plane, {"train": eval_sets["train"]}, theta_T, resolution=p.landscape.resolution,
            margin=p.landscape.margin, trajectory=trajectory, bn="frozen", batch_size=p.batch_size,
        )
        atomic_write_parquet(folder / "landscape.parquet", landscape)
        epochs = [e for e, _ in checkpoints]
        atomic_write_parquet(folder / "trajectory.parquet", pd.DataFrame({"epoch": epochs, "x": trajectory[:, 0], "y": trajectory[:, 1]}))
    summary_json = {
        str(last): {k: {"all": float(v)} for k, v in summary.items()},
        "progress": {str(e): float(v) for (e, _), v in zip(checkpoints, progress)},
    }
    atomic_write_json(folder / "summary.json", summary_json)
    return summary


def replicate_pairs(params: Params) -> list[tuple[Cell, Cell]]:
    """Every pair of seed replicates of each (width, noise) grid cell."""
    g = params.grid
    return [
        (Cell(w, n, a), Cell(w, n, b))
        for w, n in itertools.product(g.widths, g.noise)
        for a, b in itertools.combinations(sorted(g.seed_offsets), 2)
    ]


def _barrier_curve(model, state_a, state_b, data, p: InterpolationParams) -> pd.DataFrame:
    """Endpoints evaluated directly and BN recomputed at interior points: the star-domain protocol."""
    return interpolation_curve(
        model, state_a, state_b, _eval_sets(data, p), n=p.points, bn=p.bn,
        calibration_inputs=_calibration(data, p), endpoints="direct", batch_size=p.batch_size,
    )


def run_barriers(params: Params, layout: Layout) -> pd.DataFrame:
    """Loss/accuracy barriers between replicates, before and after weight matching."""
    p = interpolation_params(params)
    rows, curves = [], []
    for cell_a, cell_b in replicate_pairs(params):
        pa, pb = cell_params(params, cell_a), cell_params(params, cell_b)
        run_a, run_b = open_run(layout, cell_name(pa, cell_a)), open_run(layout, cell_name(pb, cell_b))
        data = load_cell_data(pa, layout)
        state_a = load_checkpoint(run_a.checkpoints[-1][1])[0]
        state_b = load_checkpoint(run_b.checkpoints[-1][1])[0]
        model = model_for_run(run_a.info)
        candidates = {"none": state_b}
        if p.matching:
            candidates["weights"] = align(model, state_a, state_b, calibration_inputs=_calibration(data, p), seed=params.seed).state
        for matching, state in candidates.items():
            curve = _barrier_curve(model, state_a, state, data, p)
            pair = {"run_a": run_a.name, "run_b": run_b.name, "width": cell_a.width, "noise": cell_a.noise, "matching": matching}
            curves.append(curve.assign(**pair))
            for split in curve["split"].unique():
                t, loss = curve_values(curve, split, "loss")
                _, acc = curve_values(curve, split, "accuracy")
                rows.append({**pair, "split": split, "loss_barrier": cs.loss_barrier(t, loss), "accuracy_barrier": cs.accuracy_barrier(t, acc)})
    columns = ["run_a", "run_b", "width", "noise", "matching", "split", "loss_barrier", "accuracy_barrier"]
    table = pd.DataFrame(rows, columns=columns)
    folder = layout.study_root("barriers")
    atomic_write_parquet(folder / "barriers.parquet", table)
    atomic_write_parquet(folder / "curves.parquet", pd.concat(curves, ignore_index=True) if curves else pd.DataFrame())
    return table


# --------------------------------------------------------------------------- ad-hoc curve


def _checkpoint_of(layout: Layout, spec: str) -> tuple[Run, dict[str, torch.Tensor]]:
    """`run` or `run@epoch` (epoch: init, final or a checkpointed epoch) -> (run, state)."""
    name, _, which = spec.partition("@")
    run = open_run(layout, name)
    checkpoints = run.checkpoints
    if not checkpoints:
        raise NetgeomError("checkpoint", f"no checkpoints in {run.folder}; train the run first")
    if which in ("", "final", "init"):
        path = checkpoints[0 if which == "init" else -1][1]
    else:
        try:
            epoch = int(which)
        except ValueError:
            raise NetgeomError("checkpoint", f"{spec!r}: after '@' give init, final or an epoch number") from None
        path = find_checkpoint(layout.checkpoints_dir(run.name), epoch)
    return run, load_checkpoint(path)[0]


def run_curve(
    params: Params, layout: Layout, spec_a: str, spec_b: str, *, points: int | None = None, bn: str | None = None, match: bool = False
) -> tuple[pd.DataFrame, dict[str, float]]:
    """The curve between two checkpoints on run A's data (params.yaml's split, A's noise level)."""
    overrides = {k: v for k, v in {"points": points, "bn": bn}.items() if v is not None}
    p = validate({**params.interpolation, **overrides}, InterpolationParams, prefix="interpolation.")
    run_a, state_a = _checkpoint_of(layout, spec_a)
    run_b, state_b = _checkpoint_of(layout, spec_b)
    check_same_architecture(state_a, state_b)
    for run in (run_a, run_b):
        if DataParams.model_validate(run.info["params"]["data"]) != params.data:
            raise NetgeomError("curve.runs", f"{run.name} was trained on other data than params.yaml's `data` group")
    noise = NoiseParams.model_validate(run_a.info["params"]["noise"])
    data = load_cell_data(params.model_copy(update={"noise": noise}), layout)
    model = model_for_run(run_a.info)
    if match:
        state_b = align(model, state_a, state_b, calibration_inputs=_calibration(data, p), seed=params.seed).state
    curve = _barrier_curve(model, state_a, state_b, data, p)
    summary = _summarise_curve(curve, p.tol)
    summary["distance"] = cs.weight_distance(state_a, state_b)
    return curve, summary

