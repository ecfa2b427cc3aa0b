"""Benchmark: interpolation curves with BN recalibration on a BN CNN.

Compares, in one run and on the same inputs:
  ours  - netgeom.studies.interpolation.interpolation_curve(bn="recompute") (one template module,
          functional_call, recalibration under no_grad, loop over t, channels-last layout);
  seed  - the seeds' protocol: every point (endpoints included) on its own deep copy, the
          interpolated state loaded, BN reset and recalibrated with autograd ON, then evaluated
          (default NCHW layout, as the seeds run);
  floor - n x (one recalibration pass + one evaluation pass) of bare forward passes under
          no_grad on one module (no interpolation, no state handling) in the layout ours uses:
          the cost of the work itself, so ours/floor is the engine's own overhead. The same
          floor in NCHW is printed too, to show how much of the gain is the layout.
Targets: ours <= 1.1x floor, ours >= 1.3x faster than seed, values equal within 1e-5.

Run: .venv/bin/python bench/interpolation.py
     [env BENCH_THREADS (default 1), BENCH_QUICK=1, BENCH_ARCH/BENCH_WIDTH (cnn_k, 8), BENCH_POINTS (11,50)]
Last line: ratio_vs_seed=<seed time / ours> ratio_vs_floor=<ours / floor> (on the last curve of BENCH_POINTS, 50 points by default).
"""

from __future__ import annotations

import copy
import os
import resource
import time

import numpy as np
import torch
import torch.nn.functional as F

from netgeom.models import create_model
from netgeom.progress import set_quiet
from netgeom.studies.interpolation import interpolation_curve

THREADS = int(os.environ.get("BENCH_THREADS", "1"))  # the CPU is shared: 2 threads measured slower under load
QUICK = bool(os.environ.get("BENCH_QUICK"))
N_CALIB, N_EVAL = (128, 64) if QUICK else (512, 192)
ARCH = os.environ.get("BENCH_ARCH", "cnn_k")
WIDTH = int(os.environ.get("BENCH_WIDTH", "8"))
POINTS = [int(n) for n in os.environ.get("BENCH_POINTS", "11,50").split(",")]
BN_BATCH, EVAL_BATCH = 256, 512


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def seed_protocol(model, a, b, sets, calib, n):
    """Re-implementation of the seeds' loop: deep copy, load, recalibrate with autograd on, evaluate."""
    rows = []
    for t in np.linspace(0.0, 1.0, n):
        net = copy.deepcopy(model)
        state = {k: torch.lerp(v, b[k], float(t)) if v.is_floating_point() else (v if t < 0.5 else b[k]) for k, v in a.items()}
        net.load_state_dict(state)
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None
        net.train()
        for lo in range(0, calib.shape[0], BN_BATCH):  # autograd ON, as in the seeds
            net(calib[lo : lo + BN_BATCH])
        net.eval()
        with torch.no_grad():
            for split, (x, y) in sets.items():
                loss, correct = 0.0, 0
                for lo in range(0, x.shape[0], EVAL_BATCH):
                    out = net(x[lo : lo + EVAL_BATCH])
                    loss += F.cross_entropy(out, y[lo : lo + EVAL_BATCH], reduction="sum").item()
                    correct += (out.argmax(1) == y[lo : lo + EVAL_BATCH]).sum().item()
                rows.append((float(t), split, loss / x.shape[0], correct / x.shape[0]))
    return rows


def floor(model, sets, calib, n, layout=torch.contiguous_format):
    """Only the forward passes: n x (train-mode pass over calib + eval-mode pass over the sets)."""
    model = copy.deepcopy(model).to(memory_format=layout)
    calib = calib.contiguous(memory_format=layout)
    sets = {k: (x.contiguous(memory_format=layout), y) for k, (x, y) in sets.items()}
    with torch.no_grad():
        for _ in range(n):
            model.train()
            for lo in range(0, calib.shape[0], BN_BATCH):
                model(calib[lo : lo + BN_BATCH])
            model.eval()
            for x, _y in sets.values():
                for lo in range(0, x.shape[0], EVAL_BATCH):
                    model(x[lo : lo + EVAL_BATCH])


def ours(model, a, b, sets, calib, n):
    return interpolation_curve(
        model, a, b, sets, n=n, bn="recompute", calibration_inputs=calib, bn_batch_size=BN_BATCH, batch_size=EVAL_BATCH
    )


def ours_direct(model, a, b, sets, calib, n):
    return interpolation_curve(
        model, a, b, sets, n=n, bn="recompute", endpoints="direct", calibration_inputs=calib, bn_batch_size=BN_BATCH, batch_size=EVAL_BATCH
    )


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    torch.set_num_threads(THREADS)
    set_quiet(True)
    torch.manual_seed(0)
    model = create_model(ARCH, (3, 32, 32), 10, width=WIDTH, batch_norm=True).eval()
    a = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(1)
    b = {k: v.clone() for k, v in create_model(ARCH, (3, 32, 32), 10, width=WIDTH, batch_norm=True).state_dict().items()}
    g = torch.Generator().manual_seed(2)
    x = torch.randn(N_CALIB + 2 * N_EVAL, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (x.shape[0],), generator=g)
    calib = x[:N_CALIB]
    sets = {"train": (x[:N_EVAL], y[:N_EVAL]), "test": (x[N_CALIB + N_EVAL :], y[N_CALIB + N_EVAL :])}
    images_per_point = N_CALIB + sum(v[0].shape[0] for v in sets.values())
    print(f"{ARCH} width {WIDTH} + BN, threads={THREADS}, calibration {N_CALIB}, eval {list(sets)} x {N_EVAL}, peak RSS {peak_rss_mb():.0f} MB")

    # warm-up (allocator, kernels) for every method
    ours(model, a, b, sets, calib, 2), seed_protocol(model, a, b, sets, calib, 2)
    floor(model, sets, calib, 2), floor(model, sets, calib, 2, torch.channels_last)

    results = {}
    for n in POINTS:
        repeats = 2
        methods = {
            "floor": lambda: floor(model, sets, calib, n, torch.channels_last),
            "floor_nchw": lambda: floor(model, sets, calib, n),
            "ours": lambda: ours(model, a, b, sets, calib, n),
            "seed": lambda: seed_protocol(model, a, b, sets, calib, n),
        }
        times = {k: float("inf") for k in methods}
        rss, out = {}, {}
        for _ in range(repeats):  # interleaved, so load changes on the shared CPU hit every method
            for name, fn in methods.items():
                t, out[name] = best_of(fn, 1)
                times[name] = min(times[name], t)
                rss[name] = peak_rss_mb()
        ref = np.array([[r[2], r[3]] for r in out["seed"]])
        diff = float(np.abs(out["ours"][["loss", "accuracy"]].to_numpy() - ref).max())
        for name, t in times.items():
            print(f"n={n:2d} {name:10s}: {t:7.2f} s  {n * images_per_point / t:8.0f} images/s  {t / n * 1e3:7.1f} ms/point  peak RSS so far {rss[name]:.0f} MB")
        print(f"n={n:2d} max |ours - seed| over loss and accuracy: {diff:.2e}  (target <= 1e-5)")
        print(f"n={n:2d} seed/ours = {times['seed'] / times['ours']:.2f} (target >= 1.3)  ours/floor = {times['ours'] / times['floor']:.3f} (target <= 1.1)")
        results[n] = (times["seed"] / times["ours"], times["ours"] / times["floor"])
        if n == 11:  # star-domain protocol: endpoints with their own statistics, n - 2 recalibrations
            t_direct, _ = best_of(lambda: ours_direct(model, a, b, sets, calib, n), 1)
            print(f"n={n:2d} ours endpoints='direct': {t_direct:7.2f} s  seed/ours_direct = {times['seed'] / t_direct:.2f}")
    r_seed, r_floor = results[POINTS[-1]]
    print(f"ratio_vs_seed={r_seed:.3f} ratio_vs_floor={r_floor:.3f}")


if __name__ == "__main__":
    main()
