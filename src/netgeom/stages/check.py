"""Stage `check`: validate every params group and the MLflow store, before any other work.

DVC reruns a stage only when its own params change, so a typo in a group no stage depends on
(or in a study group whose stages are up to date) would pass `dvc exp run` silently. This stage
depends on the whole params file: any change reruns it, and a bad value stops the pipeline with
one line naming the key (loading params validates every group, studies' included). An enabled
study that cannot run on the configured model or data (what its registry entry `needs`, e.g. the
exact region walk on a tanh or max-pooling net) stops it here too, in one line that says why and
how to switch the study off, rather than in the middle of `dvc repro`. It also refuses a corrupt
local MLflow store and asks a tracking server for the experiment, so neither fails after hours of
training. A local store that does not exist yet is left to its first writer (the report stage,
`netgeom mlflow sync`), which creates it under the store lock: creating it here imported mlflow
and ran its migrations (about 5 s) on the one stage every other stage waits for.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from netgeom.errors import NetgeomError
from netgeom.layout import Layout
from netgeom.params import Params, checkpoint_epochs


def run_check(params: Params, layout: Layout, written: set[str] | None = None) -> list[str]:
    """The params groups that were validated. `written`: the top-level keys the params file holds
    (checked against what dvc.yaml's stages list). Imports no torch, and no mlflow unless a
    tracking server is configured."""
    from netgeom.groups.reinit import init_paths
    from netgeom.groups.requirements import unmet
    from netgeom.groups.star import check_cell
    from netgeom.stages.registry import STUDIES
    from netgeom.store import experiment_ready, is_local_store

    if written is not None:
        check_listed_groups(written, layout)
    if params.reinit.enabled:  # the stages would refuse these only after training
        init_paths(params.reinit.inits_from, layout.root, within=layout.inits)
    for entry in STUDIES:  # a switched-off study's settings need not fit the model or the grid
        if getattr(params, entry.name).enabled and (reason := unmet(entry.name, entry.needs, params)):
            raise NetgeomError(f"{entry.name}.enabled", reason)
        check_checkpoints(params, entry.name)
    if params.model.pretrained:
        layout.pretrained_file(params.model.pretrained)
    check_cell(params)  # the one check across groups; the star stages need the labels even when switched off
    check_machine(params)
    check_data(params, layout)
    if params.mlflow.enabled and is_local_store(layout):
        experiment_ready(layout, params.mlflow.experiment)  # sqlite3 alone: a corrupt store is one line
    elif params.mlflow.enabled:  # a tracking server: unreachable or refusing is one line now, not after training
        from netgeom import tracking

        tracking.connect(layout, params.mlflow.experiment)
    return sorted(type(params).model_fields)


def check_listed_groups(written: set[str], layout: Layout) -> None:
    """Every params group a DVC stage lists must be written in the params file: validation fills a
    missing group with its defaults, but DVC stops every stage that lists it (`deleted: train`)."""
    import yaml

    try:
        stages = (yaml.safe_load((layout.root / "dvc.yaml").read_text()) or {}).get("stages") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        return  # no pipeline here (a command run outside the repository), or DVC will say what is wrong
    listed = {entry.split(".")[0] for stage in stages.values() if isinstance(stage, dict)
              for entry in stage.get("params") or [] if isinstance(entry, str)}
    if missing := sorted(listed - written):
        raise NetgeomError(
            missing[0], "is missing from params.yaml, and DVC stages list it (dvc.yaml): DVC would stop them; "
            "put the group back (`git show HEAD:params.yaml` has it)"
        )


def check_checkpoints(params: Params, study: str) -> None:
    """An enabled study's listed checkpoint epochs must be ones training saves."""
    group = getattr(params, study)
    wanted = getattr(group, "checkpoints", None)
    if not group.enabled or not isinstance(wanted, list):
        return
    scheduled = checkpoint_epochs(params.train)
    missing = [e for e in wanted if e not in scheduled]
    if missing:
        raise NetgeomError(
            f"{study}.checkpoints", f"epochs {missing} are not saved by training; the saved ones are {scheduled} (train.checkpoints, train.epochs)"
        )


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def visible_nvidia_gpus() -> int | None:
    """NVIDIA GPUs the driver lists, less any hidden by CUDA_VISIBLE_DEVICES; None where this
    cannot be told without torch (not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    gpus = Path("/proc/driver/nvidia/gpus")
    count = len(list(gpus.iterdir())) if gpus.is_dir() else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        count = min(count, len([d for d in visible.split(",") if d.strip() and not d.strip().startswith("-")]))
    return count


def check_machine(params: Params) -> None:
    """What only this machine can tell: the cores for `execution.threads`, the GPU for
    `execution.device: cuda[:N]` (light: read from the driver, no torch)."""
    cores = usable_cores()
    if params.execution.threads > cores:
        raise NetgeomError("execution.threads", f"{params.execution.threads} exceeds the {cores} cores this process may use")
    device = params.execution.device
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        gpus = visible_nvidia_gpus()
        if gpus is not None and index >= gpus:
            found = f"{gpus} visible NVIDIA GPU{'s' if gpus != 1 else ''}" if gpus else "no visible NVIDIA GPU"
            raise NetgeomError("execution.device", f"{device} asked for, but this machine has {found}; use auto or cpu")


def check_data(params: Params, layout: Layout) -> None:
    """The dataset's files under `data.root`, where their names tell (no torch: the sources
    import none); a dataset told only by reading its files is left to the split stage."""
    from netgeom.data import get_source

    source = get_source(params.data.name, params.data)
    keep, has = params.data.classes, source.info.num_classes
    if keep is not None and keep > has:  # split would refuse it too, after check had passed it
        raise NetgeomError("data.classes", f"asks for {keep} classes but {params.data.name} has {has}")
    root = layout.data_root(params.data.root)
    if source.files_present(root) is False:
        name = params.data.name
        raise NetgeomError(
            "data.root", f"{name} is not under {source.where(root)}; `make data` writes the embedded datasets, "
            f"`netgeom data fetch {name}` (or `make {name.replace('_', '-')}`) the others"
        )
