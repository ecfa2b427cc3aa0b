"""Benchmark: the fixed cost of a `netgeom repro` that finds everything up to date.

This is what every rerun pays before any stage runs: DVC's plan (dvc.yaml, dvc.lock) and each
stage's status (deps hashed through DVC's state cache, params.yaml read per stage). Measured on
this repository's workspace (a first `netgeom repro` brings it up to date: minutes on a fresh
clone), three ways in one run, each as a fresh process, alternating, best of BENCH_REPEATS:

- netgeom:  `netgeom repro` (plans from DVC's index, parses params.yaml once per content);
- before:   the same steps as netgeom repro did them before (re-implemented here): collect
            dvc.yaml a second time beside the index graph, and let DVC parse params.yaml for
            every stage; each stage's `changed()` under the repository lock;
- dvc:      `dvc repro`, DVC's own no-op.

Run: .venv/bin/python bench/noop_repro.py  [env BENCH_REPEATS (3)]
Last line: vs_before=<before s / netgeom s> vs_dvc=<dvc s / netgeom s> stages=<n>.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

BEFORE = """
from dvc.repo import Repo, lock_repo
from dvc.repo.reproduce import get_active_graph, get_subgraph
import networkx as nx
repo = Repo()
with lock_repo(repo):
    chosen = list(dict.fromkeys(repo.stage.collect("dvc.yaml")))
    graph = get_active_graph(repo.index.graph)
    sub = get_subgraph(graph, chosen)
    stages = list(nx.dfs_postorder_nodes(sub))
changed = []
for stage in stages:
    with lock_repo(repo):
        if stage.changed(False, [u for u in sub.successors(stage)]):
            changed.append(stage.addressing)
repo.close()
assert not changed, changed
print(len(stages))
"""


def timed(*argv: str) -> tuple[float, str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "NETGEOM_QUIET": "1", "DVC_NO_ANALYTICS": "1"}
    start = time.perf_counter()
    done = subprocess.run(list(argv), cwd=REPO, env=env, capture_output=True, text=True)
    took = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv[:3])} failed: {(done.stderr or done.stdout)[-2000:]}")
    return took, done.stdout


def main() -> None:
    repeats = int(os.environ.get("BENCH_REPEATS", "3"))
    timed(str(BIN / "netgeom"), "repro")  # whatever is stale runs now, outside the timings
    first, out = timed(str(BIN / "netgeom"), "repro")
    last = [line for line in out.splitlines() if line.startswith("netgeom repro:")]
    if not last or " ran" in last[-1] or "failed" in last[-1]:
        sys.exit(f"a second netgeom repro was no no-op: {last[-1] if last else out[-500:]}")
    best = {"netgeom": first, "before": float("inf"), "dvc": float("inf")}
    stages = 0
    for _ in range(repeats):
        took, out = timed(sys.executable, "-c", BEFORE)
        best["before"], stages = min(best["before"], took), int(out.split()[-1])
        best["netgeom"] = min(best["netgeom"], timed(str(BIN / "netgeom"), "repro")[0])
        best["dvc"] = min(best["dvc"], timed(str(BIN / "dvc"), "repro", "-q")[0])
    for name, seconds in best.items():
        print(f"{name:8s} {seconds:6.2f} s")
    print(f"vs_before={best['before'] / best['netgeom']:.2f} vs_dvc={best['dvc'] / best['netgeom']:.2f} stages={stages}")


if __name__ == "__main__":
    main()
