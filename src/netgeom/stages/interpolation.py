"""Stage `interpolation`: the loss along the line from a run's init to its final weights (MLI).

Writes artifacts/studies/interpolation/<run>/: curves.parquet (t, split, loss, accuracy, curve =
init-final | random-R), landscape.parquet (the plane through theta_0, theta_0', theta_T),
trajectory.parquet (the checkpoints projected on it), optionally logits.parquet (every example's
logits along the line) and summary.json. The curve helpers here also serve `barriers`, `star`
and `netgeom curve`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from netgeom.groups.interpolation import InterpolationParams
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
from netgeom.studies import curve_summaries as cs
from netgeom.studies import logit_geometry as lg
from netgeom.studies import weight_space as ws
from netgeom.studies.interpolation import (
    curve_values,
    interpolation_curve,
    plane_landscape,
    random_init_curves,
)
from netgeom.summary import Summary, write_summary

# Random-init baselines draw from seeds far from any run's own (runs use seed + replicate).
RANDOM_INIT_SEED_BASE = 10_000
RANDOM_INIT_SEEDS_PER_RUN = 100




def eval_sets(data, p: InterpolationParams) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    cap = p.eval_samples
    return {name: (x[:cap], y[:cap]) for name, (x, y) in data.eval_sets().items()}


def calibration(data, p: InterpolationParams) -> torch.Tensor:
    """The fixed training subset BN statistics are recomputed on (and weight matching uses)."""
    return data.train.x[: p.calibration_samples]


def curve_options(data, p: InterpolationParams) -> dict:
    return {
        "n": p.points, "bn": p.bn, "calibration_inputs": calibration(data, p), "batch_size": p.batch_size,
        "bn_batch_size": p.bn_batch_size, "bn_momentum": p.ema.momentum, "bn_batches": p.ema.batches, "points_per_pass": p.points_per_pass,
    }


def barrier_curve(model, state_a, state_b, data, p: InterpolationParams) -> pd.DataFrame:
    """Endpoints evaluated directly and BN recomputed at interior points: the star-domain protocol."""
    return interpolation_curve(model, state_a, state_b, eval_sets(data, p), endpoints="direct", **curve_options(data, p))


def summarise_curve(curve: pd.DataFrame, tol: float) -> dict[str, float]:
    """Per split: Delta, monotonicity, bumps, barriers and the loss at t = 1 (the trained weights:
    what the MLI convergence filter reads); NaN (and finite = 0) for a curve with a non-finite
    value, never a clean zero."""
    out = {}
    for split in curve["split"].unique():
        t, loss = curve_values(curve, split, "loss")
        _, acc = curve_values(curve, split, "accuracy")
        finite = cs.curve_is_finite(loss) and cs.curve_is_finite(acc)
        found = cs.bumps(t, loss, tol) if finite else []
        out[f"finite.{split}"] = float(finite)
        out[f"delta.{split}"] = cs.largest_rise(loss)
        out[f"final_loss.{split}"] = float(loss[-1])
        out[f"monotone.{split}"] = float(cs.is_monotone(loss, tol)) if finite else float("nan")
        out[f"bumps.{split}"] = float(len(found)) if finite else float("nan")
        out[f"bump_height.{split}"] = max((b.height for b in found), default=0.0) if finite else float("nan")
        out[f"bump_width.{split}"] = max((b.width for b in found), default=0.0) if finite else float("nan")
        out[f"loss_barrier.{split}"] = cs.loss_barrier(t, loss)
        out[f"accuracy_barrier.{split}"] = cs.accuracy_barrier(t, acc)
    return out


def _logit_table(logits: dict[str, torch.Tensor], alphas: np.ndarray) -> pd.DataFrame:
    frames = []
    for split, values in logits.items():
        points, samples, classes = values.shape
        frames.append(pd.DataFrame({
            "split": split,
            "t": np.repeat(alphas, samples * classes),
            "sample": np.tile(np.repeat(np.arange(samples), classes), points),
            "class": np.tile(np.arange(classes), points * samples),
            "logit": values.reshape(-1).float().numpy(),
        }))
    return pd.concat(frames, ignore_index=True)


def run(params: Params, layout: Layout, cell: Cell) -> Summary:
    p: InterpolationParams = params.interpolation
    params, source = cell_run(params, layout, cell)
    name = source.name
    device = study_device(params)
    data = load_run_data(params, layout, source, device=device)
    source.init_checkpoint()  # refuses a run without an epoch-0 checkpoint
    checkpoints = source.checkpoints
    model = model_for_run(source.info, device=device)
    states = {epoch: load_state(path, device, fits=model) for epoch, path in checkpoints}
    last = checkpoints[-1][0]
    theta_0, theta_T = states[0], states[last]
    splits = eval_sets(data, p)
    options = curve_options(data, p)

    main = interpolation_curve(model, theta_0, theta_T, splits, return_logits=p.logits, **options)
    main, logits = main if p.logits else (main, None)
    curves = [main.assign(curve="init-final")]
    summary = summarise_curve(main, p.tol)
    summary["distance"] = ws.weight_distance(theta_0, theta_T)
    summary["normalised_distance"] = ws.normalised_weight_distance(theta_0, theta_T)

    def fresh_init(r: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(RANDOM_INIT_SEED_BASE + params.seed * RANDOM_INIT_SEEDS_PER_RUN + r)
        return model_for_run(source.info, device=device).state_dict()

    if p.random_inits:
        random = random_init_curves(model, fresh_init, theta_T, {"train": splits["train"]}, repeats=p.random_inits, **options)
        for r, frame in random.groupby("init"):
            curves.append(frame.drop(columns="init").assign(curve=f"random-{r}"))
        summary["random_init_delta.train"] = float(
            np.mean([cs.largest_rise(curve_values(f, "train", "loss")[1]) for _, f in random.groupby("init")])
        )
    if p.gauss_samples:
        path = lg.logit_path(
            model, theta_0, theta_T, data.train.x[: p.gauss_samples], bn=p.gauss_bn, calibration_inputs=calibration(data, p),
            bn_batch_size=p.bn_batch_size, bn_momentum=p.ema.momentum, bn_batches=p.ema.batches,
        )
        summary["gauss_length"] = float(lg.gauss_length(path, n_points=p.gauss_points))
        alphas = np.linspace(0, 1, p.points)
        sampled = lg.sample_path(path, alphas)
        summary["logit_linearity"] = float(lg.logit_linearity(alphas, sampled))
        summary["polyline_turning"] = float(lg.polyline_turning(sampled))
    progress = ws.training_progress([states[e] for e, _ in checkpoints], theta_T, theta_0)

    with layout.building(layout.study_dir("interpolation", name)) as folder:
        atomic_write_parquet(folder / "curves.parquet", pd.concat(curves, ignore_index=True))
        if logits is not None:
            atomic_write_parquet(folder / "logits.parquet", _logit_table(logits, np.linspace(0, 1, p.points)))
        if p.landscape.resolution and p.random_inits:
            plane = ws.plane_through(theta_0, fresh_init(0), theta_T)
            trajectory = ws.project_onto_plane(plane, [states[e] for e, _ in checkpoints])
            landscape = plane_landscape(
                model, plane, {"train": splits["train"]}, theta_T, resolution=p.landscape.resolution,
                margin=p.landscape.margin, trajectory=trajectory, bn="frozen", batch_size=p.batch_size,
            )
            atomic_write_parquet(folder / "landscape.parquet", landscape)
            epochs = [e for e, _ in checkpoints]
            atomic_write_parquet(folder / "trajectory.parquet", pd.DataFrame({"epoch": epochs, "x": trajectory[:, 0], "y": trajectory[:, 1]}))
            # the plane's three defining states (the figure marks the second init, which no checkpoint is)
            atomic_write_parquet(folder / "plane.parquet", pd.DataFrame([{"point": k, "x": x, "y": y} for k, (x, y) in plane.points.items()]))
        result = Summary(epochs={last: {k: {"all": float(v)} for k, v in summary.items()}})
        result.extra["progress"] = {str(e): float(v) for (e, _), v in zip(checkpoints, progress)}
        write_summary(folder, result)
    return result


def describe(summary: Summary) -> str:
    final = {k: v["all"] for k, v in summary.final().items()}
    return f"interpolation: Delta(train)={final['delta.train']:.4g} monotone={final['monotone.train'] == 1.0} distance={final['distance']:.4g}"
