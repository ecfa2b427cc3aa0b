"""Progress bars that stay quiet in CI, under `--quiet`, and where nobody watches them.

A bar shows by default only when stderr is a terminal or the code runs in a Jupyter/IPython
kernel (whose stderr is no terminal, yet renders bars), and never under `--quiet` or with the
`CI` or `NETGEOM_QUIET` environment variable set. An explicit `enabled=True`/`False` (the
`progress=` keyword of the study functions) wins over all of that.
"""

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


def in_notebook() -> bool:
    """Running inside a Jupyter/IPython kernel (not a plain IPython terminal)."""
    # Never imported here: a kernel has imported IPython long before any bar is drawn.
    get_ipython = getattr(sys.modules.get("IPython"), "get_ipython", None)
    shell = get_ipython() if callable(get_ipython) else None
    return getattr(shell, "kernel", None) is not None


def _stderr_is_terminal() -> bool:
    try:
        return bool(sys.stderr is not None and sys.stderr.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def shows_progress(enabled: bool | None = None) -> bool:
    """Whether a bar is drawn: `enabled` when given, else not quiet (`is_quiet`) and watched
    (stderr is a terminal, or a notebook kernel)."""
    if enabled is not None:
        return bool(enabled)
    return not is_quiet() and (_stderr_is_terminal() or in_notebook())


def progress(
    iterable: Iterable[T],
    desc: str = "",
    total: int | None = None,
    enabled: bool | None = None,
    **kwargs,
) -> Iterable[T]:
    """Wrap `iterable` in a tqdm bar; `enabled` None decides by `shows_progress`."""
    from tqdm.auto import tqdm

    disable = not shows_progress(enabled)
    return tqdm(
        iterable,
        desc=desc,
        total=total,
        disable=disable,
        leave=False,
        dynamic_ncols=True,
        **kwargs,
    )


def note(message: str) -> None:
    """A one-line notice on stderr (not silenced: it reports something the user must know)."""
    print(f"netgeom: {message}", file=sys.stderr, flush=True)
