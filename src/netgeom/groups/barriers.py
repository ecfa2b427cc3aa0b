"""The `barriers` params group.

Kept apart from the stage so that validating params (`netgeom check`, every command's start)
imports no torch: the stage module `netgeom.stages.barriers` imports this group.
"""

from __future__ import annotations

from netgeom.params import StudyGroup


class BarriersParams(StudyGroup):
    matching: bool = True  # also after weight matching B to A


PARAMS = BarriersParams
