"""Stage `train`: one grid cell (width x noise x seed replicate) -> artifacts/runs/<run>/."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from netgeom.data.bundle import DataBundle, load_bundle, read_labels, read_split
from netgeom.io import atomic_write_json, read_json, replace_dir
from netgeom.layout import Layout, run_name
from netgeom.models import count_parameters, create_model
from netgeom.params import ModelParams, NoiseParams, Params, params_hash, validate
from netgeom.training.checkpoints import list_checkpoints
from netgeom.training.loop import train


@dataclass(frozen=True)
class Cell:
    """One grid cell: the settings that name a run."""

    width: int
    noise: float
    replicate: int = 0


def cell_params(params: Params, cell: Cell) -> Params:
    """`params` with the cell's width, noise level and seed; grid values get params.yaml's checks."""
    model = validate({**params.model.model_dump(), "width": cell.width}, ModelParams, prefix="model.")
    noise = validate({**params.noise.model_dump(), "label": cell.noise}, NoiseParams, prefix="noise.")
    return params.model_copy(update={"model": model, "noise": noise, "seed": params.seed + cell.replicate})


def default_cell(params: Params) -> Cell:
    return Cell(params.model.width, params.noise.label, 0)


def cell_name(params: Params, cell: Cell) -> str:
    return run_name(params.model.arch, cell.width, cell.noise, cell.replicate)


def build_model(params: Params, data: DataBundle) -> torch.nn.Module:
    torch.manual_seed(params.seed)  # the initialisation is a function of the seed alone
    return create_model(params.model.arch, data.info.input_shape, data.info.num_classes, **params.model.options())


def load_cell_data(params: Params, layout: Layout) -> DataBundle:
    split = read_split(layout.split_file)
    labels = read_labels(layout.labels_file(params.noise.label))
    return load_bundle(params, split, labels, layout.data_root(params.data.root))


def run_train(params: Params, layout: Layout, cell: Cell | None = None, resume: bool = True) -> Path:
    """Train one cell; returns its run folder. The folder appears whole or not at all."""
    cell = cell or default_cell(params)
    params = cell_params(params, cell)
    name = cell_name(params, cell)
    data = load_cell_data(params, layout)
    model = build_model(params, data)
    digest = params_hash(params.data, params.noise, params.model, params.train)
    metadata = {"run": name, "seed": params.seed, "params_hash": digest}
    staging = layout.staging_dir(name)
    result = train(model, data, params.train, seed=params.seed, workdir=staging, metadata=metadata, resume=resume)

    finished = layout.finished_dir(name)
    shutil.rmtree(finished, ignore_errors=True)
    (finished / "checkpoints").mkdir(parents=True)
    for _, path in result.checkpoints:
        for part in (path, path.with_suffix(".json")):
            shutil.move(part, finished / "checkpoints" / part.name)
    result.history.to_csv(finished / "history.csv", index=False)
    final = {k: v for k, v in result.final.items() if k not in ("epoch_seconds", "lr")}
    atomic_write_json(finished / "metrics.json", {**final, "epoch": int(final["epoch"]), "stopped_early": result.stopped_early})
    atomic_write_json(
        finished / "run.json",
        {
            **metadata,
            "cell": {"width": cell.width, "noise": cell.noise, "replicate": cell.replicate},
            "dataset": {"name": data.info.name, "input_shape": list(data.info.input_shape), "num_classes": data.info.num_classes},
            "parameters": count_parameters(model),
            "params": params.model_dump(mode="json", include={"seed", "data", "noise", "model", "train"}),
        },
    )
    target = layout.run_dir(name)
    replace_dir(finished, target)
    shutil.rmtree(staging, ignore_errors=True)
    return target


@dataclass
class Run:
    """A finished run folder, read back."""

    name: str
    folder: Path
    info: dict
    metrics: dict
    history: pd.DataFrame

    @property
    def checkpoints(self) -> list[tuple[int, Path]]:
        return list_checkpoints(self.folder / "checkpoints")


def read_run(folder: Path) -> Run:
    folder = Path(folder)
    return Run(
        folder.name,
        folder,
        read_json(folder / "run.json"),
        read_json(folder / "metrics.json"),
        pd.read_csv(folder / "history.csv"),
    )


def model_for_run(info: dict, checkpoint: Path | None = None) -> torch.nn.Module:
    """Rebuild a run's model from its run.json (weights from `checkpoint` when given)."""
    from netgeom.training.checkpoints import load_checkpoint

    model_params = ModelParams.model_validate(info["params"]["model"])
    dataset = info["dataset"]
    model = create_model(model_params.arch, tuple(dataset["input_shape"]), dataset["num_classes"], **model_params.options())
    if checkpoint is not None:
        model.load_state_dict(load_checkpoint(checkpoint)[0])
    return model.eval()


def track_run(params: Params, layout: Layout, folder: Path) -> str | None:
    """Upsert the MLflow run of a finished run folder (a no-op when already complete)."""
    if not params.mlflow.enabled:
        return None
    from netgeom import tracking

    run = read_run(folder)
    example = torch.zeros(2, *run.info["dataset"]["input_shape"])  # batch 2: export keeps the batch dim dynamic
    return tracking.log_training_run(
        layout,
        params.mlflow.experiment,
        folder,
        run.info,
        run.history,
        run.checkpoints,
        (lambda path: model_for_run(run.info, path)) if params.mlflow.log_models else None,
        example,
    )


def sync_runs(params: Params, layout: Layout) -> list[str]:
    """`netgeom mlflow sync`: make sure every run folder has its complete MLflow run."""
    from netgeom.stages.study_common import sync_studies

    folders = sorted(p for p in layout.runs_root.glob("*") if (p / "run.json").exists())
    ids = [track_run(params, layout, folder) for folder in folders]
    sync_studies(params, layout)
    return ids
