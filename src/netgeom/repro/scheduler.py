"""The scheduling loop: ready stages out to an executor, finished ones recorded in order of arrival.

A stage becomes ready when every stage it depends on has finished (run, restored or up to date);
only then is its staleness decided (as `dvc repro` decides it, after its upstream ran), so a
stage whose inputs came out unchanged is skipped, not rerun. Failures block their descendants
only. SIGINT/SIGTERM set a flag the loop checks between steps, so DVC's bookkeeping is never cut
in half: on an interrupt the running commands are stopped and nothing of theirs is recorded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from netgeom.errors import NetgeomError
from netgeom.repro.history import DURATIONS, Durations
from netgeom.repro.pipeline import Action, Pipeline, read_settings

BACKENDS = ("local", "ray")
GATE_STAGE = "check"  # runs before every other stage (validation, the MLflow store)
@dataclass
class Outcome:
    stage: str
    status: str                 # ran | restored | verified | up to date | failed | blocked | stopped
    seconds: float = 0.0
    log: Path | None = None
    reason: str = ""


@dataclass
class ReproResult:
    outcomes: list[Outcome] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0

    def having(self, *statuses: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.status in statuses]

    @property
    def failed(self) -> list[Outcome]:
        return self.having("failed")

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if self.having("failed", "blocked") else 0


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def default_jobs(root: Path | None = None) -> int:
    """Cores // execution.threads (from params.yaml at the repository root), at least 1."""
    threads = read_settings((root or Path.cwd()) / "params.yaml").threads
    return max(1, available_cpus() // threads)


def ray_address(root: Path) -> tuple[str | None, str]:
    """RAY_ADDRESS, else execution.address from params.yaml; with the key to name in errors."""
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"], "RAY_ADDRESS"
    try:
        import yaml

        data = yaml.safe_load((root / "params.yaml").read_text()) or {}
        address = (data.get("execution") or {}).get("address")
    except (OSError, AttributeError, ValueError):
        address = None
    return (str(address) if address else None), "execution.address"


def repro(
    targets: Sequence[str] = (),
    jobs: int | None = None,
    backend: str = "local",
    quiet: bool = False,
    root: str | os.PathLike | None = None,
    out: TextIO | None = None,
) -> ReproResult:
    """Reproduce the stages `dvc repro TARGETS` would, up to `jobs` at a time.

    Bad input (jobs < 1, unknown backend, unknown target, unreachable Ray cluster) raises
    NetgeomError before anything runs or is recorded.
    """
    if jobs is not None and jobs < 1:
        raise NetgeomError("--jobs", f"must be at least 1, got {jobs}")
    if backend not in BACKENDS:
        raise NetgeomError("--backend", f"unknown {backend!r}; allowed: {', '.join(BACKENDS)}")
    pipeline = Pipeline.open(targets, root)
    try:
        if GATE_STAGE not in {s.addressing for s in pipeline.stages}:
            run_gate(pipeline.root)  # up to date, or not among the targets: it still gates them
        if backend == "ray":
            from netgeom.repro.executors import RayExecutor

            address, key = ray_address(pipeline.root)
            executor = RayExecutor(address, jobs, key, local_cpus=available_cpus())
        else:
            from netgeom.repro.executors import LocalExecutor

            executor = LocalExecutor(jobs or default_jobs(pipeline.root))
        try:
            return Scheduler(pipeline, executor, quiet=quiet, out=out or sys.stdout).run()
        finally:
            executor.close()
    finally:
        pipeline.close()


def error_line(log: Path | None, tail_bytes: int = 8192) -> str:
    """The last `netgeom: error: ...` line a failed stage wrote to its log ('' if none): the one
    line that says why, shown where the failure is reported."""
    try:
        with open(log, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - tail_bytes))
            lines = handle.read().decode(errors="replace").splitlines()
    except (OSError, TypeError):
        return ""
    return next((line.strip() for line in reversed(lines) if line.startswith("netgeom: error: ")), "")


def run_gate(root: Path) -> None:
    """`netgeom check` in `root` when its dvc.yaml has the stage: params valid, the study inputs
    supported, the MLflow store created once, before any stage starts. Its one line, if it
    refuses, becomes this command's (exit 2, nothing run)."""
    import yaml

    dvc_yaml = Path(root) / "dvc.yaml"
    try:
        declared = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages") or {}
    except (OSError, yaml.YAMLError):
        return  # DVC itself reports a missing or broken dvc.yaml
    if GATE_STAGE not in declared:
        return
    done = subprocess.run(
        [sys.executable, "-m", "netgeom", "check", "--quiet"], cwd=root, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    if done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        message = lines[-1].removeprefix("netgeom: error: ") if lines else f"exit code {done.returncode}"
        key, _, text = message.partition(": ")
        raise NetgeomError(key if text else GATE_STAGE, text or message)


class Scheduler:
    """One run: dispatch ready stages, collect finished ones, record them, report."""

    #: dvc.lock entries are written in batches: at most every FLUSH_EVERY_S seconds (or ten times
    #: the last write's duration, for long lock files), whenever nothing runs (the stages a
    #: finished one made ready are started first), and at the end.
    FLUSH_EVERY_S = 2.0

    def __init__(self, pipeline: Pipeline, executor, quiet: bool = False, out: TextIO | None = None):
        self.pipeline = pipeline
        self.executor = executor
        self.quiet = quiet
        self.out = out or sys.stdout
        self.interrupted = False
        self.started: dict[str, float] = {}
        self.by_name = {s.addressing: s for s in pipeline.stages}
        self.waiting = {s: set(pipeline.upstream[s]) for s in pipeline.stages}
        gate = self.by_name.get(GATE_STAGE)
        if gate is not None:  # `check` first: DVC has no order-only dependency, so the scheduler adds it
            for stage in pipeline.stages:
                if stage is not gate and gate not in self.waiting[stage]:
                    self.waiting[stage].add(gate)
                    pipeline.downstream[gate] = [*pipeline.downstream[gate], stage]
        self.pending = list(pipeline.stages)
        self.history = Durations(pipeline.root / DURATIONS)
        self.priority = self.history.critical_paths(pipeline.stages, pipeline.downstream)
        self.result = ReproResult()
        self.bar = None
        self.checked = False
        self.flushed_at = time.monotonic()
        self.flush_cost = 0.0

    # ------------------------------------------------------------------ signals

    def _on_signal(self, signum, frame) -> None:  # noqa: ARG002
        self.interrupted = True

    def _install_signals(self):
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    # ------------------------------------------------------------------ output

    def _line(self, text: str) -> None:
        if self.bar is not None and not self.bar.disable:
            self.bar.write(text, file=self.out)
        else:
            print(text, file=self.out, flush=True)

    @staticmethod
    def _log_rel(log: Path | None) -> str:
        if log is None:
            return ""
        try:
            return os.path.relpath(log)
        except ValueError:
            return str(log)

    # ------------------------------------------------------------------ bookkeeping

    def _finish(self, stage, outcome: Outcome) -> None:
        self.result.outcomes.append(outcome)
        self.bar.update(1)
        if outcome.status == "failed":
            said = error_line(outcome.log)
            self._line(
                f"{outcome.stage}: FAILED after {outcome.seconds:.1f}s ({outcome.reason}); log: {self._log_rel(outcome.log)}"
                + (f"\n  {said}" if said else "")
            )
            self._block(stage, outcome.stage)
            return
        for down in self.pipeline.downstream[stage]:
            self.waiting[down].discard(stage)
        if outcome.status != "up to date":
            timing = f" in {outcome.seconds:.1f}s" if outcome.status == "ran" else ""
            self._line(f"{outcome.stage}: {outcome.status}{timing}")

    def _block(self, stage, culprit: str) -> None:
        for down in self.pipeline.downstream[stage]:
            if down in self.pending:
                self.pending.remove(down)
                self.result.outcomes.append(Outcome(down.addressing, "blocked", reason=f"{culprit} failed"))
                self.bar.update(1)
                self._block(down, culprit)

    def _ready(self) -> list:
        return sorted((s for s in self.pending if not self.waiting[s]), key=self.priority.__getitem__)

    def _dispatch(self) -> None:
        """Start ready stages while the executor has room (highest priority first)."""
        pipeline, executor = self.pipeline, self.executor
        progress = True
        while progress and not self.interrupted:
            progress = False
            for stage in self._ready():
                if self.interrupted or executor.free <= 0:
                    return
                if stage not in self.pending:
                    continue
                self.pending.remove(stage)
                progress = True
                try:
                    with pipeline.locked():
                        action = pipeline.prepare(stage)
                        job = pipeline.job(stage) if action is Action.RUN else None
                except Exception as exc:  # noqa: BLE001 - DVC refused the stage (missing dep, ...)
                    pipeline.release(stage)
                    log = _note(pipeline.log_path(stage), f"netgeom: DVC could not prepare the stage: {exc}\n", "w")
                    self._finish(stage, Outcome(stage.addressing, "failed", 0.0, log, _short(exc)))
                    continue
                if job is None:
                    status = {Action.SKIP: "up to date", Action.RESTORED: "restored", Action.INLINE: "verified"}[action]
                    self._finish(stage, Outcome(stage.addressing, status))
                    continue
                if self.interrupted:  # arrived while DVC prepared it: do not start it
                    pipeline.release(stage)
                    self.pending.insert(0, stage)
                    return
                self._check_resources()
                self.started[job.name] = time.monotonic()
                executor.submit(job)

    def _check_resources(self) -> None:
        if self.checked or not hasattr(self.executor, "check_resources"):
            return
        self.checked = True
        stages = [s for s in self.pipeline.stages if s.cmd and not s.frozen and not s.is_import]
        for problem in self.executor.check_resources([self.pipeline.job(s) for s in stages]):
            print(f"netgeom: warning: {problem}", file=sys.stderr, flush=True)

    def _collect(self, done) -> None:
        """A finished command: record the stage in DVC (its dvc.lock entry follows in a batch)."""
        stage = self.by_name[done.job.name]
        took = time.monotonic() - self.started.pop(done.job.name)
        if done.returncode != 0:
            self.pipeline.release(stage)
            reason = done.error or f"exit code {done.returncode}"
            self._finish(stage, Outcome(done.job.name, "failed", took, done.job.log, reason))
            return
        try:
            with self.pipeline.locked():
                self.pipeline.record(stage)
        except Exception as exc:  # noqa: BLE001 - e.g. an output the command did not write
            self.pipeline.release(stage)
            _note(done.job.log, f"\nnetgeom: recording the stage in DVC failed: {exc}\n", "a")
            self._finish(stage, Outcome(done.job.name, "failed", took, done.job.log, _short(exc)))
            return
        self.history.record(done.job.name, took)
        self._finish(stage, Outcome(done.job.name, "ran", took, done.job.log))

    def _flush(self, force: bool = False) -> None:
        if not self.pipeline.unwritten:
            return
        due = max(self.FLUSH_EVERY_S, 10 * self.flush_cost)
        if not force and self.executor.running and time.monotonic() - self.flushed_at < due:
            return
        begin = time.monotonic()
        with self.pipeline.locked():
            self.pipeline.flush()
        self.flushed_at = time.monotonic()
        self.flush_cost = self.flushed_at - begin

    # ------------------------------------------------------------------ the loop

    def run(self) -> ReproResult:
        from tqdm.auto import tqdm

        from netgeom.progress import is_quiet

        executor, result = self.executor, self.result
        begin = time.monotonic()
        self.bar = tqdm(total=len(self.pipeline.stages), desc="stages", unit="stage", disable=self.quiet or is_quiet(),
                        dynamic_ncols=True, leave=False, file=sys.stderr)
        previous = self._install_signals()
        try:
            while (self.pending or executor.running) and not self.interrupted:
                self._dispatch()
                if self.interrupted:
                    break
                if not executor.running:
                    if self.pending and not self._ready():
                        raise RuntimeError(f"scheduler stalled with {len(self.pending)} stages waiting")  # a bug
                    continue
                finished = executor.poll(0.2)
                if finished:
                    self._dispatch()  # the freed slots first, for stages that were ready already
                for done in finished:
                    self._collect(done)
                if finished:
                    self._dispatch()  # what they made ready starts before the lock file is written
                self._flush()
            if self.interrupted:
                result.interrupted = True
                for job in executor.stop():
                    self.pipeline.release(self.by_name[job.name])
                    took = time.monotonic() - self.started.pop(job.name, time.monotonic())
                    result.outcomes.append(Outcome(job.name, "stopped", took, job.log, "interrupted"))
                for stage in self.pending:
                    result.outcomes.append(Outcome(stage.addressing, "not started", reason="interrupted"))
        finally:
            try:
                self._flush(force=True)  # every stage recorded so far gets its dvc.lock entry
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
                self.bar.close()
        result.seconds = time.monotonic() - begin
        self._summary(result)
        return result

    def _summary(self, result: ReproResult) -> None:
        counts: dict[str, int] = {}
        for outcome in result.outcomes:
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
        order = ("ran", "restored", "verified", "up to date", "failed", "blocked", "stopped", "not started")
        parts = [f"{counts[k]} {k}" for k in order if counts.get(k)]
        head = "netgeom repro: " + (", ".join(parts) or "nothing to do") + f" in {result.seconds:.1f}s"
        stream = sys.stderr if result.exit_code else self.out
        print(head, file=stream, flush=True)
        if counts.get("restored"):  # checked out, not run: their MLflow runs are logged by nobody
            print("  restored stages log nothing to MLflow: `netgeom mlflow sync` (make sync) adds any run the store lacks", file=stream)
        for outcome in result.failed:
            print(f"  failed: {outcome.stage} ({outcome.reason}); log: {self._log_rel(outcome.log) or '-'}", file=stream)
        blocked = result.having("blocked")
        if blocked:
            print(f"  not run (an upstream stage failed): {', '.join(o.stage for o in blocked)}", file=stream)
        if result.interrupted:
            stopped = [o.stage for o in result.having("stopped")]
            print(f"  interrupted: stopped {', '.join(stopped) or 'nothing'}; nothing of theirs was recorded. "
                  "Run it again to finish the rest.", file=stream)
        stream.flush()


def _note(path: Path, text: str, mode: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, mode) as log:
        log.write(text)
    return path


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__
