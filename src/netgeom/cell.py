"""A grid cell: the width, noise level and seed replicate that name one training run."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cell:
    width: int
    noise: float
    replicate: int = 0
