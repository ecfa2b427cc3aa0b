"""Stage `check`: validate every params group and create the MLflow store, before any other work.

DVC reruns a stage only when its own params change, so a typo in a group no stage depends on
(or in a study group whose stages are up to date) would pass `dvc exp run` silently. This stage
depends on the whole params file: any change reruns it, and a bad value stops the pipeline with
one line naming the key (loading params validates every group, studies' included). An enabled
study that cannot run on the configured model or data (what its registry entry `needs`, e.g. the
exact region walk on a tanh or max-pooling net) stops it here too, in one line that says why and
how to switch the study off, rather than in the middle of `dvc repro`. It also creates the MLflow
store once, before stages run in parallel.
"""

from __future__ import annotations

from netgeom.errors import NetgeomError
from netgeom.layout import Layout
from netgeom.params import Params


def run_check(params: Params, layout: Layout) -> list[str]:
    """The params groups that were validated; the MLflow store exists afterwards (if enabled).
    Imports no torch, and no mlflow once the store holds the experiment."""
    from netgeom.groups.requirements import unmet
    from netgeom.groups.star import check_cell
    from netgeom.stages.registry import STUDIES
    from netgeom.store import experiment_ready

    for entry in STUDIES:  # a switched-off study's settings need not fit the model or the grid
        if getattr(params, entry.name).enabled and (reason := unmet(entry.name, entry.needs, params)):
            raise NetgeomError(f"{entry.name}.enabled", reason)
    if params.star.enabled:
        check_cell(params)  # the one check across groups
    if params.mlflow.enabled and not experiment_ready(layout, params.mlflow.experiment):
        from netgeom import tracking

        tracking.connect(layout, params.mlflow.experiment)
    return sorted(type(params).model_fields)
