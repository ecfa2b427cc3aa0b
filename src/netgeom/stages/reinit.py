"""Stage `reinit`: which layers of a trained run can be reset to an earlier value (Zhang et al.)?

For each layer with parameters and each saved checkpoint epoch (plus `rand`, a fresh draw from
the model's own initialiser), the layer is reset in the final model and top-1 accuracy and loss
are measured on a split, prefix activations cached per layer. BN runs in eval mode with the
trained model's statistics (`reset_bn` also resets the BN right after the layer). On the
training split the sweep runs on clean and noisy samples separately too.

Writes artifacts/studies/reinit/<run>/: reinit.parquet (layer, position, checkpoint, epoch,
accuracy, loss, trained_accuracy, relative_drop, group) and summary.json (per reset source: the
mean and largest relative drop over layers, by group).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from netgeom.errors import NetgeomError
from netgeom.groups.reinit import ReinitParams, init_paths
from netgeom.io import atomic_write_parquet
from netgeom.layout import Layout
from netgeom.models.pretrained import read_state_dict
from netgeom.params import Params
from netgeom.runs import (
    Cell,
    cell_run,
    load_run_data,
    load_state,
    model_for_run,
    study_device,
)
from netgeom.studies.reinit import reinit_sweep
from netgeom.summary import Summary, write_summary


def _evaluation_groups(data, p: ReinitParams) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(x, y) per group: all samples, and on the training split its clean and noisy ones."""
    cap = slice(None, p.samples)
    if p.split != "train":
        x, y = data.eval_sets().get(p.split, (None, None))
        if x is None:
            raise NetgeomError("reinit.split", f"the {p.split} split is empty; use train or test")
        return {"all": (x[cap], y[cap])}
    t = data.train
    x, y, noisy = t.x[cap], t.y[cap], t.is_noisy[cap]
    groups = {"all": (x, y), "clean": (x[~noisy], y[~noisy])}
    if noisy.any():
        groups["noisy"] = (x[noisy], y[noisy])
    return groups


def init_files(named: list[str], root: Path, device, key: str = "reinit.inits_from", within: Path | None = None) -> dict[str, dict]:
    """`reinit.inits_from`: {"file:<stem>": state dict} of each weight file `init_paths` finds,
    read without executing code; one line naming the file (and `key`) for anything else."""
    return {f"file:{path.stem}": {k: v.to(device) for k, v in read_state_dict(path, key=key).items()}
            for path in init_paths(named, root, key, within)}


def run(params: Params, layout: Layout, cell: Cell) -> Summary:
    p: ReinitParams = params.reinit
    params, source = cell_run(params, layout, cell)
    name = source.name
    checkpoints = source.checkpoints
    final_epoch, final_path = checkpoints[-1]
    earlier = {epoch: path for epoch, path in checkpoints[:-1]}
    wanted = p.epochs if p.epochs is not None else sorted(earlier)
    missing = [e for e in wanted if e not in earlier]
    if missing:
        raise NetgeomError("reinit.epochs", f"{name} saved no checkpoint at epochs {missing} before its final one; have {sorted(earlier)}")
    device = study_device(params)
    model = model_for_run(source.info, device=device)
    states = {epoch: load_state(earlier[epoch], device, fits=model) for epoch in wanted}
    trained = load_state(final_path, device, fits=model)
    data = load_run_data(params, layout, source, device=device)
    files = init_files(p.inits_from, layout.root, device, within=layout.inits)
    frames = []
    for group, (x, y) in _evaluation_groups(data, p).items():
        table = reinit_sweep(
            model, trained, states, x, y, layers=p.layers, make_model=lambda: model_for_run(source.info),
            rand_seed=p.rand_seed if p.rand else None, reset_bn=p.reset_bn, batch_size=p.batch_size, layer_kinds=p.layer_kinds,
            extra_sources=files,
        )
        frames.append(table.assign(group=group))
    table = pd.concat(frames, ignore_index=True)
    summary = Summary()
    measures: dict[str, dict[str, float]] = {}
    for (checkpoint, group), rows in table.groupby(["checkpoint", "group"], sort=False):
        source_name = "rand" if checkpoint == "rand" else f"e{int(checkpoint)}" if checkpoint.isdigit() else checkpoint.replace(":", "_").replace(".", "_")
        measures.setdefault(f"drop_mean.{source_name}", {})[group] = float(rows["relative_drop"].mean())
        measures.setdefault(f"drop_max.{source_name}", {})[group] = float(rows["relative_drop"].max())
    summary.epochs[final_epoch] = measures
    with layout.building(layout.study_dir("reinit", name)) as out:
        atomic_write_parquet(out / "reinit.parquet", table)
        write_summary(out, summary)
    return summary


def describe(summary: Summary) -> str:
    final = summary.final()
    largest = {k.removeprefix("drop_max."): v["all"] for k, v in final.items() if k.startswith("drop_max.")}
    return "reinit: largest relative accuracy drop over layers by reset source: " + ", ".join(f"{k} {v:.3f}" for k, v in largest.items())
