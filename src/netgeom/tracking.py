"""MLflow tracking: the only module that logs to mlflow (`netgeom.store` creates the store).

One MLflow run per trained model, built from the run's DVC outputs (run.json, history.csv,
checkpoints). Logging from outputs rather than from inside the loop makes it idempotent: DVC may
skip a stage or restore it from its run cache, and `netgeom mlflow sync` then fills in exactly
what is missing. A run is found again by its identity (tags `netgeom.run` + `netgeom.params_hash`,
the hash covering seed, data and every setting that changes the weights).

Concurrency: the SQLite store is created once, in a temporary file renamed into place under an
inter-process lock (a killed creation leaves nothing behind), and every write to it (a training
run, a study's results) holds the same lock: parallel stages and queued experiments never see
"database is locked", and a run is never judged "interrupted" while another process writes it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import urllib.parse
import warnings
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import pandas as pd
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param
from mlflow.tracking import MlflowClient

from netgeom.errors import NetgeomError
from netgeom.layout import RUN_FILE, Layout
from netgeom.params import flatten
from netgeom.provenance import DVC_ENV, git_commit, run_digest
from netgeom.store import ensure_store, is_local_store, store_lock, tracking_uri

if TYPE_CHECKING:
    import torch

COMPLETE = "netgeom.complete"
RUN_TAG = "netgeom.run"
HASH_TAG = "netgeom.params_hash"
INSTANCE_TAG = "netgeom.instance"  # provenance.run_digest: which training of those params
SUPERSEDED_TAG = "netgeom.superseded_by"
EPOCH_TAG = "netgeom.epoch"
PIP_REQUIREMENTS = [f"torch=={version('torch').split('+')[0]}"]
# The history columns that become MLflow metrics, by the section of the UI they belong to; the
# per-step bookkeeping (lr, running loss, timings) stays in history.csv. The UI orders sections by
# character code (uppercase before lowercase): capitals put training first, above the studies.
HISTORY_SECTIONS = {"train_": "Train/", "val_": "Eval/val_", "test_": "Eval/test_"}
NOT_LOGGED = ("lr", "train_loss_running", "epoch_seconds")
ERROR_OF = ("train_acc", "test_acc", "val_acc")


def _quiet_mlflow() -> None:
    for name in ("mlflow", "alembic", "urllib3"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="mlflow")


def _point_mlflow_at(uri: str) -> None:
    """mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI, which `tracking_uri` reads as
    the user's choice: a second project in the same process would then log into the first
    one's store. Keep the variable as the user left it."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


def connect(layout: Layout, experiment: str) -> tuple[MlflowClient, str]:
    """Point MLflow at the store and return (client, experiment id), creating both once."""
    _quiet_mlflow()
    uri = tracking_uri(layout)
    with store_lock(layout):
        ensure_store(layout)
        _point_mlflow_at(uri)
        client = MlflowClient(uri)
        try:
            found = client.get_experiment_by_name(experiment)
            if found is not None:
                return client, found.experiment_id
            # Tagged for MLflow 3's UI: open on the runs table, not on the GenAI traces view. A
            # server keeps artifacts where it was told (--serve-artifacts: uploaded through it),
            # so only the local store names a folder.
            location = layout.mlflow_artifacts.as_uri() if is_local_store(layout) else None
            return client, client.create_experiment(
                experiment, artifact_location=location, tags={"mlflow.experimentKind": "custom_model_development"}
            )
        except mlflow.exceptions.MlflowException as exc:
            raise NetgeomError("mlflow", f"the store at {uri} refused the request: {str(exc).splitlines()[0][:200]}") from None


# The runs table a researcher compares: sorted by test error, with the columns that explain it.
# MLflow keeps a view a link can open as an experiment tag `mlflow.sharedViewState.<key>`; the
# link then names the key (`viewStateShareKey`).
VIEW_KEY = "netgeom-compare"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
COMPARED_COLUMNS = (
    "attributes.`Dataset`",  # MLflow's default columns: a view that names columns replaces them
    "attributes.`Source`",
    "attributes.`Models`",
    "metrics.`Eval/test_error`",
    "metrics.`Train/error`",
    "params.`model.width`",
    "params.`noise.label`",
    "params.`seed`",
    "tags.`dvc.exp_name`",
)
COMPARISON_VIEW = {
    "orderByKey": "metrics.`Eval/test_error`",
    "orderByAsc": True,
    "searchFilter": "",
    "selectedColumns": list(COMPARED_COLUMNS),
}


def open_comparison_view(layout: Layout, experiment: str) -> str:
    """Store the runs-table view the UI link opens (COMPARISON_VIEW) on the experiment, once;
    returns the experiment id."""
    client, experiment_id = connect(layout, experiment)
    view = json.dumps(COMPARISON_VIEW)
    if client.get_experiment(experiment_id).tags.get(VIEW_TAG) != view:
        with store_lock(layout):
            client.set_experiment_tag(experiment_id, VIEW_TAG, view)
    return experiment_id


def find_run(client: MlflowClient, experiment_id: str, info: dict):
    """The MLflow run of this training (run.json `info`): its name, params hash and instance, so a
    retraining with the same params (new code, a GPU rerun) gets its own run, never the old one's."""
    runs = client.search_runs([experiment_id], filter_string=_same_params(info) + f" AND tags.`{INSTANCE_TAG}` = '{run_digest(info)}'",
                              max_results=5)
    return runs[0] if runs else None


def _same_params(info: dict) -> str:
    return f"tags.`{RUN_TAG}` = '{info['run']}' AND tags.`{HASH_TAG}` = '{info['params_hash']}'"


def _mark_superseded(client: MlflowClient, experiment_id: str, info: dict, run_id: str) -> None:
    """Earlier trainings of the same run and params stay in the store (history), tagged with the run that replaced them."""
    for old in client.search_runs([experiment_id], filter_string=_same_params(info), max_results=1000):
        if old.info.run_id != run_id and SUPERSEDED_TAG not in old.data.tags:
            client.set_tag(old.info.run_id, SUPERSEDED_TAG, run_id)


def _tags(layout: Layout, info: dict) -> dict[str, str]:
    dvc = {key: (info.get("dvc") or {}).get(key) or os.environ.get(var, "") for key, var in DVC_ENV.items()}
    # `dvc repro` sets no experiment name: such runs belong to the workspace (filterable as such)
    dvc["exp_name"] = dvc["exp_name"] or "workspace"
    commit = info.get("git_commit") or git_commit(str(layout.root))  # trained at, else logged at
    tags = {
        RUN_TAG: info["run"],
        HASH_TAG: info["params_hash"],
        INSTANCE_TAG: run_digest(info),
        # where it was trained (run.json), else where it is logged (runs trained before run.json said)
        **{f"dvc.{key}": value for key, value in dvc.items()},
        "git.commit": commit,
        # the runs table's Source column: the stage that trained it, at which commit
        "mlflow.source.type": "LOCAL",
        "mlflow.source.name": f"dvc stage {dvc['stage']}" if dvc["stage"] else "netgeom train",
        "mlflow.source.git.commit": commit if commit != "unknown" else "",
        "device": info.get("device", ""),
    }
    star = info.get("star") or {}
    tags.update({f"star.{key}": ",".join(map(str, v)) if isinstance(v, list) else str(v) for key, v in star.items()})
    return {k: v for k, v in tags.items() if v}  # an empty tag is noise in the UI


def metric_name(column: str) -> str:
    """history.csv column -> its MLflow name in the UI's train/ or eval/ section."""
    for prefix, section in HISTORY_SECTIONS.items():
        if column.startswith(prefix):
            return section + column.removeprefix(prefix)
    return column


def _history_metrics(history: pd.DataFrame, model_ids: dict[int, str], timestamp: int) -> list[Metric]:
    """Metrics of the evaluation epochs (step = epoch); a checkpoint epoch's metrics are linked to
    its logged model. Errors (1 - accuracy) are logged beside accuracies: the double-descent
    literature, and the runs table's default comparison, speak of test error."""
    metrics = []
    evaluated = history.dropna(subset=["test_loss"]) if "test_loss" in history else history
    evaluated = evaluated.assign(**{c.removesuffix("acc") + "error": 1.0 - evaluated[c] for c in ERROR_OF if c in evaluated})
    for row in evaluated.drop(columns=list(NOT_LOGGED), errors="ignore").to_dict("records"):
        step = int(row.pop("epoch"))
        metrics += [Metric(metric_name(k), float(v), timestamp, step, model_id=model_ids.get(step)) for k, v in row.items() if pd.notna(v)]
    return metrics


def _dataset_input(info: dict) -> DatasetInput | None:
    """The data a run was trained on, for the runs table's Dataset column: named by dataset and
    label noise, its digest the content hash of the tensors (run.json, recorded at training)."""
    dataset = info.get("dataset") or {}
    if not dataset.get("digest"):
        return None  # trained before run.json recorded it
    noise = (info.get("cell") or {}).get("noise", 0.0)
    source = {"uri": "data", "dvc_md5": dataset.get("dvc_md5", ""), "labels": f"noise {noise:g}"}
    profile = {"num_rows": dataset.get("train_size"), "num_classes": dataset.get("num_classes"), "input_shape": dataset.get("input_shape")}
    entity = Dataset(
        name=f"{dataset['name']}-noise{noise:g}", digest=str(dataset["digest"])[:12], source_type="dvc",
        source=json.dumps(source), profile=json.dumps(profile),
    )
    return DatasetInput(entity, tags=[InputTag("mlflow.data.context", "train")])


def run_params(info: dict) -> dict[str, Any]:
    """The flattened params a run was trained with, without settings that do not apply to it."""
    params = info["params"]
    flat = flatten(params)
    if params.get("data", {}).get("name") != "random":
        flat = {k: v for k, v in flat.items() if not k.startswith("data.random.")}
    return {**{k: v for k, v in flat.items() if v is not None}, "parameters": info.get("parameters")}


def _log_batched(client: MlflowClient, run_id: str, metrics=(), params=(), tags=()) -> None:
    # log_batch caps each call at 1000 metrics / 100 params; one call per chunk keeps it fast.
    metrics, params, tags = list(metrics), list(params), list(tags)
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i : i + 1000])
    for i in range(0, len(params), 100):
        client.log_batch(run_id, params=params[i : i + 100])
    if tags:
        client.log_batch(run_id, tags=tags)


def _local_artifacts(uri: str) -> Path | None:
    """The folder behind a local artifact URI; None for a remote store (its tags are all there
    is to check without downloading)."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "file":
        return Path(urllib.parse.unquote(parsed.path))
    return Path(uri) if parsed.scheme == "" else None


def missing_artifacts(uri: str, names: list[str]) -> list[str]:
    """Those of `names` (paths inside the artifact folder at `uri`) that a local store lacks."""
    root = _local_artifacts(uri)
    return [] if root is None else [name for name in names if not (root / name).is_file()]


def _training_artifacts(run_folder: Path, checkpoints: list[tuple[int, Path]], model_epochs: set[int]) -> list[str]:
    names = ["history.csv", RUN_FILE]
    for epoch, path in checkpoints:
        if epoch not in model_epochs:
            names += [f"checkpoints/{path.name}", f"checkpoints/{path.with_suffix('.json').name}"]
    return names


def _incomplete(run, expected: list[str], model_epochs: set[int]) -> str | None:
    """Why a run tagged complete is not (its artifacts or models gone from a local store, as
    after deleting mlruns/artifacts), or None."""
    missing = missing_artifacts(run.info.artifact_uri, expected)
    found = checkpoint_models(run.info.experiment_id, run.info.run_id)
    for epoch in sorted(model_epochs):
        model = found.get(epoch)
        if model is None or missing_artifacts(model.artifact_location, ["MLmodel"]):
            missing.append(f"the model of epoch {epoch}")
    if not missing:
        return None
    return ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")


def checkpoint_model_name(info: dict, epoch: int) -> str:
    """A logged model's name identifies its run and epoch (the UI lists models by name): the run
    folder's name, the seed and the epoch, e.g. `mlp_w64-n0_2-r0-s42-e0500` (MLflow forbids '.'
    in model names). A run named by its seed already (a star source, `mlp_w64-n0.0-s1000`) does
    not repeat it."""
    run, seed = info["run"].replace(".", "_"), f"-s{info['seed']}"
    return f"{run}{'' if run.endswith(seed) else seed}-e{epoch:04d}"


def key_params(info: dict) -> dict[str, str]:
    """The settings a person scans a model list by."""
    cell, params = info["cell"], info["params"]
    return {
        "arch": str(params["model"]["arch"]),
        "width": str(params["model"].get("width")),
        "noise": str(cell["noise"]),
        "seed": str(info["seed"]),
        "dataset": str(params["data"]["name"]),
        "optimizer": str(params["train"]["optimizer"]),
    }


def log_training_run(
    layout: Layout,
    experiment: str,
    run_folder: Path,
    info: dict,
    history: pd.DataFrame,
    checkpoints: list[tuple[int, Path]],
    model_for: Callable[[Path], torch.nn.Module],
    example: torch.Tensor,
    model_epochs: set[int],
) -> str:
    """Upsert the MLflow run of one trained model; returns its run id.

    The checkpoints of `model_epochs` become logged models (`model_for(path)` builds the model
    with those weights); the others are attached as run artifacts under checkpoints/ (safetensors
    + JSON, loadable with `netgeom.training.load_checkpoint`).
    """
    client, experiment_id = connect(layout, experiment)
    with store_lock(layout):
        existing = find_run(client, experiment_id, info)
        if existing is not None and existing.data.tags.get(COMPLETE) == "true":
            lacking = _incomplete(existing, _training_artifacts(run_folder, checkpoints, model_epochs), model_epochs)
            if lacking is None:
                return existing.info.run_id
            print(f"mlflow: run {info['run']} lacks {lacking} in the artifact store; logging it again", file=sys.stderr)
        if existing is not None:  # an earlier attempt died (writers hold the lock to the end), or lost its files
            client.delete_run(existing.info.run_id)
        started = int(float(info.get("started", time.time())) * 1000)
        ended = int(float(info.get("ended", time.time())) * 1000)
        run = client.create_run(experiment_id, start_time=started, tags=_tags(layout, info), run_name=info.get("name", info["run"]))
        run_id = run.info.run_id
        with mlflow.start_run(run_id=run_id):
            # Models first: log_model(step=...) copies that step's metrics from the run's history,
            # which is empty now; the metrics below link themselves to the models instead.
            model_ids = {}
            for epoch, path in checkpoints:
                if epoch not in model_epochs:
                    for part in (path, path.with_suffix(".json")):
                        mlflow.log_artifact(str(part), artifact_path="checkpoints")
                    continue
                logged = mlflow.pytorch.log_model(
                    model_for(path).eval(),
                    name=checkpoint_model_name(info, epoch),
                    step=epoch,
                    input_example=example.numpy(),
                    pip_requirements=PIP_REQUIREMENTS,
                    params=key_params(info),
                    tags={EPOCH_TAG: str(epoch), RUN_TAG: info["run"]},
                )
                model_ids[epoch] = logged.model_id
            params = [Param(k, str(v)) for k, v in run_params(info).items()]
            _log_batched(client, run_id, metrics=_history_metrics(history, model_ids, ended), params=params)
            dataset = _dataset_input(info)
            if dataset is not None:
                client.log_inputs(run_id, datasets=[dataset])
            mlflow.log_artifact(str(run_folder / "history.csv"))
            mlflow.log_artifact(str(run_folder / RUN_FILE))
            client.set_tag(run_id, COMPLETE, "true")
        _mark_superseded(client, experiment_id, info, run_id)
        client.set_terminated(run_id, "FINISHED", end_time=max(ended, started))  # the training's own duration
    return run_id


def checkpoint_models(experiment_id: str, run_id: str) -> dict[int, Any]:
    """epoch -> logged model (mlflow's LoggedModel) of a run's checkpoints."""
    models = mlflow.search_logged_models(
        experiment_ids=[experiment_id], filter_string=f"source_run_id = '{run_id}'", output_format="list"
    )
    return {int(m.tags[EPOCH_TAG]): m for m in models if EPOCH_TAG in (m.tags or {})}


def checkpoint_model_ids(experiment_id: str, run_id: str) -> dict[int, str]:
    """epoch -> logged model id of a run's checkpoints."""
    return {epoch: model.model_id for epoch, model in checkpoint_models(experiment_id, run_id).items()}


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
    `<study>/<metric>` with step=epoch, linked to that checkpoint's logged model. Artifacts go
    under `studies/<study>/`. `digest` identifies the results: logging the same digest twice is
    a no-op, so syncing after every `dvc repro` costs nothing when nothing changed.
    """
    client, experiment_id = connect(layout, experiment)
    with store_lock(layout):
        run = find_run(client, experiment_id, info)
        if run is None:
            return None
        run_id, tag = run.info.run_id, f"netgeom.study.{study}"
        if run.data.tags.get(tag) == digest:
            return run_id
        model_ids = checkpoint_model_ids(experiment_id, run_id)
        now = int(time.time() * 1000)
        metrics = [
            Metric(f"{study}/{key}", float(value), now, int(epoch), model_id=model_ids.get(int(epoch)))
            for epoch, values in summary.items()
            for key, value in values.items()
        ]
        _log_batched(client, run_id, metrics=metrics)
        for path in artifacts:
            client.log_artifact(run_id, str(path), artifact_path=f"studies/{study}")
        client.set_tag(run_id, tag, digest)
    return run_id


REPORT_TAG = "netgeom.report"


def log_report(layout: Layout, experiment: str, folder: Path, metrics: dict[str, float], digest: str) -> str:
    """One run per distinct report (tag `netgeom.report` = its content digest): every file of the
    report folder as artifacts, the headline numbers as metrics."""
    client, experiment_id = connect(layout, experiment)
    with store_lock(layout):
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        for found in client.search_runs([experiment_id], filter_string=f"tags.`{REPORT_TAG}` = '{digest}'", max_results=5):
            # a run killed while it uploaded is still RUNNING (set_terminated comes last)
            if found.info.status == "FINISHED" and not missing_artifacts(found.info.artifact_uri, [f"report/{f}" for f in files]):
                return found.info.run_id
            client.delete_run(found.info.run_id)
        name = "report" + (f" {os.environ['DVC_EXP_NAME']}" if os.environ.get("DVC_EXP_NAME") else "")
        tags = {REPORT_TAG: digest, "git.commit": git_commit(str(layout.root))}
        tags["dvc.exp_name"] = os.environ.get("DVC_EXP_NAME") or "workspace"
        run = client.create_run(experiment_id, tags=tags, run_name=name)
        now = int(time.time() * 1000)
        _log_batched(client, run.info.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
        client.log_artifacts(run.info.run_id, str(folder), artifact_path="report")
        client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def runs_table(layout: Layout, experiment: str) -> pd.DataFrame:
    """All runs of the experiment as a DataFrame (for reports and tests)."""
    _, experiment_id = connect(layout, experiment)
    return mlflow.search_runs([experiment_id])


def logged_models(layout: Layout, experiment: str) -> list[Any]:
    _, experiment_id = connect(layout, experiment)
    return mlflow.search_logged_models(experiment_ids=[experiment_id], output_format="list")
