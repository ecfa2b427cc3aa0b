"""Benchmark: the cost of netgeom's full training stage over a bare training loop.

Compares, in one run, on the same digits cell (mlp width 256, noise 0.2, params.yaml's training
settings: Adam 1e-3, batch 128, eval every 5 epochs, checkpoints at init, 5, 20, 50, 100, 200, final):
  tracked - `netgeom train`'s two calls: run_train (checkpoints, resume state, history, atomic run
            folder) + track_run (MLflow run: params, per-epoch metrics, artifacts and one pt2
            logged model per scheduled checkpoint), into a fresh SQLite store in a temp folder;
  bare    - the same model (same seed), data tensors, optimiser + schedule, batch order, number of
            steps and evaluation epochs, as a plain for loop: no checkpoints, no resume state, no
            MLflow. Evaluation is part of the science, so both pay for it.
The bare loop must end with the very weights of the tracked run's final checkpoint (checked).

The first pt2 `log_model` in a process pays a one-off export warm-up (~2.4 s); the warm-up
measures it (with `import mlflow` and creating the store) and reports it apart from the timed runs.
Target: tracked / bare <= 1.10.

Run: .venv/bin/python bench/train_overhead.py  [env BENCH_EPOCHS (default 2000), BENCH_REPEATS
(default 2), BENCH_THREADS (default 1)]
Last line: overhead=<best tracked seconds / best bare seconds>.
"""

from __future__ import annotations

import math
import os
import resource
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

from netgeom.data import get_source
from netgeom.layout import Layout
from netgeom.params import load_params, validate
from netgeom.progress import set_quiet
from netgeom.stages import train as train_stage
from netgeom.stages.corrupt import run_corrupt
from netgeom.stages.split import run_split
from netgeom.runs import Cell, build_model, cell_name, cell_params, load_cell_data
from netgeom.stages.sync import track_run
from netgeom.stages.train import run_train
from netgeom.training import loop
from netgeom.training.checkpoints import load_checkpoint
from netgeom.training.schedule import checkpoint_epochs, make_optimizer, make_scheduler

THREADS = int(os.environ.get("BENCH_THREADS", "1"))  # one thread: the 2-core CPU is shared with other agents
EPOCHS = int(os.environ.get("BENCH_EPOCHS", "2000"))  # 500 epochs (params.yaml) take only ~6 s bare here
REPEATS = int(os.environ.get("BENCH_REPEATS", "2"))
CELL = Cell(width=256, noise=0.2, replicate=0)
PARAMS_FILE = Path(__file__).resolve().parents[1] / "params.yaml"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Timers:
    """Wraps module attributes to add up the seconds spent in them (the breakdown of a run)."""

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = defaultdict(list)

    def wrap(self, module, attr: str, label: str) -> None:
        original = getattr(module, attr)

        def timed(*args, **kwargs):
            began = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label].append(time.perf_counter() - began)

        setattr(module, attr, timed)

    def take(self) -> dict[str, list[float]]:
        taken, self.seconds = dict(self.seconds), defaultdict(list)
        return taken


def bench_params(epochs: int):
    """params.yaml with the training length set to `epochs` (checkpoint epochs beyond it dropped)."""
    raw = load_params(PARAMS_FILE).model_dump()
    raw["train"]["epochs"] = epochs
    raw["train"]["checkpoints"]["epochs"] = [e for e in raw["train"]["checkpoints"]["epochs"] if e <= epochs]
    raw["data"]["name"] = "digits"
    raw["mlflow"] = {"enabled": True, "experiment": "bench", "log_models": "all"}
    return validate(raw)


def make_project(root: Path, params) -> Layout:
    get_source("digits").materialise(root / "data")
    layout = Layout(root)
    run_split(params, layout)
    run_corrupt(params, layout, CELL.noise)
    return layout


def bare_train(params, layout: Layout) -> tuple[float, torch.nn.Module, int]:
    """The baseline: the same training and evaluation as netgeom's loop, nothing else."""
    began = time.perf_counter()
    p = cell_params(params, CELL)
    data = load_cell_data(p, layout)
    model = build_model(p, data)
    t = p.train
    x, y = data.train.x, data.train.y
    n = len(y)
    steps_per_epoch = math.ceil(n / t.batch_size)
    optimizer = make_optimizer(model.parameters(), t)
    scheduler = make_scheduler(optimizer, steps_per_epoch, t)
    generator = torch.Generator().manual_seed(p.seed)
    scheduled = set(checkpoint_epochs(t))
    evaluations = [loop.evaluate_bundle(model, data, t.eval_batch_size)]
    for epoch in range(1, t.epochs + 1):
        model.train()
        order = torch.randperm(n, generator=generator)
        running = 0.0
        for i in range(0, n, t.batch_size):
            index = order[i : i + t.batch_size]
            loss = F.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            running += loss.item() * len(index)
        if epoch % t.eval_every == 0 or epoch == t.epochs or epoch in scheduled:
            evaluations.append(loop.evaluate_bundle(model, data, t.eval_batch_size))
    return time.perf_counter() - began, model, t.epochs * steps_per_epoch


def tracked_train(params, layout: Layout) -> tuple[float, float, Path]:
    """`netgeom train` minus the CLI: (train stage seconds, tracking seconds, run folder)."""
    began = time.perf_counter()
    folder = run_train(params, layout, CELL)
    trained = time.perf_counter()
    track_run(params, layout, folder)
    return trained - began, time.perf_counter() - trained, folder


def forget_run(params, layout: Layout) -> None:
    """Undo a tracked run outside the timing, so the next one does all the work again (as a new
    cell would): delete its MLflow run (track_run skips complete ones) and its run folder (DVC
    removes a stage's outputs before running it)."""
    from netgeom import tracking
    from netgeom.runs import read_run

    folder = layout.run_dir(cell_name(cell_params(params, CELL), CELL))
    if (folder / "run.json").exists():
        info = read_run(folder).info
        client, experiment_id = tracking.connect(layout, params.mlflow.experiment)
        found = tracking.find_run(client, experiment_id, info["run"], info["params_hash"])
        if found is not None:
            client.delete_run(found.info.run_id)
    shutil.rmtree(folder, ignore_errors=True)


def describe(parts: dict[str, list[float]], label: str) -> str:
    values = parts.get(label, [])
    return f"{label} {len(values)}x {sum(values):.2f} s"


def measure(params, layout: Layout, timers: Timers, repeats: int, tag: str) -> tuple[float, float, float, float]:
    """Alternate tracked and bare runs (load changes on the shared CPU hit both); print each run.

    Returns the best (tracked seconds, train stage seconds, tracking seconds, bare seconds)."""
    epochs = params.train.epochs
    steps = epochs * math.ceil(len(load_cell_data(cell_params(params, CELL), layout).train) / params.train.batch_size)
    best, best_bare, bare_model = (math.inf, 0.0, 0.0), math.inf, None
    for repeat in range(1, repeats + 1):
        forget_run(params, layout)
        t_train, t_track, folder = tracked_train(params, layout)
        parts = timers.take()
        total = t_train + t_track
        print(
            f"{tag} tracked #{repeat}: {total:6.2f} s {steps / total:5.0f} steps/s | train stage {t_train:5.2f} s "
            f"[{describe(parts, 'loop')} incl. {describe(parts, 'checkpoints')}, {describe(parts, 'resume-state')}] | tracking {t_track:4.2f} s "
            f"[{describe(parts, 'metrics')}, {describe(parts, 'log_model')} incl. {describe(parts, 'metric-history')}]"
        )
        best = min(best, (total, t_train, t_track))
        t_bare, bare_model, _ = bare_train(params, layout)
        print(f"{tag} bare    #{repeat}: {t_bare:6.2f} s {steps / t_bare:5.0f} steps/s | peak RSS {peak_rss_mb():.0f} MB")
        best_bare = min(best_bare, t_bare)
    final = load_checkpoint(folder / "checkpoints" / f"e{epochs:04d}.safetensors")[0]
    same = all(torch.equal(final[k], v) for k, v in bare_model.state_dict().items())
    total, t_train, t_track = best
    print(
        f"{tag} best: tracked {total:.2f} s = train stage {t_train:.2f} s + tracking {t_track:.2f} s; bare {best_bare:.2f} s; "
        f"train stage/bare {t_train / best_bare:.3f}, (train stage + tracking)/bare {total / best_bare:.3f}; "
        f"bare final weights == tracked final checkpoint: {same}"
    )
    return total, t_train, t_track, best_bare


def main() -> None:
    torch.set_num_threads(THREADS)
    set_quiet(True)
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # the store is a fresh SQLite file in a temp folder
    os.environ.pop("DVC_ROOT", None)
    params, realistic, warm_params = bench_params(EPOCHS), bench_params(500), bench_params(20)
    root = Path(tempfile.mkdtemp(prefix="netgeom-bench-"))
    try:
        os.chdir(root)
        layout = make_project(root, params)
        timers = Timers()
        timers.wrap(train_stage, "train", "loop")  # run_train = loop + assembling the run folder
        timers.wrap(loop, "save_checkpoint", "checkpoints")
        timers.wrap(loop, "save_training_state", "resume-state")

        # ---- one-off costs of the first tracked run in a process
        began = time.perf_counter()
        from netgeom import tracking  # imports mlflow

        import mlflow.pytorch
        from mlflow.tracking import MlflowClient

        t_import = time.perf_counter() - began
        timers.wrap(tracking, "_log_batched", "metrics")
        timers.wrap(mlflow.pytorch, "log_model", "log_model")
        # log_model links the run's metrics at its step to the model by reading every metric's history
        timers.wrap(MlflowClient, "get_metric_history", "metric-history")
        began = time.perf_counter()
        tracking.connect(layout, params.mlflow.experiment)
        t_store = time.perf_counter() - began
        first = []
        for _ in range(2):  # a 20-epoch cell: the 1st pays the export warm-up, the 2nd is warm
            _, t_track, _ = tracked_train(warm_params, layout)
            first.append((t_track, timers.take()["log_model"]))
            forget_run(warm_params, layout)
        bare_train(warm_params, layout)
        timers.take()
        cold_extra = first[0][0] - first[1][0]
        print(
            f"digits mlp w{CELL.width} noise {CELL.noise}, torch.set_num_threads({THREADS}), eval every "
            f"{params.train.eval_every} epochs, checkpoints at init, {params.train.checkpoints.epochs}, final"
        )
        print(
            f"one-off per process: import mlflow {t_import:.2f} s; first track_run {first[0][0]:.2f} s vs warm "
            f"{first[1][0]:.2f} s (+{cold_extra:.2f} s: first log_model {first[0][1][0]:.2f} s, warm "
            f"{statistics.median(first[1][1]):.2f} s); once per project: new SQLite store {t_store:.2f} s"
        )

        # ---- params.yaml's length (500 epochs: a bare run is only a few seconds here), then the long cell
        r_total, _, _, r_bare = measure(realistic, layout, timers, 2, "  500 ep")
        total, t_train, t_track, bare = measure(params, layout, timers, REPEATS, f"{EPOCHS:5d} ep")
        print(
            f"overhead at 500 epochs (params.yaml) {r_total / r_bare:.3f}; a fresh `netgeom train` process adds the "
            f"export warm-up: (tracked + {cold_extra:.2f} s)/bare = {(r_total + cold_extra) / r_bare:.3f} at 500, "
            f"{(total + cold_extra) / bare:.3f} at {EPOCHS} epochs"
        )
        print(f"overhead={total / bare:.3f}")
    finally:
        os.chdir(PARAMS_FILE.parent)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
