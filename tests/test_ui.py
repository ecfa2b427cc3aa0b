"""`netgeom ui` (behind `make ui`): serves on a loaded machine, prints the link only once the
server answers, and leaves no MLflow process behind however it is stopped."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import refused, write_params
from tests.procfs import live_processes
from tests.test_tracking import train_tracked

NETGEOM = [sys.executable, "-m", "netgeom"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that name `text` (the project's store path)."""
    lines = (" ".join(p.argv) for p in live_processes() if p.pid != os.getpid())
    return [line for line in lines if text in line]


def busy_loops(n: int) -> list[subprocess.Popen]:
    """The machine busy with other work (a sweep running): one spinning process per core."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def wait_for_link(ui: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = ui.stdout.readline()
        if not line and ui.poll() is not None:
            raise AssertionError(f"netgeom ui exited with {ui.returncode} before printing the link")
        if "open http://" in line:
            return line.split("open ", 1)[1].split()[0]
    raise AssertionError("no link within the timeout")


def post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


@pytest.mark.parametrize("stop_with", [signal.SIGINT, signal.SIGKILL])
def test_the_ui_serves_under_cpu_load_and_stopping_it_leaves_no_process(project, monkeypatch, stop_with):
    """SIGINT is Ctrl-C; SIGKILL gives netgeom no chance to clean up: the server still goes
    (the kernel's parent-death signal)."""
    train_tracked(project, monkeypatch)
    store = str(project / "mlruns" / "mlflow.db")
    port = free_port()
    load = busy_loops(os.cpu_count() or 2)
    ui = None
    try:
        ui = subprocess.Popen(
            [*NETGEOM, "ui", "--port", str(port), "--timeout", "300"], cwd=project, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        link = wait_for_link(ui, 360)
        # printed only once it answers: the page and the runs are there at once, no retry
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as page:
            assert page.status == 200 and b"<html" in page.read().lower()
        experiment_id = link.split("/experiments/")[1].split("/")[0]
        runs = post_json(f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment_id]})["runs"]
        assert [r["info"]["run_name"] for r in runs] == ["mlp w16 n0.2 s1"]
        assert "viewStateShareKey=netgeom-compare" in link
        experiment = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get?experiment_id={experiment_id}").read())
        view = {t["key"]: t["value"] for t in experiment["experiment"]["tags"]}["mlflow.sharedViewState.netgeom-compare"]
        assert json.loads(view)["orderByKey"] == "metrics.`Eval/test_error`"
        assert processes_mentioning(store), "the server should be running"
        ui.send_signal(stop_with)
        ui.wait(timeout=60)
        deadline = time.monotonic() + 30
        while processes_mentioning(store) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert processes_mentioning(store) == []
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)
    finally:
        for process in load + ([ui] if ui else []):
            process.kill()
            process.wait()
        for cmdline in processes_mentioning(store):  # never leave a server to the next test
            subprocess.run(["pkill", "-f", store], check=False)


@pytest.mark.parametrize("port", ["0", "65536", "-1"])
def test_a_port_out_of_range_is_one_line(project, port):
    write_params(project)
    for command in (["ui"], ["mlflow", "link"]):
        refused(*command, "--port", port, key="--port")


def test_a_port_in_use_is_one_line_and_starts_nothing(project):
    write_params(project)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        refused("ui", "--port", str(taken.getsockname()[1]), key="port")
    assert processes_mentioning(str(project / "mlruns" / "mlflow.db")) == [] and not (project / "mlruns").exists()


@pytest.mark.parametrize("host", ["http://127.0.0.1", "no such host", "127.0.0.1:5000", "a..b", "-x.org"])
def test_a_host_that_cannot_go_in_a_url_is_one_line(project, host):
    write_params(project)
    for command in (["ui"], ["mlflow", "link"]):
        assert "is not a host name or IP address" in refused(*command, "--host", host, key="--host")
    assert not (project / "mlruns").exists()


def test_a_host_this_machine_is_not_is_named_as_the_host_not_as_a_busy_port(project):
    write_params(project)
    assert "an address of this machine" in refused("ui", "--host", "192.0.2.1", key="--host")  # TEST-NET-1
    assert "not a name this machine can resolve" in refused("ui", "--host", "nowhere.invalid", key="--host")  # RFC 2606: never resolves
    assert not (project / "mlruns").exists()


def test_urls_bracket_an_ipv6_host():
    from netgeom.ui import runs_url

    assert runs_url("::1", 5000, "1").startswith("http://[::1]:5000/#/experiments/1/runs?")
    assert runs_url("localhost", 5001, "2").startswith("http://localhost:5001/#/experiments/2/runs?")
