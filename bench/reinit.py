"""Benchmark: the prefix-cached layer re-initialisation sweep against the naive loop.

Compares, in one run, on the same inputs and checkpoints:
  ours  - netgeom.studies.reinit.reinit_sweep: one trained forward per batch through the chained
          fx cuts, then only the suffix after each reset layer per (layer, checkpoint);
  naive - the seed's protocol: per (layer, checkpoint) load the checkpoint's tensors into the
          trained model, a full forward pass over every batch, restore; plus one trained pass.
Both in NCHW, eval mode, no_grad, the same batch size. vgg8_maxpool (6 convs + 2 linears) on
3x32x32 random inputs, three random "epoch" states plus `rand`. Methods are interleaved and the
best of BENCH_REPEATS is kept, so load on the shared CPU hits both alike.
Target: naive / ours >= 1.5, values equal (max abs difference over accuracy and loss printed).

Run: .venv/bin/python bench/reinit.py  [env BENCH_THREADS (1), BENCH_SAMPLES (1024), BENCH_REPEATS (3), BENCH_ARCH (vgg8_maxpool)]
Last line: ratio_vs_naive=<naive time / ours>
"""

from __future__ import annotations

import copy
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from netgeom.models import create_model
from netgeom.progress import set_quiet
from netgeom.studies.reinit import eligible_layers, random_init_state, reinit_sweep

THREADS = int(os.environ.get("BENCH_THREADS", "1"))
SAMPLES = int(os.environ.get("BENCH_SAMPLES", "1024"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
ARCH = os.environ.get("BENCH_ARCH", "vgg8_maxpool")
EPOCHS = (0, 1, 5)
RAND_SEED = 11
BATCH = 256


def make_model():
    return create_model(ARCH, (3, 32, 32), 10)


def ours(model, trained, checkpoints, x, y):
    return reinit_sweep(model, trained, checkpoints, x, y, make_model=make_model, rand_seed=RAND_SEED, batch_size=BATCH)


def evaluate(net, x, y) -> tuple[float, float]:
    correct, loss = 0, 0.0
    for lo in range(0, len(x), BATCH):
        out = net(x[lo : lo + BATCH])
        correct += int((out.argmax(1) == y[lo : lo + BATCH]).sum())
        loss += float(F.cross_entropy(out.double(), y[lo : lo + BATCH], reduction="sum"))
    return correct / len(x), loss / len(x)


@torch.no_grad()
def naive(model, trained, checkpoints, x, y):
    """A full forward pass per (layer, checkpoint): load the layer's tensors, evaluate, restore."""
    net = copy.deepcopy(model)
    net.load_state_dict(trained)
    net.eval()
    sources = {**{str(e): s for e, s in checkpoints.items()}, "rand": random_init_state(make_model, RAND_SEED)}
    trained_accuracy, _ = evaluate(net, x, y)
    rows = []
    for layer in eligible_layers(net):
        module = net.get_submodule(layer)
        keep = {k: v.clone() for k, v in module.state_dict().items()}
        for name, state in sources.items():
            module.load_state_dict({k: state[f"{layer}.{k}"] for k in keep})
            accuracy, loss = evaluate(net, x, y)
            rows.append((layer, name, accuracy, loss, trained_accuracy))
        module.load_state_dict(keep)
    return rows


def main() -> None:
    torch.set_num_threads(THREADS)
    set_quiet(True)
    torch.manual_seed(0)
    model = make_model().eval()
    trained = copy.deepcopy(model.state_dict())
    checkpoints = {}
    for epoch in EPOCHS:
        torch.manual_seed(100 + epoch)
        checkpoints[epoch] = make_model().state_dict()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(SAMPLES, 3, 32, 32, generator=g)
    with torch.no_grad():  # labels the trained net gets right, so resets show as drops
        y = torch.cat([model(x[lo : lo + BATCH]).argmax(1) for lo in range(0, SAMPLES, BATCH)])
    layers = eligible_layers(model)
    sources = len(EPOCHS) + 1
    print(f"{ARCH} on 3x32x32, threads={THREADS}, {SAMPLES} samples, batch {BATCH}, {len(layers)} layers x {sources} checkpoints (epochs {list(EPOCHS)} + rand)")

    ours(model, trained, checkpoints, x[:BATCH], y[:BATCH]), naive(model, trained, checkpoints, x[:BATCH], y[:BATCH])  # warm-up

    methods = {"ours": lambda: ours(model, trained, checkpoints, x, y), "naive": lambda: naive(model, trained, checkpoints, x, y)}
    times = {k: float("inf") for k in methods}
    out = {}
    for _ in range(REPEATS):  # interleaved: a load spike on the shared CPU hits both methods
        for name, fn in methods.items():
            start = time.perf_counter()
            out[name] = fn()
            times[name] = min(times[name], time.perf_counter() - start)
    table = out["ours"]
    reference = np.array([[r[2], r[3], r[4]] for r in out["naive"]])
    same_order = [(r[0], r[1]) for r in out["naive"]] == list(zip(table["layer"], table["checkpoint"]))
    diff = float(np.abs(table[["accuracy", "loss", "trained_accuracy"]].to_numpy() - reference).max())
    passes = len(layers) * sources + 1
    for name, t in times.items():
        print(f"{name:6s}: {t:7.3f} s  ({t / passes * 1e3:6.1f} ms per (layer, checkpoint) evaluation)")
    print(f"rows {len(table)}, same (layer, checkpoint) order: {same_order}, max |ours - naive| over accuracy, loss: {diff:.2e}")
    drops = table.groupby("layer", sort=False)["relative_drop"].mean()
    print("mean relative drop per layer: " + ", ".join(f"{k}={v:.2f}" for k, v in drops.items()))
    print(f"ratio_vs_naive={times['naive'] / times['ours']:.3f}")


if __name__ == "__main__":
    main()
