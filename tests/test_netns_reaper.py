"""The cluster's reaper (tests/netns_cluster.py): what a killed test process left running is
stopped anyway. Needs no root: the reaper is tested with a plain daemon and no namespaces."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.netns_cluster import REPO
from tests.procfs import live_processes

# A stand-in for a test process holding a cluster: a daemon in its own session, recorded for the
# reaper; then it waits to be killed (as pytest is by a CI timeout) without any clean-up of its own.
HOLDER = """
import subprocess, sys, time
from pathlib import Path
from tests.netns_cluster import record_groups, start_reaper
temp = Path(sys.argv[1])
daemon = subprocess.Popen(["sleep", "600"], start_new_session=True)
record_groups(temp, [daemon.pid])
reaper = start_reaper(temp, [])
print(daemon.pid, reaper.pid, flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    return any(process.pid == pid for process in live_processes())


def wait_until(condition, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def test_a_cluster_holder_killed_without_clean_up_has_its_daemons_stopped_by_the_reaper(tmp_path):
    temp = tmp_path / "cluster"
    temp.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(temp)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    daemon, reaper = (int(pid) for pid in holder.stdout.readline().split())
    try:
        time.sleep(0.5)  # the reaper is waiting on the holder now (and cleans up at once if not)
        assert alive(daemon) and alive(reaper) and temp.exists()
        holder.send_signal(signal.SIGKILL)  # no finally, no atexit: only the reaper can clean up
        holder.wait()
        assert wait_until(lambda: not alive(daemon)), "the daemon survived its holder"
        assert wait_until(lambda: not temp.exists()), "the cluster's temp folder was left behind"
        assert wait_until(lambda: not alive(reaper)), "the reaper did not exit after cleaning up"
    finally:
        for pid in (daemon, reaper):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
