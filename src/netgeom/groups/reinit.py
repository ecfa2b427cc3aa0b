"""The `reinit` params group: which layers are reset to which checkpoints, evaluated on which split.

Kept apart from the stage so that validating params (`netgeom check`, every command's start)
imports no torch: the stage module `netgeom.stages.reinit` imports this group.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from netgeom.errors import NetgeomError
from netgeom.layout import in_dependency
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


def init_paths(named: list[str], root: Path, key: str = "reinit.inits_from", within: Path | None = None) -> list[Path]:
    """The weight files `reinit.inits_from` names (paths relative to `root`; a .txt file lists
    one path per line, blank lines and # comments skipped). With `within`, every file (a .txt
    list and what it lists) must lie in that folder. Torch-free, so `check` runs it too."""
    paths: list[Path] = []
    for entry in named:
        path = _inside(root / entry, within, key)
        if path.suffix == ".txt":
            if not path.is_file():
                raise NetgeomError(key, f"no such file: {path}")
            lines = [line.strip() for line in path.read_text().splitlines()]
            paths += [_inside(root / line, within, key) for line in lines if line and not line.startswith("#")]
        else:
            paths.append(path)
    stems = [path.stem for path in paths]
    if twice := sorted({stem for stem in stems if stems.count(stem) > 1}):
        raise NetgeomError(key, f"two files named {twice[0]}: give each a distinct file name")
    if missing := [path for path in paths if not path.is_file()]:
        raise NetgeomError(key, f"no such file: {missing[0]}")
    return paths


def _inside(path: Path, folder: Path | None, key: str) -> Path:
    return path if folder is None else in_dependency(path, folder, key, "reinit stages")


PARAMS = ReinitParams
