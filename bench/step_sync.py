"""Benchmark: the training step without a per-step host sync vs the old per-step `loss.item()`.

The loop now accumulates the epoch's loss on the device (float64) and checks it for inf/NaN once
per epoch; before, every step called `loss.item()` (a wait for the device) and checked it. On the
CPU nothing waits either way, so the two should cost the same; on a GPU the sync stalls the
queue. Both variants train the default digits cell (mlp width 64, depth 1, Adam 1e-3, batch 128,
params.yaml's settings) for the same epochs from the same seed and must end with the same
weights (checked). One torch thread; the variants alternate, best of N.

Run: .venv/bin/python bench/step_sync.py  [env BENCH_EPOCHS (default 100), BENCH_REPEATS (default 3)]
Last line: epoch_ms_ours=<x> epoch_ms_per_step_sync=<y> ratio_ours_vs_sync=<x/y>
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from netgeom.data import get_source
from netgeom.layout import Layout
from netgeom.params import load_params
from netgeom.progress import set_quiet
from netgeom.runs import Cell, build_model, cell_params, load_cell_data
from netgeom.stages.corrupt import run_corrupt
from netgeom.stages.split import run_split
from netgeom.training.loop import train
from netgeom.training.schedule import make_optimizer, make_scheduler

EPOCHS = int(os.environ.get("BENCH_EPOCHS", "100"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
PARAMS_FILE = Path(__file__).resolve().parents[1] / "params.yaml"


def per_step_sync(model, data, p, seed: int) -> None:
    """The previous loop's step: the loss fetched and checked every step."""
    x, y = data.train.x, data.train.y
    n = len(y)
    optimizer = make_optimizer(model.parameters(), p)
    scheduler = make_scheduler(optimizer, math.ceil(n / p.batch_size), p)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(p.epochs):
        model.train()
        order = torch.randperm(n, generator=generator)
        running = 0.0
        for i in range(0, n, p.batch_size):
            index = order[i : i + p.batch_size]
            loss = F.cross_entropy(model(x[index]), y[index])
            value = loss.item()
            if not math.isfinite(value):
                raise RuntimeError("diverged")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            running += value * len(index)


def main() -> None:
    torch.set_num_threads(1)
    set_quiet(True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        get_source("digits").materialise(root / "data")
        params = load_params(PARAMS_FILE)
        params = params.model_copy(update={"data": params.data.model_copy(update={"name": "digits"})})
        layout = Layout(root)
        run_split(params, layout), run_corrupt(params, layout, 0.2)
        cell = cell_params(params, Cell(64, 0.2, 0))
        # No evaluation or checkpoint inside the timed epochs: only the steps differ.
        p = cell.train.model_copy(update={"epochs": EPOCHS, "eval_every": EPOCHS, "checkpoints": cell.train.checkpoints.model_copy(update={"init": False, "epochs": []})})
        data = load_cell_data(cell, layout)
        best = {"ours": math.inf, "sync": math.inf}
        for repeat in range(REPEATS):
            for variant in ("ours", "sync") if repeat % 2 == 0 else ("sync", "ours"):
                model = build_model(cell, data)
                began = time.perf_counter()
                if variant == "ours":
                    result = train(model, data, p, seed=cell.seed, workdir=root / f"w{repeat}")
                    seconds = float(result.history["epoch_seconds"].sum())  # the steps only, not the final evaluation
                    ours = model
                else:
                    per_step_sync(model, data, p, cell.seed)
                    seconds = time.perf_counter() - began
                    theirs = model
                best[variant] = min(best[variant], seconds)
        same = all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()))
        ms = {k: 1000 * v / EPOCHS for k, v in best.items()}
        print(f"digits mlp w64, {EPOCHS} epochs, best of {REPEATS}: ours {ms['ours']:.2f} ms/epoch, per-step sync {ms['sync']:.2f} ms/epoch; same weights: {same}")
        print(f"epoch_ms_ours={ms['ours']:.3f} epoch_ms_per_step_sync={ms['sync']:.3f} ratio_ours_vs_sync={ms['ours'] / ms['sync']:.3f}")


if __name__ == "__main__":
    main()
