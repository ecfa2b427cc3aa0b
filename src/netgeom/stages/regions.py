"""Stage `regions`: exact linear regions of a run's checkpoints along data-driven paths.

Writes artifacts/studies/regions/<run>/: per-path Parquet shards (sample_id, label,
clean_label, is_noisy, epoch, regions, density, variation, absolute_deviation and their
per-logit columns) and summary.json (per checkpoint: mean over all/clean/noisy paths of the
logit-averaged statistics, plus mean and std per logit).
"""

from __future__ import annotations

from functools import partial
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field

from netgeom.errors import NetgeomError
from netgeom.execution import shard_range
from netgeom.layout import Layout
from netgeom.params import Group, Params, validate
from netgeom.stages.study_common import (
    checkpoint_selection,
    compute_shards,
    open_run,
    summarise_by_noise,
    write_summary,
)
from netgeom.stages.train import Cell, cell_name, cell_params, load_cell_data, model_for_run
from netgeom.studies.paths import Paths, choose_paths, make_paths, random_inputs
from netgeom.studies.regions import DEFAULT_EPS, check_model, study_paths

PER_LOGIT = ("variation", "signed_variation", "absolute_deviation")


class RegionsParams(Group):
    source: Literal["train", "val", "test", "random"] = "train"
    closed: bool = True
    paths: int = Field(64, ge=1)
    anchors: int = Field(8, ge=2)
    radius: float = Field(1, gt=0, description="pixels (or samples of a 1-D signal)")
    path_seed: int = 4321
    checkpoints: Literal["all", "final"] | list[int] = "all"
    eps: float = Field(DEFAULT_EPS, gt=0)
    batch_size: int = Field(256, ge=1)
    shards: int = Field(1, ge=1)


def regions_params(params: Params) -> RegionsParams:
    return validate(params.regions, RegionsParams, prefix="regions.")


def _path_inputs(params: Params, layout: Layout, p: RegionsParams):
    """(inputs, labels, clean labels, sample ids) of the pool the paths start from."""
    data = load_cell_data(params, layout)
    if p.source == "random":
        x = random_inputs(p.paths, data.info.input_shape, seed=p.path_seed)
        missing = np.full(p.paths, -1)
        return x, missing, missing, missing
    if p.source == "train":
        t = data.train
        return t.x, t.y.numpy(), t.clean.numpy(), t.sample_id.numpy()
    x, y = data.eval_sets().get(p.source, (None, None))
    if x is None:
        raise NetgeomError("regions.source", f"the {p.source} split is empty; use train or test")
    return x, y.numpy(), y.numpy(), np.arange(len(y))


def build_paths(params: Params, layout: Layout, p: RegionsParams) -> tuple[Paths, pd.DataFrame]:
    x, labels, clean, ids = _path_inputs(params, layout, p)
    side = min(x.shape[2:])
    if p.radius >= side:
        raise NetgeomError("regions.radius", f"{p.radius} must be smaller than the input side ({side})")
    chosen = np.arange(len(x)) if p.source == "random" else choose_paths(len(x), min(p.paths, len(x)), p.path_seed)
    paths = make_paths(x[torch.as_tensor(chosen)], n_anchors=p.anchors, radius=p.radius, closed=p.closed, source=chosen)
    rows = pd.DataFrame(
        {"sample_id": ids[chosen], "label": labels[chosen], "clean_label": clean[chosen], "is_noisy": labels[chosen] != clean[chosen]}
    )
    return paths, rows


def _with_logit_means(frame: pd.DataFrame) -> pd.DataFrame:
    for metric in PER_LOGIT:
        frame[metric] = frame[[c for c in frame.columns if c.startswith(f"{metric}_")]].mean(axis=1)
    return frame


def compute_shard(params: Params, layout: Layout, cell: Cell, index: int, count: int) -> pd.DataFrame:
    """Per-path rows of shard `index` of `count` for every selected checkpoint."""
    p = regions_params(params)
    params = cell_params(params, cell)
    run = open_run(layout, cell_name(params, cell))
    paths, rows = build_paths(params, layout, p)
    span = shard_range(index, count, paths.n_paths)
    paths, rows = paths.select(np.arange(span.start, span.stop)), rows.iloc[span.start : span.stop].reset_index(drop=True)
    frames = []
    for epoch, path in checkpoint_selection(run, p.checkpoints):
        model = model_for_run(run.info, path)
        check_model(model)
        stats = study_paths(model, paths, eps=p.eps, batch_size=p.batch_size)
        frames.append(pd.concat([rows.assign(epoch=epoch), _with_logit_means(stats.to_frame())], axis=1))
    return pd.concat(frames, ignore_index=True)


def _per_logit_summary(table: pd.DataFrame) -> dict:
    """Mean and std per logit over paths, per checkpoint (from the merged table)."""
    out = {}
    for epoch, group in table.groupby("epoch"):
        columns = [c for c in group.columns if any(c.startswith(f"{m}_") for m in PER_LOGIT) or c in ("regions", "density")]
        out[str(int(epoch))] = {c: {"mean": float(group[c].mean()), "std": float(group[c].std(ddof=0))} for c in columns}
    return out


def run_regions(params: Params, layout: Layout, cell: Cell, shard: str | None = None) -> dict | None:
    """Compute one shard (`shard="i/n"`) or all of them; writes the summary once all are there."""
    p = regions_params(params)
    name = cell_name(cell_params(params, cell), cell)
    folder = layout.study_dir("regions", name)
    merged = compute_shards(folder, shard, p.shards, partial(compute_shard, params, layout, cell), params.execution)
    if merged is None:
        return None
    headline = merged[["epoch", "sample_id", "label", "clean_label", "is_noisy", "regions", "density", *PER_LOGIT]]
    summary = summarise_by_noise(headline)
    write_summary(folder, {**summary, "per_logit": _per_logit_summary(merged)})
    return summary
