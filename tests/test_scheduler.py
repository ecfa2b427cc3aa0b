"""`netgeom repro` against real git+DVC repositories (no mocks of DVC).

Toy stages (a small Python tool that sleeps, writes its output and notes its start/end times and
environment outside the outputs) check the scheduler's own properties: DAG order, at most -j at
once, failure isolation, Ctrl-C, bad input, dvc.lock identical to a sequential `dvc repro`.
One test runs the real netgeom pipeline with tiny params in parallel and compares it with a
sequential `dvc repro` of a second copy; the Ray test starts a two-node Ray cluster on this
machine, runs part of that pipeline through it and compares it with the sequential copy (it is
skipped when ray is not installed).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.netns_cluster import kill_groups
from tests.procfs import live_processes
from tests.conftest import commit_dvc_repo, copy_pipeline

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

TOOL = '''\
import json, os, sys, time
from pathlib import Path

name, out, *deps = sys.argv[1:]
start = time.time()
time.sleep(float(os.environ.get("TOOL_SLEEP_" + name.upper(), os.environ.get("TOOL_SLEEP", "0.2"))))
factor = os.environ.get("TOOL_FACTOR", "")
Path(out).write_text(name + factor + ":" + ",".join(Path(d).read_text() for d in deps))
times = Path(os.environ["DVC_ROOT"]) / "times"
times.mkdir(exist_ok=True)
note = {"start": start, "end": time.time(), "cwd": os.getcwd(), "root": os.environ["DVC_ROOT"]}
(times / (os.environ["DVC_STAGE"] + ".json")).write_text(json.dumps(note))
'''

# matrix, foreach, a wdir stage and a params dependency: the scheduler must be generic over them
TOY = '''\
stages:
  gen:
    cmd: python tool.py gen gen.txt
    deps: [tool.py]
    params: [factor]
    outs: [gen.txt]
  work:
    matrix:
      i: [1, 2, 3]
    cmd: python tool.py work${item.i} work${item.i}.txt gen.txt
    deps:
      - tool.py
      - gen.txt
    outs:
      - work${item.i}.txt
  merge:
    cmd: python tool.py merge merged.txt work1.txt work2.txt work3.txt
    deps: [tool.py, work1.txt, work2.txt, work3.txt]
    outs: [merged.txt]
  side:
    foreach: [a]
    do:
      wdir: sub
      cmd: python ../tool.py side${item} side${item}.txt
      deps: [../tool.py]
      outs:
        - side${item}.txt
'''
EDGES = [("gen", f"work@{i}") for i in (1, 2, 3)] + [(f"work@{i}", "merge") for i in (1, 2, 3)]


def environment(**extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
        "DVC_NO_ANALYTICS": "1", "NETGEOM_QUIET": "1",
    }
    for name in ("DVC_ROOT", "DVC_STAGE", "RAY_ADDRESS", "TOOL_SLEEP"):
        env.pop(name, None)
    env.update(extra)
    return env


def run(*args: str, cwd: Path, check: bool = True, timeout: float = 600, **extra: str) -> subprocess.CompletedProcess:
    done = subprocess.run(list(args), cwd=cwd, env=environment(**extra), capture_output=True, text=True, timeout=timeout)
    if check:
        assert done.returncode == 0, f"{args}: {done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def netgeom_repro(cwd: Path, *args: str, check: bool = True, **extra: str) -> subprocess.CompletedProcess:
    return run(sys.executable, "-m", "netgeom.cli_repro", *args, cwd=cwd, check=check, **extra)


def make_repo(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return commit_dvc_repo(root, run, track_data=False)


def copy_repo(src: Path, dst: Path) -> Path:
    """A fresh copy with git history and DVC cache, without DVC's per-process temp state."""
    skip = src / ".dvc" / "tmp"
    shutil.copytree(src, dst, symlinks=True, ignore=lambda d, names: ["tmp"] if Path(d) == skip.parent else [])
    return dst


def toy_files(**extra: str) -> dict[str, str]:
    return {"tool.py": TOOL, "dvc.yaml": TOY, "params.yaml": "factor: 2\nexecution: {threads: 1}\n",
            "sub/.gitkeep": "", ".gitignore": "/.netgeom/\n/times/\n", **extra}


def ran_stages(stdout: str) -> list[str]:
    """The stages reported as `<stage>: ran in <seconds>s`."""
    return [m.group(1) for m in re.finditer(r"^(\S+): ran in [\d.]+s$", stdout, re.M)]


def times(root: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (root / "times").glob("*.json")}


def lock(root: Path) -> dict:
    return yaml.safe_load((root / "dvc.lock").read_text())


def stage_processes(root: Path, besides: int | None = None) -> list[int]:
    """Live processes working inside `root` (the stages' commands), `besides` (the scheduler) excepted."""
    return [p.pid for p in live_processes() if p.pid != besides and p.works_in(root)]


def tool_names(root: Path, besides: int | None = None) -> set[str]:
    """The `name` argument of each running `python tool.py <name> ...`."""
    return {p.argv[2] for p in live_processes()
            if p.pid != besides and p.works_in(root) and len(p.argv) > 2 and p.argv[1].endswith("tool.py")}


# --------------------------------------------------------------------------- toy pipeline


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return make_repo(tmp_path_factory.mktemp("toy") / "repo", toy_files())


@pytest.fixture(scope="module")
def toy_j2(toy, tmp_path_factory):
    root = copy_repo(toy, tmp_path_factory.mktemp("toy_j2") / "repo")
    done = netgeom_repro(root, "-j", "2", TOOL_SLEEP_WORK1="1", TOOL_SLEEP_WORK2="1", TOOL_SLEEP_WORK3="1")
    return root, done


def test_dag_order_is_respected_and_at_most_j_stages_run_at_once(toy_j2):
    root, done = toy_j2
    noted = times(root)
    assert set(noted) == {"gen", "work@1", "work@2", "work@3", "merge", "side@a"}
    for up, down in EDGES:
        assert noted[down]["start"] >= noted[up]["end"], f"{down} started before {up} finished"
    events = sorted([(n["start"], 1) for n in noted.values()] + [(n["end"], -1) for n in noted.values()])
    running, most = 0, 0
    for _, step in events:
        running += step
        most = max(most, running)
    assert most == 2  # -j 2: two stages overlap, never three
    # cwd is the stage's wdir; DVC_ROOT is the repository, as `dvc repro` sets them
    assert noted["side@a"]["cwd"] == str(root / "sub") and noted["side@a"]["root"] == str(root)
    assert noted["gen"]["cwd"] == str(root)
    # one line per finished stage with its time; each stage's output in its own log
    assert sorted(ran_stages(done.stdout)) == sorted(noted)
    for name in noted:
        log = (root / ".netgeom" / "logs" / f"{name}.log").read_text()
        assert log.startswith("> python ")
    assert "6 ran" in done.stdout.splitlines()[-1]


def test_after_a_parallel_repro_dvc_finds_everything_up_to_date(toy_j2):
    root, _ = toy_j2
    assert "up to date" in run("dvc", "status", cwd=root).stdout
    again = run("dvc", "repro", cwd=root).stdout
    assert "Running stage" not in again and "up to date" in again
    # DVC's run cache holds every stage it can hash (all of them here: each has deps and outs)
    runs = [p for p in (root / ".dvc" / "cache" / "runs").glob("*/*") if p.is_dir()]
    assert len(runs) == 6
    # and a second netgeom repro is a no-op as well
    second = netgeom_repro(root)
    assert "6 up to date" in second.stdout and " ran" not in second.stdout


def test_dvc_lock_is_identical_for_j1_j2_and_a_sequential_dvc_repro(toy, toy_j2, tmp_path):
    root_j2, _ = toy_j2
    root_j1 = copy_repo(toy, tmp_path / "j1")
    netgeom_repro(root_j1, "-j", "1")
    root_dvc = copy_repo(toy, tmp_path / "dvc")
    run("dvc", "repro", cwd=root_dvc)
    text = (root_dvc / "dvc.lock").read_text()
    assert (root_j1 / "dvc.lock").read_text() == text
    assert (root_j2 / "dvc.lock").read_text() == text  # same stages, same hashes, same order
    for name in ("gen.txt", "work2.txt", "merged.txt", "sub/sidea.txt"):
        assert (root_j2 / name).read_text() == (root_dvc / name).read_text()


def test_a_changed_param_reruns_only_what_depends_on_it_and_uses_the_run_cache(toy, tmp_path):
    root = copy_repo(toy, tmp_path / "repo")
    netgeom_repro(root, "-j", "2")
    (root / "params.yaml").write_text("factor: 3\nexecution: {threads: 1}\n")
    rerun = netgeom_repro(root, "-j", "2")
    assert "gen: ran" in rerun.stdout and "side@a" not in rerun.stdout
    # gen's output does not depend on factor: downstream stays up to date, as with dvc repro
    assert "1 ran, 5 up to date" in rerun.stdout
    (root / "params.yaml").write_text("factor: 2\nexecution: {threads: 1}\n")
    (root / "merged.txt").unlink()
    back = netgeom_repro(root, "-j", "2")
    assert "gen: restored" in back.stdout and "merge: restored" in back.stdout  # run cache / lock
    assert "restored stages log nothing to MLflow" in back.stdout and "restored stages" not in rerun.stdout
    assert "up to date" in run("dvc", "status", cwd=root).stdout


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # DVC's own trie lookups
def test_the_default_plan_is_the_working_directory_s_dvc_yaml_as_dvc_collects_it(toy, tmp_path, monkeypatch):
    """Without targets the plan comes from DVC's index (one parse of dvc.lock): the stages of
    ./dvc.yaml and their order, exactly what collecting `dvc.yaml` gives; another dvc.yaml in the
    repository is not part of it, and from that folder only its own stages are."""
    from netgeom.repro.pipeline import Pipeline

    root = copy_repo(toy, tmp_path / "repo")
    (root / "other").mkdir()
    (root / "other" / "dvc.yaml").write_text("stages:\n  lone:\n    cmd: echo lone > lone.txt\n    outs: [lone.txt]\n")

    def plan(*targets):
        pipeline = Pipeline.open(targets)
        try:
            return [s.addressing for s in pipeline.stages]
        finally:
            pipeline.close()

    monkeypatch.chdir(root)
    default = plan()
    assert default == plan("dvc.yaml")
    assert sorted(default) == sorted(["gen", "work@1", "work@2", "work@3", "merge", "side@a"])
    monkeypatch.chdir(root / "other")
    assert plan() == plan("dvc.yaml") == ["lone"]  # addressed from there


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_params_yaml_is_parsed_once_per_content_and_an_edit_is_seen(toy, tmp_path, monkeypatch):
    """DVC re-reads params.yaml for every stage it checks; the pipeline parses each content once
    (keyed by the file's stat), hands each caller its own copy, and sees an edit at once."""
    from dvc.utils import serialize

    from netgeom.repro.pipeline import Pipeline

    root = copy_repo(toy, tmp_path / "repo")
    netgeom_repro(root)
    parses = []
    original = serialize.LOADERS[".yaml"]

    def counting(path, fs=None, **kwargs):
        parses.append(Path(path).name)
        return original(path, fs=fs, **kwargs)

    monkeypatch.setitem(serialize.LOADERS, ".yaml", counting)
    monkeypatch.chdir(root)
    pipeline = Pipeline.open()
    parses.clear()  # planning read it once for dvc.yaml's ${} templating
    try:
        gen = next(s for s in pipeline.stages if s.addressing == "gen")
        for _ in range(3):
            with pipeline.locked():
                assert not gen.changed()
        assert parses == ["params.yaml"]
        with pipeline.locked():
            first = serialize.load_path(str(root / "params.yaml"), pipeline.repo.fs)
            first["factor"] = 99
            assert serialize.load_path(str(root / "params.yaml"), pipeline.repo.fs)["factor"] == 2
        time.sleep(0.05)  # past the kernel's coarse timestamp tick: a real edit's new mtime
        (root / "params.yaml").write_text("factor: 3\nexecution: {threads: 1}\n")  # same size
        with pipeline.locked():
            assert gen.changed()
        assert parses == ["params.yaml", "params.yaml"]
    finally:
        pipeline.close()
    assert serialize.LOADERS[".yaml"] is counting  # DVC's loader table is back as it was


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_dvc_lock_is_parsed_once_rewritten_whole_and_someone_else_s_edit_is_kept(toy, tmp_path, monkeypatch):
    """Each flush used to parse dvc.lock anew (2.3 s of a 4 s flush on the default grid): now the
    document the pipeline wrote is reused while the file's stat is its own; a write by anyone
    else is read back first, and a write that fails midway leaves the old file whole."""
    from dvc.utils.serialize import _yaml

    from netgeom.repro.pipeline import Pipeline

    root = copy_repo(toy, tmp_path / "repo")
    netgeom_repro(root)
    before = (root / "dvc.lock").read_text()
    parses = []
    original = _yaml.parse_yaml_for_update

    def counting(text, path):
        parses.append(path)
        return original(text, path)

    monkeypatch.setattr(_yaml, "parse_yaml_for_update", counting)
    monkeypatch.chdir(root)
    pipeline = Pipeline.open()
    try:
        gen = next(s for s in pipeline.stages if s.addressing == "gen")

        def flush():
            with pipeline.locked():
                pipeline.unwritten.append(gen)
                pipeline.flush()

        flush()
        flush()
        assert len(parses) == 1 and (root / "dvc.lock").read_text() == before  # same entry, same bytes
        time.sleep(0.05)
        (root / "dvc.lock").write_text("# kept: written by someone else\n" + before)
        flush()
        assert len(parses) == 2 and (root / "dvc.lock").read_text() == "# kept: written by someone else\n" + before

        def half_written(data, stream):
            stream.write("schema: '2.0'\nstages:\n  gen:\n")
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(_yaml, "_dump", half_written)
        with pytest.raises(OSError, match="No space"):
            flush()
        assert (root / "dvc.lock").read_text() == "# kept: written by someone else\n" + before
        assert [p.name for p in root.iterdir() if p.name.endswith(".tmp")] == []
    finally:
        pipeline.close()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_lock_entry_dvc_writes_itself_survives_the_next_flush(tmp_path, monkeypatch):
    """A frozen stage is verified by DVC itself, which rewrites dvc.lock in place: the next flush
    must start from that file, not from the document it wrote before, even when the rewrite
    falls within one tick of the filesystem's clock (simulated: every stat looks the same)."""
    from netgeom.repro import pipeline as pipeline_module
    from netgeom.repro.pipeline import Action, Pipeline

    two = "stages:\n  a:\n    cmd: echo a > a.txt\n    outs: [a.txt]\n  b:\n    cmd: cat a.txt > b.txt\n    deps: [a.txt]\n    outs: [b.txt]\n"
    root = make_repo(tmp_path / "repo", {"dvc.yaml": two, ".gitignore": "/.netgeom/\n"})
    netgeom_repro(root)
    (root / "dvc.yaml").write_text(two.replace("    cmd: echo a", "    frozen: true\n    cmd: echo a"))
    (root / "a.txt").write_text("changed\n")
    monkeypatch.chdir(root)
    monkeypatch.setattr(pipeline_module, "_stat_key", lambda path: ("looks the same",))
    pipeline = Pipeline.open()
    try:
        a, b = (next(s for s in pipeline.stages if s.addressing == name) for name in ("a", "b"))
        with pipeline.locked():
            pipeline.unwritten.append(b)
            pipeline.flush()
        with pipeline.locked():
            assert pipeline.prepare(a) is Action.INLINE
        with pipeline.locked():
            pipeline.unwritten.append(b)
            pipeline.flush()
    finally:
        pipeline.close()
    entry = lock(root)["stages"]["a"]["outs"][0]
    assert entry["md5"] == hashlib.md5(b"changed\n").hexdigest() and entry["size"] == 8


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # DVC's own trie lookups
def test_each_stage_job_carries_dvc_env_and_its_ray_resources(toy, tmp_path, monkeypatch):
    """CPUs = execution.threads and one GPU for cuda stages (params.yaml, or a stage's own
    meta.device); a Ray task gets the scheduler's PATH and DVC_* variables but keeps the worker's
    own CUDA_VISIBLE_DEVICES."""
    from netgeom.repro.executors import ray_env
    from netgeom.repro.pipeline import Pipeline

    root = copy_repo(toy, tmp_path / "repo")
    (root / "params.yaml").write_text("factor: 2\nexecution: {threads: 3, device: cuda}\n")
    text = (root / "dvc.yaml").read_text().replace("    outs: [merged.txt]\n", "    outs: [merged.txt]\n    meta: {device: cpu}\n")
    (root / "dvc.yaml").write_text(text)
    monkeypatch.chdir(root)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
    pipeline = Pipeline.open()
    try:
        jobs = {s.addressing: pipeline.job(s) for s in pipeline.stages}
    finally:
        pipeline.close()
    assert (jobs["gen"].cpus, jobs["gen"].gpus) == (3, 1)
    assert (jobs["merge"].cpus, jobs["merge"].gpus) == (3, 0)
    assert jobs["side@a"].cwd == str(root / "sub") and jobs["side@a"].env["DVC_STAGE"] == "side@a"
    forwarded = ray_env(jobs["gen"].env)
    assert forwarded["DVC_ROOT"] == str(root) and forwarded["DVC_STAGE"] == "gen" and "PATH" in forwarded
    assert "CUDA_VISIBLE_DEVICES" not in forwarded


# --------------------------------------------------------------------------- failures


FAILING = '''\
stages:
  bad:
    cmd: python -c "import sys; print('boom from bad'); sys.exit(3)"
    deps: [tool.py]
    outs: [bad.txt]
  after_bad:
    cmd: python tool.py after_bad after_bad.txt bad.txt
    deps: [tool.py, bad.txt]
    outs: [after_bad.txt]
  slow:
    cmd: python tool.py slow slow.txt
    deps: [tool.py]
    outs: [slow.txt]
  after_slow:
    cmd: python tool.py after_slow after_slow.txt slow.txt
    deps: [tool.py, slow.txt]
    outs: [after_slow.txt]
  unparametrised:
    cmd: python tool.py unparametrised unparametrised.txt
    deps: [tool.py]
    params: [missing_group]
    outs: [unparametrised.txt]
'''


def test_a_failing_stage_blocks_only_its_descendants(tmp_path):
    root = make_repo(tmp_path / "repo", toy_files(**{"dvc.yaml": FAILING}))
    done = netgeom_repro(root, "-j", "2", check=False, TOOL_SLEEP_SLOW="1.5")
    assert done.returncode == 1, done.stderr
    assert set(lock(root)["stages"]) == {"slow", "after_slow"}
    assert set(times(root)) == {"slow", "after_slow"}
    assert not (root / "after_bad.txt").exists()
    log = root / ".netgeom" / "logs" / "bad.log"
    assert "boom from bad" in log.read_text()
    assert "failed: bad (exit code 3); log: .netgeom/logs/bad.log" in done.stderr
    assert "not run (an upstream stage failed): after_bad" in done.stderr
    # a stage DVC itself refuses (its params group is missing) fails the same way, with a log
    assert "failed: unparametrised (Parameters 'missing_group' are missing" in done.stderr
    assert "missing_group" in (root / ".netgeom" / "logs" / "unparametrised.log").read_text()
    status = run("dvc", "status", cwd=root).stdout
    assert "bad:" in status and "after_bad:" in status and "slow:" not in status


# --------------------------------------------------------------------------- Ctrl-C


HOLD = '''\
stages:
  first:
    cmd: python tool.py first first.txt
    deps: [tool.py]
    outs: [first.txt]
  hold:
    foreach: [1, 2]
    do:
      cmd: python tool.py hold${item} hold${item}.txt first.txt
      deps: [tool.py, first.txt]
      outs:
        - hold${item}.txt
  last:
    cmd: python tool.py last last.txt hold1.txt hold2.txt
    deps: [tool.py, hold1.txt, hold2.txt]
    outs: [last.txt]
'''


def test_sigint_stops_every_child_records_nothing_half_done_and_a_rerun_finishes(tmp_path):
    root = make_repo(tmp_path / "repo", toy_files(**{"dvc.yaml": HOLD}))
    env = environment(TOOL_SLEEP_HOLD1="300", TOOL_SLEEP_HOLD2="300")
    scheduler = subprocess.Popen([sys.executable, "-m", "netgeom.cli_repro", "-j", "2"], cwd=root, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        # by name: `first` may still be exiting after it wrote its times, so a count of processes
        # could be `first` and hold@1 while hold@2 has not been started yet
        while len(times(root)) < 1 or not {"hold1", "hold2"} <= tool_names(root, scheduler.pid):
            assert time.monotonic() < deadline and scheduler.poll() is None, "the two hold stages never started"
            time.sleep(0.2)
        scheduler.send_signal(signal.SIGINT)
        out, err = scheduler.communicate(timeout=60)
    finally:
        if scheduler.poll() is None:
            os.killpg(scheduler.pid, signal.SIGKILL)
        for pid in stage_processes(root, scheduler.pid):
            os.kill(pid, signal.SIGKILL)
    assert scheduler.returncode == 130, err
    assert stage_processes(root) == []
    assert set(lock(root)["stages"]) == {"first"}  # valid YAML, only the finished stage
    assert "interrupted: stopped hold@1, hold@2" in err
    assert not (root / ".dvc" / "tmp" / "rwlock").exists() or json.loads((root / ".dvc" / "tmp" / "rwlock").read_text()).get("write", {}) == {}
    rerun = netgeom_repro(root, "-j", "2")
    assert "3 ran, 1 up to date" in rerun.stdout
    assert set(lock(root)["stages"]) == {"first", "hold@1", "hold@2", "last"}
    assert "up to date" in run("dvc", "status", cwd=root).stdout


# --------------------------------------------------------------------------- bad input


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def pristine(toy, tmp_path_factory) -> Path:
    return copy_repo(toy, tmp_path_factory.mktemp("bad") / "repo")


@pytest.mark.parametrize(
    ("args", "key", "env"),
    [
        (["-j", "0"], "--jobs", {}),
        (["--backend", "dask"], "--backend", {}),
        (["nosuchstage"], "target", {}),
        (["--backend", "ray"], "RAY_ADDRESS", {"RAY_ADDRESS": "closed"}),
    ],
    ids=["jobs-0", "unknown-backend", "unknown-target", "unreachable-ray"],
)
def test_bad_input_is_one_line_exit_2_and_nothing_recorded(pristine, args, key, env):
    if key == "RAY_ADDRESS":
        pytest.importorskip("ray", reason="ray is not installed (pip install 'netgeom[ray]')")
        env = {"RAY_ADDRESS": f"127.0.0.1:{closed_port()}"}
    done = netgeom_repro(pristine, *args, check=False, timeout=60, **env)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"netgeom: error: {key}: "), done.stderr
    assert not (pristine / "dvc.lock").exists() and not (pristine / "gen.txt").exists()
    assert not (pristine / ".netgeom").exists()


# --------------------------------------------------------------------------- the real pipeline


def comparable_lock(root: Path) -> dict:
    """dvc.lock's stages (cmd, params, the hash of every dep and out), except that a path holding
    wall-clock times (training's epoch_seconds in history.csv and checkpoint metadata, a run's
    started/ended in run.json, the tables built from them) is compared file by file with those
    fields removed. Both repositories are
    checked to be `dvc status` clean, so their workspaces are what their dvc.lock says."""

    def entry(item: dict):
        path = root / item["path"]
        files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
        digests = {str(f.relative_to(root)): timeless(f) for f in files}
        if any(d.startswith("timeless:") for d in digests.values()):
            return digests
        return item["md5"]

    return {
        name: {
            "cmd": stage["cmd"],
            "params": stage.get("params"),
            "deps": {d["path"]: entry(d) for d in stage.get("deps", [])},
            "outs": {o["path"]: entry(o) for o in stage.get("outs", [])},
        }
        for name, stage in lock(root)["stages"].items()
    }


# fields that hold wall-clock times (training's epoch_seconds, a run's started/ended stamps)
WALL_CLOCK = ("seconds", "started", "ended", "timestamp", "duration")


def wall_clock(key: str) -> bool:
    return any(word in key for word in WALL_CLOCK)


def timeless(path: Path) -> str:
    """The file's md5, or for CSV/JSON with wall-clock fields 'timeless:' + the md5 of its content
    without them."""
    data = path.read_bytes()
    if path.suffix in (".csv", ".json") and any(word.encode() in data for word in WALL_CLOCK):
        text = data.decode()
        if path.suffix == ".json":
            def strip(value):
                if isinstance(value, dict):
                    return {k: strip(v) for k, v in value.items() if not wall_clock(k)}
                if isinstance(value, list):
                    return [strip(v) for v in value]
                return value

            text = json.dumps(strip(json.loads(text)), sort_keys=True)
        else:
            rows = list(csv.DictReader(io.StringIO(text)))
            text = json.dumps([{k: v for k, v in row.items() if not wall_clock(k or "")} for row in rows])
        return "timeless:" + hashlib.md5(text.encode()).hexdigest()
    return hashlib.md5(data).hexdigest()


REAL_TARGETS = ("smoothness", "interpolation")


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> Path:
    """The repository's pipeline with tiny params, committed, not yet reproduced."""
    from tests.conftest import write_params

    root = copy_pipeline(tmp_path_factory.mktemp("real") / "repo")
    write_params(
        root,
        mlflow={"enabled": False},
        train={"epochs": 2, "checkpoints": {"epochs": [1]}},
        grid={"widths": [4, 8], "noise": [0.2], "seed_offsets": [0]},
    )
    # groups of stages newer than write_params: the repository's own defaults
    params = yaml.safe_load((root / "params.yaml").read_text())
    for group, values in yaml.safe_load((REPO / "params.yaml").read_text()).items():
        params.setdefault(group, values)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return commit_dvc_repo(root, run)


@pytest.fixture(scope="module")
def real_runs(real, tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """Two copies of `real`: a sequential `dvc repro` of one, run while `netgeom repro -j 2` runs
    in the other (the two cores are shared either way; the results must not depend on it)."""
    sequential = copy_repo(real, tmp_path_factory.mktemp("real_dvc") / "repo")
    parallel = copy_repo(real, tmp_path_factory.mktemp("real_j2") / "repo")
    # Two study groups and everything upstream (split, corrupt, train): the scheduler's properties
    # at a fraction of the whole pipeline's cost (tests/test_pipeline.py runs all of it).
    background = subprocess.Popen(["dvc", "repro", *REAL_TARGETS], cwd=sequential, env=environment(), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
    try:
        done = netgeom_repro(parallel, "-j", "2", *REAL_TARGETS)
        out, _ = background.communicate(timeout=900)
    finally:
        if background.poll() is None:
            background.kill()
            background.wait()
    assert background.returncode == 0, out[-3000:]
    return sequential, parallel, done


def test_real_pipeline_in_parallel_equals_a_sequential_dvc_repro(real_runs):
    sequential, root, done = real_runs
    assert ran_stages(done.stdout) and "failed" not in done.stdout + done.stderr
    assert "up to date" in run("dvc", "status", *REAL_TARGETS, cwd=root).stdout
    assert "up to date" in run("dvc", "status", *REAL_TARGETS, cwd=sequential).stdout
    assert comparable_lock(root) == comparable_lock(sequential)
    assert "Running stage" not in run("dvc", "repro", *REAL_TARGETS, cwd=root).stdout


# --------------------------------------------------------------------------- Ray


def free_port() -> int:
    return closed_port()


# Hermetic: Ray >= 2.5x turns token authentication on by itself when ~/.ray/auth_token exists
# (any local `ray.init()` writes one), and then a node joining with `ray start --address` fails.
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


@pytest.fixture
def ray_cluster():
    """A head and a second node on this machine (1 CPU each), torn down even when the test fails.

    Each `ray start` runs in its own session, so every daemon it leaves behind (GCS, raylet,
    workers, agents) is in that process group: the teardown kills exactly those groups and
    checks that none of their processes is left, without touching any other Ray on the machine.
    """
    pytest.importorskip("ray", reason="ray is not installed (pip install 'netgeom[ray]')")
    import tempfile

    port = free_port()
    temp = tempfile.mkdtemp(prefix="ngray", dir="/tmp")  # short: Ray's socket paths live under it
    groups: list[int] = []
    common = ["--num-cpus", "1", "--disable-usage-stats", "--temp-dir", temp]

    def start(*args: str) -> None:
        proc = subprocess.Popen([str(BIN / "ray"), "start", *args, *common], env=environment(**RAY_ENV), start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        groups.append(proc.pid)
        out, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, out[-3000:]

    try:
        start("--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--include-dashboard", "false")
        start("--address", f"127.0.0.1:{port}")
        yield f"127.0.0.1:{port}"
    finally:
        survivors = kill_groups(groups, grace=3.0, patience=15.0)
        shutil.rmtree(temp, ignore_errors=True)
        assert survivors == [], "Ray processes survived the teardown"


def test_ray_backend_on_a_two_node_cluster_equals_a_local_run(real, real_runs, ray_cluster, tmp_path):
    root = copy_repo(real, tmp_path / "repo")
    targets = ["train@4-0.2-0", "train@8-0.2-0", "smoothness@8-0.2-0"]
    done = netgeom_repro(root, "--backend", "ray", *targets, RAY_ADDRESS=ray_cluster, **RAY_ENV)
    ran = set(ran_stages(done.stdout))
    assert set(targets) <= ran and "split" in ran
    assert set(lock(root)["stages"]) == ran
    local = comparable_lock(real_runs[0])
    mine = comparable_lock(root)
    for stage in ran:
        assert mine[stage] == local[stage], stage
    header, command = (root / ".netgeom" / "logs" / "smoothness@8-0.2-0.log").read_text().splitlines()[:2]
    assert re.match(r"# on Ray node [0-9.]+ \(", header) and command.startswith("> netgeom smoothness")
    status = run("dvc", "status", *targets, cwd=root).stdout
    assert "up to date" in status


def test_study_shards_over_ray_come_back_in_order(monkeypatch):
    """`execution.backend: ray` goes through the scheduler's connection (here a local cluster
    started for the call and stopped after it); results are merged by index, not arrival."""
    pytest.importorskip("ray")

    import torch

    from netgeom.execution import run_units

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    units = [(i, i + 1) for i in range(6)]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)  # every task computes with the caller's thread count, as inline
        got = run_units(lambda a, b: (a * b, torch.get_num_threads()), units, backend="ray", workers=2)
    finally:
        torch.set_num_threads(before)
    assert got == [(a * b, 2) for a, b in units]
    import ray

    assert not ray.is_initialized()
