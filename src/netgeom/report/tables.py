"""Run folders -> tidy pandas tables (one row per run, one row per run and epoch)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from netgeom.io import read_csv, read_json_object, read_parquet
from netgeom.layout import RUN_FILE
from netgeom.report.wording import measure_label
from netgeom.runs import METRICS_SCHEMA, RUN_FILE_SCHEMA


def _run_columns(folder: Path) -> dict:
    info = read_json_object(folder / RUN_FILE, RUN_FILE_SCHEMA)
    return {
        "run": folder.name,
        "arch": info["params"]["model"]["arch"],
        "width": info["cell"]["width"],
        "noise": info["cell"]["noise"],
        "replicate": info["cell"]["replicate"],
        "seed": info["seed"],
        "parameters": info["parameters"],
    }


def per_run_table(study_root: Path, file: str, runs: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Every run's `file` under a study's folder, with the run's `columns` (from the runs table)
    joined on the run name; empty when there are no such files or no runs."""
    frames = [read_parquet(f).assign(run=f.parent.name) for f in sorted(Path(study_root).glob(f"*/{file}"))]
    if not frames or runs.empty:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True).merge(runs[["run", *columns]], on="run")


def runs_table(folders: list[Path]) -> pd.DataFrame:
    """Final metrics of the runs in `folders`, with errors (1 - accuracy) beside the accuracies."""
    rows = [{**_run_columns(f), **read_json_object(f / "metrics.json", METRICS_SCHEMA)} for f in folders]
    table = pd.DataFrame(rows)
    for split in ("train", "val", "test"):
        if f"{split}_acc" in table:
            table[f"{split}_error"] = 1.0 - table[f"{split}_acc"]
    return table


def curves_table(folders: list[Path]) -> pd.DataFrame:
    """The evaluated epochs (the learning curves) of the runs in `folders`."""
    frames = []
    for folder in folders:
        history = read_csv(folder / "history.csv", ("epoch", "train_acc", "test_acc")).dropna(subset=["test_acc"])
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
    from netgeom.summary import read_summary

    rows = []
    for summary_file in sorted(Path(studies_root).glob("*/summary.json")):
        summary = read_summary(summary_file.parent)
        rows += [
            {"run": summary_file.parent.name, "epoch": epoch, "measure": measure, "group": group, "value": value}
            for epoch, measures in summary.epochs.items()
            for measure, groups in measures.items()
            for group, value in groups.items()
            if value is not None
        ]
    table = pd.DataFrame(rows)
    if table.empty or runs.empty:  # no run of the grid: no study row to show either
        return pd.DataFrame(columns=["run", "epoch", "measure", "group", "value", "width", "noise", "replicate", "test_error", "train_error"])
    return table.merge(runs[["run", "width", "noise", "replicate", "test_error", "train_error"]], on="run")


def headline(final: pd.DataFrame, study: str) -> str:
    """One sentence per measure and noise level: its value at the narrowest width, its maximum over
    widths (and where), at the widest width, and the noisy/clean ratio at that maximum: the
    measured numbers behind a figure, one paragraph per measure. ("Peak" is kept for the
    double-descent peak of the test error.)"""
    paragraphs = []
    everyone = final[final["group"] == "all"]
    for measure, by_measure in everyone.groupby("measure"):
        parts = []
        for noise, group in by_measure.groupby("noise"):
            by_width = group.groupby("width")["value"].mean()
            if by_width.empty:
                continue
            top = int(by_width.idxmax())
            at_top = final[(final["measure"] == measure) & (final["noise"] == noise) & (final["width"] == top)]
            groups = at_top.groupby("group")["value"].mean()
            ratio = (f" (noisy/clean samples {groups['noisy'] / groups['clean']:.2f}x at width {top})"
                     if {"clean", "noisy"} <= set(groups.index) and groups["clean"] else "")
            parts.append(
                f"label noise {noise:g}: {by_width.iloc[0]:.3g} at width {by_width.index[0]}, max {by_width.max():.3g} at width {top}{ratio}, "
                f"{by_width.iloc[-1]:.3g} at width {by_width.index[-1]}"
            )
        if parts:
            label = measure_label(measure)
            paragraphs.append(f"{label[:1].upper()}{label[1:]}: " + "; ".join(parts) + ".")
    return "\n\n".join(paragraphs)


def final_epochs(table: pd.DataFrame) -> pd.DataFrame:
    """Rows of each run's last checkpoint."""
    last = table.groupby("run")["epoch"].transform("max")
    return table[table["epoch"] == last]


def noise_key(noise: float) -> str:
    """'noise_20pct': a metrics key without '.', which `dvc exp show` would read as nesting."""
    return f"noise_{round(100 * float(noise), 6):g}pct"


# A run whose final train error is at most this counts as interpolating its (noisy) labels.
INTERPOLATION_THRESHOLD = 0.01


def double_descent_peak(runs: pd.DataFrame) -> tuple[int, float]:
    """(width, test error) of the peak of one noise level's model-wise curve: the highest mean
    test error among the widths that interpolate (at or past the threshold; the first descent's
    under-fitted widths are not the peak), else among all widths."""
    by_width = runs.groupby("width")[["test_error", "train_error"]].mean()
    fitted = by_width[by_width["train_error"] <= INTERPOLATION_THRESHOLD]
    pool = fitted if len(fitted) else by_width
    return int(pool["test_error"].idxmax()), float(pool["test_error"].max())


def test_error_rise(runs: pd.DataFrame) -> tuple[int, float]:
    """(width, rise) of the largest rise of one noise level's model-wise test error above its
    running minimum over the narrower widths: 0 for a curve that only falls, the height of the
    bump for a double descent. Unlike the peak it needs no interpolation threshold."""
    by_width = runs.groupby("width")["test_error"].mean().sort_index()
    rise = by_width - by_width.cummin()
    return int(rise.idxmax()), float(rise.max())


def interpolation_threshold(runs: pd.DataFrame) -> int | None:
    """The smallest width whose mean final train error is at most INTERPOLATION_THRESHOLD."""
    by_width = runs.groupby("width")["train_error"].mean()
    fitted = by_width.index[by_width <= INTERPOLATION_THRESHOLD]
    return int(fitted[0]) if len(fitted) else None
