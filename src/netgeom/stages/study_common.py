"""What every study stage shares: shard files and summaries split by clean and noisy samples."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from netgeom.execution import parse_shard, run_units
from netgeom.io import atomic_write_parquet, read_parquet
from netgeom.layout import Layout, run_name
from netgeom.params import ExecutionParams, Params
from netgeom.summary import Summary, write_summary


def shard_file(folder: Path, index: int, count: int) -> Path:
    return folder / f"shard-{index:03d}-of-{count:03d}.parquet"


def write_shard(folder: Path, index: int, count: int, table: pd.DataFrame) -> Path:
    return atomic_write_parquet(shard_file(folder, index, count), table)


def read_shards(folder: Path, count: int) -> pd.DataFrame | None:
    """The merged table when every shard is present (merged by shard index), else None."""
    paths = [shard_file(folder, i, count) for i in range(count)]
    if not all(p.exists() for p in paths):
        return None
    return pd.concat([read_parquet(p) for p in paths], ignore_index=True)


def compute_shards(
    folder: Path, shard: str | None, default_count: int, compute: Callable[[int, int], pd.DataFrame], execution: ExecutionParams
) -> pd.DataFrame | None:
    """Compute shard `shard` ("i/n") or all `default_count` shards with `compute(i, n)` (fanned
    out over `execution.workers` processes or Ray; `compute` must pickle, e.g. a partial), write
    them only after all are computed, and return the merged table once every shard is present."""
    if shard is not None:
        index, count = parse_shard(shard)
        indices = [index]
    else:
        count, indices = default_count, list(range(default_count))
    results = run_units(compute, [(i, count) for i in indices], execution.backend, execution.workers, execution.address)
    tables = dict(zip(indices, results))
    for i, table in tables.items():
        write_shard(folder, i, count, table)
    return read_shards(folder, count)


def run_sharded(study: str, params: Params, layout: Layout, cell, shard: str | None, compute, summarise=None) -> Summary | None:
    """A sharded per-run study's `run`: shard `shard` ("i/n") or all `<study>.shards` of them with
    `compute(params, layout, cell, folder, index, count)` (module level: it pickles), and once
    every shard is there the summary, `summarise(merged)` (default: `summarise_by_noise`),
    written beside them. Returns None while shards are missing."""
    folder = layout.study_dir(study, run_name(params.model.arch, cell.width, cell.noise, cell.replicate))
    count = getattr(params, study).shards
    merged = compute_shards(folder, shard, count, partial(compute, params, layout, cell, folder), params.execution)
    if merged is None:
        return None
    summary = (summarise or summarise_by_noise)(merged)
    write_summary(folder, summary)
    return summary


SAMPLE_COLUMNS = ("epoch", "sample_id", "label", "clean_label", "is_noisy")


def sample_frame(sample_ids, labels, clean_labels) -> pd.DataFrame:
    """The columns every per-sample table starts with, so any result splits into clean/noisy."""
    labels, clean_labels = np.asarray(labels), np.asarray(clean_labels)
    return pd.DataFrame(
        {"sample_id": np.asarray(sample_ids), "label": labels, "clean_label": clean_labels, "is_noisy": labels != clean_labels}
    )


def summarise_by_noise(table: pd.DataFrame) -> Summary:
    """Per checkpoint epoch and measure: mean over all, clean and noisy samples, and counts."""
    value_columns = [c for c in table.columns if c not in SAMPLE_COLUMNS and pd.api.types.is_numeric_dtype(table[c])]
    summary = Summary()
    for epoch, group in table.groupby("epoch"):
        noisy = group["is_noisy"].to_numpy(bool)
        summary.counts[int(epoch)] = {"samples": int(len(group)), "noisy": int(noisy.sum())}
        summary.epochs[int(epoch)] = {
            column: {
                "all": float(group[column].mean()),
                "clean": float(group.loc[~noisy, column].mean()) if (~noisy).any() else None,
                "noisy": float(group.loc[noisy, column].mean()) if noisy.any() else None,
            }
            for column in value_columns
        }
    return summary
