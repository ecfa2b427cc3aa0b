"""Run folders -> tidy pandas tables (one row per run, one row per run and epoch)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from netgeom.io import read_json


def run_folders(runs_root: Path) -> list[Path]:
    return sorted(p for p in Path(runs_root).glob("*") if (p / "run.json").exists())


def _run_columns(folder: Path) -> dict:
    info = read_json(folder / "run.json")
    return {
        "run": folder.name,
        "arch": info["params"]["model"]["arch"],
        "width": info["cell"]["width"],
        "noise": info["cell"]["noise"],
        "replicate": info["cell"]["replicate"],
        "seed": info["seed"],
        "parameters": info["parameters"],
    }


def runs_table(runs_root: Path) -> pd.DataFrame:
    """Final metrics of every run, with errors (1 - accuracy) beside the accuracies."""
    rows = [{**_run_columns(f), **read_json(f / "metrics.json")} for f in run_folders(runs_root)]
    table = pd.DataFrame(rows)
    for split in ("train", "val", "test"):
        if f"{split}_acc" in table:
            table[f"{split}_error"] = 1.0 - table[f"{split}_acc"]
    return table


def curves_table(runs_root: Path) -> pd.DataFrame:
    """Every run's evaluated epochs (the learning curves)."""
    frames = []
    for folder in run_folders(runs_root):
        history = pd.read_csv(folder / "history.csv").dropna(subset=["test_acc"])
        frames.append(history.assign(**_run_columns(folder)))
    if not frames:
        return pd.DataFrame()
    table = pd.concat(frames, ignore_index=True)
    for split in ("train", "test"):
        table[f"{split}_error"] = 1.0 - table[f"{split}_acc"]
    return table


def grid_table(runs: pd.DataFrame, values: list[str]) -> pd.DataFrame:
    """Mean over seed replicates per (width, noise), for the model-wise curves."""
    present = [v for v in values if v in runs]
    return runs.groupby(["noise", "width"], as_index=False)[present].mean().sort_values(["noise", "width"])


def study_table(studies_root: Path, runs: pd.DataFrame) -> pd.DataFrame:
    """A study's summaries in long form: run columns + epoch, measure, group (all/clean/noisy), value."""
    rows = []
    for folder in sorted(Path(studies_root).glob("*/summary.json")):
        summary = read_json(folder)
        for epoch, entry in summary.items():
            if not epoch.isdigit():  # e.g. interpolation's "progress" map
                continue
            for measure, groups in entry.items():
                if isinstance(groups, dict):
                    rows += [
                        {"run": folder.parent.name, "epoch": int(epoch), "measure": measure, "group": g, "value": v}
                        for g, v in groups.items()
                        if v is not None
                    ]
    table = pd.DataFrame(rows)
    if table.empty or runs.empty:
        return table
    return table.merge(runs[["run", "width", "noise", "replicate", "test_error", "train_error"]], on="run")


def final_epochs(table: pd.DataFrame) -> pd.DataFrame:
    """Rows of each run's last checkpoint."""
    last = table.groupby("run")["epoch"].transform("max")
    return table[table["epoch"] == last]
