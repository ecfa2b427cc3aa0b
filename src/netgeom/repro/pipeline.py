"""The DVC side of `netgeom repro`: the plan from DVC's own graph, and each stage's bookkeeping.

Everything here runs in the scheduler process, one call at a time, under DVC's repository lock
(`Pipeline.locked()`), exactly like the corresponding steps of `dvc repro`:

    Stage.reproduce   -> `prepare`: skip when unchanged, else remove the outputs and try the run
                         cache (or the lock file's own outputs) before anything is run
    run_stage/cmd_run -> `job`: the stage's commands, shell, cwd and environment (DVC_ROOT,
                         DVC_STAGE) as DVC builds them; an executor runs them
    Stage.run (rest)  -> `record`: save deps and outputs, fill the run cache, commit the outputs
                         to the cache
    Stage.dump        -> `flush`: the recorded stages' entries in dvc.lock, written in batches
                         (parsing and rewriting a long lock file after every stage would make
                         the scheduler the bottleneck) and in a sequential `dvc repro`'s order

Only the command itself runs outside the lock (as `dvc repro` does too: it unlocks the repository
while a command runs). Stages without a command, frozen stages and imports involve no command
and go through DVC's own `_reproduce_stage` inline.
"""

from __future__ import annotations

import copy
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import yaml

from netgeom.errors import NetgeomError

LOG_DIR = Path(".netgeom") / "logs"
LOCK_WAIT_S = 120.0


class Action(Enum):
    SKIP = "up to date"
    RESTORED = "restored"      # outputs checked out from DVC's cache (run cache or dvc.lock)
    INLINE = "verified"        # frozen stage, import, or no command: DVC did it inline
    RUN = "run"                # the command has to run: call `job`, then `record`


@dataclass(frozen=True)
class Job:
    """One stage's commands, ready for an executor: argv per command, in order."""

    name: str
    commands: tuple[tuple[str, ...], ...]
    display: tuple[str, ...]
    cwd: str
    env: dict[str, str]
    log: Path
    cpus: int = 1
    gpus: int = 0


@dataclass
class StageSettings:
    """execution.threads / execution.device for one stage (its wdir's params.yaml)."""

    threads: int = 1
    device: str = "cpu"


def log_name(addressing: str) -> str:
    """'train@8-0.2-0' -> itself; 'sub/dvc.yaml:build' -> 'sub_dvc.yaml_build'."""
    return re.sub(r"[^\w.@+=-]", "_", addressing) + ".log"


def read_settings(params_file: Path) -> StageSettings:
    """execution.threads and execution.device from a params file (missing file or keys: 1, cpu)."""
    try:
        data = yaml.safe_load(params_file.read_text()) or {}
    except FileNotFoundError:
        return StageSettings()
    except yaml.YAMLError as exc:
        raise NetgeomError(str(params_file), f"not valid YAML: {str(exc).splitlines()[0]}") from None
    execution = data.get("execution") if isinstance(data, dict) else None
    execution = execution if isinstance(execution, dict) else {}
    threads = execution.get("threads", 1)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise NetgeomError("execution.threads", f"must be an integer >= 1, got {threads!r}")
    device = execution.get("device") or "cpu"
    if not isinstance(device, str):
        raise NetgeomError("execution.device", f"must be a device name such as cpu or cuda, got {device!r}")
    return StageSettings(threads, device)


def needs_gpu(device: str) -> bool:
    return device.lower().startswith("cuda")


@dataclass
class Pipeline:
    """The stages `dvc repro TARGETS` would consider, in DVC's order, and their bookkeeping."""

    repo: Any
    stages: list                   # DVC's plan order (post-order DFS of the active graph)
    upstream: dict                 # stage -> stages it depends on (within the plan)
    downstream: dict               # stage -> stages that depend on it (within the plan)
    unwritten: list = field(default_factory=list)     # recorded stages whose dvc.lock entry is due
    _lock_order: dict = field(default_factory=dict)   # lock file -> stage names present before the run
    _touched: set = field(default_factory=set)        # lock files DVC itself wrote to (inline stages)
    _settings: dict = field(default_factory=dict)
    _rwlocks: dict = field(default_factory=dict)
    _parsed_params: dict = field(default_factory=dict)  # (path, stat) -> data: see _params_parsed_once
    _lock_documents: dict = field(default_factory=dict)  # lock file -> (its stat, what flush wrote)

    # ------------------------------------------------------------------ opening and planning

    @classmethod
    def open(cls, targets: Sequence[str] = (), root: str | os.PathLike | None = None) -> "Pipeline":
        from dvc.exceptions import DvcException, NotDvcRepoError
        from dvc.lock import LockError
        from dvc.repo import Repo, lock_repo

        try:
            repo = Repo(os.fspath(root) if root is not None else None)
        except NotDvcRepoError:
            raise NetgeomError("repo", f"{Path(root or os.getcwd()).resolve()} is not inside a DVC repository") from None
        try:
            with lock_repo(repo), _dvc_quiet():
                return cls._plan(repo, list(targets))
        except LockError:
            repo.close()
            raise NetgeomError("repo", "another DVC process holds the repository lock; run again when it is done") from None
        except NetgeomError:
            repo.close()
            raise
        except DvcException as exc:
            repo.close()
            raise NetgeomError("dvc.yaml", _one_line(exc)) from None

    @classmethod
    def _plan(cls, repo, targets: list[str]) -> "Pipeline":
        import networkx as nx
        from dvc.dvcfile import PROJECT_FILE
        from dvc.exceptions import DvcException
        from dvc.repo.reproduce import get_active_graph, get_subgraph

        try:
            index = repo.index
        except DvcException as exc:
            raise NetgeomError("dvc.yaml", _one_line(exc)) from None
        if targets:
            chosen = []
            for target in targets:
                try:
                    chosen.extend(repo.stage.collect(target))
                except DvcException as exc:
                    raise NetgeomError("target", f"{target!r}: {_one_line(exc)}") from None
        else:
            # `dvc repro` collects dvc.yaml anew, a second parse of dvc.lock (~2.5 s of a 9.7 s
            # no-op repro on the default grid); the index already holds those very stages.
            project = os.path.abspath(PROJECT_FILE)  # the working directory's, as DVC's collect
            chosen = [s for s in index.stages if os.path.abspath(s.dvcfile.path) == project]
            if not chosen and not os.path.exists(project):
                raise NetgeomError("dvc.yaml", f"{project} does not exist")
        chosen = list(dict.fromkeys(chosen))
        graph = get_active_graph(index.graph)
        sub = get_subgraph(graph, chosen)
        stages = list(nx.dfs_postorder_nodes(sub))
        members = set(stages)
        upstream = {s: [u for u in sub.successors(s) if u in members] for s in stages}
        downstream = {s: [d for d in sub.predecessors(s) if d in members] for s in stages}
        pipeline = cls(repo, stages, upstream, downstream)
        for stage in stages:
            lock = getattr(stage.dvcfile, "_lockfile", None)
            if lock is not None and lock.path not in pipeline._lock_order:
                pipeline._lock_order[lock.path] = _lock_stage_names(lock.path)
        return pipeline

    def close(self) -> None:
        for stack in self._rwlocks.values():
            stack.close()
        self._rwlocks.clear()
        self.repo.close()

    @property
    def root(self) -> Path:
        return Path(self.repo.root_dir)

    def log_path(self, stage) -> Path:
        return self.root / LOG_DIR / log_name(stage.addressing)

    def settings(self, stage) -> StageSettings:
        """execution.* from the params.yaml in the stage's wdir; `meta: {device: ...}` overrides."""
        wdir = Path(stage.wdir)
        if wdir not in self._settings:
            self._settings[wdir] = read_settings(wdir / "params.yaml")
        found = self._settings[wdir]
        meta = stage.meta if isinstance(getattr(stage, "meta", None), dict) else {}
        if isinstance(meta.get("device"), str):
            return StageSettings(found.threads, meta["device"])
        return found

    # ------------------------------------------------------------------ locking

    @contextmanager
    def locked(self) -> Iterator[None]:
        """DVC's repository lock, as `dvc repro` holds it around everything but the commands.

        While commands run the lock is free, so another DVC command (a `dvc status` in another
        shell, a stage calling dvc) may hold it for a moment: wait for it (LOCK_WAIT_S at most)."""
        from dvc.lock import LockError
        from dvc.repo import lock_repo

        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            stack = ExitStack()
            try:
                stack.enter_context(lock_repo(self.repo))
                break
            except LockError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        with stack, _dvc_quiet(), _params_parsed_once(self._parsed_params):
            yield

    # ------------------------------------------------------------------ one stage (under `locked`)

    def prepare(self, stage, run_cache: bool = True) -> Action:
        """Stage.reproduce up to the command: skip, restore from cache, run inline, or RUN."""
        from dvc.repo.reproduce import _reproduce_stage
        from dvc.stage.cache import RunCacheNotFoundError

        upstream = self.upstream.get(stage, [])
        if not stage.changed(False, upstream):
            return Action.SKIP
        if stage.frozen or not stage.cmd or stage.is_import or stage.is_partial_import:
            done = _reproduce_stage(stage, upstream=upstream, force=False, run_cache=run_cache)
            lock = getattr(stage.dvcfile, "_lockfile", None)
            if done and lock is not None:
                self._touched.add(lock.path)  # DVC wrote its entry; the next flush orders it
                self._lock_documents.pop(lock.path, None)  # and re-reads the file, whatever its stat
            return Action.INLINE if done else Action.SKIP
        stage.remove_outs(ignore_remove=False, force=False)
        try:
            stage.repo.stage_cache.restore(stage, run_cache=run_cache)
        except RunCacheNotFoundError:
            stage.save_deps()
        else:
            self.record(stage)
            return Action.RESTORED
        self._hold_rwlock(stage)
        return Action.RUN

    def job(self, stage) -> Job:
        """The stage's commands as `dvc repro` would run them (shell, cwd, env)."""
        from dvc.stage.run import _enforce_cmd_list, _make_cmd, get_executable, prepare_kwargs

        kwargs = prepare_kwargs(stage)
        executable = get_executable()
        commands = _enforce_cmd_list(stage.cmd)
        settings = self.settings(stage)
        return Job(
            name=stage.addressing,
            commands=tuple(tuple(_make_cmd(executable, cmd)) for cmd in commands),
            display=tuple(commands),
            cwd=kwargs["cwd"],
            env=kwargs["env"],
            log=self.log_path(stage),
            cpus=settings.threads,
            gpus=1 if needs_gpu(settings.device) else 0,
        )

    def record(self, stage, run_cache: bool = True) -> None:
        """Stage.run's tail: save deps and outs, fill the run cache, commit the outputs to the
        cache. Its dvc.lock entry is written by the next `flush` (as _reproduce_stage's dump)."""
        from dvc.stage import PipelineStage

        no_cache_outs = any(not out.use_cache for out in stage.outs if not (out.is_metric or out.is_plot))
        stage.save(allow_missing=False, run_cache=run_cache and not no_cache_outs)
        stage.commit(allow_missing=False)
        if isinstance(stage, PipelineStage):
            self.unwritten.append(stage)
        else:  # a single-stage .dvc file: DVC rewrites that file itself
            stage.dump(update_pipeline=False)
        self.release(stage)

    def flush(self) -> None:
        """Write the dvc.lock entries of the stages recorded since the last flush: the lock file
        is read and written once per batch (DVC's Lockfile.dump_stages, with its serializer),
        its stage order kept that of a sequential `dvc repro` (`_order`)."""
        from dvc.stage.serialize import to_lockfile

        batches: dict = {}
        for stage in self.unwritten:
            batches.setdefault(stage.dvcfile._lockfile.path, (stage.dvcfile._lockfile, []))[1].append(stage)
        for path in self._touched:
            if path not in batches and os.path.exists(path):
                batches[path] = (None, [])
        for path, (lockfile, stages) in batches.items():
            data = self._lock_document(path)
            if not data:
                data.update({"schema": "2.0"})
            data["stages"] = data.get("stages", {})
            for stage in stages:
                data["stages"].update(to_lockfile(stage))
            self._order(path, data["stages"])
            self._write_lock(path, data)
            if lockfile is not None:
                self.repo.scm_context.track_file(lockfile.relpath)
        self.unwritten.clear()
        self._touched.clear()

    def _lock_document(self, path: str):
        """dvc.lock as DVC's round-trip parser reads it (comments and layout kept, as modify_yaml).
        The parse (2.3 s for the default grid's 0.8 MB, against 1.4 s for the write) is done once:
        later flushes reuse the document this pipeline last wrote, unless the file's stat says
        someone else (DVC's inline stages, another command) wrote it since."""
        from dvc.utils.serialize._yaml import parse_yaml_for_update

        stat, data = self._lock_documents.pop(path, (None, None))
        if data is not None and stat == _stat_key(path):
            return data
        try:
            return parse_yaml_for_update(Path(path).read_text(encoding="utf-8"), path)
        except FileNotFoundError:
            return {}

    def _write_lock(self, path: str, data) -> None:
        """Write the lock file whole: a temporary file beside it renamed over it (DVC's own dump
        truncates and rewrites in place, so a kill mid-write would leave half a dvc.lock)."""
        from dvc.utils.serialize._yaml import _dump

        target = Path(path)
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            with open(temporary, "w", encoding="utf-8") as stream:
                _dump(data, stream)
            if target.exists():
                shutil.copymode(target, temporary)
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)
        self._lock_documents[path] = (_stat_key(path), data)

    def release(self, stage) -> None:
        """Drop the read/write claims `prepare` took on the stage's deps and outputs."""
        stack = self._rwlocks.pop(stage, None)
        if stack is not None:
            stack.close()

    def _hold_rwlock(self, stage) -> None:
        """DVC's rwlock (deps read, outs written) for as long as the command runs, as dvc repro."""
        from dvc.dependency.db import AbstractDependency
        from dvc.dependency.repo import RepoDependency
        from dvc.rwlock import rwlock

        def paths(items):
            return [i.fs_path for i in items if not isinstance(i, (RepoDependency, AbstractDependency))]

        stack = ExitStack()
        stack.enter_context(
            rwlock(
                self.repo.tmp_dir, self.repo.fs, " ".join(sys.argv), paths(stage.deps), paths(stage.outs),
                self.repo.config["core"].get("hardlink_lock", False),
            )
        )
        self._rwlocks[stage] = stack

    def _order(self, path: str, entries) -> None:
        """Stage order of a sequential `dvc repro`: entries that were in the lock file before
        the run where they were, new ones in DVC's plan order (not in order of completion)."""
        before = {name: i for i, name in enumerate(self._lock_order.get(path, []))}
        plan = {
            s.name: i for i, s in enumerate(self.stages)
            if getattr(s, "name", None) and getattr(getattr(s.dvcfile, "_lockfile", None), "path", None) == path
        }
        names = list(entries)

        def rank(name):
            return (0, before[name]) if name in before else (1, plan.get(name, math.inf))

        wanted = sorted(names, key=rank)
        if wanted != names:
            values = {name: entries.pop(name) for name in names}
            for name in wanted:
                entries[name] = values[name]


# libyaml's loader where PyYAML was built with it: dvc.lock (~0.8 MB on the default grid) parses
# in 0.26 s instead of 1.0 s, to the same data, on the scheduler's critical path.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _stat_key(path: str) -> tuple | None:
    """What says a file is unchanged (as DVC's own hash cache trusts it); None when absent."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _lock_stage_names(path: str) -> list[str]:
    try:
        data = yaml.load(Path(path).read_text(), Loader=_YAML_LOADER) or {}
    except FileNotFoundError:
        return []
    return list((data.get("stages") or {}).keys())


@contextmanager
def _params_parsed_once(parsed: dict) -> Iterator[None]:
    """DVC parses params.yaml anew for each stage it checks: 146 ruamel parses of the same 9 kB
    file per no-op repro of the default grid, ~2 s. Here a local params file is parsed once per
    content, keyed by its stat (inode, size, mtime, ctime: what DVC's own hash cache trusts), so
    an edit between stages is read; each caller gets its own copy, as from a fresh parse."""
    from dvc.utils import serialize

    def load(path, fs=None, **kwargs):
        if kwargs or getattr(fs, "protocol", None) != "local":
            return original(path, fs=fs, **kwargs)
        stat = _stat_key(path)
        if stat is None:
            return original(path, fs=fs)  # DVC's own error for a missing file
        key = (os.path.abspath(path), *stat)
        if key not in parsed:
            parsed[key] = original(path, fs=fs)
        return copy.deepcopy(parsed[key])

    suffixes = (".yaml", ".yml")
    saved = {suffix: serialize.LOADERS.get(suffix) for suffix in suffixes}
    original = serialize.LOADERS[".yaml"]
    for suffix in suffixes:
        serialize.LOADERS[suffix] = load
    try:
        yield
    finally:
        for suffix, loader in saved.items():
            if loader is None:
                serialize.LOADERS.pop(suffix, None)
            else:
                serialize.LOADERS[suffix] = loader


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    cause = exc.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text}: {' '.join(str(cause).split())}"
    return text or type(exc).__name__


@contextmanager
def _dvc_quiet() -> Iterator[None]:
    """DVC's info lines ("Updating lock file ...") are not ours to print; warnings still show."""
    import logging

    logger = logging.getLogger("dvc")
    level = logger.level
    if level < logging.WARNING:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
