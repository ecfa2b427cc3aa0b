"""What a study declares: its registry record.

A study is one line in `stages/registry.py`; its params module `netgeom.groups.<name>` provides

    PARAMS                      the typed params group (a `Group`: unknown keys are errors)

(kept light, importing no torch, so that validating params costs a command's start-up nothing),
its stage module `netgeom.stages.<name>` provides

    run(params, layout, cell, shard) -> Summary | None      scope "run": one stage per grid cell
    run(params, layout) -> Summary                         scope "grid": one stage over the grid
    describe(summary) -> str    the line the CLI prints
and its report module `netgeom.report.<name>` (kept apart so that figure code is not a code
dependency of the study's stages) provides

    report(context) -> list[Figure]   its tables and figures, with captions, in the report
    metrics(context) -> {noise_key: {name: value}}   (optional) headline numbers for summary.json

From that the CLI command, the DVC stage (code dependencies included), params validation and
the report loop are generated; nothing else names a study.

The summary file every study writes is `netgeom.summary`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Study:
    """One registry line: the study's name (its params group, CLI command, DVC stage, folder under
    artifacts/studies/, params module `netgeom.groups.<name>`, stage module `netgeom.stages.<name>` and report module
    `netgeom.report.<name>`), and how the pipeline runs it."""

    name: str
    # one stage per grid cell (matrix), one over the grid, or the module's own stages and commands
    # (`dvc_stages(code_deps)` in the stage module, a typer app in `netgeom.cli_<name>`: typer lives only in the cli modules)
    scope: Literal["run", "grid", "custom"]
    help: str
    shards: bool = False  # the stage takes --shard i/n
    reads: tuple[str, ...] = ()  # pipeline outputs it reads: "runs" (grid scope), "labels", "splits"; "inits" (the inits/ folder)
    params_deps: tuple[str, ...] = ()  # params read besides its own group (e.g. "seed")
    data: bool = False  # reads the raw data under data/ (its DVC dep is split.json, which records the data's digest)
    needs: tuple[str, ...] = ()  # what it needs of model and data (netgeom.groups.requirements), checked by `check`

    @property
    def params(self) -> str:
        return f"netgeom.groups.{self.name}"

    @property
    def module(self) -> str:
        return f"netgeom.stages.{self.name}"

    @property
    def report(self) -> str:
        return f"netgeom.report.{self.name}"

    @property
    def cli(self) -> str:
        return f"netgeom.cli_{self.name}"
