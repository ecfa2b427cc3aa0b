"""Progress bars that stay quiet in CI and under `--quiet`."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")

_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    return _quiet or bool(os.environ.get("CI")) or bool(os.environ.get("NETGEOM_QUIET"))


def progress(iterable: Iterable[T], desc: str = "", total: int | None = None, **kwargs) -> Iterable[T]:
    """Wrap `iterable` in a tqdm bar unless progress output is silenced."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, disable=is_quiet(), leave=False, dynamic_ncols=True, **kwargs)


def note(message: str) -> None:
    """A one-line notice on stderr (not silenced: it reports something the user must know)."""
    print(f"netgeom: {message}", file=sys.stderr, flush=True)
