"""Connecting to a Ray cluster, or starting a local one: shared by `netgeom repro --backend ray`
and the studies' shards (`execution.backend: ray`).

It lives outside netgeom.repro so that a study's code closure (what its DVC stage depends on)
holds this connection and not the scheduler: editing the scheduler reruns no study.
`ray` is imported inside `connect_ray` only: it is an optional extra.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from typing import Any

from netgeom.errors import NetgeomError

CONNECT_TIMEOUT_S = 5.0     # TCP reachability of the address
PROBE_TIMEOUT_S = 25.0      # a Ray client connecting to it (Ray itself retries for minutes)
_PROBE = "import sys, ray; ray.init(address=sys.argv[1], log_to_driver=False, logging_level='ERROR'); ray.shutdown()"


def _host_port(address: str) -> tuple[str, int] | None:
    """'ray://h:10001' or 'h:6379' -> (h, port); None for 'auto' and other forms Ray resolves."""
    rest = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]") or "127.0.0.1", int(port)


def connect_ray(address: str | None, key: str = "RAY_ADDRESS", num_cpus: int | None = None):
    """Connect this process to the Ray cluster at `address`, or start a local one when None.

    Returns (ray, started): `started` is True when this call started a local cluster (shut it
    down when done). An unreachable address fails fast with a NetgeomError naming `key`.
    """
    try:
        import ray
    except ImportError:
        raise NetgeomError("--backend", "ray is not installed; pip install 'netgeom[ray]'") from None
    if ray.is_initialized():
        return ray, False
    options: dict[str, Any] = {"log_to_driver": False, "logging_level": "ERROR", "configure_logging": True}
    if not address or address == "local":
        try:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **options)
        except Exception as exc:  # noqa: BLE001 - a local Ray that does not come up (a busy machine: its start times out)
            with contextlib.suppress(Exception):
                ray.shutdown()  # and takes the half-started processes (raylet, agents) with it
            text = " ".join(str(exc).split())[:300]
            raise NetgeomError(key, f"the local Ray cluster did not start: {text}; rerun, or use the local backend") from None
        return ray, True
    target = _host_port(address)
    if target is not None:
        try:
            socket.create_connection(target, timeout=CONNECT_TIMEOUT_S).close()
        except OSError as exc:
            raise NetgeomError(key, f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None
    _probe(address, key)
    try:
        ray.init(address=address, **options)
    except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError, ...
        text = " ".join(str(exc).split())[:300]
        raise NetgeomError(key, f"cannot connect to the Ray cluster at {address}: {text}") from None
    return ray, False


def _probe(address: str, key: str) -> None:
    """Connect a throwaway Ray client first: in-process, a port that answers but is no Ray
    cluster would keep `ray.init` retrying for minutes, and a stuck init cannot be undone."""
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE, address], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise NetgeomError(key, f"no Ray cluster answered at {address} within {PROBE_TIMEOUT_S:g}s") from None
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if "Error" in line.split(":", 1)[0]]
        text = (errors or lines or [f"exit code {done.returncode}"])[-1][:300]
        raise NetgeomError(key, f"cannot connect to the Ray cluster at {address}: {text}")
