"""The live processes as Linux's /proc shows them, for tests that check what a command left running."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Process:
    pid: int
    parent: int
    group: int
    cwd: Path | None    # None where it cannot be read (another user's process)
    argv: tuple[str, ...]

    def works_in(self, root: Path) -> bool:
        return self.cwd is not None and self.cwd.is_relative_to(root)


def live_processes() -> list[Process]:
    """Every process alive now, zombies excepted (and ones that exit while they are read)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # the fields after "(comm)": comm itself may hold spaces and parentheses
            state, parent, group = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:3]
            argv = tuple((entry / "cmdline").read_bytes().decode(errors="replace").split("\0")[:-1])
        except (OSError, ValueError):
            continue
        if state == "Z":
            continue
        try:
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:
            cwd = None
        found.append(Process(int(entry.name), int(parent), int(group), cwd, argv))
    return found
