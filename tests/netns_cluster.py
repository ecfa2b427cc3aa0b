"""A two-host cluster on this one machine, for the cluster test and bench/cluster.py.

Two network namespaces joined by a veth pair stand for two machines on a private network
(10.231.N.1 and 10.231.N.2): the *head* host runs PostgreSQL (initialised in a temporary folder,
run as the unprivileged user `nobody`), an MLflow tracking server on it (artifacts served through
the server) and the Ray head; the *worker* host runs a second Ray node. Both see the same
filesystem (the repository), as nodes on a shared filesystem do. Ray runs with token
authentication; every service binds to its host's own address, none to 0.0.0.0.

Everything started is stopped on exit, also when the body raises: each daemon starts in its own
process group, and the groups are killed and checked for survivors; the namespaces are deleted.
A process that dies without running its `finally` (pytest killed by a CI timeout, SIGKILL, a
crashed xdist worker) leaves the same clean-up to its *reaper*, a small process started beside
the cluster that waits for it to die (see `start_reaper`).
Needs root (namespaces), iproute2, PostgreSQL's server binaries and, in the project's venv, ray
and psycopg (`make setup`); `unavailable()` says in one line what is missing.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.procfs import live_processes

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
GROUPS_FILE = "groups.json"  # under the cluster's temp folder: what the reaper kills
PG_PORT, MLFLOW_PORT, RAY_PORT = 5432, 5000, 6379


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    return Path(found[-1]).parent if found else None


def unavailable() -> str | None:
    """Why this machine cannot host the cluster (one line), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add); run as root to test the cluster"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed (apt-get install iproute2)"
    if postgres_bin() is None:
        return "PostgreSQL's server is not installed (apt-get install postgresql; .ci/run does)"
    for module, extra in (("ray", "ray"), ("psycopg", "cluster")):
        if subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode != 0:
            return f"{module} is not installed in this environment (pip install 'netgeom[{extra}]'; make setup does)"
    return None


def _run(*argv: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(list(argv), capture_output=True, text=True, **kwargs)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {(done.stderr or done.stdout)[-2000:]}")
    return done


def process_groups_alive(groups: list[int]) -> list[int]:
    """PIDs of live (non-zombie) processes in any of `groups`."""
    return [process.pid for process in live_processes() if process.group in groups]


def kill_groups(groups: list[int], *, grace: float = 3.0, patience: float = 20.0) -> list[int]:
    """SIGTERM then SIGKILL to every group; returns the PIDs still alive afterwards."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, patience)):
        for group in groups:
            try:
                os.killpg(group, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + wait
        while process_groups_alive(groups) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not process_groups_alive(groups):
            return []
    return process_groups_alive(groups)


def record_groups(temp: Path, groups: list[int]) -> None:
    """Tell the reaper the process groups started so far (atomically: it may read at any time)."""
    part = temp / f"{GROUPS_FILE}.part"
    part.write_text(json.dumps(groups))
    os.replace(part, temp / GROUPS_FILE)


def start_reaper(temp: Path, namespaces: list[str]) -> subprocess.Popen:
    """A process (in its own session: signals to ours miss it) that, once this process is gone,
    kills the groups `record_groups` named, deletes `namespaces` and removes `temp`. The normal
    exit stops it first (`stop_reaper`) and cleans up itself."""
    return subprocess.Popen([sys.executable, "-m", "tests.netns_cluster", "reap", str(os.getpid()), str(temp), *namespaces],
                            cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def stop_reaper(reaper: subprocess.Popen) -> None:
    reaper.kill()
    reaper.wait()


def reap(parent: int, temp: Path, namespaces: list[str]) -> None:
    """The reaper's body: wait for `parent` to die, then clean up what it left."""
    try:
        select.select([os.pidfd_open(parent)], [], [])  # readable once it has exited
    except ProcessLookupError:  # already gone
        pass
    groups = json.loads((temp / GROUPS_FILE).read_text()) if (temp / GROUPS_FILE).exists() else []
    kill_groups(groups)
    for namespace in namespaces:
        _run("ip", "netns", "delete", namespace, check=False)
    shutil.rmtree(temp, ignore_errors=True)


@dataclass
class Host:
    namespace: str
    address: str

    def argv(self, *command: str) -> list[str]:
        return ["ip", "netns", "exec", self.namespace, *command]


@dataclass
class Cluster:
    head: Host
    worker: Host
    token: str
    temp: Path
    groups: dict[str, int] = field(default_factory=dict)  # daemon name -> its process group

    @property
    def ray_address(self) -> str:
        return f"{self.head.address}:{RAY_PORT}"

    @property
    def tracking_uri(self) -> str:
        return f"http://{self.head.address}:{MLFLOW_PORT}"

    def ray_env(self) -> dict[str, str]:
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token, "RAY_USAGE_STATS_ENABLED": "0"}

    def client_env(self, **extra: str) -> dict[str, str]:
        """What a researcher exports on the head host before `netgeom repro --backend ray`."""
        env = {**os.environ, **self.ray_env(), "RAY_ADDRESS": self.ray_address, "MLFLOW_TRACKING_URI": self.tracking_uri,
               "PATH": f"{BIN}:{os.environ.get('PATH', '')}", "NETGEOM_QUIET": "1", **extra}
        env.pop("DVC_ROOT", None)
        return env

    def on_head(self, *command: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 900,
                check: bool = False) -> subprocess.CompletedProcess:
        """A command run on the head host (its network namespace), as the researcher would."""
        return _run(*self.head.argv(*command), env=env or self.client_env(), cwd=cwd, timeout=timeout, check=check)

    def popen_on_head(self, *command: str, cwd: Path, log: Path, env: dict | None = None) -> subprocess.Popen:
        with open(log, "wb") as out:
            return subprocess.Popen(self.head.argv(*command), cwd=cwd, env=env or self.client_env(), stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)

    # ------------------------------------------------------------------ daemons

    def _daemon(self, name: str, host: Host, *command: str, env: dict | None = None, wait: bool = False) -> None:
        log = open(self.temp / f"{name}.log", "wb")
        process = subprocess.Popen(host.argv(*command), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.groups[name] = process.pid
        record_groups(self.temp, list(self.groups.values()))
        if wait:  # `ray start` returns once its daemons (left in this group) are up
            if process.wait(timeout=240) != 0:
                raise RuntimeError(f"{name} did not start: {(self.temp / f'{name}.log').read_text()[-3000:]}")

    def start_postgres(self) -> str:
        pg, data = postgres_bin(), self.temp / "pg"
        data.mkdir()
        password = secrets.token_hex(12)
        (data / "pw").write_text(password + "\n")
        shutil.chown(data, "nobody")
        shutil.chown(data / "pw", "nobody")
        as_nobody = ["runuser", "-u", "nobody", "--"]
        _run(*as_nobody, str(pg / "initdb"), "-D", str(data / "db"), "-U", "mlflow", "--pwfile", str(data / "pw"),
             "--auth-local=trust", "--auth-host=scram-sha-256", "--no-locale", "-E", "UTF8")
        (data / "pw").unlink()
        subnet = self.head.address.rsplit(".", 1)[0] + ".0/24"  # the two hosts' network, with a password
        with open(data / "db" / "pg_hba.conf", "a") as hba:
            hba.write(f"host mlflow mlflow {subnet} scram-sha-256\n")
        self._daemon("postgres", self.head, *as_nobody, str(pg / "postgres"), "-D", str(data / "db"), "-h", self.head.address,
                     "-p", str(PG_PORT), "-k", str(data))
        deadline = time.monotonic() + 60
        while _run(*self.head.argv(str(pg / "pg_isready"), "-h", self.head.address, "-p", str(PG_PORT)), check=False).returncode:
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not come up: {(self.temp / 'postgres.log').read_text()[-2000:]}")
            time.sleep(0.3)
        _run(*as_nobody, str(pg / "createdb"), "-h", str(data), "-p", str(PG_PORT), "-U", "mlflow", "mlflow")
        return f"postgresql://mlflow:{password}@{self.head.address}:{PG_PORT}/mlflow"

    def start_mlflow(self, database: str) -> None:
        artifacts = self.temp / "mlflow-artifacts"
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self._daemon("mlflow", self.head, str(BIN / "mlflow"), "server", "--backend-store-uri", database, "--serve-artifacts",
                     "--artifacts-destination", str(artifacts), "--host", self.head.address, "--port", str(MLFLOW_PORT),
                     "--workers", "1", env=env)
        probe = f"import urllib.request; urllib.request.urlopen('{self.tracking_uri}/health', timeout=2)"
        deadline = time.monotonic() + 180
        while self.on_head(sys.executable, "-c", probe, timeout=30).returncode:
            if time.monotonic() > deadline or process_groups_alive([self.groups["mlflow"]]) == []:
                raise RuntimeError(f"the MLflow server did not answer: {(self.temp / 'mlflow.log').read_text()[-3000:]}")
            time.sleep(0.5)

    def start_ray_head(self) -> None:
        env = {**os.environ, **self.ray_env(), "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}
        self._daemon("ray-head", self.head, str(BIN / "ray"), "start", "--head", "--node-ip-address", self.head.address,
                     "--port", str(RAY_PORT), "--num-cpus", "1", "--include-dashboard", "false", "--disable-usage-stats",
                     "--temp-dir", str(self.temp / "ray"), env=env, wait=True)

    def start_ray_worker(self, name: str = "ray-worker") -> None:
        env = {**os.environ, **self.ray_env()}
        self._daemon(name, self.worker, str(BIN / "ray"), "start", "--address", self.ray_address, "--node-ip-address",
                     self.worker.address, "--num-cpus", "1", "--disable-usage-stats", env=env, wait=True)

    def kill_worker_raylet(self, name: str = "ray-worker") -> int:
        """SIGKILL the worker node's raylet (the node dies as a machine that lost power would); its PID."""
        for pid in process_groups_alive([self.groups[name]]):
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "raylet":
                    os.kill(pid, signal.SIGKILL)
                    return pid
            except OSError:
                continue
        raise RuntimeError("the worker node has no raylet")

    def mlflow_query(self, experiment: str) -> dict:
        """Runs and logged models of `experiment`, read through the server (from the head host)."""
        script = (
            "import json, sys, mlflow\n"
            "mlflow.set_tracking_uri(sys.argv[1])\n"
            "e = mlflow.get_experiment_by_name(sys.argv[2])\n"
            "runs = mlflow.search_runs([e.experiment_id], output_format='list') if e else []\n"
            "models = mlflow.search_logged_models(experiment_ids=[e.experiment_id], output_format='list') if e else []\n"
            "client = mlflow.MlflowClient()\n"
            "print(json.dumps({'artifact_location': e.artifact_location if e else None,\n"
            "  'runs': [{'id': r.info.run_id, 'name': r.info.run_name, 'tags': r.data.tags, 'metrics': r.data.metrics,\n"
            "            'artifacts': [a.path for a in client.list_artifacts(r.info.run_id)]} for r in runs],\n"
            "  'models': [{'id': m.model_id, 'run': m.source_run_id, 'name': m.name} for m in models]}))\n"
        )
        done = self.on_head(sys.executable, "-c", script, self.tracking_uri, experiment, timeout=120, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])


@contextmanager
def netns_cluster(worker_node: bool = True):
    """Start the two-host cluster (see the module docstring); stop all of it on the way out.
    `worker_node=False` leaves the worker host without a Ray node (`start_ray_worker` adds it)."""
    tag = f"{os.getpid() % 100000}"
    subnet = f"10.231.{os.getpid() % 250}"
    head, worker = Host(f"ng{tag}h", f"{subnet}.1"), Host(f"ng{tag}w", f"{subnet}.2")
    temp = Path(tempfile.mkdtemp(prefix="ngc", dir="/tmp"))  # short: Ray's socket paths live under it
    os.chmod(temp, 0o755)  # PostgreSQL runs as nobody under it
    cluster = Cluster(head, worker, secrets.token_hex(32), temp)
    veth = (f"ngv{tag}h", f"ngv{tag}w")
    reaper = start_reaper(temp, [head.namespace, worker.namespace])
    try:
        for host in (head, worker):
            _run("ip", "netns", "add", host.namespace)
        _run("ip", "link", "add", veth[0], "type", "veth", "peer", "name", veth[1])
        for host, end in zip((head, worker), veth):
            _run("ip", "link", "set", end, "netns", host.namespace)
            _run("ip", "-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", end)
            _run("ip", "-n", host.namespace, "link", "set", end, "up")
            _run("ip", "-n", host.namespace, "link", "set", "lo", "up")
        cluster.start_mlflow(cluster.start_postgres())
        cluster.start_ray_head()
        if worker_node:
            cluster.start_ray_worker()
        yield cluster
    finally:
        stop_reaper(reaper)
        survivors = kill_groups(list(cluster.groups.values()))
        for host in (head, worker):
            _run("ip", "netns", "delete", host.namespace, check=False)
        shutil.rmtree(temp, ignore_errors=True)
        if survivors:
            raise RuntimeError(f"cluster processes survived the teardown: {survivors}")


if __name__ == "__main__":  # python -m tests.netns_cluster reap PARENT TEMP NAMESPACE...
    reap(int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:])
