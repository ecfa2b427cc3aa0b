"""Benchmark for a machine with a GPU: training throughput and the study engines, GPU vs CPU.

1. Training: CIFAR-10-shaped synthetic tensors (50,000 x 3 x 32 x 32, 10 classes) on the GPU,
   netgeom's own loop (`training.loop.train`, one epoch, batch 128, SGD): epoch seconds and
   images/s of resnet18_k (k=64) and cnn5_k (k=64) in fp32, bf16 (autocast), each in NCHW and
   channels-last layout.
2. Engines, the same inputs on both devices: the input-Jacobian operator norm (smoothness,
   cnn_k k=16, 256 samples; vjp on the CPU, vmap on the GPU as `backend: auto` chooses), an
   interpolation curve (cnn5_k k=16 with BN, 11 points, 2,000 samples, BN recomputed), and the
   exact region walk (an MLP 3072-512-512-10 in float64, 64 closed paths of 8 segments), and the
   curvature stage's top Hessian eigenvalue (cnn5_k k=16 with BN, 2 batches of 128, Lanczos to a
   relative residual of 1e-3, graphs kept, float64 Krylov vectors on the device).

3. One star training step (cnn_k k=16 with BN, batch 128, 8 anchors) and one smoothness batch
   (jacobian_operator of the logits, vmap, 256 samples) on the GPU against the same on the CPU.

Training FLOPs per image are counted once by torch's FlopCounterMode on a forward pass (x3 for
forward + backward); achieved TFLOP/s = FLOPs x images/s, against the device's dense bf16 peak
(BENCH_PEAK_TFLOPS, default 989: the H100/H200 SXM datasheet figure without sparsity).

Without a visible GPU it prints one line and exits 0.
Run: .venv/bin/python bench/gpu.py  [env BENCH_EPOCH_SAMPLES (default 50000), BENCH_BATCH (512),
     BENCH_PEAK_TFLOPS (989)]
Last line: key=value pairs (<model>_<precision>_<layout>_img_s=..., _tflops=..., <engine>_speedup=...).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch

SAMPLES = int(os.environ.get("BENCH_EPOCH_SAMPLES", "50000"))
BATCH = int(os.environ.get("BENCH_BATCH", "512"))
PEAK_TFLOPS = float(os.environ.get("BENCH_PEAK_TFLOPS", "989"))


def synthetic_bundle(n: int, device: torch.device):
    from netgeom.data.bundle import DataBundle, TrainSet
    from netgeom.data.sources import DatasetInfo

    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    info = DatasetInfo("synthetic", (3, 32, 32), 10, (0.0,) * 3, (1.0,) * 3)
    small = (x[:1000], y[:1000])
    return DataBundle(info, TrainSet(x, y, y.clone(), torch.arange(n)), small, small).to(device)


def train_epoch_seconds(arch: str, precision: str, layout: str, data, device: torch.device) -> float:
    from netgeom.models import create_model
    from netgeom.params import TrainParams
    from netgeom.training.loop import train

    torch.manual_seed(0)
    model = create_model(arch, (3, 32, 32), 10, width=64)
    p = TrainParams(epochs=1, batch_size=BATCH, optimizer="sgd", lr=0.05, eval_every=1, eval_batch_size=1000,
                    precision=precision, memory_format=layout, checkpoints={"init": False, "epochs": []})
    with tempfile.TemporaryDirectory() as tmp:
        result = train(model, data, p, seed=0, workdir=Path(tmp), device=device)
    return float(result.history["epoch_seconds"].iloc[-1])


def training_flops_per_image(arch: str) -> float:
    """Forward FLOPs of one image (counted on the CPU: the count does not depend on the device) x 3."""
    from torch.utils.flop_counter import FlopCounterMode

    from netgeom.models import create_model

    model = create_model(arch, (3, 32, 32), 10, width=64).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(2, 3, 32, 32))
    return 3.0 * counter.get_total_flops() / 2


def timed(fn, repeats: int = 3) -> float:
    fn()  # warm-up (kernels, caches)
    best = float("inf")
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        began = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - began)
    return best


def engine_speedups(gpu: torch.device) -> dict[str, float]:
    from netgeom.models import create_model
    from netgeom.studies.interpolation import interpolation_curve
    from netgeom.studies.input_paths import make_paths
    from netgeom.studies.regions import study_paths
    from netgeom.studies.smoothness import compute_metric

    cpu = torch.device("cpu")
    g = torch.Generator().manual_seed(1)
    out = {}

    torch.manual_seed(0)
    net = create_model("cnn_k", (3, 32, 32), 10, width=16)
    x, y = torch.randn(256, 3, 32, 32, generator=g), torch.randint(0, 10, (256,), generator=g)
    seconds = {}
    for device, backend in ((cpu, "vjp"), (gpu, "vmap")):
        model = net.to(device)
        seconds[device.type] = timed(lambda: compute_metric(model, x.to(device), y.to(device), "jacobian_operator", "logits", backend=backend, batch_size=256), 2)
    out["jacobian_speedup"] = seconds["cpu"] / seconds["cuda"]

    torch.manual_seed(0)
    a = create_model("cnn5_k", (3, 32, 32), 10, width=16, batch_norm=True)
    b = create_model("cnn5_k", (3, 32, 32), 10, width=16, batch_norm=True)
    xs, ys = torch.randn(2000, 3, 32, 32, generator=g), torch.randint(0, 10, (2000,), generator=g)
    for device in (cpu, gpu):
        model = a.to(device)
        sa = {k: v.to(device) for k, v in a.state_dict().items()}
        sb = {k: v.to(device) for k, v in b.state_dict().items()}
        sets = {"train": (xs.to(device), ys.to(device))}
        seconds[device.type] = timed(lambda: interpolation_curve(model, sa, sb, sets, n=11, bn="recompute", calibration_inputs=xs[:512].to(device)), 2)
    out["curve_speedup"] = seconds["cpu"] / seconds["cuda"]
    # several t per vmapped pass (interpolation.points_per_pass) against the loop, on the GPU
    model = a.to(gpu)
    sa = {k: v.to(gpu) for k, v in a.state_dict().items()}
    sb = {k: v.to(gpu) for k, v in b.state_dict().items()}
    sets = {"train": (xs.to(gpu), ys.to(gpu))}
    per_pass = {k: timed(lambda: interpolation_curve(model, sa, sb, sets, n=11, bn="recompute", calibration_inputs=xs[:512].to(gpu),
                                                      points_per_pass=k), 2) for k in (1, 11)}
    out["curve_points_per_pass_11_vs_1"] = per_pass[1] / per_pass[11]

    torch.manual_seed(0)
    mlp = create_model("mlp", (3, 32, 32), 10, width=512, depth=2)
    images = torch.rand(64, 3, 32, 32, generator=g)
    for device in (cpu, gpu):
        model = mlp.to(device)
        paths = make_paths(images.to(device), n_anchors=8, radius=4, closed=True)
        seconds[device.type] = timed(lambda: study_paths(model, paths, batch_size=512), 1)
    out["regions_float64_speedup"] = seconds["cpu"] / seconds["cuda"]

    from netgeom.studies.curvature import hessian_operator, top_eigenvalues

    torch.manual_seed(0)
    bn_net = create_model("cnn5_k", (3, 32, 32), 10, width=16, batch_norm=True)
    top = {}
    for device in (cpu, gpu):
        model = bn_net.to(device)
        batches = [(xs[i : i + 128].to(device), ys[i : i + 128].to(device)) for i in range(0, 256, 128)]

        def top_eigenvalue():
            matvec, dim = hessian_operator(model, batches)
            top[device.type] = top_eigenvalues(matvec, dim, k=1, tol=1e-3, max_steps=50, device=device)[0][0]

        seconds[device.type] = timed(top_eigenvalue, 1)
    out["curvature_top_eigenvalue_speedup"] = seconds["cpu"] / seconds["cuda"]
    out["curvature_top_eigenvalue_rel_diff"] = abs(top["cuda"] - top["cpu"]) / abs(top["cpu"])

    from netgeom.studies.star import anchor_parameters, draw_anchor_and_t, star_step

    for device in (cpu, gpu):
        torch.manual_seed(0)
        model = create_model("cnn_k", (3, 32, 32), 10, width=16, batch_norm=True).to(device).train()
        anchors = []
        for n in range(8):
            torch.manual_seed(100 + n)
            anchors.append(anchor_parameters(model, create_model("cnn_k", (3, 32, 32), 10, width=16, batch_norm=True).to(device).state_dict()))
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        draws = torch.Generator().manual_seed(2)
        xb, yb = x[:128].to(device), y[:128].to(device)

        def step():
            index, t = draw_anchor_and_t(draws, len(anchors), "uniform")
            optimizer.zero_grad(set_to_none=True)
            star_step(model, anchors[index], t, xb, yb)
            optimizer.step()

        seconds[device.type] = timed(step, 5)
    out["star_step_ms_gpu"] = seconds["cuda"] * 1e3
    out["star_step_speedup"] = seconds["cpu"] / seconds["cuda"]
    return out


def _number(value: float) -> str:
    return f"{value:.2f}" if value == 0 or abs(value) >= 0.01 else f"{value:.2e}"  # a relative difference is ~1e-6


def main() -> None:
    if not torch.cuda.is_available():
        print("bench/gpu.py: no GPU visible (torch.cuda.is_available() is False); nothing measured")
        return
    from netgeom.progress import set_quiet

    set_quiet(True)
    gpu = torch.device("cuda", 0)
    print(f"{torch.cuda.get_device_name(gpu)}, torch {torch.__version__}, {SAMPLES} synthetic CIFAR-10-shaped samples")
    data = synthetic_bundle(SAMPLES, gpu)
    print(f"batch {BATCH}; achieved TFLOP/s against a dense bf16 peak of {PEAK_TFLOPS:g}")
    results = {}
    for arch in ("resnet18_k", "cnn5_k"):
        flops = training_flops_per_image(arch)
        for precision in ("fp32", "bf16"):
            for layout in ("contiguous", "channels_last"):
                seconds = train_epoch_seconds(arch, precision, layout, data, gpu)
                key = f"{arch.removesuffix('_k')}_{precision}_{'cl' if layout == 'channels_last' else 'nchw'}"
                tflops = flops * SAMPLES / seconds / 1e12
                results[f"{key}_epoch_s"] = seconds
                results[f"{key}_img_s"] = SAMPLES / seconds
                results[f"{key}_tflops"] = tflops
                print(f"{arch} k=64 {precision} {layout}: epoch {seconds:.2f} s, {SAMPLES / seconds:,.0f} images/s, "
                      f"{tflops:.1f} TFLOP/s ({100 * tflops / PEAK_TFLOPS:.1f}% of peak; {flops / 1e9:.2f} GFLOP per image)")
    for key, value in engine_speedups(gpu).items():
        results[key] = value
        print(f"{key}: {_number(value)}" + ("x (GPU vs one CPU process)" if key.endswith("speedup") else ""))
    print(" ".join(f"{k}={_number(v)}" for k, v in results.items()))


if __name__ == "__main__":
    main()
