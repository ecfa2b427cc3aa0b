"""The `mli` params group: the SGD-vs-Adam x BN preset of the MLI paper.

Kept apart from the stage so that validating params (`netgeom check`, every command's start)
imports no torch: the stage module `netgeom.stages.mli` imports this group.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from netgeom.errors import NetgeomError
from netgeom.params import Seed, StudyGroup


# The paper's learning rates where `mli.lr` names none for an optimizer.
DEFAULT_LR = {"sgd": 0.1, "adam": 0.01, "adamw": 0.01}


class MliParams(StudyGroup):
    """The grid of trained variants: every architecture x depth x optimizer x learning rate x BN
    x seed; a list in `arch`, `depth` or an optimizer's `lr` adds that axis to the comparison
    (the paper groups by optimizer, architecture, BN and learning rate)."""

    arch: str | list[str] = Field("mlp", description="one family or several (a family without a depth option ignores depth)")
    width: int = Field(256, gt=0)
    depth: int | list[int] = Field(4, description="hidden layers (an MLP's); a list sweeps them")
    optimizers: list[Literal["sgd", "adam", "adamw"]] = Field(default_factory=lambda: ["sgd", "adam"], min_length=1)
    lr: dict[Literal["sgd", "adam", "adamw"], float | list[float]] = Field(
        default_factory=lambda: dict(DEFAULT_LR), description="per optimizer: a learning rate or a list of them"
    )
    batch_norm: list[bool] = Field(default_factory=lambda: [False, True], min_length=1)
    seeds: list[Seed] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    epochs: int = Field(60, ge=1)
    points: int = Field(25, ge=2)
    tol: float = Field(1e-3, ge=0, description="the paper's MLP tolerance")
    max_final_loss: float = Field(0.1, gt=0, description="convergence filter (paper: 0.1 for MLPs)")
    calibration_samples: int = Field(512, ge=1, description="training samples BN statistics are recomputed on")
    objective: Literal["classification", "reconstruction"] = Field(
        "classification", description="reconstruction: the MLI seed's MNIST autoencoders (mli.autoencoder) with the mean squared error, in place of mli.arch"
    )
    autoencoder: list[int] = Field(default_factory=lambda: [1000, 500, 250, 30], min_length=1,
                                   description="encoder widths, the code last (the decoder mirrors them): Hinton and Salakhutdinov's")

    @model_validator(mode="after")
    def _axes(self) -> MliParams:
        for key, values in (("mli.arch", self.archs), ("mli.depth", self.depths), *((f"mli.lr.{o}", self.lrs(o)) for o in self.optimizers)):
            if not values or len(set(values)) != len(values):
                raise NetgeomError(key, f"must list distinct values, got {values}")
        if any(w < 1 for w in self.autoencoder):
            raise NetgeomError("mli.autoencoder", f"widths must be >= 1, got {self.autoencoder}")
        if any(d < 1 for d in self.depths):
            raise NetgeomError("mli.depth", f"must be >= 1, got {self.depths}")
        if any(not lr > 0 for o in self.optimizers for lr in self.lrs(o)):
            raise NetgeomError("mli.lr", f"learning rates must be > 0, got {self.lr}")
        return self

    @property
    def archs(self) -> list[str]:
        return [self.arch] if isinstance(self.arch, str) else list(self.arch)

    @property
    def depths(self) -> list[int]:
        return [self.depth] if isinstance(self.depth, int) else list(self.depth)

    def lrs(self, optimizer: str) -> list[float]:
        value = self.lr.get(optimizer, DEFAULT_LR[optimizer])
        return [float(value)] if isinstance(value, (int, float)) else [float(v) for v in value]


PARAMS = MliParams
