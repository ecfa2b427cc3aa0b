"""MLflow from the DVC outputs: a training run per run folder, study summaries attached to it.

Everything here is idempotent (tracking finds a run by its identity, a study by its digest), so
the train stage, the report stage and `netgeom mlflow sync` can all call it after DVC skipped or
restored stages from its run cache.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from netgeom.errors import NetgeomError
from netgeom.layout import RUN_FILE, Layout, run_folders
from netgeom.params import Params
from netgeom.runs import model_for_run, read_run


def track_run(params: Params, layout: Layout, folder: Path) -> str | None:
    """Upsert the MLflow run of a finished run folder (a no-op when already complete)."""
    if not params.mlflow.enabled:
        return None
    from netgeom import tracking

    run = read_run(folder)
    checkpoints = run.checkpoints
    as_models = {"all": [e for e, _ in checkpoints], "final": [checkpoints[-1][0]], "none": []}[params.mlflow.log_models]
    example = torch.zeros(2, *run.info["dataset"]["input_shape"])  # batch 2: export keeps the batch dim dynamic
    return tracking.log_training_run(
        layout, params.mlflow.experiment, folder, run.info, run.history, checkpoints,
        lambda path: model_for_run(run.info, path), example, model_epochs=set(as_models),
    )


def training_folders(layout: Layout) -> list[Path]:
    """Every finished training: the grid's runs, the star study's source models and stars."""
    return [folder for root in (layout.runs_root, layout.star_sources_root, layout.stars_root) for folder in run_folders(root, layout.root)]


def sync_runs(params: Params, layout: Layout) -> list[str]:
    """The report stage and `netgeom mlflow sync`: make sure every training has its complete
    MLflow run (one process for all: mlflow's import and the first model export are paid once),
    then attach the studies' results."""
    from netgeom.progress import progress

    folders = training_folders(layout)
    ids = [track_run(params, layout, folder) for folder in progress(folders, desc="mlflow", total=len(folders))]
    sync_studies(params, layout)
    return ids


def sync_studies(params: Params, layout: Layout) -> int:
    """Attach every study summary under artifacts/studies/<study>/<run>/ to its training run
    (idempotent). Done in one process at the end rather than per study stage: opening the store
    costs seconds each time."""
    if not params.mlflow.enabled:
        return 0
    from netgeom import tracking
    from netgeom.summary import read_summary

    attached = 0
    for summary_path in sorted(layout.artifacts.glob("studies/*/*/summary.json")):
        study, name = summary_path.parent.parent.name, summary_path.parent.name
        if not (layout.run_dir(name) / RUN_FILE).exists():
            continue
        run = read_run(layout.run_dir(name))
        digest = hashlib.md5(summary_path.read_bytes()).hexdigest()
        summary = read_summary(summary_path.parent)
        if tracking.log_study(layout, params.mlflow.experiment, run.info, study, summary.metrics(), [summary_path], digest):
            attached += 1
    return attached


def sync_report(params: Params, layout: Layout) -> str | None:
    """The published report as its own MLflow run (figures, tables, index.html, the headline
    numbers as metrics): the views of studies over the whole grid (barriers, the MLI preset)
    reach MLflow this way. Idempotent by the report's content."""
    if not params.mlflow.enabled or not layout.report_summary.exists():
        return None
    from netgeom import tracking
    from netgeom.io import read_json_object

    files = sorted(p for p in layout.reports.rglob("*") if p.is_file())
    digest = hashlib.md5(b"".join(p.relative_to(layout.reports).as_posix().encode() + p.read_bytes() for p in files)).hexdigest()
    headline = read_json_object(layout.report_summary)
    if not all(isinstance(values, dict) for values in headline.values()):
        raise NetgeomError(str(layout.report_summary), "must map each group to its headline numbers; run `dvc repro report` again")
    metrics = {f"{key}/{name}": value for key, values in headline.items() for name, value in values.items() if isinstance(value, (int, float))}
    return tracking.log_report(layout, params.mlflow.experiment, layout.reports, metrics, digest)
