"""Stage `smoothness`: input-space smoothness of a run's checkpoints around its training points.

Writes artifacts/studies/smoothness/<run>/: per-sample Parquet shards (sample_id, label,
clean_label, is_noisy, epoch, one column per measure) and summary.json (mean over all, clean
and noisy samples per checkpoint and measure).
"""

from __future__ import annotations

from functools import partial
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field, model_validator

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
from netgeom.studies.smoothness import METRICS, NORMALIZATIONS, choose_targets, compute_metric
from netgeom.studies.volumes import Volume


class Measure(Group):
    metric: str
    normalization: str = "crossentropy"

    @model_validator(mode="after")
    def _known(self) -> Measure:
        if self.metric not in METRICS:
            raise NetgeomError("metric", f"unknown {self.metric!r}; allowed: {', '.join(METRICS)}")
        if self.normalization not in NORMALIZATIONS:
            raise NetgeomError("normalization", f"unknown {self.normalization!r}; allowed: {', '.join(NORMALIZATIONS)}")
        if self.metric == "crossentropy" and self.normalization == "target_logit":
            raise NetgeomError("normalization", "target_logit cannot be combined with metric crossentropy")
        return self

    @property
    def column(self) -> str:
        return f"{self.metric}.{self.normalization}" if self.metric.startswith("jacobian") else self.metric


class VolumeParams(Group):
    strategy: Literal["none", "euclidean", "geodesic"] = "none"
    perturbation: Literal["shift", "svd"] = "shift"
    directions: int = Field(4, ge=1)
    strength: int = Field(1, ge=1)
    anchors: list[int] | None = None
    cumulative: bool = False


class SmoothnessParams(Group):
    measures: list[Measure] = Field(
        default_factory=lambda: [
            Measure(metric="jacobian_frobenius", normalization="crossentropy"),
            Measure(metric="jacobian_operator", normalization="logits"),
        ],
        min_length=1,
    )
    volume: VolumeParams = VolumeParams()
    checkpoints: Literal["all", "final"] | list[int] = "all"
    samples: int | None = Field(None, ge=1, description="a seeded subset of the training set")
    sample_seed: int = 0
    clean_targets: bool = False
    batch_size: int = Field(256, ge=1)
    backend: Literal["vjp", "vmap"] = "vjp"
    shards: int = Field(1, ge=1)


def smoothness_params(params: Params) -> SmoothnessParams:
    return validate(params.smoothness, SmoothnessParams, prefix="smoothness.")


def _sample_rows(n: int, p: SmoothnessParams) -> np.ndarray:
    if p.samples is None or p.samples >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(p.sample_seed).choice(n, size=p.samples, replace=False))


def compute_shard(params: Params, layout: Layout, cell: Cell, index: int, count: int) -> pd.DataFrame:
    """Per-sample values of shard `index` of `count` for every selected checkpoint."""
    p = smoothness_params(params)
    params = cell_params(params, cell)
    run = open_run(layout, cell_name(params, cell))
    data = load_cell_data(params, layout)
    chosen = _sample_rows(len(data.train), p)
    span = shard_range(index, count, len(chosen))
    rows = chosen[span.start : span.stop]
    rows_t = torch.as_tensor(rows, dtype=torch.int64)
    train = data.train
    x, targets = train.x[rows_t], choose_targets(train.y[rows_t], train.clean[rows_t], p.clean_targets)
    volume = Volume(**{**p.volume.model_dump(), "anchors": tuple(p.volume.anchors) if p.volume.anchors else None})
    frames = []
    for epoch, path in checkpoint_selection(run, p.checkpoints):
        model = model_for_run(run.info, path)
        table = pd.DataFrame(
            {
                "epoch": epoch,
                "sample_id": train.sample_id[rows_t].numpy(),
                "label": train.y[rows_t].numpy(),
                "clean_label": train.clean[rows_t].numpy(),
                "is_noisy": train.is_noisy[rows_t].numpy(),
            }
        )
        for measure in p.measures:
            values = compute_metric(
                model, x, targets, measure.metric, measure.normalization,
                volume=volume, batch_size=p.batch_size, backend=p.backend, desc=f"e{epoch} {measure.column}",
            )
            if values.ndim == 1:
                table[measure.column] = values
            else:  # cumulative geodesic volumes: one column per prefix
                for k in range(values.shape[1]):
                    table[f"{measure.column}@{k + 1}"] = values[:, k]
        frames.append(table)
    return pd.concat(frames, ignore_index=True)


def run_smoothness(params: Params, layout: Layout, cell: Cell, shard: str | None = None) -> dict | None:
    """Compute one shard (`shard="i/n"`) or all of them; writes the summary once all are there."""
    p = smoothness_params(params)
    name = cell_name(cell_params(params, cell), cell)
    folder = layout.study_dir("smoothness", name)
    merged = compute_shards(folder, shard, p.shards, partial(compute_shard, params, layout, cell), params.execution)
    if merged is None:
        return None
    summary = summarise_by_noise(merged)
    write_summary(folder, summary)
    return summary
