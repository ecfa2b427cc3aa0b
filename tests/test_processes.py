"""Children die with the process that started them (netgeom.processes): a SIGKILLed scheduler or
UI leaves no stage or server running that a rerun would race."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "zombie" not in next(line for line in status.splitlines() if line.startswith("State:"))


def wait_gone(pid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.1)
    return False


PARENT = """
import sys, time
from pathlib import Path
{start}
print(child_pid, flush=True)
time.sleep(120)
"""

POPEN = """
import subprocess
from netgeom.processes import dies_with_this_process
child = subprocess.Popen(["sleep", "120"], start_new_session=True, preexec_fn=dies_with_this_process())
child_pid = child.pid
"""

EXECUTOR = """
from netgeom.repro.executors import LocalExecutor
from netgeom.repro.pipeline import Job
log = Path(sys.argv[1])
executor = LocalExecutor(jobs=1)
executor.submit(Job("slow", (("sleep", "120"),), ("sleep 120",), str(log.parent), {"PATH": "/usr/bin:/bin"}, log))
while not executor.running["slow"].process:
    time.sleep(0.05)
child_pid = executor.running["slow"].process.pid
"""


@pytest.mark.parametrize("start", [POPEN, EXECUTOR], ids=["popen", "local_executor"])
def test_a_sigkilled_parent_takes_its_stage_commands_with_it(start, tmp_path):
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT.format(start=start), str(tmp_path / "stage.log")], stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        child = int(parent.stdout.readline())
        assert alive(child) and os.getpgid(child) != os.getpgid(parent.pid)  # its own group: a Ctrl-C does not reach it
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert wait_gone(child), "the stage command outlived its scheduler"
    finally:
        parent.kill()
        parent.wait()
