"""Benchmark: total CPU seconds of a cold default `netgeom repro`, before and after issue #22.

Two fresh git+DVC copies of the repository in one run: one at BENCH_BEFORE (default 5b5b5f0,
the last commit before the pipeline's fixed costs were cut), one at HEAD; each with its own
src/, dvc.yaml and the default params.yaml, the embedded data materialised, empty DVC cache and
MLflow store. Each runs `netgeom repro -j BENCH_JOBS` with its own code (PYTHONPATH points at
the copy's src/, so the stages' `netgeom` is that copy's). CPU seconds are user + sys of the
whole process tree (getrusage of the waited-for children, from the OS): what the pipeline costs
the machine, whatever else shares it. The two reports/summary.json must be byte-identical.
Goal (issue #22): cpu_ratio = after / before <= 0.6.

Run: .venv/bin/python bench/pipeline_cpu.py  [env BENCH_BEFORE (5b5b5f0), BENCH_JOBS (2),
BENCH_KEEP (1: keep the copies)]   (about 12 minutes on 2 cores)
Last line: cpu_ratio=<after / before> identical=<true|false>
"""

from __future__ import annotations

import io
import os
import resource
import subprocess
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from parallel import REPO, environment, scratch, sh  # noqa: E402  (the same git/DVC set-up helpers)

BEFORE = os.environ.get("BENCH_BEFORE", "5b5b5f0")
JOBS = int(os.environ.get("BENCH_JOBS", "2"))
FILES = ("src", "dvc.yaml", "params.yaml", ".dvcignore", ".gitignore")


def copy_at(revision: str, root: Path) -> Path:
    """The pipeline's files at `revision` in a fresh git+DVC repository with the embedded data."""
    root.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", revision, *FILES], cwd=REPO, capture_output=True, check=True).stdout
    tarfile.open(fileobj=io.BytesIO(archive)).extractall(root, filter="data")
    data = root / "data"
    env = {**environment(), "PYTHONPATH": str(root / "src")}
    subprocess.run([sys.executable, "-m", "netgeom.cli", "data", "materialise"], cwd=root, env=env, check=True, capture_output=True)
    sh("git", "init", "-q", cwd=root)
    sh("git", "config", "user.name", "bench", cwd=root)
    sh("git", "config", "user.email", "bench@netgeom.invalid", cwd=root)
    sh("dvc", "init", "-q", cwd=root)
    sh("dvc", "add", "-q", data.name, cwd=root)
    sh("git", "add", "-A", cwd=root)
    sh("git", "commit", "-qm", f"bench at {revision}", cwd=root)
    return root


def cpu_of_repro(root: Path) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of a cold `netgeom repro` with the copy's own code."""
    env = {**environment(), "PYTHONPATH": str(root / "src")}
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "netgeom.cli_repro", "-j", str(JOBS), "--quiet"], cwd=root, env=env, capture_output=True, text=True)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"netgeom repro failed in {root}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def main() -> None:
    with scratch("netgeom-bench-pipeline-cpu-") as work:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
        copies = {"before": copy_at(BEFORE, work / "before"), "after": copy_at("HEAD", work / "after")}
        stages = {name: len(sh("dvc", "stage", "list", "--name-only", cwd=root).split()) for name, root in copies.items()}
        cpu = {}
        for name, root in copies.items():
            cpu[name], wall = cpu_of_repro(root)
            print(f"{name} ({BEFORE if name == 'before' else head}, {stages[name]} stages): {cpu[name]:.0f} s CPU, {wall:.0f} s wall", flush=True)
        summaries = [(root / "reports" / "summary.json").read_bytes() for root in copies.values()]
        same = summaries[0] == summaries[1]
        if not same:
            print("reports/summary.json differs:\n" + "\n".join(s.decode()[:2000] for s in summaries))
    print(f"cpu_ratio={cpu['after'] / cpu['before']:.3f} identical={'true' if same else 'false'}")


if __name__ == "__main__":
    main()
