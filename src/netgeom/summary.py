"""The one summary layout every study writes (summary.json), read by the report and the sync.

Summary layout (summary.json): {"<epoch>": {"samples": n, "noisy": k, "<measure>": {"all": v,
"clean": v, "noisy": v}}, "<extra>": ...}: per checkpoint epoch, each measure's mean over all,
clean and noisy samples (None where a group is empty), plus study-specific extras (keys that are
not epochs, e.g. regions' per-logit statistics).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netgeom.errors import NetgeomError
from netgeom.io import atomic_write_json, read_json_object
from netgeom.layout import Layout

GROUPS = ("all", "clean", "noisy")
COUNT_KEYS = ("samples", "noisy")


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


def write_skipped(layout: Layout, folder: Path, name: str) -> Summary:
    """The output of a switched-off study: a summary that says so (DVC expects the folder), in
    place of the whole folder (no earlier result is left beside it)."""
    summary = Summary(extra={"skipped": f"{name}.enabled is false"})
    with layout.building(folder) as out:
        write_summary(out, summary)
    return summary


def write_summary(folder: Path, summary: Summary) -> Path:
    return atomic_write_json(Path(folder) / "summary.json", summary.to_json())


def read_summary(folder: Path) -> Summary:
    path = Path(folder) / "summary.json"
    return Summary.from_json(read_json_object(path), source=str(path))
