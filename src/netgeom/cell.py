"""A grid cell: the width, noise level and seed replicate that name one training run."""

from __future__ import annotations

from dataclasses import dataclass

from netgeom.params import ModelParams, NoiseParams, Params, validate


@dataclass(frozen=True)
class Cell:
    width: int
    noise: float
    replicate: int = 0


def cell_groups(params: Params, cell: Cell) -> tuple[ModelParams, NoiseParams]:
    """The model and noise groups with the cell's width and noise level, given params.yaml's own
    checks (a grid or command-line value is refused like the key it overrides); torch-free."""
    model = validate({**params.model.model_dump(), "width": cell.width}, ModelParams, prefix="model.")
    noise = validate({**params.noise.model_dump(), "label": cell.noise}, NoiseParams, prefix="noise.")
    return model, noise


def grid_cells(params: Params) -> list[Cell]:
    """Every cell of `grid.widths x grid.noise x grid.seed_offsets` (dvc.yaml's train matrix)."""
    grid = params.grid
    return [Cell(width, noise, replicate) for width in grid.widths for noise in grid.noise for replicate in grid.seed_offsets]
