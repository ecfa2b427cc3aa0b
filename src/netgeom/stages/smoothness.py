"""Stage `smoothness`: input-space smoothness of a run's checkpoints around data points.

Writes artifacts/studies/smoothness/<run>/: per-sample Parquet shards (sample_id, label,
clean_label, is_noisy, epoch, one column per measure), optionally every perturbed point of a
volume (`volume.per_point`: points-*.parquet), and summary.json (mean over all, clean and noisy
samples per checkpoint and measure). What the rows were computed with (model, data, split, seeds,
noise, measures, volume strategy and M, the tangent divisor) is in each shard's Parquet metadata,
`pd.read_parquet(shard).attrs["netgeom"]`, and under "metadata" in summary.json.
"""

from __future__ import annotations


import numpy as np
import pandas as pd
import torch

from netgeom.errors import NetgeomError
from netgeom.execution import shard_range
from netgeom.groups.smoothness import SmoothnessParams
from netgeom.io import atomic_write_parquet
from netgeom.layout import Layout
from netgeom.params import Params
from netgeom.runs import (
    Cell,
    cell_run,
    checkpoint_selection,
    load_run_data,
    model_for_run,
    study_device,
)
from netgeom.stages.study_common import run_sharded, sample_frame
from netgeom.studies.channels import ChannelStats
from netgeom.studies.smoothness import choose_targets, compute_point_values
from netgeom.studies.volumes import Volume
from netgeom.summary import Summary


def _backend(choice: str, device: torch.device) -> str:
    return ("vmap" if device.type == "cuda" else "vjp") if choice == "auto" else choice


def _sample_rows(n: int, p: SmoothnessParams) -> np.ndarray:
    if p.samples is None or p.samples >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(p.sample_seed).choice(n, size=p.samples, replace=False))


def _points(data, split: str) -> tuple[torch.Tensor, pd.DataFrame]:
    """Inputs and per-sample columns of the split (val/test: clean labels, sample_id = position)."""
    if split == "train":
        t = data.train
        return t.x, sample_frame(t.sample_id.cpu().numpy(), t.y.cpu().numpy(), t.clean.cpu().numpy())
    x, y = data.eval_sets().get(split, (None, None))
    if x is None:
        raise NetgeomError("smoothness.split", f"the {split} split is empty; use train or test")
    return x, sample_frame(np.arange(len(y)), y.cpu().numpy(), y.cpu().numpy())


def shard_metadata(params: Params, run_info: dict, channels: int) -> dict:
    """What every row of a shard was computed with, beside the rows (the spec's per-shard metadata)."""
    p: SmoothnessParams = params.smoothness
    tangents = any(m.metric.startswith("tangent_") for m in p.measures)
    return {
        "run": run_info["name"], "model": run_info["params"]["model"], "data": run_info["dataset"], "split": p.split,
        "seed": run_info["seed"], "noise": run_info["params"]["noise"] | {"label": run_info["cell"]["noise"]},
        "measures": [m.model_dump() for m in p.measures], "samples": p.samples, "sample_seed": p.sample_seed,
        "clean_targets": p.clean_targets,
        "volume": p.volume.model_dump(mode="json", exclude={"per_point"}),  # strategy; directions is M
        "backend": p.backend, "operator_method": p.operator_method,
        **({"tangent": {"seed": p.tangent_seed, "divisor": p.tangent_step,
                        "saturation": "applied" if channels == 3 else "identity on 1-channel images (brightness and contrast apply)"}}
           if tangents else {}),
    }


def compute_shard(params: Params, layout: Layout, cell: Cell, index: int, count: int) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Per-sample values (and per-point values, if asked) of shard `index` of `count`."""
    p: SmoothnessParams = params.smoothness
    params, run = cell_run(params, layout, cell)
    device = study_device(params)
    data = load_run_data(params, layout, run, device=device)
    x_all, columns = _points(data, p.split)
    chosen = _sample_rows(len(x_all), p)
    rows = chosen[shard_range(index, count, len(chosen))]
    x, samples = x_all[torch.as_tensor(rows, dtype=torch.int64, device=x_all.device)], columns.iloc[rows].reset_index(drop=True)
    labels, clean = (torch.tensor(samples[c].to_numpy(), device=device) for c in ("label", "clean_label"))
    targets = choose_targets(labels, clean, p.clean_targets)
    volume = Volume(**{**p.volume.model_dump(exclude={"per_point"}), "anchors": tuple(p.volume.anchors) if p.volume.anchors else None})
    options = {
        "volume": volume, "batch_size": p.batch_size, "backend": _backend(p.backend, device), "operator_method": p.operator_method,
        "power_iters": p.power_iters, "power_tol": p.power_tol, "channel_stats": ChannelStats(data.info.mean, data.info.std),
        "sample_ids": samples["sample_id"].to_numpy(), "tangent_seed": p.tangent_seed, "tangent_step": p.tangent_step,
    }
    frames, point_frames = [], []
    for epoch, path in checkpoint_selection(run, p.checkpoints, "smoothness.checkpoints"):
        model = model_for_run(run.info, path, device)
        table = samples.assign(epoch=epoch)
        for measure in p.measures:
            values = compute_point_values(model, x, targets, measure.metric, measure.normalization, desc=f"e{epoch} {measure.column}", **options)
            integrated = values.integrate()
            if integrated.ndim == 1:
                table[measure.column] = integrated
            else:  # cumulative geodesic volumes: one column per prefix
                for k in range(integrated.shape[1]):
                    table[f"{measure.column}@{k + 1}"] = integrated[:, k]
            if p.volume.per_point:
                point_frames.append(values.to_frame(options["sample_ids"]).assign(epoch=epoch, measure=measure.column))
        frames.append(table)
    points = pd.concat(point_frames, ignore_index=True) if point_frames else None
    table = pd.concat(frames, ignore_index=True)
    table.attrs["netgeom"] = shard_metadata(params, run.info, int(data.info.input_shape[0]))
    return table, points


def run(params: Params, layout: Layout, cell: Cell, shard: str | None = None) -> Summary | None:
    """Compute one shard (`shard="i/n"`) or all of them; writes the summary once all are there."""
    return run_sharded("smoothness", params, layout, cell, shard, _per_sample_shard)


def _per_sample_shard(params: Params, layout: Layout, cell: Cell, folder, index: int, count: int) -> pd.DataFrame:
    """One shard's per-sample table; per-point values go beside it (module level: it pickles)."""
    table, points = compute_shard(params, layout, cell, index, count)
    if points is not None:
        atomic_write_parquet(folder / f"points-{index:03d}-of-{count:03d}.parquet", points)
    return table


def describe(summary: Summary) -> str:
    final = summary.final()
    values = ", ".join(f"{k}={v['all']:.4g}" for k, v in final.items() if v.get("all") is not None)
    return f"smoothness: {len(summary.epochs)} checkpoints; final {values}"
