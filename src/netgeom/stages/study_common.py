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
from netgeom.params import ExecutionParams, Params, execution_identity
from netgeom.progress import note
from netgeom.provenance import run_digest
from netgeom.code import code_digest
from netgeom.stages.pieces import keep_pieces_of, publish_pieces
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


def _compute_piece(compute: Callable[[Path, int, int], pd.DataFrame], place: Path, index: int, count: int) -> None:
    """Shard `index` of `count` into `place`; its table lands after anything `compute` writes
    beside it, so its presence marks the piece complete (module level: it pickles)."""
    write_shard(place, index, count, compute(place, index, count))


def compute_shards(
    folder: Path, shard: str | None, default_count: int, compute: Callable[[Path, int, int], pd.DataFrame],
    execution: ExecutionParams, staging: Path, identity: dict | None, what: str,
) -> pd.DataFrame | None:
    """Compute shard `shard` ("i/n") into `folder`, or all `default_count` shards with
    `compute(place, i, n)` (fanned out over `execution.workers` processes or Ray; `compute` must
    pickle, e.g. a partial), and return the merged table once every shard is present.

    All shards are computed into `staging`, each kept as it finishes: after a crash a rerun
    computes only those missing (of the same `identity`), and says so; once all are there they
    are copied into `folder`."""
    if shard is not None:
        index, count = parse_shard(shard)
        run_units(partial(_compute_piece, compute, folder), [(index, count)], execution.backend, execution.workers, execution.address)
        return read_shards(folder, count)
    count = default_count
    keep_pieces_of(staging, identity)
    missing = [i for i in range(count) if not shard_file(staging, i, count).exists()]
    if 0 < len(missing) < count:
        note(f"{what}: {count - len(missing)} of {count} shards found from an earlier run; computing the other {len(missing)}")
    run_units(partial(_compute_piece, compute, staging), [(i, count) for i in missing], execution.backend, execution.workers,
              execution.address)
    publish_pieces(staging, folder)
    return read_shards(folder, count)


def shard_identity(study: str, params: Params, layout: Layout, cell) -> dict:
    """What a staged shard of `study` depends on: its params group, the training run it measures
    (one training instance: its run.json), the device kind (the CPU's threads too: they change
    the sums) and the code the stage runs."""
    from netgeom.runs import cell_run, study_device  # here: the report reads shards without torch
    from netgeom.stages.registry import study as registered

    _, run = cell_run(params, layout, cell)
    return {"study": study, "params": getattr(params, study).model_dump(mode="json"), "run": run_digest(run.info),
            **execution_identity(params.execution, study_device(params).type), "code": code_digest(registered(study).module)}


def run_sharded(study: str, params: Params, layout: Layout, cell, shard: str | None, compute, summarise=None) -> Summary | None:
    """A sharded per-run study's `run`: shard `shard` ("i/n") or all `<study>.shards` of them with
    `compute(params, layout, cell, folder, index, count)` (module level: it pickles; `folder` is
    where it may write files beside the shard), and once every shard is there the summary,
    `summarise(merged)` (default: `summarise_by_noise`), written beside them with the shards'
    `attrs["netgeom"]` metadata, if any, under "metadata". Returns None while shards are missing.

    All shards at once build the result aside and publish it whole; one shard (`--shard`, for
    workers that share the folder) goes straight into it, beside only shards of the same identity
    (a manifest there; anything else is cleared first), the summary once the last one lands."""
    if shard is not None:
        parse_shard(shard)  # a bad spec stops here, before the folder's other shards are cleared
    name = run_name(params.model.arch, cell.width, cell.noise, cell.replicate)
    count = getattr(params, study).shards
    compute = partial(compute, params, layout, cell)
    staging = layout.study_staging_dir(study, name)
    identity = shard_identity(study, params, layout, cell)
    if shard is not None:
        folder = layout.study_dir(study, name)
        keep_pieces_of(folder, identity)
        merged = compute_shards(folder, shard, count, compute, params.execution, staging, None, f"{study}: {name}")
        return None if merged is None else _write_summary(folder, merged, summarise)
    with layout.building(layout.study_dir(study, name)) as folder:
        merged = compute_shards(folder, None, count, compute, params.execution, staging, identity, f"{study}: {name}")
        return _write_summary(folder, merged, summarise)


def _write_summary(folder: Path, merged: pd.DataFrame, summarise) -> Summary:
    summary = (summarise or summarise_by_noise)(merged)
    if "netgeom" in merged.attrs:  # what the shards were computed with (the same for every shard)
        summary.extra["metadata"] = merged.attrs["netgeom"]
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
