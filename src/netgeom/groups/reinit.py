"""The `reinit` params group: which layers are reset to which checkpoints, evaluated on which split.

Kept apart from the stage so that validating params (`netgeom check`, every command's start)
imports no torch: the stage module `netgeom.stages.reinit` imports this group.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from netgeom.params import Seed, StudyGroup


class ReinitParams(StudyGroup):
    split: Literal["train", "val", "test"] = "test"
    layers: list[str] | None = Field(None, description="module paths (null: every layer of layer_kinds)")
    layer_kinds: Literal["conv_and_linear", "conv"] = Field(
        "conv_and_linear", description="with layers null: conv_and_linear, or conv only (the hp_arrangements seed's default)"
    )
    epochs: list[int] | None = Field(None, description="reset sources (null: every saved checkpoint before the final one)")
    inits_from: list[str] = Field(
        default_factory=list,
        description="weight files under inits/ (safetensors or weights-only torch.save) to reset layers to, or a .txt there listing one per line (the seed's --inits-from)",
    )
    rand: bool = True
    rand_seed: Seed = 0
    reset_bn: bool = False
    samples: int | None = Field(None, ge=1, description="the split's first n samples (null: all)")
    batch_size: int = Field(1024, ge=1)


PARAMS = ReinitParams
