"""The `curvature` params group (light: no torch; the stage module imports it)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from netgeom.params import Group, Seed, StudyGroup


class SurfaceParams(Group):
    LATER_FIELDS: ClassVar[frozenset[str]] = frozenset({"line"})

    resolution: int = Field(11, ge=0, description="points per axis of the 2-D surface (0 = no surface)")
    line: int = Field(41, ge=0, description="points of the 1-D cut along the surface's first direction over [-span, span] (0 = none)")
    span: float = Field(1.0, gt=0, description="the grid covers [-span, span] in both filter-normalised directions")
    shards: int = Field(4, ge=1, description="pieces of the grid, each written when done (a rerun computes only the missing ones)")


class CurvatureParams(StudyGroup):
    enabled: bool = False  # opt-in: a beyond-the-seeds study, seconds per checkpoint on the CPU
    checkpoints: Literal["all", "final"] | list[int] = "final"
    samples: int = Field(512, ge=1, description="a seeded subset of the training split (the loss whose Hessian is taken)")
    groups: list[Literal["all", "clean", "noisy"]] = Field(default_factory=lambda: ["all"], min_length=1)
    batch_size: int = Field(256, ge=1)
    top_k: int = Field(3, ge=1)
    tol: float = Field(1e-3, gt=0, description="Lanczos stops when the top-k Ritz pairs (and two guard pairs below them) have a relative residual below this")
    max_steps: int = Field(100, ge=2)
    trace_probes: int = Field(30, ge=2, description="Hutchinson's Rademacher probes")
    density_probes: int = Field(2, ge=1)
    density_steps: int = Field(30, ge=2)
    seed: Seed = 0
    surface: SurfaceParams = SurfaceParams()


PARAMS = CurvatureParams
