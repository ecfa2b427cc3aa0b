"""Stage `train`: one grid cell (width x noise x seed replicate) -> artifacts/runs/<run>/.

The run is trained in its staging folder (.netgeom/staging/<run>/: checkpoints + resume state),
assembled complete in `<run>.assembling/` (checkpoints hard-linked, history, metrics, run.json
last), renamed once to `<run>.done/`, and only then published to artifacts/runs/<run>/. The
staging folder is removed last. A crash at any point leaves either a resumable staging folder,
a complete `.done` folder that the next call publishes, or the published run.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

from netgeom.devices import resolve_device, set_deterministic
from netgeom.errors import NetgeomError
from netgeom.data.bundle import DataBundle
from netgeom.io import RECREATE, atomic_write_csv, atomic_write_json, publish_dir, read_json_object
from netgeom.layout import RUN_FILE, Layout
from netgeom.provenance import DVC_ENV, dvc_md5, git_commit
from netgeom.models import count_parameters
from netgeom.params import Params
from netgeom.progress import note
from netgeom.runs import (
    RUN_FILE_SCHEMA,
    Cell,
    build_model,
    cell_name,
    cell_params,
    default_cell,
    display_name,
    TRAINING_CODE,
    identity_hash,
    load_cell_data,
    read_run,
)
from netgeom.training.loop import TrainingHooks, TrainResult, train

# Final train accuracy within this many binomial standard errors of 1/K reads as "learnt nothing".
CHANCE_SIGMAS = 3.0


def run_train(params: Params, layout: Layout, cell: Cell | None = None, resume: bool = True, track: bool = False) -> Path:
    """Train one grid cell; returns its run folder. The folder appears whole or not at all.
    `track`: log its MLflow run now (the pipeline leaves that to the report stage: see
    `finished`)."""
    cell = cell or default_cell(params)
    settings = cell_params(params, cell)
    name = cell_name(settings, cell)
    fresh = f"netgeom train --width {cell.width} --noise {cell.noise} --replicate {cell.replicate} --fresh"
    return finished(params, layout, train_run(settings, layout, name=name, target=layout.run_dir(name), cell=cell, resume=resume, fresh_command=fresh), track)


def finished(params: Params, layout: Layout, folder: Path, track: bool) -> Path:
    """A trained run folder, with its MLflow run logged when `track` (and mlflow.enabled).

    The pipeline's training stages do not track: importing mlflow and the first pt2 export in a
    process cost several times the training of a small model, so the report stage (and
    `netgeom mlflow sync`) logs every training in one process, paying that once."""
    if track:
        from netgeom.stages.sync import track_run

        track_run(params, layout, folder)
    return folder


def train_run(
    params: Params,
    layout: Layout,
    *,
    name: str,
    target: Path,
    cell: Cell,
    data: DataBundle | None = None,
    identity_extra: dict | None = None,
    info_extra: dict | None = None,
    hooks: TrainingHooks = TrainingHooks(),
    code: tuple[str, ...] = TRAINING_CODE,
    resume: bool = True,
    fresh_command: str = "",
    display: str | None = None,
) -> Path:
    """Train a run with cell-applied `params` into `target` (through .netgeom/staging/<name>).

    `identity_extra` joins the run's identity (e.g. a star's anchors), `info_extra` its run.json;
    `hooks` go to the training loop (e.g. star training's objective and BN refresh), `code` names
    the modules whose code joins the identity (the hooks' module with them);
    `display` overrides the name people read (MLflow's run name)."""
    if params.model.pretrained:
        layout.pretrained_file(params.model.pretrained)  # before any work: one line if it is not there
    data = data if data is not None else load_cell_data(params, layout)
    device = resolve_device(params.execution.device)
    set_deterministic(params.execution.deterministic)
    data_digest = data.digest()
    digest = identity_hash(params, data_digest, device.type, identity_extra, code)
    finished = layout.finished_dir(name)
    if resume and _complete(finished, digest):  # a crash after assembly: publish what is there
        return _publish(layout, name, target)
    if resume and _complete(target, digest):  # already done (DVC removes its outputs first)
        _discard_staging(layout, name)
        return target
    shutil.rmtree(finished, ignore_errors=True)

    model = build_model(params, data)
    metadata = {"run": name, "seed": params.seed, "params_hash": digest}
    staging = layout.staging_dir(name)
    result = train(
        model, data, params.train, seed=params.seed, workdir=staging, metadata=metadata, resume=resume, device=device, hooks=hooks,
    )
    if result.missing_checkpoints:
        raise NetgeomError(
            "train",
            f"{name}: the checkpoints of epochs {result.missing_checkpoints} are missing from {staging}; "
            f"start the run over with `{fresh_command or 'the same command with --fresh'}`",
        )
    info = {
        **metadata,
        "name": display or display_name(params.model.arch, params.model.width, cell.noise, params.seed),
        "checkpoints": result.scheduled,
        "cell": {"width": cell.width, "noise": cell.noise, "replicate": cell.replicate},
        "dataset": {
            "name": data.info.name, "input_shape": list(data.info.input_shape), "num_classes": data.info.num_classes,
            # what MLflow's Dataset column shows: the tensors' content hash, the DVC-tracked files it came from
            "digest": data_digest, "train_size": len(data.train), "dvc_md5": dvc_md5(layout.root / "data.dvc"),
        },
        "git_commit": git_commit(str(layout.root)),
        "parameters": count_parameters(model),
        "device": str(device),
        "params": params.model_dump(mode="json", include={"seed", "data", "noise", "model", "train"}),
        "started": result.started,
        "ended": result.ended,
        # the DVC stage and experiment that trained it: MLflow's tags (logged later, by the report)
        "dvc": {key: os.environ[var] for key, var in DVC_ENV.items() if os.environ.get(var)},
        **(info_extra or {}),
    }
    metrics = _final_metrics(result, data.info.num_classes, len(data.train))
    if metrics["at_chance"]:
        note(
            f"{name} ended at chance level (train accuracy {metrics['train_acc']:.3f} with {data.info.num_classes} classes); "
            "check train.lr and train.optimizer"
        )
    _assemble(layout, name, result, info, metrics)
    return _publish(layout, name, target)


def _final_metrics(result: TrainResult, num_classes: int, n_train: int) -> dict:
    final = {k: v for k, v in result.final.items() if k not in ("epoch_seconds", "lr", "train_loss_running")}
    chance = 1.0 / num_classes
    margin = CHANCE_SIGMAS * math.sqrt(chance * (1 - chance) / max(n_train, 1))
    at_chance = not final.get("train_acc", 0.0) > chance + margin  # NaN counts as at chance
    return {**final, "epoch": int(final["epoch"]), "stopped_early": result.stopped_early, "at_chance": at_chance}


def _assemble(layout: Layout, name: str, result: TrainResult, info: dict, metrics: dict) -> None:
    """Build the complete run beside the staging folder, then one rename marks it finished."""
    assembling = layout.assembling_dir(name)
    shutil.rmtree(assembling, ignore_errors=True)
    (assembling / "checkpoints").mkdir(parents=True)
    for _, path in result.checkpoints:
        for part in (path, path.with_suffix(".json")):
            os.link(part, assembling / "checkpoints" / part.name)  # staging keeps its copy until the end
    atomic_write_csv(assembling / "history.csv", result.history)
    atomic_write_json(assembling / "metrics.json", metrics)
    atomic_write_json(assembling / RUN_FILE, info)  # last: its presence marks the folder complete
    os.replace(assembling, layout.finished_dir(name))


def _publish(layout: Layout, name: str, target: Path) -> Path:
    publish_dir(layout.finished_dir(name), target, layout.replaced_dir(name))
    _discard_staging(layout, name)
    return target


def _discard_staging(layout: Layout, name: str) -> None:
    for folder in (layout.staging_dir(name), layout.assembling_dir(name), layout.finished_dir(name), layout.replaced_dir(name)):
        shutil.rmtree(folder, ignore_errors=True)


def _complete(folder: Path, digest: str) -> bool:
    """A run folder with this identity whose every scheduled checkpoint is present."""
    if not (folder / RUN_FILE).exists():
        return False
    try:
        info = read_json_object(folder / RUN_FILE, RUN_FILE_SCHEMA)
        if info["params_hash"] != digest:
            return False
        read_run(folder).checkpoints  # noqa: B018  (raises when any is missing)
    except NetgeomError as exc:  # a damaged run is no result: say so, then train it again
        note(f"{str(exc).replace('; ' + RECREATE, '')}; training {folder.name} again")
        return False
    return True
