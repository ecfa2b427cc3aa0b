"""MLflow tracking: the only module that imports mlflow.

One MLflow run per trained model, built from the run's DVC outputs (run.json, history.csv,
checkpoints). Logging from outputs rather than from inside the loop makes it idempotent: DVC may
skip a stage or restore it from its run cache, and `netgeom mlflow sync` then fills in exactly
what is missing. Runs are found again by the tags `netgeom.run` + `netgeom.params_hash`.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
import warnings
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import torch
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from netgeom.layout import Layout
from netgeom.params import flatten

COMPLETE = "netgeom.complete"
RUN_TAG = "netgeom.run"
HASH_TAG = "netgeom.params_hash"
PIP_REQUIREMENTS = [f"torch=={torch.__version__.split('+')[0]}"]


def tracking_uri(layout: Layout) -> str:
    """`MLFLOW_TRACKING_URI` (a server) wins; otherwise the project's SQLite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{layout.mlflow_db}"


def _quiet_mlflow() -> None:
    for name in ("mlflow", "alembic", "urllib3"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="mlflow")


def connect(layout: Layout, experiment: str) -> tuple[MlflowClient, str]:
    """Point MLflow at the store and return (client, experiment id), creating both once."""
    _quiet_mlflow()
    layout.mlruns.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri(layout)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        return client, found.experiment_id
    try:
        return client, client.create_experiment(experiment, artifact_location=layout.mlflow_artifacts.as_uri())
    except mlflow.exceptions.MlflowException:  # another process created it first
        return client, client.get_experiment_by_name(experiment).experiment_id


@cache
def git_commit(root: str) -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def find_run(client: MlflowClient, experiment_id: str, name: str, digest: str):
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.`{RUN_TAG}` = '{name}' AND tags.`{HASH_TAG}` = '{digest}'", max_results=5
    )
    return runs[0] if runs else None


def _tags(layout: Layout, name: str, digest: str) -> dict[str, str]:
    return {
        RUN_TAG: name,
        HASH_TAG: digest,
        "dvc.stage": os.environ.get("DVC_STAGE", ""),
        "dvc.exp_name": os.environ.get("DVC_EXP_NAME", ""),
        "dvc.baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV", ""),
        "git.commit": git_commit(str(layout.root)),
        "mlflow.runName": os.environ.get("DVC_STAGE") or name,
    }


def _history_metrics(history: pd.DataFrame, model_ids: dict[int, str]) -> list[Metric]:
    """Metrics of the evaluation epochs (step = epoch); a checkpoint epoch's metrics are linked to
    its logged model. Per-step bookkeeping (lr, running loss, timings) stays in history.csv."""
    now = int(time.time() * 1000)
    metrics = []
    evaluated = history.dropna(subset=["test_loss"]) if "test_loss" in history else history
    for row in evaluated.drop(columns=["lr", "train_loss_running", "epoch_seconds"], errors="ignore").to_dict("records"):
        step = int(row.pop("epoch"))
        metrics += [Metric(k, float(v), now, step, model_id=model_ids.get(step)) for k, v in row.items() if pd.notna(v)]
    return metrics


def _log_batched(client: MlflowClient, run_id: str, metrics=(), params=(), tags=()) -> None:
    # log_batch caps each call at 1000 metrics / 100 params; one call per chunk keeps it fast.
    metrics, params, tags = list(metrics), list(params), list(tags)
    for i in range(0, max(len(metrics), 1), 1000):
        client.log_batch(run_id, metrics=metrics[i : i + 1000])
    for i in range(0, len(params), 100):
        client.log_batch(run_id, params=params[i : i + 100])
    if tags:
        client.log_batch(run_id, tags=tags)


def log_training_run(
    layout: Layout,
    experiment: str,
    run_folder: Path,
    info: dict,
    history: pd.DataFrame,
    checkpoints: list[tuple[int, Path]],
    model_for: Callable[[Path], torch.nn.Module] | None,
    example: torch.Tensor | None,
) -> str:
    """Upsert the MLflow run of one trained model; returns its run id.

    `model_for(checkpoint_path)` builds the model with those weights, for `log_model`; pass
    None to skip logging models.
    """
    client, experiment_id = connect(layout, experiment)
    name, digest = info["run"], info["params_hash"]
    existing = find_run(client, experiment_id, name, digest)
    if existing is not None and existing.data.tags.get(COMPLETE) == "true":
        return existing.info.run_id
    if existing is not None:  # an interrupted earlier attempt: start it over
        client.delete_run(existing.info.run_id)

    with mlflow.start_run(experiment_id=experiment_id, tags=_tags(layout, name, digest)) as run:
        run_id = run.info.run_id
        # Models first: log_model(step=...) copies that step's metrics from the run's history,
        # which is empty now; the metrics below link themselves to the models instead.
        model_ids = {}
        if model_for is not None and example is not None:
            for epoch, path in checkpoints:
                logged = mlflow.pytorch.log_model(
                    model_for(path).eval(),
                    name=checkpoint_model_name(epoch),
                    step=epoch,
                    input_example=example.numpy(),
                    pip_requirements=PIP_REQUIREMENTS,
                )
                model_ids[epoch] = logged.model_id
        params = {**flatten(info["params"]), "parameters": info.get("parameters")}
        _log_batched(
            client, run_id, metrics=_history_metrics(history, model_ids), params=[Param(k, str(v)) for k, v in params.items()]
        )
        mlflow.log_artifact(str(run_folder / "history.csv"))
        mlflow.log_artifact(str(run_folder / "run.json"))
        client.set_tag(run_id, COMPLETE, "true")
    return run_id


def checkpoint_model_name(epoch: int) -> str:
    return f"ckpt-e{epoch:03d}"


def checkpoint_model_ids(client: MlflowClient, experiment_id: str, run_id: str) -> dict[int, str]:
    """epoch -> logged model id of a run's checkpoints."""
    models = mlflow.search_logged_models(
        experiment_ids=[experiment_id], filter_string=f"source_run_id = '{run_id}'", output_format="list"
    )
    return {int(m.name.removeprefix("ckpt-e")): m.model_id for m in models if m.name.startswith("ckpt-e")}


def log_study(
    layout: Layout,
    experiment: str,
    info: dict,
    study: str,
    summary: dict[int, dict[str, float]],
    artifacts: list[Path],
    digest: str,
) -> str | None:
    """Attach a study's results to the training run that produced the checkpoints.

    `summary` maps checkpoint epoch -> {metric: value}; each value is logged as
    `<study>.<metric>` with step=epoch, linked to that checkpoint's logged model. Artifacts go
    under `studies/<study>/`. `digest` identifies the results: logging the same digest twice is
    a no-op, so syncing after every `dvc repro` costs nothing when nothing changed.
    """
    client, experiment_id = connect(layout, experiment)
    run = find_run(client, experiment_id, info["run"], info["params_hash"])
    if run is None:
        return None
    run_id, tag = run.info.run_id, f"netgeom.study.{study}"
    if run.data.tags.get(tag) == digest:
        return run_id
    model_ids = checkpoint_model_ids(client, experiment_id, run_id)
    now = int(time.time() * 1000)
    metrics = [
        Metric(f"{study}.{key}", float(value), now, int(epoch), model_id=model_ids.get(int(epoch)))
        for epoch, values in summary.items()
        for key, value in values.items()
    ]
    _log_batched(client, run_id, metrics=metrics)
    for path in artifacts:
        client.log_artifact(run_id, str(path), artifact_path=f"studies/{study}")
    client.set_tag(run_id, tag, digest)
    return run_id


def runs_table(layout: Layout, experiment: str) -> pd.DataFrame:
    """All runs of the experiment as a DataFrame (for reports and tests)."""
    _, experiment_id = connect(layout, experiment)
    return mlflow.search_runs([experiment_id])


def logged_models(layout: Layout, experiment: str) -> list[Any]:
    _, experiment_id = connect(layout, experiment)
    return mlflow.search_logged_models(experiment_ids=[experiment_id], output_format="list")
