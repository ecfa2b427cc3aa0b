"""How long each stage's command took last time, for the order in which ready stages start."""

from __future__ import annotations

import json
import os
from pathlib import Path

DURATIONS = Path(".netgeom") / "durations.json"


class Durations:
    """How long each stage's command took last time (.netgeom/durations.json), for priorities.

    Ready stages start longest-remaining-path first (the stage's own expected time plus the
    longest chain of expected times below it), as build tools with a build log do: a long stage
    with few dependents (a whole sweep in one stage) no longer starts last and runs alone at the
    end. Unknown stages count as the mean of their matrix/foreach group, else the median of all
    known stages, else 1 s; with no history at all this is DVC's plan order with deeper chains
    first. Priorities change only the order of starts, never what runs or what is recorded.
    """

    def __init__(self, path: Path):
        self.path = path
        try:
            data = json.loads(path.read_text())
            self.seconds = {str(k): float(v) for k, v in data.items()} if isinstance(data, dict) else {}
        except (OSError, ValueError, TypeError):
            self.seconds = {}

    def estimate(self, name: str) -> float:
        if name in self.seconds:
            return self.seconds[name]
        group = name.split("@", 1)[0] + "@"
        peers = [v for k, v in self.seconds.items() if k.startswith(group)]
        known = peers or sorted(self.seconds.values())
        if not known:
            return 1.0
        return sum(known) / len(known) if peers else known[len(known) // 2]

    def critical_paths(self, stages: list, downstream: dict) -> dict:
        """stage -> sort key: (-(expected seconds until the end through it), plan position)."""
        path: dict = {}
        for stage in reversed(stages):  # plan order has every stage after its dependencies
            below = max((path[d] for d in downstream[stage] if d in path), default=0.0)
            path[stage] = self.estimate(stage.addressing) + below
        return {stage: (-path[stage], i) for i, stage in enumerate(stages)}

    def record(self, name: str, seconds: float) -> None:
        self.seconds[name] = round(seconds, 3)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temp = self.path.with_suffix(".tmp")
            temp.write_text(json.dumps(self.seconds, indent=0, sort_keys=True))
            os.replace(temp, self.path)
        except OSError:
            pass  # priorities are a nicety; never fail a run over them
