"""Benchmark: the fixed CPU cost of a pipeline stage's process, against `import torch` alone.

Every DVC stage is its own process, so what a stage pays before and after its science is paid
once per stage (127 of them in the default pipeline). Measured here, in one run, as CPU seconds
(user + sys of the child process, from the OS):
  torch   - `python -c "import torch"`: the floor of any process that computes anything;
  check   - `netgeom check --quiet` on a project whose MLflow store exists (what every params
            change reruns): validates every params group, imports no torch and no mlflow;
  stages  - each per-run study stage (smoothness, regions, interpolation, hyperplanes, reinit)
            on a tiny trained run (an MLP of width 8 on digits, 3 epochs, small study settings),
            so that the stage's time is its imports, reading the run and writing its outputs;
  skipped - a switched-off study's stage (it records that it was skipped);
  warm    - each study stage as `netgeom repro` runs it: forked from an interpreter that has
            imported torch, pandas and netgeom (netgeom.repro.warm; here forked by this process,
            whose child's CPU the OS reports to it, in place of the forkserver).
Cold processes are what a sequential `dvc repro` pays per stage. Each is the median of
BENCH_REPEATS runs, interleaved.
Goals (issue #22): check <= 0.5 x torch, the costliest study stage <= 1.5 x torch.

Run: .venv/bin/python bench/stage_overhead.py  [env BENCH_REPEATS (default 3)]
Last line: check_vs_torch_import=<x> stage_vs_torch_import=<x> (cold, the costliest)
           warm_stage_vs_torch_import=<x> (the costliest, forked warm) skipped_vs_torch_import=<x>
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
STUDIES = ("smoothness", "regions", "interpolation", "hyperplanes", "reinit")
CELL = ["--width", "8", "--noise", "0.2", "--replicate", "0"]
NETGEOM = [sys.executable, "-m", "netgeom.cli"]

PARAMS = {
    "seed": 1,
    "data": {"name": "digits", "val_size": 0.1},
    "noise": {"kind": "symmetric", "label": 0.2, "seed": 0},
    "model": {"arch": "mlp", "width": 8, "depth": 1},
    "train": {"epochs": 3, "batch_size": 64, "checkpoints": {"epochs": [1]}},
    "grid": {"widths": [8], "noise": [0.2], "seed_offsets": [0]},
    "mlflow": {"enabled": True, "experiment": "bench"},
    "execution": {"threads": 1},
    "smoothness": {"checkpoints": "final", "samples": 64},
    "regions": {"paths": 4, "radius": 1, "checkpoints": "final"},
    "interpolation": {"points": 5, "random_inits": 1, "gauss_samples": 8, "landscape": {"resolution": 3}},
    "hyperplanes": {"with_linear": True},
    "reinit": {"split": "test", "samples": 256},
    "star": {"enabled": False},
}


def cpu_seconds(command: list[str], cwd: Path) -> float:
    """user + sys CPU seconds of one child process (and its children), from the OS."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env={**os.environ, "NETGEOM_QUIET": "1"})
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def forked_cpu_seconds(command: list[str], cwd: Path) -> float:
    """CPU seconds of `command` run as netgeom repro runs it: forked from this (warm) process."""
    from netgeom.repro.warm import run_command

    log = cwd / "warm.log"
    log.touch()
    pid = os.fork()
    if pid == 0:  # the child: exactly what the forkserver's children run
        try:
            run_command(["netgeom", *command], str(cwd), {**os.environ, "NETGEOM_QUIET": "1"}, str(log))
        except SystemExit as exit:
            os._exit(exit.code if isinstance(exit.code, int) else 1)
        os._exit(0)
    _, status, usage = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"netgeom {' '.join(command)} (forked) failed:\n{log.read_text()[-3000:]}")
    return usage.ru_utime + usage.ru_stime


def prepare(root: Path) -> None:
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    for command in (["data", "materialise", "digits"], ["check", "--quiet"], ["split", "--quiet"], ["corrupt", "--quiet"],
                    ["train", *CELL, "--no-track", "--quiet"]):
        cpu_seconds(NETGEOM + command, root)
    skipped = root / "skipped"
    skipped.mkdir()
    (skipped / "params.yaml").write_text(yaml.safe_dump({**PARAMS, "regions": {"enabled": False}}))


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="netgeom-bench-overhead-"))
    try:
        prepare(root)
        commands = {
            "torch": ([sys.executable, "-c", "import torch"], root),
            "check": (NETGEOM + ["check", "--quiet"], root),
            **{study: (NETGEOM + [study, *CELL, "--quiet"], root) for study in STUDIES},
            "skipped": (NETGEOM + ["regions", *CELL, "--quiet"], root / "skipped"),
        }
        import netgeom.repro.warm_preload  # noqa: F401  (what the forkserver imports)

        samples: dict[str, list[float]] = {name: [] for name in [*commands, *(f"warm {s}" for s in STUDIES)]}
        for _ in range(REPEATS):
            for name, (command, cwd) in commands.items():
                samples[name].append(cpu_seconds(command, cwd))
            for study in STUDIES:
                samples[f"warm {study}"].append(forked_cpu_seconds([study, *CELL, "--quiet"], root))
        cpu = {name: statistics.median(values) for name, values in samples.items()}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    torch_s = cpu["torch"]
    for name, seconds in cpu.items():
        print(f"{name:>14}: {seconds:6.2f} s CPU  ({seconds / torch_s:.2f} x import torch)")
    worst = max(STUDIES, key=cpu.get)
    warm_worst = max(STUDIES, key=lambda s: cpu[f"warm {s}"])
    print(f"costliest study stage: {worst} cold, {warm_worst} warm")
    print(
        f"check_vs_torch_import={cpu['check'] / torch_s:.2f} stage_vs_torch_import={cpu[worst] / torch_s:.2f} "
        f"warm_stage_vs_torch_import={cpu[f'warm {warm_worst}'] / torch_s:.2f} skipped_vs_torch_import={cpu['skipped'] / torch_s:.2f}"
    )


if __name__ == "__main__":
    main()
