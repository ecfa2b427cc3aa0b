"""How every training command ends (`netgeom train`, `netgeom star source|train`)."""

from __future__ import annotations

from pathlib import Path

import typer


def report_training(folder: Path) -> None:
    """The trained run's one line (its MLflow run, when asked for, was logged by the stage)."""
    from netgeom.runs import read_run

    metrics = read_run(folder).metrics
    typer.echo(f"{folder.name}: train_acc {metrics['train_acc']:.4f} test_acc {metrics['test_acc']:.4f}")
