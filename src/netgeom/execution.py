"""Fan-out of independent work units (sample shards, grid cells) over processes or Ray.

Units are merged by their index, never by completion order, so results do not depend on the
backend, the worker count or the shard count. Every unit runs torch with the caller's thread count
(`execution.threads`), in a worker as inline: the thread count splits a matmul's sums, so a
worker's default (all cores; also ~40x slower for small ops when several share two cores) would
change the numbers with the worker count.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from typing import Any

import torch

from netgeom.errors import NetgeomError


MAX_SHARDS = 10_000  # far beyond any useful split; a typo'd count would name absurd files


def parse_shard(spec: str) -> tuple[int, int]:
    """'2/8' -> (2, 8): shard 2 of 8 (0-based)."""
    try:
        index, count = (int(part) for part in spec.split("/"))
    except ValueError:
        raise NetgeomError("shard", f"expected i/n such as 0/4, got {spec!r}") from None
    if not 1 <= count <= MAX_SHARDS or not 0 <= index < count:
        raise NetgeomError("shard", f"needs 0 <= i < n and 1 <= n <= {MAX_SHARDS}, got {spec!r}")
    return index, count


def shard_range(index: int, count: int, total: int) -> range:
    """Contiguous, balanced index ranges that tile range(total) for any shard count."""
    return range(index * total // count, (index + 1) * total // count)


def _with_threads(threads: int, fn: Callable[..., Any], *unit) -> Any:
    torch.set_num_threads(threads)
    return fn(*unit)


def run_units(fn: Callable[..., Any], units: Sequence[tuple], backend: str = "local", workers: int = 1, address: str | None = None) -> list:
    """[fn(*unit) for unit in units], possibly in parallel; results in the order of `units`."""
    if workers <= 1 or len(units) <= 1:
        return [fn(*unit) for unit in units]
    threads = torch.get_num_threads()
    if backend == "local":
        with ProcessPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(partial(_with_threads, threads, fn), *zip(*units)))
    if backend == "ray":
        # The same connection as `netgeom repro --backend ray`: RAY_ADDRESS, else
        # `execution.address`, else a local cluster for this call; unreachable fails fast.
        import os

        from netgeom.ray_cluster import connect_ray

        address = os.environ.get("RAY_ADDRESS") or address
        ray, started = connect_ray(address, "RAY_ADDRESS" if os.environ.get("RAY_ADDRESS") else "execution.address", num_cpus=workers)
        try:
            remote = ray.remote(num_cpus=1)(_with_threads)
            return ray.get([remote.remote(threads, fn, *unit) for unit in units])
        finally:
            if started:
                ray.shutdown()
    raise NetgeomError("execution.backend", f"unknown {backend!r}; allowed: local, ray")
