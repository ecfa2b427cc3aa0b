"""Where stage commands run: local processes, or Ray tasks on a cluster.

Both executors take `Job`s (a stage's commands, cwd, env, log file) and report each finished job
with its exit code; neither touches DVC. A job's commands run one after another in their own
process group (a new session), their stdout and stderr going to the job's log file; stopping a
job signals the whole group (SIGTERM, then SIGKILL after a grace period). Locally, `netgeom`
commands are forked from a warm interpreter (netgeom.repro.warm), others started as processes.

`ray` is imported only by `RayExecutor` (and netgeom.ray_cluster): it is an optional extra.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from netgeom.processes import dies_with_this_process
from netgeom.ray_cluster import connect_ray
from netgeom.repro.pipeline import Job
from netgeom.repro import warm
from netgeom.repro.warm import WarmProcess, netgeom_argv

#: Variables of the scheduler's environment that Ray tasks receive (the rest of a task's
#: environment is the Ray worker's own: CUDA_VISIBLE_DEVICES, OMP_NUM_THREADS, ...).
FORWARDED_PREFIXES = ("DVC_", "NETGEOM_", "MLFLOW_", "GIT_")
FORWARDED_NAMES = ("PATH", "VIRTUAL_ENV", "PYTHONPATH", "CI", "SHELL")


@dataclass
class Finished:
    job: Job
    returncode: int
    error: str | None = None        # why the job could not run (not the command's own failure)


def _kill_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# --------------------------------------------------------------------------- local


@dataclass
class _Running:
    job: Job
    log: IO[bytes]
    index: int = 0
    process: subprocess.Popen | WarmProcess | None = None


@dataclass
class LocalExecutor:
    """Up to `jobs` stage commands at a time as child processes of this one."""

    jobs: int
    running: dict[str, _Running] = field(default_factory=dict)

    @property
    def free(self) -> int:
        return self.jobs - len(self.running)

    def submit(self, job: Job) -> None:
        job.log.parent.mkdir(parents=True, exist_ok=True)
        slot = _Running(job, open(job.log, "wb"))
        self.running[job.name] = slot
        self._start(slot)

    def _start(self, slot: _Running) -> None:
        slot.log.write(f"> {slot.job.display[slot.index]}\n".encode())
        slot.log.flush()
        argv = netgeom_argv(slot.job.commands[slot.index])
        if argv is not None:  # forked from a warm interpreter: no cold imports (netgeom.repro.warm)
            slot.process = WarmProcess(argv, slot.job.cwd, slot.job.env, slot.job.log)
            return
        slot.process = subprocess.Popen(
            list(slot.job.commands[slot.index]), cwd=slot.job.cwd, env=slot.job.env, stdin=subprocess.DEVNULL,
            stdout=slot.log, stderr=subprocess.STDOUT, close_fds=True, start_new_session=True,
            preexec_fn=dies_with_this_process(),  # a SIGKILLed scheduler leaves no stage running
        )

    def poll(self, timeout: float) -> list[Finished]:
        """Jobs that finished within `timeout` seconds (an empty list when none did)."""
        deadline = time.monotonic() + timeout
        while True:
            done = []
            for name, slot in list(self.running.items()):
                code = slot.process.poll()
                if code is None:
                    continue
                if code == 0 and slot.index + 1 < len(slot.job.commands):
                    slot.index += 1
                    self._start(slot)
                    continue
                slot.log.close()
                del self.running[name]
                done.append(Finished(slot.job, code))
            if done or time.monotonic() >= deadline:
                return done
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def stop(self, grace: float = 5.0) -> list[Job]:
        """Stop every running job (its whole process group); the jobs that were stopped."""
        slots = list(self.running.values())
        for slot in slots:
            _kill_group(slot.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for slot in slots:
            try:
                slot.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _kill_group(slot.process.pid, signal.SIGKILL)   # the group's stragglers, if any
            slot.process.wait()
            slot.log.close()
        self.running.clear()
        return [slot.job for slot in slots]

    def close(self) -> None:
        self.stop()
        warm.shutdown()


# --------------------------------------------------------------------------- ray


def ray_env(env: dict[str, str]) -> dict[str, str]:
    """The part of a job's environment a Ray task takes over from the scheduler."""
    return {
        key: value for key, value in env.items()
        if key in FORWARDED_NAMES or key.startswith(FORWARDED_PREFIXES)
    }


def _make_task():
    """The Ray task: run a job's commands on whichever node gets it; (exit code, node address).
    The log's first line names the node (`# on Ray node 10.0.0.2 (host)`), so where a stage ran
    can be read while it runs.

    Built inside a function so cloudpickle ships it by value: workers need only the standard
    library and Ray, not netgeom itself (the commands find `netgeom` on the forwarded PATH).
    """

    def run_stage_commands(commands, display, cwd, overlay, log_path):
        import os
        import signal
        import socket
        import subprocess
        import time

        import ray

        def die_with_this_worker():  # a lost node's worker dies; its stage command must too
            try:
                import ctypes

                ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
            except (OSError, AttributeError):
                pass

        env = {**os.environ, **overlay}
        node = ray.util.get_node_ip_address()
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        with open(log_path, "wb") as log:
            log.write(f"# on Ray node {node} ({socket.gethostname()})\n".encode())
            for argv, shown in zip(commands, display):
                log.write(f"> {shown}\n".encode())
                log.flush()
                process = subprocess.Popen(
                    list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, close_fds=True, start_new_session=True, preexec_fn=die_with_this_worker,
                )
                try:
                    while True:
                        try:
                            code = process.wait(timeout=0.5)
                            break
                        except subprocess.TimeoutExpired:
                            continue
                except BaseException:   # ray.cancel: KeyboardInterrupt / TaskCancelledError
                    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, None)):
                        try:
                            os.killpg(process.pid, sig)
                        except (ProcessLookupError, PermissionError):
                            pass
                        deadline = time.monotonic() + (wait or 0)
                        while wait and process.poll() is None and time.monotonic() < deadline:
                            time.sleep(0.05)
                    process.wait()
                    raise
                if code != 0:
                    return code, node
        return 0, node

    return run_stage_commands


class RayExecutor:
    """Stage commands as Ray tasks (CPUs = execution.threads, one GPU for cuda stages).

    `jobs` caps the tasks in flight (None: every ready stage is submitted and Ray's scheduler
    places them as the cluster's resources allow).
    """

    def __init__(self, address: str | None, jobs: int | None, key: str = "RAY_ADDRESS", local_cpus: int | None = None):
        self.ray, self.started = connect_ray(address, key, num_cpus=local_cpus)
        self.address = address or "a local Ray instance"
        self.jobs = jobs
        self.task = self.ray.remote(max_retries=0)(_make_task())
        self.running: dict[Any, Job] = {}

    @property
    def free(self) -> int:
        return (self.jobs - len(self.running)) if self.jobs is not None else 1 << 30

    def check_resources(self, jobs: Iterable[Job]) -> list[str]:
        """Warnings for jobs that no node of the cluster can place (they would wait)."""
        total = self.ray.cluster_resources()
        nodes = [n.get("Resources", {}) for n in self.ray.nodes() if n.get("Alive")]
        most_cpus = max((n.get("CPU", 0) for n in nodes), default=total.get("CPU", 0))
        problems = set()
        for job in jobs:
            if job.cpus > most_cpus:
                problems.add(f"execution.threads: {job.cpus} CPUs per task, but no Ray node has more than {most_cpus:g}")
            if job.gpus and not total.get("GPU"):
                problems.add("execution.device: cuda stages need a GPU, but the Ray cluster has none (they wait for one)")
        return sorted(problems)

    def submit(self, job: Job) -> None:
        job.log.parent.mkdir(parents=True, exist_ok=True)
        # SPREAD: a pipeline's stages are few and long; Ray's default packs tasks onto one node
        # until half its CPUs are busy, which leaves the other nodes idle on a short sweep.
        ref = self.task.options(num_cpus=job.cpus, num_gpus=job.gpus, name=job.name, scheduling_strategy="SPREAD").remote(
            job.commands, job.display, job.cwd, ray_env(job.env), str(job.log)
        )
        self.running[ref] = job

    def poll(self, timeout: float) -> list[Finished]:
        if not self.running:
            time.sleep(timeout)
            return []
        refs = list(self.running)
        ready, _ = self.ray.wait(refs, num_returns=1, timeout=timeout)
        if ready:
            ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0)
        done = []
        for ref in ready:
            job = self.running.pop(ref)
            try:
                code, _node = self.ray.get(ref)
                done.append(Finished(job, int(code)))
            except Exception as exc:  # noqa: BLE001 - a worker or node died, the task was lost
                message = " ".join(str(exc).split())[:500]
                with open(job.log, "ab") as log:
                    log.write(f"\nnetgeom: the Ray task failed: {message}\n".encode())
                done.append(Finished(job, -1, f"Ray task failed: {message[:200]}"))
        return done

    def stop(self, grace: float = 10.0) -> list[Job]:
        refs = list(self.running)
        for ref in refs:
            self.ray.cancel(ref, force=False)   # KeyboardInterrupt in the task: it kills its group
        if refs:
            _, left = self.ray.wait(refs, num_returns=len(refs), timeout=grace)
            for ref in left:
                self.ray.cancel(ref, force=True)
        stopped = list(self.running.values())
        self.running.clear()
        return stopped

    def close(self) -> None:
        self.stop()
        if self.started:
            self.ray.shutdown()
