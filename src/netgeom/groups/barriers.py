"""The `barriers` params group.

Kept apart from the stage so that validating params (`netgeom check`, every command's start)
imports no torch: the stage module `netgeom.stages.barriers` imports this group.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from netgeom.params import StudyGroup


class BarriersParams(StudyGroup):
    LATER_FIELDS: ClassVar[frozenset[str]] = frozenset({"sinkhorn_temperature"})

    matching: bool = True  # also after weight matching B to A
    sinkhorn_temperature: float | None = Field(
        None, gt=0, description="also after Sinkhorn matching at this temperature (relative to each layer's similarity scale); null: off"
    )


PARAMS = BarriersParams
