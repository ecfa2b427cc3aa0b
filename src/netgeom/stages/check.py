"""Stage `check`: validate every params group and create the MLflow store, before any other work.

DVC reruns a stage only when its own params change, so a typo in a group no stage depends on
(or in a study group whose stages are up to date) would pass `dvc exp run` silently. This stage
depends on the whole params file: any change reruns it, and a bad value stops the pipeline with
one line naming the key (loading params validates every group, studies' included). It also
creates the MLflow store once, before stages run in parallel.
"""

from __future__ import annotations

from netgeom.layout import Layout
from netgeom.params import Params


def run_check(params: Params, layout: Layout) -> list[str]:
    """The params groups that were validated; the MLflow store exists afterwards (if enabled).
    Imports no torch, and no mlflow once the store holds the experiment."""
    from netgeom.groups.star import check_cell
    from netgeom.store import experiment_ready

    if params.star.enabled:  # a switched-off study's settings need not fit the grid
        check_cell(params)  # the one check across groups
    if params.mlflow.enabled and not experiment_ready(layout, params.mlflow.experiment):
        from netgeom import tracking

        tracking.connect(layout, params.mlflow.experiment)
    return sorted(type(params).model_fields)
