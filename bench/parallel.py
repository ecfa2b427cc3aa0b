"""Benchmark: `netgeom repro -j 2` against a sequential `dvc repro` of the same reduced pipeline.

The repository's dvc.yaml and params.yaml, reduced (grid: 3 widths x 2 noise levels = 6 cells;
train.epochs 100 with the checkpoint epochs that fit; the MLI comparison with one seed), are set
up in one fresh git+DVC copy, which is then copied twice in the same run: one copy is reproduced
with `dvc repro`, the other with `netgeom repro -j 2` (as `python -m netgeom.cli_repro`, the same
command function). Both start cold (empty DVC cache and run cache, no outputs, a fresh MLflow
store under each copy's mlruns/).

identical: every metrics and summary file (artifacts/runs/*/metrics.json, every summary.json
under artifacts/studies/ and reports/summary.json) with the wall-clock fields removed (keys
containing seconds/started/ended/timestamp/duration), and every checkpoint's weights
(artifacts/runs/**/*.safetensors, byte for byte), equal between the two copies; and both copies
`dvc status` clean. (history.csv, checkpoint metadata and run.json hold wall-clock times, so the
dvc.lock hashes of the train outputs differ between any two runs, sequential ones included.)

Goal: speedup >= 1.7 on this machine's 2 cores.

Run: .venv/bin/python bench/parallel.py  [env BENCH_WIDTHS (default: every third default width,
"4,32,256"), BENCH_EPOCHS (100), BENCH_JOBS (2), BENCH_MLFLOW (1: as params.yaml; 0: disabled),
BENCH_KEEP (1: keep the copies and print where)]
Last line: speedup=<dvc repro seconds / netgeom repro seconds> identical=<true|false>.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
JOBS = int(os.environ.get("BENCH_JOBS", "2"))
EPOCHS = int(os.environ.get("BENCH_EPOCHS", "100"))
MLFLOW = os.environ.get("BENCH_MLFLOW", "1") != "0"


def environment() -> dict[str, str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1", "NETGEOM_QUIET": "1",
           "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "b@b"}
    for name in ("DVC_ROOT", "DVC_STAGE", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    return env


def sh(*args: str, cwd: Path) -> str:
    done = subprocess.run(list(args), cwd=cwd, env=environment(), capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(args)} failed in {cwd}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def reduced_params() -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    widths = os.environ.get("BENCH_WIDTHS")
    params["grid"]["widths"] = [int(w) for w in widths.split(",")] if widths else params["grid"]["widths"][::3][:3]
    params["grid"]["seed_offsets"] = params["grid"].get("seed_offsets", [0])[:1]
    params["train"]["epochs"] = EPOCHS
    checkpoints = params["train"].get("checkpoints") or {}
    if isinstance(checkpoints.get("epochs"), list):
        checkpoints["epochs"] = [e for e in checkpoints["epochs"] if e <= EPOCHS]
    if isinstance(params.get("mli"), dict) and isinstance(params["mli"].get("seeds"), list):
        params["mli"]["seeds"] = params["mli"]["seeds"][:1]
    if not MLFLOW:
        params["mlflow"] = {"enabled": False}
    return params


def template(root: Path, params: dict) -> Path:
    from netgeom.data import get_source

    root.mkdir(parents=True)
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    get_source(params["data"]["name"]).materialise(root / params["data"].get("root", "data"))
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git", "init", "-q", cwd=root)
    sh("git", "config", "user.name", "bench", cwd=root)
    sh("git", "config", "user.email", "bench@netgeom.invalid", cwd=root)
    sh("dvc", "init", "-q", cwd=root)
    sh("dvc", "add", "-q", params["data"].get("root", "data"), cwd=root)
    sh("git", "add", "-A", cwd=root)
    sh("git", "commit", "-qm", "bench", cwd=root)
    return root


def copy(src: Path, dst: Path) -> Path:
    skip = src / ".dvc"
    shutil.copytree(src, dst, symlinks=True, ignore=lambda d, names: ["tmp"] if Path(d) == skip else [])
    return dst


def timed(args: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    sh(*args, cwd=cwd)
    return time.perf_counter() - start


WALL_CLOCK = ("seconds", "started", "ended", "timestamp", "duration")  # keys holding wall-clock times


def without_wall_clock(value):
    if isinstance(value, dict):
        return {k: without_wall_clock(v) for k, v in value.items() if not any(w in k for w in WALL_CLOCK)}
    if isinstance(value, list):
        return [without_wall_clock(v) for v in value]
    return value


def fingerprint(root: Path) -> dict[str, str]:
    """Metrics and summaries without wall-clock fields, and checkpoint weights, by path."""
    found = {}
    files = [*(root / "artifacts" / "runs").glob("*/metrics.json"), *(root / "artifacts" / "studies").rglob("summary.json"),
             root / "reports" / "summary.json"]
    for path in files:
        if path.exists():
            found[str(path.relative_to(root))] = json.dumps(without_wall_clock(json.loads(path.read_text())), sort_keys=True)
    for path in (root / "artifacts" / "runs").rglob("*.safetensors"):
        found[str(path.relative_to(root))] = hashlib.md5(path.read_bytes()).hexdigest()
    return found


@contextmanager
def scratch(prefix: str):
    """A temporary folder for the bench's copies, removed afterwards unless BENCH_KEEP=1."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield work
        if os.environ.get("BENCH_KEEP") == "1":
            print(f"copies kept under {work}")
    finally:
        if os.environ.get("BENCH_KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    params = reduced_params()
    with scratch("netgeom-bench-parallel-") as work:
        base = template(work / "template", params)
        sequential = copy(base, work / "dvc")
        parallel = copy(base, work / "netgeom")
        cells = len(params["grid"]["widths"]) * len(params["grid"]["noise"]) * len(params["grid"]["seed_offsets"])
        print(f"pipeline: {cells} cells (widths {params['grid']['widths']}, noise {params['grid']['noise']}), "
              f"{EPOCHS} epochs, mlflow {'on' if params.get('mlflow', {}).get('enabled', True) else 'off'}; "
              f"{len(sh('dvc', 'stage', 'list', '--name-only', cwd=base).split())} stages", flush=True)
        t_dvc = timed(["dvc", "repro"], sequential)
        print(f"dvc repro: {t_dvc:.1f} s", flush=True)
        t_netgeom = timed([sys.executable, "-m", "netgeom.cli_repro", "-j", str(JOBS), "--quiet"], parallel)
        print(f"netgeom repro -j {JOBS}: {t_netgeom:.1f} s", flush=True)
        clean = all("up to date" in sh("dvc", "status", cwd=root) for root in (sequential, parallel))
        a, b = fingerprint(sequential), fingerprint(parallel)
        same = clean and bool(a) and a == b
        if not same:
            differing = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            print(f"differs: {differing[:10]}{' ...' if len(differing) > 10 else ''}; dvc status clean: {clean}")
        print(f"compared {len(a)} metrics/summary files and checkpoint weights")
    print(f"speedup={t_dvc / t_netgeom:.3f} identical={'true' if same else 'false'}")


if __name__ == "__main__":
    main()
