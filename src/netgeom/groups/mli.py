"""The `mli` params group: the SGD-vs-Adam x BN preset of the MLI paper.

Kept apart from the stage so that validating params (`netgeom check`, every command's start)
imports no torch: the stage module `netgeom.stages.mli` imports this group.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from netgeom.params import StudyGroup


# The paper's learning rates where `mli.lr` names none for an optimizer.
DEFAULT_LR = {"sgd": 0.1, "adam": 0.01, "adamw": 0.01}


class MliParams(StudyGroup):
    arch: str = "mlp"
    width: int = Field(256, gt=0)
    depth: int = Field(4, ge=1)
    optimizers: list[Literal["sgd", "adam", "adamw"]] = Field(default_factory=lambda: ["sgd", "adam"], min_length=1)
    lr: dict[Literal["sgd", "adam", "adamw"], float] = Field(default_factory=lambda: dict(DEFAULT_LR))
    batch_norm: list[bool] = Field(default_factory=lambda: [False, True], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    epochs: int = Field(60, ge=1)
    points: int = Field(25, ge=2)
    tol: float = Field(1e-3, ge=0, description="the paper's MLP tolerance")
    max_final_loss: float = Field(0.1, gt=0, description="convergence filter (paper: 0.1 for MLPs)")
    calibration_samples: int = Field(512, ge=1, description="training samples BN statistics are recomputed on")


PARAMS = MliParams
