"""What the warm forkserver imports once (see netgeom.repro.warm): the modules the stage processes
would otherwise each import cold. Importing only: no torch operation runs here."""

import pandas  # noqa: F401
import torch  # noqa: F401
import torch._dynamo  # noqa: F401  (torch.func's forward-mode AD imports it on first use: ~1 s)

import netgeom.cli  # noqa: F401  (typer, pydantic, the params groups)
import netgeom.runs  # noqa: F401  (models, data bundles, checkpoints: every study stage reads a run)
from netgeom.stages.registry import STUDIES, stage_module

for _entry in STUDIES:  # each study's stage module and the studies it computes with
    stage_module(_entry)
