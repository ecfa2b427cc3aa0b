"""`netgeom` stage commands forked from a warm interpreter instead of started cold.

Every DVC stage is its own process, and a cold `netgeom` process pays ~2 s of CPU importing
torch, pandas and netgeom before its first line of science: in the default pipeline about half
of all CPU time. `netgeom repro` therefore runs each `netgeom ...` command in a child forked from
multiprocessing's forkserver, which imports those modules once (its preload). The child first
makes itself what a fresh process would be: its own session (so stopping the job stops its whole
process group), the job's working directory, environment and argv, stdin from /dev/null, stdout
and stderr appended to the job's log; then it runs the CLI as the console script would, and its
exit code is the command's. Nothing it does reaches the server or the other children.

The server never runs a torch operation, so its children start with no thread pool and no CUDA
context, as a cold process does. Other commands (not `netgeom`) run as plain processes, and
`NETGEOM_WARM=0` sends every command that way.
"""

from __future__ import annotations

import importlib
import multiprocessing
import multiprocessing.forkserver
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from netgeom.processes import die_with

PRELOAD = ["netgeom.repro.warm_preload"]  # imported once by the server
_context: multiprocessing.context.BaseContext | None = None


SHELL_SYNTAX = set("|&;<>()$`\\\"'*?[]#~{}!\n")  # anything a shell would interpret stays with the shell


def netgeom_argv(command: Sequence[str]) -> list[str] | None:
    """The argv of a plain `netgeom ...` command, as DVC runs it (`bash --noprofile --norc -c
    "netgeom ..."`, or the argv itself), else None: that command runs as a process."""
    if os.environ.get("NETGEOM_WARM", "1") == "0" or sys.platform == "win32":
        return None
    if len(command) >= 3 and command[-2] == "-c" and Path(command[0]).name in ("bash", "sh", "zsh", "dash"):
        line = command[-1]
        if SHELL_SYNTAX & set(line):
            return None
        argv = shlex.split(line)
    else:
        argv = list(command)
    return argv if argv and argv[0] == "netgeom" else None


def _forkserver():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def shutdown() -> None:
    """Stop the server and wait for it, so that its CPU time (and its children's) is accounted
    to this process, as a cold child's would be. The stdlib's own hook (ForkServer._stop, which
    its tests use); without it the server ends when this process does."""
    if _context is not None:
        stop = getattr(multiprocessing.forkserver._forkserver, "_stop", None)
        if stop is not None:
            stop()


class WarmProcess:
    """A `netgeom` command in a forked child, with the parts of `subprocess.Popen` the executor uses."""

    def __init__(self, argv: Sequence[str], cwd: Path, env: dict[str, str], log: Path):
        self._process = _forkserver().Process(target=run_command, args=(list(argv), str(cwd), dict(env), str(log)), daemon=False)
        self._process.start()
        self.pid = self._process.pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and not self._process.is_alive():
            self._process.join()
            self.returncode = self._process.exitcode
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self.poll() is None:
            raise subprocess.TimeoutExpired(str(self._process.name), timeout)
        return self.returncode


def run_command(argv: list[str], cwd: str, env: dict[str, str], log: str) -> None:
    """The child: become a fresh process for `argv`, run the CLI, exit with its code."""
    os.setsid()
    # The forkserver is the parent, and it exits when the scheduler dies (multiprocessing's design):
    # this child then gets SIGTERM instead of running on as an orphan.
    die_with(os.getppid())
    sys.stdout.flush()
    sys.stderr.flush()
    out = os.open(log, os.O_WRONLY | os.O_APPEND)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    stdin = os.open(os.devnull, os.O_RDONLY)
    os.dup2(stdin, 0)
    os.close(stdin)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    sys.argv = list(argv)
    # By name: the CLI is the stage's own command (in every stage's code deps already), not code
    # of the modules that import this runner (netgeom.execution, for Ray), whose deps dvc_yaml.py
    # computes from their static imports.
    cli = importlib.import_module("netgeom.cli")

    try:
        cli.app(args=argv[1:], prog_name="netgeom")
        code = 0
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)
