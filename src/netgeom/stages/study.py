"""What a study stage declares, and the one summary layout every study writes.

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

Summary layout (summary.json): {"<epoch>": {"samples": n, "noisy": k, "<measure>": {"all": v,
"clean": v, "noisy": v}}, "<extra>": ...}: per checkpoint epoch, each measure's mean over all,
clean and noisy samples (None where a group is empty), plus study-specific extras (keys that are
not epochs, e.g. regions' per-logit statistics).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from netgeom.errors import NetgeomError
from netgeom.io import atomic_write_json, read_json_object

GROUPS = ("all", "clean", "noisy")
COUNT_KEYS = ("samples", "noisy")


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
    reads: tuple[str, ...] = ()  # pipeline outputs it reads: "runs" (grid scope), "labels", "splits"
    params_deps: tuple[str, ...] = ()  # params read besides its own group (e.g. "seed")
    data: bool = False  # reads the raw data under data/
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


@dataclass
class Summary:
    """A study's summary.json: per epoch, per measure, the means over all/clean/noisy samples."""

    epochs: dict[int, dict[str, dict[str, float | None]]] = field(default_factory=dict)
    counts: dict[int, dict[str, int]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def final(self) -> dict[str, dict[str, float | None]]:
        return self.epochs[max(self.epochs)] if self.epochs else {}

    def metrics(self) -> dict[int, dict[str, float]]:
        """{epoch: {"measure.group": value}} of the finite values (what MLflow gets)."""
        return {
            epoch: {f"{m}.{g}": v for m, groups in measures.items() for g, v in groups.items() if v is not None and math.isfinite(v)}
            for epoch, measures in self.epochs.items()
        }

    def to_json(self) -> dict[str, Any]:
        payload: dict[str, Any] = {}
        for epoch in sorted(self.epochs):
            payload[str(epoch)] = {**self.counts.get(epoch, {}), **self.epochs[epoch]}
        return {**payload, **self.extra}

    @classmethod
    def from_json(cls, payload: Any, source: str = "summary") -> Summary:
        if not isinstance(payload, dict):
            raise NetgeomError(source, "must hold a JSON object")
        summary = cls()
        for key, entry in payload.items():
            if not key.isdigit():
                summary.extra[key] = entry
                continue
            if not isinstance(entry, dict):
                raise NetgeomError(source, f"epoch {key} must map measures to values")
            epoch = int(key)
            summary.counts[epoch] = {k: v for k, v in entry.items() if k in COUNT_KEYS}
            measures = {}
            for measure, groups in entry.items():
                if measure in COUNT_KEYS:
                    continue
                if not isinstance(groups, dict) or not set(groups) <= set(GROUPS) or not all(
                    v is None or isinstance(v, (int, float)) for v in groups.values()
                ):
                    raise NetgeomError(source, f"epoch {key}, {measure}: expected numbers by {'/'.join(GROUPS)}")
                measures[measure] = {g: (None if v is None else float(v)) for g, v in groups.items()}
            summary.epochs[epoch] = measures
        return summary


def write_skipped(folder: Path, name: str) -> Summary:
    """The output of a switched-off study: a summary that says so (DVC expects the folder)."""
    summary = Summary(extra={"skipped": f"{name}.enabled is false"})
    write_summary(folder, summary)
    return summary


def write_summary(folder: Path, summary: Summary) -> Path:
    return atomic_write_json(Path(folder) / "summary.json", summary.to_json())


def read_summary(folder: Path) -> Summary:
    path = Path(folder) / "summary.json"
    return Summary.from_json(read_json_object(path), source=str(path))
