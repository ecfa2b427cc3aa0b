"""netgeom.repro.warm: `netgeom` stage commands forked from a warm interpreter behave as a fresh
`netgeom` process would (cwd, environment, log, exit code), and other commands are left to the shell."""

from __future__ import annotations

import os
import sys

import pytest

from netgeom.repro.warm import WarmProcess, netgeom_argv
from tests.conftest import write_params

SHELL = ["/bin/bash", "--noprofile", "--norc", "-c"]


@pytest.mark.parametrize(
    "command, argv",
    [
        (SHELL + ["netgeom train --width 8 --noise 0.2 --replicate 0 --no-track --quiet"],
         ["netgeom", "train", "--width", "8", "--noise", "0.2", "--replicate", "0", "--no-track", "--quiet"]),
        (["netgeom", "check"], ["netgeom", "check"]),
        (SHELL + ["netgeom report --quiet > log.txt"], None),  # a redirection is the shell's
        (SHELL + ["netgeom check && touch done"], None),
        (SHELL + ["echo $HOME"], None),
        (SHELL + ["python -m netgeom.cli check"], None),  # not the console script: a plain process
    ],
)
def test_only_plain_netgeom_commands_are_forked(command, argv):
    assert netgeom_argv(command) == argv


def test_netgeom_warm_0_sends_every_command_to_a_process(monkeypatch):
    monkeypatch.setenv("NETGEOM_WARM", "0")
    assert netgeom_argv(["netgeom", "check"]) is None


def test_a_forked_command_runs_in_the_jobs_folder_with_its_environment_and_log(tmp_path):
    write_params(tmp_path)
    log = tmp_path / "job.log"
    log.write_bytes(b"> netgeom check\n")
    env = {**os.environ, "NETGEOM_QUIET": "1", "NETGEOM_PROBE": "from-the-job"}
    process = WarmProcess(["netgeom", "check", "--quiet"], tmp_path, env, log)
    assert process.wait(timeout=120) == 0 and process.poll() == 0
    assert process.pid != os.getpid()
    text = log.read_text()
    assert text.startswith("> netgeom check\n") and "params: 17 groups valid" in text  # appended after the header


def test_a_forked_command_that_fails_reports_its_exit_code_and_one_line(tmp_path):
    write_params(tmp_path, train={"lr": -1})
    log = tmp_path / "job.log"
    log.touch()
    process = WarmProcess(["netgeom", "check"], tmp_path, dict(os.environ), log)
    assert process.wait(timeout=120) == 2
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert len(lines) == 1 and "train.lr" in lines[0]


def test_the_child_does_not_change_the_callers_process(tmp_path):
    write_params(tmp_path)
    log = tmp_path / "job.log"
    log.touch()
    before = (os.getcwd(), dict(os.environ), list(sys.argv))
    WarmProcess(["netgeom", "check", "--quiet"], tmp_path, {**os.environ, "NETGEOM_PROBE": "x"}, log).wait(timeout=120)
    assert (os.getcwd(), dict(os.environ), list(sys.argv)) == before
