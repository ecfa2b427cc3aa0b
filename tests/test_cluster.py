"""A real two-host cluster: Ray head + worker in two network namespaces, MLflow on PostgreSQL.

The cluster (tests/netns_cluster.py) is started and stopped by the module fixture, also when a
test fails. One small pipeline (two trainings, the smoothness study, the report with MLflow on)
runs on it with `netgeom repro --backend ray`; the worker node's raylet is killed in the middle
of a stage; a rerun on a restarted worker node must finish with the local run's results, and
MLflow, read through the server, must hold exactly one complete run per training.
Skipped, with the reason, only where the machine cannot make namespaces or lacks PostgreSQL.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import commit_dvc_repo, copy_pipeline, write_params
from tests.netns_cluster import netns_cluster, unavailable
from tests.procfs import live_processes
from tests.test_scheduler import REPO, comparable_lock, copy_repo, environment, lock, netgeom_repro, run

REASON = unavailable()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

EXPERIMENT = "cluster"
TRAININGS = ("mlp_w4-n0.2-r0", "mlp_w8-n0.2-r0")
OFF = {"enabled": False}
NODE = re.compile(r"^# on Ray node (\S+)")


@pytest.fixture(scope="module")
def cluster():
    with netns_cluster() as started:
        yield started


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Path:
    """The repository's pipeline, tiny: two trainings, smoothness, the report; MLflow on."""
    root = copy_pipeline(tmp_path_factory.mktemp("cluster") / "repo")
    write_params(
        root,
        mlflow={"enabled": True, "experiment": EXPERIMENT, "log_models": "final"},
        train={"epochs": 2, "checkpoints": {"epochs": [1]}},
        grid={"widths": [4, 8], "noise": [0.2], "seed_offsets": [0]},
        **{group: OFF for group in ("regions", "interpolation", "hyperplanes", "reinit", "barriers", "mli")},
        star={"enabled": False},
    )
    params = yaml.safe_load((root / "params.yaml").read_text())
    for group, values in yaml.safe_load((REPO / "params.yaml").read_text()).items():
        params.setdefault(group, values)  # groups newer than write_params: the repository's defaults
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return commit_dvc_repo(root, run)


@pytest.fixture(scope="module")
def local_run(pipeline, tmp_path_factory) -> Path:
    """The same pipeline on this host alone (local processes, the SQLite store)."""
    root = copy_repo(pipeline, tmp_path_factory.mktemp("cluster_local") / "repo")
    netgeom_repro(root, "-j", "2")
    return root


def nodes_in_logs(root: Path) -> dict[str, str]:
    """stage -> the Ray node its log says it ran on."""
    found = {}
    for log in (root / ".netgeom" / "logs").glob("*.log"):
        match = NODE.match(log.read_text(errors="replace"))
        if match:
            found[log.stem] = match.group(1)
    return found


def stage_commands_alive(root: Path, wait: float) -> list[int]:
    """PIDs of processes still working in `root` (a stage command's cwd) after up to `wait` s."""
    deadline = time.monotonic() + wait
    while True:
        alive = [process.pid for process in live_processes() if process.works_in(root)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.5)


def freeze_stage_command_on_worker(cluster, root: Path) -> str | None:
    """SIGSTOP the stage command the worker host runs in `root`; its stage, or None.

    The command descends from a process of the worker host's `ray start` group (its raylet spawns
    the Ray workers that start commands) and writes to its stage's log, named after the stage."""
    processes = live_processes()
    parents = {process.pid: process.parent for process in processes}
    host = {process.pid for process in processes if process.group == cluster.groups["ray-worker"]}
    for process in processes:
        if not process.works_in(root):
            continue
        ancestor, hops = process.parent, 0
        while ancestor and ancestor not in host and hops < 8:
            ancestor, hops = parents.get(ancestor), hops + 1
        if ancestor in host:
            try:
                log = Path(os.readlink(f"/proc/{process.pid}/fd/1"))
                os.kill(process.pid, signal.SIGSTOP)
                return log.stem
            except OSError:
                continue  # gone meanwhile
    return None


def repro_on_cluster(cluster, root: Path, log: Path) -> subprocess.Popen:
    env = cluster.client_env(**{k: v for k, v in environment().items() if k.startswith("GIT_")})
    return cluster.popen_on_head(sys.executable, "-m", "netgeom.cli_repro", "--backend", "ray", cwd=root, log=log, env=env)


def test_a_client_without_the_token_is_refused(cluster):
    env = cluster.client_env()
    env.pop("RAY_AUTH_TOKEN")
    probe = "import sys, ray; ray.init(address=sys.argv[1], log_to_driver=False); print('connected')"
    done = cluster.on_head(sys.executable, "-c", probe, cluster.ray_address, env=env, timeout=120)
    assert done.returncode != 0 and "connected" not in done.stdout


def test_the_pipeline_on_two_hosts_survives_a_dead_node_and_equals_a_local_run(cluster, pipeline, local_run, tmp_path):
    root = copy_repo(pipeline, tmp_path / "repo")
    # 1. The worker host dies in the middle of the first stage it runs: its stage command freezes
    # (a host that loses power stops at once; a command left running could finish and hand its
    # result back in the seconds before its Ray worker notices the raylet is gone), then the
    # raylet is SIGKILLed.
    first = repro_on_cluster(cluster, root, tmp_path / "first.log")
    victim, deadline = None, time.monotonic() + 600
    while victim is None and first.poll() is None and time.monotonic() < deadline:
        victim = freeze_stage_command_on_worker(cluster, root)
        time.sleep(0.05)
    assert victim is not None, (tmp_path / "first.log").read_text()[-3000:]
    assert nodes_in_logs(root)[victim] == cluster.worker.address
    cluster.kill_worker_raylet()
    assert first.wait(timeout=600) != 0
    output = (tmp_path / "first.log").read_text()
    assert victim in output and "failed" in output.lower(), output[-3000:]
    recorded = set(lock(root).get("stages", {})) if (root / "dvc.lock").exists() else set()
    assert victim not in recorded  # nothing of the lost stage is recorded
    assert stage_commands_alive(root, wait=30.0) == []  # its command died with the node's worker
    assert cluster.mlflow_query(EXPERIMENT)["runs"] == [] or "report" in recorded
    where = {stage: node for stage, node in nodes_in_logs(root).items() if stage in recorded}

    # 2. A new worker node joins; the rerun finishes what is left, on both hosts.
    cluster.start_ray_worker("ray-worker-2")
    second = repro_on_cluster(cluster, root, tmp_path / "second.log")
    assert second.wait(timeout=900) == 0, (tmp_path / "second.log").read_text()[-3000:]
    where.update(nodes_in_logs(root))  # the stages each run finished, and where
    assert set(where.values()) == {cluster.head.address, cluster.worker.address}, where
    assert "up to date" in run("dvc", "status", cwd=root).stdout
    assert comparable_lock(root) == comparable_lock(local_run)

    # 3. MLflow, read through the server: one complete run per training, its model, its study
    # metrics, artifacts uploaded through the server; a second sync adds nothing.
    first_view = cluster.mlflow_query(EXPERIMENT)
    assert first_view["artifact_location"].startswith("mlflow-artifacts:")
    trainings = [r for r in first_view["runs"] if r["tags"].get("netgeom.run") in TRAININGS]
    assert sorted(r["tags"]["netgeom.run"] for r in trainings) == sorted(TRAININGS)
    for training in trainings:
        assert training["tags"].get("netgeom.complete") == "true"
        assert any(key.startswith("smoothness/") for key in training["metrics"]), training["metrics"]
        assert "run.json" in training["artifacts"]
        assert [m for m in first_view["models"] if m["run"] == training["id"]], training["tags"]["netgeom.run"]
    assert any(r["tags"].get("netgeom.report") for r in first_view["runs"])
    env = cluster.client_env()
    synced = cluster.on_head(sys.executable, "-m", "netgeom", "mlflow", "sync", cwd=root, env=env, timeout=600)
    assert synced.returncode == 0, synced.stderr[-3000:]
    again = cluster.mlflow_query(EXPERIMENT)
    assert sorted(r["id"] for r in again["runs"]) == sorted(r["id"] for r in first_view["runs"])
    assert len(again["models"]) == len(first_view["models"])
