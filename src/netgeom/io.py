"""Atomic file writes: write a temporary file beside the target, fsync, rename.

A crash leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from netgeom.errors import NetgeomError


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it replaces the target."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp's 0600 would make outputs private
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write(target: str | Path, write: Callable[[Path], Any]) -> Path:
    with atomic_path(target) as tmp:
        write(tmp)
    return Path(target)


def atomic_write_text(target: str | Path, text: str) -> Path:
    return atomic_write(target, lambda p: p.write_text(text))


def atomic_write_json(target: str | Path, payload: Any) -> Path:
    return atomic_write_text(target, json.dumps(payload, indent=2, sort_keys=True, default=_jsonable) + "\n")


def atomic_save_npy(target: str | Path, array: np.ndarray) -> Path:
    def write(path: Path) -> None:
        with open(path, "wb") as handle:
            np.save(handle, array, allow_pickle=False)

    return atomic_write(target, write)


def atomic_write_parquet(target: str | Path, frame) -> Path:
    return atomic_write(target, lambda p: frame.to_parquet(p, index=False))


TABLE_SUFFIXES = (".csv", ".parquet")


def check_table_path(path: str | Path, key: str = "out") -> Path:
    """`path` if it names a .csv or .parquet file, else NetgeomError(key) (checked before any work)."""
    path = Path(path)
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise NetgeomError(key, f"{path}: the file name must end in {' or '.join(TABLE_SUFFIXES)}")
    return path


def atomic_write_table(target: str | Path, frame) -> Path:
    """A DataFrame as .csv or .parquet, by the file's suffix."""
    if check_table_path(target).suffix.lower() == ".csv":
        return atomic_write(target, lambda p: frame.to_csv(p, index=False))
    return atomic_write_parquet(target, frame)


def replace_dir(source: Path, target: Path) -> None:
    """Move a finished folder into place, replacing any previous one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    os.replace(source, target)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
