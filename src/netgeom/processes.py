"""Children that do not outlive the process that started them.

A stage command runs in its own process group (so that stopping it stops everything it started),
which also shields it from the signals meant for its parent: a SIGKILLed `netgeom repro` or
`netgeom ui` would leave its children running, and a rerun would race them. On Linux the kernel
sends a child a signal when its parent dies (PR_SET_PDEATHSIG); elsewhere this does nothing."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def die_with(parent_pid: int, sig: int = signal.SIGTERM) -> None:
    """In a child: receive `sig` when `parent_pid` (its parent) dies, and exit now if it has died
    already (the signal is armed only from here on)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig)
    if os.getppid() != parent_pid:
        os._exit(128 + sig)


def dies_with_this_process(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A `preexec_fn` for `subprocess.Popen`: the child dies with the process starting it."""
    parent = os.getpid()
    return lambda: die_with(parent, sig)
