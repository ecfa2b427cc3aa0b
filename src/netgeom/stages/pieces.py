"""Pieces of a study's result that survive a crash.

DVC deletes a stage's outputs before it re-runs the stage, so pieces finished before a crash
would be lost with them. They are computed into a staging folder outside the outputs instead,
each written whole as it finishes, kept only for the identity they were computed for (a manifest
beside them), and copied into the outputs once all are there; the staging folder goes last, so a
crash anywhere leaves every finished piece somewhere.
"""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path

from netgeom.errors import NetgeomError
from netgeom.io import atomic_write, atomic_write_json, is_unfinished_write, read_json
from netgeom.progress import note

MANIFEST = "identity.json"


def keep_pieces_of(folder: Path, identity: dict, *, manifest: str = MANIFEST, pattern: str = "*") -> bool:
    """Make `folder` hold only pieces (files matching `pattern`) computed for `identity`: those of
    anything else (another run, setting or code) are removed first and the manifest rewritten.
    True when the pieces there were kept. An unreadable manifest is a lost cache, not a result:
    say so in one line and start over."""
    folder.mkdir(parents=True, exist_ok=True)
    for unfinished in filter(is_unfinished_write, folder.iterdir()):  # a write a kill cut short
        unfinished.unlink()
    recorded = folder / manifest
    try:
        if recorded.exists() and read_json(recorded) == identity:
            return True
    except NetgeomError as exc:
        note(f"{exc}; computing its pieces again")
    for stale in folder.glob(pattern):
        if stale.name != manifest and stale.is_file():
            stale.unlink()
    atomic_write_json(recorded, identity)
    return False


def publish_pieces(staging: Path, folder: Path, *, manifest: str = MANIFEST) -> None:
    """Copy every staged piece into `folder` (each file atomically), then remove the staging folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for piece in sorted(staging.iterdir()):
        if piece.is_file() and piece.name != manifest and not is_unfinished_write(piece):
            atomic_write(folder / piece.name, partial(shutil.copyfile, piece))
    shutil.rmtree(staging)
