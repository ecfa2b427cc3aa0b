"""The hyperplane statistics of one model outside any training run (the hp_arrangements seed's
`--pretrained`): an off-the-shelf architecture with weights from a local file (e.g. an ImageNet
checkpoint for tv_resnet18, input 3x224x224, 1,000 classes), or at a seeded random
initialisation only. The projections depend on the weights alone, so no data is read.

Writes layers.parquet (per layer), network.parquet (pooled) and projections.parquet (per filter)
plus model.json (what was measured) into one folder, published whole.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from netgeom.errors import NetgeomError
from netgeom.io import atomic_write_json, atomic_write_parquet, building_dir
from netgeom.layout import Layout
from netgeom.models import create_model
from netgeom.studies.hyperplanes import evolution_tables, projection_table


def default_folder(layout: Layout, arch: str, pretrained: Path | None, seed: int) -> Path:
    source = f"file-{Path(pretrained).stem}" if pretrained else f"init-s{seed}"
    return layout.model_study_dir("hyperplanes", f"{arch}-{source}")


def model_hyperplanes(
    arch: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    out: Path,
    *,
    pretrained: Path | None = None,
    seed: int = 0,
    with_linear: bool = False,
    options: dict | None = None,
) -> pd.DataFrame:
    """Measure `arch` (netgeom's model registry, tv_* for torchvision's) and write `out`;
    returns the pooled (network) table. The init is torch.manual_seed(seed) then the family's
    own initialisation; `pretrained` replaces every tensor (never executing code)."""
    if pretrained is not None and not Path(pretrained).is_file():
        raise NetgeomError("--pretrained", f"no such file: {pretrained}")
    torch.manual_seed(seed)
    model = create_model(arch, tuple(input_shape), num_classes, **(options or {}), **({"pretrained": str(pretrained)} if pretrained else {}))
    state = {k: v.detach() for k, v in model.state_dict().items()}
    try:
        layers, network = evolution_tables(model, {0: state}, init_epoch=None, with_linear=with_linear)
    except NetgeomError as exc:
        if exc.key != "hyperplanes.with_linear":
            raise
        raise NetgeomError("--with-linear", f"{arch} has no convolution with a kernel larger than 1: add --with-linear to measure its linear layers") from None
    projections = projection_table(model, state, with_linear=with_linear)
    out = Path(out)
    with building_dir(out, out.with_name(f".{out.name}.staging"), out.with_name(f".{out.name}.trash")) as staging:
        atomic_write_parquet(staging / "layers.parquet", layers.drop(columns=["epoch"], errors="ignore"))
        atomic_write_parquet(staging / "network.parquet", network.drop(columns=["epoch"], errors="ignore"))
        atomic_write_parquet(staging / "projections.parquet", projections)
        atomic_write_json(staging / "model.json", {
            "arch": arch, "input_shape": list(input_shape), "num_classes": num_classes, "with_linear": with_linear,
            "weights": str(pretrained) if pretrained else f"random init, seed {seed}", "options": options or {},
        })
    return network
