"""The MLflow UI over the project's store: served so that it answers on a busy machine, announced
only once it answers, and stopped without leaving a process behind.

Why not plain `mlflow ui`: its default four uvicorn workers each must answer a health check
within seconds; on a loaded machine (a sweep running, which is when a researcher opens the UI)
they miss it and are killed and restarted in a loop, and nothing ever listens. One worker has no
supervisor to fail. MLflow's job runner (a huey consumer, for GenAI jobs netgeom never runs) is
switched off: it outlived the server when the server was stopped by its PID.

The server runs in its own process group, which `stop` signals as a whole (mlflow's CLI, its
uvicorn child, anything they start); the CLI process also gets SIGTERM from the kernel if this
process dies without cleaning up (Linux's parent-death signal).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from netgeom.errors import NetgeomError
from netgeom.layout import Layout
from netgeom.processes import dies_with_this_process
from netgeom.tracking import VIEW_KEY


def runs_url(host: str, port: int, experiment_id: str) -> str:
    """The experiment's training runs (not MLflow 3's GenAI view) in the comparison view."""
    return f"{base_url(host, port)}/#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={VIEW_KEY}"


def base_url(host: str, port: int) -> str:
    check_host(host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"  # IPv6 needs brackets


# A host name (RFC 1123 labels) or an IPv4/IPv6 address: what goes between http:// and the port.
HOST_NAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")


def check_host(host: str) -> None:
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    if not HOST_NAME.fullmatch(host) or len(host) > 253:
        raise NetgeomError("--host", f"{host!r} is not a host name or IP address (e.g. 127.0.0.1, 0.0.0.0, localhost; no http:// or port)")


def check_port_free(host: str, port: int) -> None:
    check_host(host)
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except socket.gaierror:
            raise NetgeomError("--host", f"{host} is not a name this machine can resolve") from None
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise NetgeomError("port", f"{host}:{port} is in use (another UI?); pass --port with a free port") from None
            raise NetgeomError("--host", f"cannot listen on {host}:{port} ({exc.strerror}): is {host} an address of this machine?") from None


def _mlflow_executable() -> str:
    beside = Path(sys.executable).with_name("mlflow")
    found = str(beside) if beside.exists() else shutil.which("mlflow")
    if not found:
        raise NetgeomError("mlflow", "the `mlflow` command is not installed in this environment; run `make setup`")
    return found


def start_server(layout: Layout, host: str, port: int) -> subprocess.Popen:
    """`mlflow server` over the project's store, one worker, its own process group."""
    check_port_free(host, port)
    command = [
        _mlflow_executable(), "server",
        "--backend-store-uri", f"sqlite:///{layout.mlflow_db}",
        "--default-artifact-root", str(layout.mlflow_artifacts),
        "--host", host, "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return subprocess.Popen(command, env=env, start_new_session=True, preexec_fn=dies_with_this_process())


def wait_until_serving(server: subprocess.Popen, host: str, port: int, timeout: float) -> float:
    """Seconds until `/health` answers 200; NetgeomError if the server exits or `timeout` passes."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if server.poll() is not None:
            raise NetgeomError("ui", f"the MLflow server exited (code {server.returncode}) before it answered on {host}:{port}")
        with contextlib.suppress(OSError, urllib.error.URLError):
            with urllib.request.urlopen(f"{base_url(host, port)}/health", timeout=2) as answer:
                if answer.status == 200:
                    return time.monotonic() - started
        time.sleep(0.25)
    raise NetgeomError("ui", f"the MLflow server did not answer on {host}:{port} within {timeout:.0f} s; raise --timeout on a busy machine")


def stop_server(server: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM to the server's whole process group, SIGKILL to whatever is left after `grace` s."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            server.poll()
            if not _group_alive(server.pid):
                return
            time.sleep(0.1)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def serve(layout: Layout, url: str, host: str, port: int, timeout: float, echo: Callable[[str], None]) -> int:
    """Serve until Ctrl-C / SIGTERM / the server exits; print `url` once the server answers.
    Returns the server's exit code (0 when stopped by the user)."""
    server = start_server(layout, host, port)
    stopped_by_user = False

    def _stop(signum, _frame):
        raise KeyboardInterrupt

    # Our own handlers for both: a process started with SIGINT ignored (a pytest-xdist worker,
    # some launchers) would otherwise never see Ctrl-C, and the default SIGTERM skips `finally`.
    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        seconds = wait_until_serving(server, host, port, timeout)
        echo(f"MLflow UI ready in {seconds:.1f} s: open {url}  (Ctrl-C stops it)")
        server.wait()
    except KeyboardInterrupt:
        stopped_by_user = True
    finally:
        stop_server(server)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if stopped_by_user else (server.returncode or 0)
