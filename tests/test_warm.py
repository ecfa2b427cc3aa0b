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
    from netgeom.data import get_source

    get_source("digits").materialise(tmp_path / "data")  # check looks for the dataset's files
    write_params(tmp_path)
    log = tmp_path / "job.log"
    log.write_bytes(b"> netgeom check\n")
    env = {**os.environ, "NETGEOM_QUIET": "1", "NETGEOM_PROBE": "from-the-job"}
    process = WarmProcess(["netgeom", "check", "--quiet"], tmp_path, env, log)
    assert process.wait(timeout=120) == 0 and process.poll() == 0
    assert process.pid != os.getpid()
    text = log.read_text()
    from netgeom.params import params_model

    groups = len(params_model().model_fields)  # every group the registry and the core define
    assert text.startswith("> netgeom check\n") and f"params: {groups} groups valid" in text  # appended after the header


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


def test_a_forked_training_killed_with_sigkill_reruns_to_the_uninterrupted_result(tmp_path):
    """Stopping a job kills the forked child's whole session; the rerun ends with the very run an
    uninterrupted training writes (resume or start over, never less)."""
    import json
    import signal
    import time

    from netgeom.data import get_source

    env = {**os.environ, "NETGEOM_QUIET": "1"}
    roots = {}
    for name in ("killed", "whole"):
        root = tmp_path / name
        root.mkdir()
        get_source("digits").materialise(root / "data")
        write_params(root, train={"epochs": 400, "batch_size": 64, "eval_every": 100, "checkpoints": {"epochs": [100]}})
        (root / "log").touch()  # the executor creates the job's log before it starts the job
        for command in (["split"], ["corrupt"]):
            assert WarmProcess(["netgeom", *command, "--quiet"], root, env, root / "log").wait(timeout=120) == 0
        roots[name] = root
    train = ["netgeom", "train", "--no-track", "--quiet"]
    from netgeom.layout import Layout

    run = "artifacts/runs/mlp_w16-n0.2-r0"
    process = WarmProcess(train, roots["killed"], env, roots["killed"] / "log")
    # kill it between its epoch-100 checkpoint (the JSON lands last) and its end, whatever the machine's speed
    midway, deadline = Layout(roots["killed"]).staging_dir("mlp_w16-n0.2-r0") / "e0100.json", time.monotonic() + 300
    while not midway.exists():
        assert process.poll() is None and time.monotonic() < deadline, "the training never reached epoch 100"
        time.sleep(0.02)
    assert process.poll() is None, "the training ended before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL
    for root in roots.values():
        assert WarmProcess(train, root, env, root / "log").wait(timeout=600) == 0
    metrics = [json.loads((root / run / "metrics.json").read_text()) for root in roots.values()]
    assert metrics[0]["test_acc"] == metrics[1]["test_acc"] and metrics[0]["train_loss"] == metrics[1]["train_loss"]
    final = [(root / run / "checkpoints" / "e0400.safetensors").read_bytes() for root in roots.values()]
    assert final[0] == final[1]
