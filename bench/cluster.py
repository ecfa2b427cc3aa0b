"""Benchmark: a reduced pipeline on one Ray node and on two, and MLflow writes through a server.

The cluster is tests/netns_cluster.py's: two network namespaces on this machine (one core each
for Ray), PostgreSQL + `mlflow server` on the head host, token-authenticated Ray. Measured in one
run:
  one node  - `netgeom repro --backend ray` of the reduced pipeline (trainings of widths 4..32,
              the smoothness study, the report; MLflow off, measured apart below) with only the
              head's Ray node;
  two nodes - the same pipeline in a fresh copy after the worker host's node joined;
              identical = the two dvc.lock files (every dep and out) are equal;
  tracking  - wall seconds to log one training (track_run: the run, its metrics, its final
              checkpoint as a logged model, artifacts), median over BENCH_RUNS copies, into the
              project's SQLite store and through the tracking server (artifacts uploaded to it).
Needs root (namespaces) and PostgreSQL's server binaries, as the cluster test.

Run: .venv/bin/python bench/cluster.py  [env BENCH_RUNS (default 5)]
Last line: speedup=<one node / two nodes wall> identical=<true|false> server_vs_sqlite=<server / SQLite per training>
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import commit_dvc_repo, copy_pipeline, write_params  # noqa: E402
from tests.netns_cluster import netns_cluster, unavailable  # noqa: E402
from tests.test_scheduler import comparable_lock, copy_repo, environment, run  # noqa: E402
from tracking import copies  # noqa: E402  (bench/tracking.py: run folders under distinct identities)

RUNS = int(os.environ.get("BENCH_RUNS", "5"))
OFF = {"enabled": False}

# Runs on the head host: wall seconds of each track_run, printed as JSON.
TRACKER = """
import json, sys, time
from netgeom.layout import Layout
from netgeom.params import load_params
from netgeom.stages.sync import track_run
params, layout = load_params(), Layout.here()
spent = []
for folder in sys.argv[1:]:
    start = time.perf_counter()
    track_run(params, layout, layout.root / folder)
    spent.append(time.perf_counter() - start)
print(json.dumps(spent))
"""


def pipeline(root: Path) -> Path:
    copy_pipeline(root)
    write_params(
        root,
        mlflow={"enabled": False},
        train={"epochs": 20, "checkpoints": {"epochs": [10]}},
        grid={"widths": [4, 8, 16, 32], "noise": [0.2], "seed_offsets": [0]},
        **{group: OFF for group in ("regions", "interpolation", "hyperplanes", "reinit", "barriers", "mli")},
        star={"enabled": False},
    )
    params = yaml.safe_load((root / "params.yaml").read_text())
    for group, values in yaml.safe_load((REPO / "params.yaml").read_text()).items():
        params.setdefault(group, values)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return commit_dvc_repo(root, run)


def repro_seconds(cluster, root: Path) -> float:
    env = cluster.client_env(**{k: v for k, v in environment().items() if k.startswith("GIT_")})
    start = time.perf_counter()
    done = cluster.on_head(sys.executable, "-m", "netgeom.cli_repro", "--backend", "ray", cwd=root, env=env, timeout=3600)
    if done.returncode != 0:
        sys.exit(f"netgeom repro failed:\n{(done.stdout + done.stderr)[-3000:]}")
    return time.perf_counter() - start


def tracking_seconds(cluster, root: Path, server: bool, tag: str) -> float:
    env = cluster.client_env()
    if not server:
        env.pop("MLFLOW_TRACKING_URI")
    params = yaml.safe_load((root / "params.yaml").read_text())  # after the timed repro: tracking on
    params["mlflow"] = {"enabled": True, "experiment": f"bench-{tag}", "log_models": "final"}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    names = copies(root, sorted((root / "artifacts" / "runs").iterdir())[-1], RUNS + 1)
    done = cluster.on_head(sys.executable, "-c", TRACKER, *names, cwd=root, env=env, timeout=1800, check=True)
    spent = json.loads(done.stdout.strip().splitlines()[-1])
    return statistics.median(spent[1:])  # the first pays mlflow's import and the pt2 export's warm-up


def main() -> None:
    if (reason := unavailable()) is not None:  # like bench/gpu.py without a GPU: say so, do not fail `make bench`
        print(f"bench/cluster.py: not run: {reason}")
        return
    temp = Path(tempfile.mkdtemp(prefix="netgeom-bench-cluster-"))
    try:
        base = pipeline(temp / "base")
        one, two = copy_repo(base, temp / "one"), copy_repo(base, temp / "two")
        with netns_cluster(worker_node=False) as cluster:
            alone = repro_seconds(cluster, one)
            cluster.start_ray_worker()
            both = repro_seconds(cluster, two)
            identical = comparable_lock(one) == comparable_lock(two)
            sqlite = tracking_seconds(cluster, one, server=False, tag="sqlite")
            server = tracking_seconds(cluster, two, server=True, tag="server")
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    print(f"reduced pipeline (4 trainings of 20 epochs, smoothness, report): one Ray node {alone:.1f} s, two nodes {both:.1f} s")
    print(f"logging one training: SQLite {sqlite:.2f} s, through the tracking server {server:.2f} s (median of {RUNS})")
    print(f"speedup={alone / both:.2f} identical={str(identical).lower()} server_vs_sqlite={server / sqlite:.2f}")


if __name__ == "__main__":
    main()
