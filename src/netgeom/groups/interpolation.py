"""The `interpolation` params group: the init -> final line, BN handling, Gauss length, landscape.

Kept apart from the stage so that validating params (`netgeom check`, every command's start)
imports no torch: the stage module `netgeom.stages.interpolation` imports this group.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from netgeom.params import Group, StudyGroup

SEEDS_BN_MOMENTUM = 0.1  # = netgeom.studies.interpolation.SEEDS_BN_MOMENTUM (tests/test_light_imports.py)


class LandscapeParams(Group):
    resolution: int = Field(11, ge=0, description="grid points per axis (0 = skip the landscape)")
    margin: float = Field(0.2, ge=0)


class EmaParams(Group):
    """The seeds' BN recalibration (`bn: recompute_ema`): a moving average over `batches`."""

    momentum: float | None = Field(SEEDS_BN_MOMENTUM, gt=0, le=1, description="null: the cumulative average")
    batches: int | None = Field(None, ge=1, description="calibration batches (null: one pass over the subset)")


class InterpolationParams(StudyGroup):
    points: int = Field(25, ge=2)
    points_per_pass: int = Field(1, ge=1, description="t values evaluated in one vmapped pass (the CPU measured a loop over t faster; "
                                 "try more on a GPU, where small models leave it idle)")
    bn: Literal["interpolate", "recompute", "recompute_ema", "endpoint_ema", "frozen"] = "recompute"
    ema: EmaParams = EmaParams()
    calibration_samples: int = Field(512, ge=1)
    bn_batch_size: int = Field(256, ge=1)
    eval_samples: int | None = Field(None, ge=1, description="cap on samples per split (null = all)")
    tol: float = Field(0.0, ge=0, description="a curve is non-monotonic when Delta > tol")
    max_final_loss: float = Field(
        0.1, gt=0, description="convergence filter of the report's non-monotonic share: runs whose final train loss is above it "
        "are left out (MLI paper: 0.1 MLPs, 1.0 CIFAR-10, 2.0 CIFAR-100)"
    )
    gauss_samples: int = Field(64, ge=0, description="samples for the Gauss length (0 = skip)")
    gauss_points: int = Field(51, ge=3)
    gauss_bn: Literal["interpolate", "recompute", "recompute_ema"] = Field(
        "interpolate", description="interpolate: BN statistics interpolated; recompute*: re-estimated at each alpha (the MLI seed)"
    )
    random_inits: int = Field(2, ge=0)
    landscape: LandscapeParams = LandscapeParams()
    logits: bool = Field(False, description="also write every example's logits along the line")
    batch_size: int = Field(1024, ge=1)


PARAMS = InterpolationParams
