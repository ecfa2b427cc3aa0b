"""The `star` params group: anchors, held-out models, star training, and the check across groups.

Kept apart from the stage so that validating params (`netgeom check`, every command's start)
imports no torch: the stage module `netgeom.stages.star` imports this group.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from netgeom import layout as paths
from netgeom.errors import NetgeomError
from netgeom.params import Params, Seed, StudyGroup, Width


class StarParams(StudyGroup):
    LATER_FIELDS: ClassVar[frozenset[str]] = frozenset({"sinkhorn_temperature", "anti"})

    widths: list[Width] = Field(default_factory=lambda: [64], min_length=1, description="one star cell per width")
    noise: float = Field(0.0, ge=0, le=1)
    anchors: list[Seed] = Field(default_factory=lambda: [1000, 1001, 1002, 1003], min_length=1, description="seeds of the anchors")
    held_out: list[Seed] = Field(
        default_factory=lambda: [2000, 2001, 2002], min_length=2, description="seeds of the held-out models (regular <-> regular pairs need two)"
    )
    anchor_counts: list[int] = Field(default_factory=lambda: [1, 2, 4], min_length=1, description="stars trained on the first k anchors")
    t: Literal["uniform", "beta", "constant"] = "uniform"
    mu: float = Field(0.0, ge=0, description="weight of the star's own cross-entropy (0: off)")
    epochs: int = Field(100, ge=1, description="training epochs of sources and stars (the rest of `train` applies)")
    points: int = Field(11, ge=2)
    anti: bool = Field(
        False, description="anti-star control: keep the star a good model (mu > 0) while maximising the loss on its lines to the anchors"
    )
    matching: bool = True
    sinkhorn_temperature: float | None = Field(
        None, gt=0, description="also after Sinkhorn matching at this temperature (relative to each layer's similarity scale); null: off"
    )
    calibration_samples: int = Field(512, ge=1)
    realign: bool = Field(False, description="re-align the anchors to the star by weight matching after every epoch (the starlight seed's option)")
    bn: Literal["recompute", "endpoint_ema"] = Field(
        "recompute", description="BN statistics along the barrier paths: exact recompute, or the starlight seed's (endpoint A's, then a moving average)"
    )

    @field_validator("noise", mode="before")
    @classmethod
    def _noise_written_as_a_decimal(cls, v):
        # DVC names the stages' folders after the YAML literal (`0` renders as n0, `0.0` as n0.0).
        if isinstance(v, int) and not isinstance(v, bool):
            raise ValueError("write the noise level as a decimal, e.g. 0.0 rather than 0")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> StarParams:
        if self.anti and not self.mu > 0:
            raise NetgeomError("anti", f"needs mu > 0 (the anti-star's own cross-entropy keeps it a model), got mu={self.mu}")
        shared = sorted(set(self.anchors) & set(self.held_out))
        if shared:  # the test is on unseen models
            raise NetgeomError("held_out", f"held-out models must not be anchors; shared: {shared[:5]}")
        for name, values in (("anchors", self.anchors), ("held_out", self.held_out), ("widths", self.widths), ("anchor_counts", self.anchor_counts)):
            if len(set(values)) != len(values):
                raise NetgeomError(name, f"values must be distinct; got {values}")
        wrong = [k for k in self.anchor_counts if not 1 <= k <= len(self.anchors)]
        if wrong or len(self.anchors) not in self.anchor_counts:
            raise NetgeomError("anchor_counts", f"must lie in 1..{len(self.anchors)} (the number of anchors) and include it; got {self.anchor_counts}")
        return self


PARAMS = StarParams


def check_cell(params: Params) -> None:
    """The star cell's labels come from the grid's `corrupt` stage: its noise level must be one
    (also with star.enabled false: dvc.yaml's star stages name those labels as a dependency)."""
    if params.star.noise not in params.grid.noise:
        raise NetgeomError("star.noise", f"{params.star.noise} must be one of grid.noise {params.grid.noise} (its labels come from "
                           "corrupt@<noise>; DVC needs them even with star.enabled false)")


def source_name(params: Params, width: int, seed: int) -> str:
    """The folder name of a source model (an anchor or a held-out model) of the star cell."""
    return paths.star_source_name(params.model.arch, width, params.star.noise, seed)


def star_name(params: Params, width: int, count: int) -> str:
    """The folder name of the star trained against the first `count` anchors."""
    return paths.star_name(params.model.arch, width, params.star.noise, count)
