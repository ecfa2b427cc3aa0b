"""Benchmark: the CPU cost of logging one default training to MLflow.

One default training (params.yaml's cell: mlp width 64 on digits, 500 epochs, eval every 5, 7
checkpoints, the final one a logged pt2 model) is trained once with `--no-track`, then copied
BENCH_RUNS times under distinct run identities. Measured, as CPU seconds (user + sys, from the
OS) against a store that already exists:
  per_process - what a training stage paid when it logged its own run: a fresh process that
                tracks one run, minus a fresh process that imports the same (torch, netgeom)
                and tracks nothing (so: mlflow's import, opening the store, the first pt2
                export's warm-up and the logging itself);
  marginal    - what the report stage pays per training now that it logs every training in one
                process: the median CPU of `track_run` over the runs after the first;
  training    - the training stage itself (for scale).
Goal (issue #22): tracking_cpu_s (the marginal cost) <= 0.5.

Run: .venv/bin/python bench/tracking.py  [env BENCH_RUNS (default 5)]
Last line: tracking_cpu_s=<marginal> per_process_cpu_s=<x> training_cpu_s=<x>
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
RUNS = int(os.environ.get("BENCH_RUNS", "5"))
NETGEOM = [sys.executable, "-m", "netgeom.cli"]

# Runs inside a fresh process: CPU of importing, of each track_run, printed as JSON.
TRACKER = """
import json, resource, sys
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
import torch
from netgeom.layout import Layout
from netgeom.params import load_params
from netgeom.stages.sync import track_run
params, layout = load_params(), Layout.here()
spent = []
for folder in sys.argv[1:]:
    start = cpu()
    track_run(params, layout, layout.root / folder)
    spent.append(cpu() - start)
print(json.dumps(spent))
"""


def child_cpu(command: list[str], cwd: Path) -> tuple[float, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env={**os.environ, "NETGEOM_QUIET": "1"})
    if done.returncode != 0:
        sys.exit(f"{' '.join(command[:4])} failed:\n{done.stderr[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), done.stdout


def copies(root: Path, source: Path, count: int) -> list[str]:
    """`count` copies of a run folder, each its own MLflow run (distinct name and identity)."""
    names = []
    for i in range(count):
        target = root / "copies" / f"run{i}"
        shutil.copytree(source, target)
        info = json.loads((target / "run.json").read_text())
        info.update(run=f"{info['run']}-copy{i}", params_hash=f"{info['params_hash']}-copy{i}")
        (target / "run.json").write_text(json.dumps(info))
        names.append(str(target.relative_to(root)))
    return names


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="netgeom-bench-tracking-"))
    try:
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        params["grid"] = {**params["grid"], "widths": [params["model"]["width"]], "noise": [params["noise"]["label"]]}
        params["star"] = {**params.get("star", {}), "enabled": False}
        (root / "params.yaml").write_text(yaml.safe_dump(params))
        for command in (["data", "materialise", "digits"], ["check", "--quiet"], ["split", "--quiet"], ["corrupt", "--quiet"]):
            child_cpu(NETGEOM + command, root)
        training, _ = child_cpu(NETGEOM + ["train", "--no-track", "--quiet"], root)
        run = next((root / "artifacts" / "runs").iterdir())
        names = copies(root, run, RUNS + 1)
        alone, _ = child_cpu([sys.executable, "-c", TRACKER], root)  # imports only
        one, _ = child_cpu([sys.executable, "-c", TRACKER, names[0]], root)
        _, out = child_cpu([sys.executable, "-c", TRACKER, *names[1:]], root)
        spent = json.loads(out.strip().splitlines()[-1])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    per_process, marginal = one - alone, statistics.median(spent[1:])
    print(f"training (mlp w64, 500 epochs, digits): {training:.2f} s CPU")
    print(f"tracking in its own process (the old train stage): {per_process:.2f} s CPU on top of the process's torch + netgeom imports")
    print(f"tracking in the report's one process: first run {spent[0]:.2f} s (mlflow import, export warm-up), then {', '.join(f'{s:.2f}' for s in spent[1:])} s")
    print(f"tracking_cpu_s={marginal:.3f} per_process_cpu_s={per_process:.3f} training_cpu_s={training:.3f}")


if __name__ == "__main__":
    main()
