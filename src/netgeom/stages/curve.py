"""`netgeom curve A B` (ad hoc, not a DVC stage): the loss and accuracy on the line between any
two checkpoints of trained runs, endpoints evaluated directly, optionally after weight matching."""

from __future__ import annotations

import pandas as pd
import torch

from netgeom.errors import NetgeomError
from netgeom.layout import Layout
from netgeom.params import DataParams, NoiseParams, Params, validate
from netgeom.runs import Run, load_cell_data, load_state, model_for_run, open_run, study_device
from netgeom.groups.interpolation import InterpolationParams
from netgeom.stages.interpolation import barrier_curve, calibration, summarise_curve
from netgeom.studies import weight_space as ws
from netgeom.studies.alignment import align
from netgeom.studies.interpolation import check_same_architecture


def checkpoint_of(layout: Layout, spec: str, device: torch.device | None = None) -> tuple[Run, dict[str, torch.Tensor]]:
    """`run` or `run@epoch` (epoch: init, final or a checkpointed epoch) -> (run, state)."""
    name, _, which = spec.partition("@")
    run = open_run(layout, name)
    if which in ("", "final"):
        path = run.final_checkpoint()
    elif which == "init":
        path = run.init_checkpoint()
    else:
        try:
            epoch = int(which)
        except ValueError:
            raise NetgeomError("checkpoint", f"{spec!r}: after '@' give init, final or an epoch number") from None
        saved = dict(run.checkpoints)
        if epoch not in saved:
            raise NetgeomError("checkpoint", f"{run.name} has no checkpoint at epoch {epoch}; saved: {sorted(saved)}")
        path = saved[epoch]
    return run, load_state(path, device, fits=model_for_run(run.info))


def run_curve(
    params: Params, layout: Layout, spec_a: str, spec_b: str, *, points: int | None = None, bn: str | None = None, match: bool = False
) -> tuple[pd.DataFrame, dict[str, float]]:
    """The curve between two checkpoints on run A's data (params.yaml's split, A's noise level)."""
    overrides = {k: v for k, v in {"points": points, "bn": bn}.items() if v is not None}
    try:
        p = validate({**params.interpolation.model_dump(), **overrides}, InterpolationParams, prefix="interpolation.")
    except NetgeomError as error:  # a bad --points or --bn is the option's fault, not params.yaml's
        option = next((f"--{k}" for k in overrides if error.key == f"interpolation.{k}"), None)
        raise (NetgeomError(option, error.problem) if option else error) from None
    device = study_device(params)
    run_a, state_a = checkpoint_of(layout, spec_a, device)
    run_b, state_b = checkpoint_of(layout, spec_b, device)
    check_same_architecture(state_a, state_b)
    for run in (run_a, run_b):
        if DataParams.model_validate(run.info["params"]["data"]) != params.data:
            raise NetgeomError("curve.runs", f"{run.name} was trained on other data than params.yaml's `data` group")
    noise = NoiseParams.model_validate(run_a.info["params"]["noise"])
    data = load_cell_data(params.model_copy(update={"noise": noise}), layout, device)
    model = model_for_run(run_a.info, device=device)
    if match:
        state_b = align(model, state_a, state_b, calibration_inputs=calibration(data, p), bn_batch_size=p.bn_batch_size, seed=params.seed).state
    curve = barrier_curve(model, state_a, state_b, data, p)
    summary = summarise_curve(curve, p.tol)
    summary["distance"] = ws.weight_distance(state_a, state_b)
    return curve, summary
