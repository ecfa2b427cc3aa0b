"""What every study stage shares: which checkpoints to read, shard files, summaries, MLflow."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from netgeom.errors import NetgeomError
from netgeom.execution import parse_shard, run_units
from netgeom.io import atomic_write_json, atomic_write_parquet, read_json
from netgeom.layout import Layout
from netgeom.params import ExecutionParams, Params
from netgeom.stages.train import Run, read_run


def checkpoint_selection(run: Run, which: str | list[int]) -> list[tuple[int, Path]]:
    """`all`, `final`, or a list of epochs (each must have been checkpointed)."""
    available = run.checkpoints
    if not available:
        raise NetgeomError("checkpoint", f"no checkpoints in {run.folder}; train the run first")
    if which == "all":
        return available
    if which == "final":
        return available[-1:]
    by_epoch = dict(available)
    missing = [e for e in which if e not in by_epoch]
    if missing:
        raise NetgeomError("checkpoints", f"epochs {missing} were not checkpointed in {run.name}; have {sorted(by_epoch)}")
    return [(e, by_epoch[e]) for e in which]


def open_run(layout: Layout, name: str) -> Run:
    folder = layout.run_dir(name)
    if not (folder / "run.json").exists():
        raise NetgeomError("run", f"{folder} is missing; run `dvc repro train` (or `netgeom train`) first")
    return read_run(folder)


def shard_file(folder: Path, index: int, count: int) -> Path:
    return folder / f"shard-{index:03d}-of-{count:03d}.parquet"


def write_shard(folder: Path, index: int, count: int, table: pd.DataFrame) -> Path:
    return atomic_write_parquet(shard_file(folder, index, count), table)


def read_shards(folder: Path, count: int) -> pd.DataFrame | None:
    """The merged table when every shard is present (merged by shard index), else None."""
    paths = [shard_file(folder, i, count) for i in range(count)]
    if not all(p.exists() for p in paths):
        return None
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)


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


def write_summary(folder: Path, summary: dict[str, Any]) -> Path:
    return atomic_write_json(folder / "summary.json", summary)


def read_summary(folder: Path) -> dict[str, Any]:
    return read_json(folder / "summary.json")


def sync_studies(params: Params, layout: Layout) -> int:
    """Attach every study summary under artifacts/studies/<study>/<run>/ to its training run in
    MLflow (idempotent; called by the report stage and `netgeom mlflow sync`). Done in one
    process at the end rather than per study stage: opening the store costs seconds each time."""
    if not params.mlflow.enabled:
        return 0
    import hashlib

    from netgeom import tracking

    attached = 0
    for summary_path in sorted(layout.artifacts.glob("studies/*/*/summary.json")):
        study, run_name = summary_path.parent.parent.name, summary_path.parent.name
        if not (layout.run_dir(run_name) / "run.json").exists():
            continue
        run = read_run(layout.run_dir(run_name))
        digest = hashlib.md5(summary_path.read_bytes()).hexdigest()
        summary = read_summary(summary_path.parent)
        if tracking.log_study(layout, params.mlflow.experiment, run.info, study, metrics_by_epoch(summary), [summary_path], digest):
            attached += 1
    return attached


SAMPLE_COLUMNS = ("epoch", "sample_id", "label", "clean_label", "is_noisy")


def summarise_by_noise(table: pd.DataFrame) -> dict:
    """Per checkpoint epoch and measure: mean over all, clean and noisy samples, and counts."""
    value_columns = [c for c in table.columns if c not in SAMPLE_COLUMNS and pd.api.types.is_numeric_dtype(table[c])]
    summary = {}
    for epoch, group in table.groupby("epoch"):
        entry = {"samples": int(len(group)), "noisy": int(group["is_noisy"].sum())}
        for column in value_columns:
            entry[column] = {
                "all": float(group[column].mean()),
                "clean": float(group.loc[~group["is_noisy"], column].mean()) if (~group["is_noisy"]).any() else None,
                "noisy": float(group.loc[group["is_noisy"], column].mean()) if group["is_noisy"].any() else None,
            }
        summary[str(int(epoch))] = entry
    return summary


def metrics_by_epoch(summary: dict) -> dict[int, dict[str, float]]:
    """{epoch: {measure: {group: v}}} -> {epoch: {"measure.group": v}} for MLflow."""
    return {
        int(epoch): {f"{m}.{g}": v for m, groups in entry.items() if isinstance(groups, dict) for g, v in groups.items() if v is not None}
        for epoch, entry in summary.items()
        if epoch.isdigit()
    }
