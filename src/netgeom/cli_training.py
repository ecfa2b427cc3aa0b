"""How every training command ends (`netgeom train`, `netgeom star source|train`)."""

from __future__ import annotations

from pathlib import Path

import typer

from netgeom.layout import Layout
from netgeom.params import Params


def finish_training(settings: Params, layout: Layout, folder: Path, track: bool) -> None:
    """The trained run's one line, then (with `track`) its MLflow run.

    In the pipeline the training stages do not track: importing mlflow and the first pt2 export
    in a process cost several times the training of a small model, so the report stage (and
    `netgeom mlflow sync`) logs every training in one process, paying that once."""
    from netgeom.runs import read_run

    metrics = read_run(folder).metrics
    typer.echo(f"{folder.name}: train_acc {metrics['train_acc']:.4f} test_acc {metrics['test_acc']:.4f}")
    if track:
        from netgeom.stages.sync import track_run

        track_run(settings, layout, folder)
