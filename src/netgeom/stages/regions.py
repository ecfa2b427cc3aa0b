"""Stage `regions`: exact linear regions of a run's checkpoints along data-driven paths.

Writes artifacts/studies/regions/<run>/: per-path Parquet shards (sample_id, label,
clean_label, is_noisy, epoch, crossings, regions, density, variation, absolute_deviation and
their per-logit columns), optionally every region crossed (`per_region`: regions-*.parquet),
and summary.json (per checkpoint: mean over all/clean/noisy paths of the logit-averaged
statistics, plus mean and std per logit under `per_logit`).
"""

from __future__ import annotations


import numpy as np
import pandas as pd
import torch

from netgeom.errors import NetgeomError
from netgeom.execution import shard_range
from netgeom.groups.regions import RegionsParams
from netgeom.io import atomic_write_parquet
from netgeom.layout import Layout
from netgeom.params import Params
from netgeom.runs import (
    Cell,
    Run,
    cell_run,
    checkpoint_selection,
    load_run_data,
    model_for_run,
    study_device,
)
from netgeom.stages.study_common import SAMPLE_COLUMNS, run_sharded, sample_frame, summarise_by_noise
from netgeom.studies.input_paths import Paths, choose_paths, make_paths, random_inputs
from netgeom.studies.regions import check_model, walk_paths
from netgeom.summary import Summary

PER_LOGIT = ("variation", "signed_variation", "absolute_deviation")
HEADLINE = ("crossings", "regions", "density", *PER_LOGIT)




def _path_inputs(params: Params, layout: Layout, run: Run, p: RegionsParams) -> tuple[torch.Tensor, pd.DataFrame]:
    """Inputs of the pool the paths start from, and their per-sample columns."""
    device = study_device(params)
    data = load_run_data(params, layout, run, device=device)
    if p.source == "random":
        x = random_inputs(p.paths, data.info.input_shape, seed=p.path_seed).to(device)
        missing = np.full(p.paths, -1)
        return x, sample_frame(missing, missing, missing)
    if p.source == "train":
        t = data.train
        return t.x, sample_frame(t.sample_id.cpu().numpy(), t.y.cpu().numpy(), t.clean.cpu().numpy())
    x, y = data.eval_sets().get(p.source, (None, None))
    if x is None:
        raise NetgeomError("regions.source", f"the {p.source} split is empty; use train or test")
    return x, sample_frame(np.arange(len(y)), y.cpu().numpy(), y.cpu().numpy())


def build_paths(params: Params, layout: Layout, run: Run, p: RegionsParams) -> tuple[Paths, pd.DataFrame]:
    x, columns = _path_inputs(params, layout, run, p)
    side = min(x.shape[2:])
    if p.radius >= side:
        raise NetgeomError("regions.radius", f"{p.radius} must be smaller than the input side ({side})")
    chosen = np.arange(len(x)) if p.source == "random" else choose_paths(len(x), min(p.paths, len(x)), p.path_seed)
    paths = make_paths(x[torch.as_tensor(chosen, device=x.device)], n_anchors=p.anchors, radius=p.radius, closed=p.closed, source=chosen)
    return paths, columns.iloc[chosen].reset_index(drop=True)


def _with_logit_means(frame: pd.DataFrame) -> pd.DataFrame:
    for metric in PER_LOGIT:
        frame[metric] = frame[[c for c in frame.columns if c.startswith(f"{metric}_")]].mean(axis=1)
    return frame


def compute_shard(params: Params, layout: Layout, cell: Cell, folder, index: int, count: int) -> pd.DataFrame:
    """Per-path rows of shard `index` of `count` for every selected checkpoint (and, with
    `per_region`, the shard's regions written beside it)."""
    p: RegionsParams = params.regions
    params, run = cell_run(params, layout, cell)
    paths, rows = build_paths(params, layout, run, p)
    span = shard_range(index, count, paths.n_paths)
    paths, rows = paths.select(np.arange(span.start, span.stop)), rows.iloc[span.start : span.stop].reset_index(drop=True)
    frames, region_frames = [], []
    for epoch, path in checkpoint_selection(run, p.checkpoints, "regions.checkpoints"):
        model = model_for_run(run.info, path, paths.anchors.device)
        check_model(model)
        walked = walk_paths(model, paths, eps=p.eps, batch_size=p.batch_size)
        frames.append(pd.concat([rows.assign(epoch=epoch), _with_logit_means(walked.statistics().to_frame())], axis=1))
        if p.per_region:
            regions = walked.to_frame()
            regions.insert(0, "sample_id", rows["sample_id"].to_numpy()[regions["path"].to_numpy()])
            region_frames.append(regions.assign(epoch=epoch))
    if region_frames:
        atomic_write_parquet(folder / f"regions-{index:03d}-of-{count:03d}.parquet", pd.concat(region_frames, ignore_index=True))
    return pd.concat(frames, ignore_index=True)


def _per_logit_summary(table: pd.DataFrame) -> dict:
    """Mean and std per logit over paths, per checkpoint (from the merged table)."""
    out = {}
    for epoch, group in table.groupby("epoch"):
        columns = [c for c in group.columns if any(c.startswith(f"{m}_") for m in PER_LOGIT) or c in ("regions", "density")]
        out[str(int(epoch))] = {c: {"mean": float(group[c].mean()), "std": float(group[c].std(ddof=0))} for c in columns}
    return out


def run(params: Params, layout: Layout, cell: Cell, shard: str | None = None) -> Summary | None:
    """Compute one shard (`shard="i/n"`) or all of them; writes the summary once all are there.

    With `per_region` the walk keeps every region of a shard's paths in memory (it grows with
    the regions found); the default keeps only per-path statistics."""
    return run_sharded("regions", params, layout, cell, shard, compute_shard, summarise=_summarise)


def _summarise(merged: pd.DataFrame) -> Summary:
    summary = summarise_by_noise(merged[[*SAMPLE_COLUMNS, *HEADLINE]])
    summary.extra["per_logit"] = _per_logit_summary(merged)
    return summary


def describe(summary: Summary) -> str:
    final = summary.final()
    return (
        f"regions: {len(summary.epochs)} checkpoints; final crossings/path={final['crossings']['all']:.4g} "
        f"density={final['density']['all']:.4g} absolute_deviation={final['absolute_deviation']['all']:.4g}"
    )
