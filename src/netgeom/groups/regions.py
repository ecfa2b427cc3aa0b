"""The `regions` params group: the closed paths and how the exact walk runs.

Kept apart from the stage so that validating params (`netgeom check`, every command's start)
imports no torch: the stage module `netgeom.stages.regions` imports this group.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from netgeom.params import Seed, StudyGroup

DEFAULT_EPS = 1e-9  # = netgeom.studies.regions.DEFAULT_EPS (tests/test_light_imports.py keeps the two in step)


class RegionsParams(StudyGroup):
    source: Literal["train", "val", "test", "random"] = "train"
    closed: bool = True
    paths: int = Field(64, ge=1)
    anchors: int = Field(8, ge=2)
    radius: float = Field(1, gt=0, description="pixels (or samples of a 1-D signal)")
    path_seed: Seed = 4321
    checkpoints: Literal["all", "final"] | list[int] = "all"
    eps: float = Field(DEFAULT_EPS, gt=0)
    batch_size: int = Field(256, ge=1)
    per_region: bool = Field(False, description="also write every region crossed (path, segment, t range, entry logits, slopes)")
    shards: int = Field(1, ge=1)


PARAMS = RegionsParams
