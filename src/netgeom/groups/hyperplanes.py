"""The `hyperplanes` params group.

Kept apart from the stage so that validating params (`netgeom check`, every command's start)
imports no torch: the stage module `netgeom.stages.hyperplanes` imports this group.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from netgeom.params import StudyGroup


class HyperplanesParams(StudyGroup):
    with_linear: bool = Field(False, description="also analyse linear layers (MLPs have nothing else)")
    checkpoints: Literal["all", "final"] | list[int] = "all"


PARAMS = HyperplanesParams
