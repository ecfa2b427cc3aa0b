"""What the warm forkserver imports once (see netgeom.repro.warm): the modules every stage process
would otherwise import cold. Importing only: no torch operation runs here."""

import pandas  # noqa: F401
import torch  # noqa: F401

import netgeom.cli  # noqa: F401  (typer, pydantic, the params groups)
import netgeom.runs  # noqa: F401  (models, data bundles, checkpoints: every study stage reads a run)
