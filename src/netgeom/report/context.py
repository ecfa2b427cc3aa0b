"""What a study's `report(context)` receives, and what it hands back for the report page."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from netgeom.io import atomic_write_csv
from netgeom.layout import Layout
from netgeom.params import Params


@dataclass(frozen=True)
class Figure:
    """A figure on the report page: the file, a title, and a caption with the measured numbers."""

    path: Path
    title: str
    caption: str
    section: str = ""  # the page section (set by the report stage: the study's)


@dataclass
class ReportContext:
    params: Params
    layout: Layout  # where the inputs are read (artifacts/)
    runs: pd.DataFrame  # one row per run: final metrics, errors, width, noise, replicate
    curves: pd.DataFrame  # one row per run and evaluated epoch (the learning curves)
    folder: Path  # the report being rendered (published whole over reports/ afterwards)
    peak_width: int | None  # the width of the epoch-wise figures
    peak_run: str | None  # the run the single-run figures show (the test-error peak at the highest noise)

    @property
    def figures(self) -> Path:
        return self.folder / "figures"

    @property
    def tables(self) -> Path:
        return self.folder / "tables"

    def figure_path(self, name: str) -> Path:
        return self.figures / f"{name}.{self.params.report.format}"

    def write_table(self, name: str, frame: pd.DataFrame) -> Path:
        return atomic_write_csv(self.tables / f"{name}.csv", frame)
