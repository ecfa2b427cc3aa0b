"""The `smoothness` params group: which input-space measures, on which points and checkpoints.

Kept apart from the stage so that validating params (`netgeom check`, every command's start)
imports no torch: the stage module `netgeom.stages.smoothness` imports this group.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from netgeom.errors import NetgeomError
from netgeom.params import Group, Seed, StudyGroup

# The names `netgeom.studies.smoothness` implements (tests/test_light_imports.py keeps the two in step).
METRICS = ("jacobian_frobenius", "jacobian_operator", "crossentropy", "accuracy", "confidence", "tangent_jacobian", "tangent_hessian")
NORMALIZATIONS = ("crossentropy", "logits", "softmax", "logsoftmax", "target_logit")
OPERATOR_METHODS = ("gram", "power")
TANGENT_STEP = 0.1  # the seed's fixed divisor of h(x) - h(x^(j))


class Measure(Group):
    metric: str
    normalization: str = "crossentropy"

    @model_validator(mode="after")
    def _known(self) -> Measure:
        if self.metric not in METRICS:
            raise NetgeomError("metric", f"unknown {self.metric!r}; allowed: {', '.join(METRICS)}")
        if self.normalization == "jacobian":  # one spelling per result: the seed's name is refused with ours
            raise NetgeomError("normalization", "'jacobian' is the smoothness seed's name for the logits' Jacobian: write logits")
        if self.normalization not in NORMALIZATIONS:
            raise NetgeomError("normalization", f"unknown {self.normalization!r}; allowed: {', '.join(NORMALIZATIONS)}")
        if self.metric == "crossentropy" and self.normalization == "target_logit":
            raise NetgeomError("normalization", "target_logit cannot be combined with metric crossentropy")
        return self

    @property
    def column(self) -> str:
        uses_map = self.metric.startswith(("jacobian", "tangent"))
        return f"{self.metric}.{self.normalization}" if uses_map else self.metric


class VolumeParams(Group):
    strategy: Literal["none", "euclidean", "geodesic"] = "none"
    perturbation: Literal["shift", "svd"] = "shift"
    directions: int = Field(4, ge=1)
    strength: int = Field(1, ge=1)
    anchors: list[int] | None = None
    cumulative: bool = False
    space: Literal["raw", "standardised"] = Field("raw", description="SVD erasure on the raw [0, 1] image (the seed) or the standardised one")
    per_point: bool = Field(False, description="also write every perturbed point's value and step length")


class SmoothnessParams(StudyGroup):
    measures: list[Measure] = Field(
        default_factory=lambda: [
            Measure(metric="jacobian_frobenius", normalization="crossentropy"),
            Measure(metric="jacobian_operator", normalization="logits"),
        ],
        min_length=1,
    )
    volume: VolumeParams = VolumeParams()
    split: Literal["train", "val", "test"] = "train"
    checkpoints: Literal["all", "final"] | list[int] = "all"
    samples: int | None = Field(None, ge=1, description="a seeded subset of the split")
    sample_seed: Seed = 0
    clean_targets: bool = False
    batch_size: int = Field(256, ge=1)
    backend: Literal["auto", "vjp", "vmap"] = Field("auto", description="auto: vmap on a GPU, vjp (input-only vector-Jacobian products) on the CPU")
    operator_method: Literal[OPERATOR_METHODS] = "gram"  # type: ignore[valid-type]
    power_iters: int = Field(300, ge=1)
    power_tol: float = Field(1e-6, ge=0, description="relative: stop when |s_k - s_k-1| <= tol * s_k")
    tangent_seed: Seed = 0
    tangent_step: float | Literal["distance"] = TANGENT_STEP
    shards: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _positive_step(self) -> SmoothnessParams:
        if isinstance(self.tangent_step, float) and self.tangent_step <= 0:
            raise NetgeomError("tangent_step", f"must be > 0 or 'distance' (got {self.tangent_step})")
        return self


PARAMS = SmoothnessParams
