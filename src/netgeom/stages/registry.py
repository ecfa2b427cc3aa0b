"""The study registry: one line per study. Adding a study is its stage module plus one line here.

The CLI commands, the DVC stages (`netgeom pipeline`), params validation and the report loop
are generated from this list (see `stages/study.py` for what a stage module provides). Modules
are imported on use, so naming a study here costs a command's start-up nothing.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from netgeom.errors import NetgeomError
from netgeom.stages.study import Study

STUDIES: tuple[Study, ...] = (
    Study("smoothness", "run", "Input-Jacobian norms (and volumes) around the training points.",
          shards=True, reads=("labels", "splits"), data=True),
    Study("regions", "run", "Exact linear regions along closed paths around data points.",
          shards=True, reads=("labels", "splits"), data=True, needs=("piecewise_linear", "no_max_pool", "spatial_input")),
    Study("interpolation", "run", "The loss along the line from init to the final weights (MLI).",
          reads=("labels", "splits"), params_deps=("seed",), data=True),
    Study("hyperplanes", "run", "Bias of the hyperplanes the filters draw (projections on the diagonal) at every checkpoint.",
          needs=("hyperplane_layers",)),
    Study("reinit", "run", "Accuracy with one layer at a time reset to an earlier checkpoint or a fresh draw.",
          reads=("labels", "splits", "inits"), data=True),
    Study("curvature", "run", "Hessian of the training loss (top eigenvalues, trace, spectral density) and the loss surface around the weights.",
          reads=("labels", "splits"), data=True),
    Study("star", "custom", "The star domain: is one model linearly connected to every independently trained one?"),
    Study("barriers", "grid", "Loss barriers between seed replicates, with and without weight matching.",
          reads=("runs", "labels", "splits"), params_deps=("seed", "grid", "interpolation"), data=True),
    Study("mli", "grid", "SGD vs Adam x BN: the fraction of non-monotonic init->final curves.",
          reads=("splits",), params_deps=("data", "train.batch_size"), data=True),
)


def study(name: str) -> Study:
    for entry in STUDIES:
        if entry.name == name:
            return entry
    raise NetgeomError("study", f"unknown {name!r}; known: {', '.join(s.name for s in STUDIES)}")


def stage_module(entry: Study) -> ModuleType:
    return importlib.import_module(entry.module)


def params_module(entry: Study) -> ModuleType:
    """The study's params group `PARAMS` (a light module: no torch)."""
    return importlib.import_module(entry.params)


def report_module(entry: Study) -> ModuleType:
    """The study's part of the report: `report(context)`, optional `metrics(context)`."""
    return importlib.import_module(entry.report)
