"""How every training command ends (`netgeom train`, `netgeom star source|train`)."""

from __future__ import annotations

from pathlib import Path

import typer

from netgeom.layout import Layout
from netgeom.params import Params


def finish_training(settings: Params, layout: Layout, folder: Path) -> None:
    """The trained run's one line, then its MLflow run (every training command ends so)."""
    from netgeom.runs import read_run
    from netgeom.stages.sync import track_run

    metrics = read_run(folder).metrics
    typer.echo(f"{folder.name}: train_acc {metrics['train_acc']:.4f} test_acc {metrics['test_acc']:.4f}")
    track_run(settings, layout, folder)
