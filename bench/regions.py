"""Exact region walk vs the seed's two-pass walk and dense sampling, on an MNIST-1D MLP and vgg8.

Methods, each in its natural batched form, on the same closed data paths (K = 8, radius 4):
- walker: netgeom.studies.regions.walk_segments (one tangent pass of the offset-free network
  per crossing; values carried by continuity).
- two-pass (the seed's algorithmic cost): per crossing one plain forward at x(t) for the
  pre-activations and one forward at x(t) + d with the ReLU masks frozen for the tangent,
  step to the nearest boundary, cross by eps, and a (segments x 30000 x (2 + 2 O)) float64
  region buffer preallocated up front as the seed does (its memory counted, its zeroing not
  timed). Both walks use the library's eps (1e-9), so their counts must agree exactly.
- dense: activation patterns at 10^4 equispaced points per segment (undercounts).
Peak memory is the growth of the resident set while a method runs, in a forked child.
Run: .venv/bin/python bench/regions.py
"""

from __future__ import annotations

import copy
import math
import multiprocessing as mp
import time

import numpy as np
import torch
from torch import nn

from netgeom.studies.input_paths import choose_paths, make_paths, random_inputs
from netgeom.studies.regions import DEFAULT_EPS, count_regions_dense, prepare_model, walk_segments

SEED_CAPACITY = 30_000  # regions per segment the seed preallocates
DENSE_POINTS = 10_000
VGG_PIECE = 0.03


# --------------------------------------------------------------------------- the seed's method


class TwoPassWalker:
    """The seed's algorithm: two forward passes per crossing (value, then frozen-mask tangent)."""

    def __init__(self, model: nn.Module):
        self.net = copy.deepcopy(model).double().eval()
        self.mode, self.z, self.masks = "plain", [], []
        for module in self.net.modules():
            if isinstance(module, nn.ReLU):
                module.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        z = inputs[0]
        if self.mode == "value":
            self.z.append(z.flatten(1))
            return None
        if self.mode == "tangent":
            k = len(self.z)
            self.z.append(z.flatten(1))
            return z * self.masks[k].view_as(z)
        return None

    def reserve(self, x0: torch.Tensor) -> torch.Tensor:
        """The seed's region buffer for these segments, allocated once (outside the timings)."""
        outputs = self.net(x0[:1].double()).flatten(1).shape[1]
        shape = (len(x0), SEED_CAPACITY, 2 + 2 * outputs)
        if getattr(self, "buffer", torch.empty(0)).shape != shape:
            self.buffer = None
            self.buffer = torch.zeros(shape, dtype=torch.float64)
        return self.buffer

    @torch.no_grad()
    def walk(self, x0: torch.Tensor, x1: torch.Tensor, eps: float = DEFAULT_EPS) -> np.ndarray:
        x0, x1 = x0.double(), x1.double()
        d = x1 - x0
        n = len(x0)
        buffer = self.reserve(x0)
        counts = np.zeros(n, dtype=np.int64)
        active = torch.arange(n)
        t = torch.zeros(n, dtype=torch.float64)
        while len(active):
            x = x0[active] + t[active].view(-1, *[1] * (x0.dim() - 1)) * d[active]
            self.mode, self.z = "value", []
            f = self.net(x).flatten(1)
            z1 = self.z
            self.masks = [(z > 0).to(z.dtype) for z in z1]
            self.mode, self.z = "tangent", []
            jd = self.net(x + d[active]).flatten(1) - f
            z2, self.mode = self.z, "plain"
            step = torch.full((len(active),), torch.inf, dtype=torch.float64)
            for a, b in zip(z1, z2):
                s = -a / (b - a)
                step = torch.minimum(step, s.masked_fill_(~(s > eps), torch.inf).amin(dim=1))
            k = torch.as_tensor(counts[active.numpy()])
            row = torch.cat([t[active, None], (t[active] + step)[:, None], f, jd], dim=1)
            buffer[active, k.clamp(max=SEED_CAPACITY - 1)] = row
            counts[active.numpy()] += 1
            t[active] = t[active] + step + eps
            active = active[t[active] < 1]
        return counts


# --------------------------------------------------------------------------- models and paths


def mlp_model() -> nn.Module:
    try:
        from netgeom.models import create_model

        return create_model("mlp", (1, 40), 10, width=256, depth=2)
    except Exception:  # the zoo is optional here
        return nn.Sequential(nn.Flatten(), nn.Linear(40, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))


def vgg8_model() -> nn.Module:
    try:
        from netgeom.models import create_model

        return create_model("vgg8", (3, 32, 32), 10)
    except Exception:
        blocks = []
        for cin, cout in ((3, 6), (6, 16), (16, 64)):
            blocks += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2)]
        return nn.Sequential(*blocks, nn.Flatten(), nn.Linear(1024, 120), nn.ReLU(), nn.Linear(120, 10))


def mnist1d_data() -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from mnist1d.data import get_dataset_args, make_dataset

        data = make_dataset(get_dataset_args())
        return torch.tensor(data["x"], dtype=torch.float32)[:, None], torch.tensor(data["y"])
    except Exception:  # synthetic stand-in
        g = torch.Generator().manual_seed(0)
        y = torch.randint(0, 10, (4000,), generator=g)
        templates = torch.randn(10, 1, 40, generator=g)
        return templates[y] + 0.5 * torch.randn(4000, 1, 40, generator=g), y


def image_data() -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic CIFAR-shaped images: smooth class templates plus noise."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (2048,), generator=g)
    templates = nn.functional.avg_pool2d(torch.randn(10, 3, 40, 40, generator=g), 9, stride=1)
    templates = templates / templates.std()
    return templates[y] + 0.5 * random_inputs(2048, (3, 32, 32), seed=1), y


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float) -> nn.Module:
    model = copy.deepcopy(model).train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        batch = torch.randint(0, len(x), (128,), generator=g)
        loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
    accuracy = (model(x[:1000]).argmax(1) == y[:1000]).float().mean().item()
    print(f"  trained {steps} steps: loss {loss.item():.3f}, train accuracy {accuracy:.2f}")
    return model.eval()


# --------------------------------------------------------------------------- measuring


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def _child(conn, fn, warm_up, repeats):
    torch.set_num_threads(1)
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak inherited from the parent
        f.write("5")
    start = _status_bytes("VmRSS")
    warm_up()
    best, result = math.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    peak = _status_bytes("VmHWM") - start
    conn.send((best, result, max(peak, 0)))
    conn.close()


def measure(fn, warm_up, repeats: int):
    """(best seconds, result, peak resident-set growth in bytes), run in a forked child."""
    context = mp.get_context("fork")
    parent, child = context.Pipe()
    process = context.Process(target=_child, args=(child, fn, warm_up, repeats))
    process.start()
    out = parent.recv()
    process.join()
    return out


def compare(name, model, x0, x1, *, n_dense: int, dense_points: int, chunk: int, repeats: int) -> tuple[float, float]:
    prep = prepare_model(model)
    seed = TwoPassWalker(model)
    w0, w1 = x0[:2], x0[:2] + 0.1 * (x1[:2] - x0[:2])  # warm-up on short pieces
    walk = lambda a, b: walk_segments(prep, a, b, batch_size=len(a)).counts()  # noqa: E731
    t_walk, regions, m_walk = measure(lambda: walk(x0, x1), lambda: walk(w0, w1), repeats)

    def seed_warm_up():
        seed.reserve(x0)  # the seed allocates its buffer once at start-up: memory counted, time not
        seed.walk(w0, w1)

    t_seed, seed_counts, m_seed = measure(lambda: seed.walk(x0, x1), seed_warm_up, repeats)
    sub0, sub1 = x0[:n_dense], x1[:n_dense]
    dense = lambda a, b: count_regions_dense(prep, a, b, dense_points, chunk=chunk)  # noqa: E731
    t_dense, dense_counts, m_dense = measure(lambda: dense(sub0, sub1), lambda: dense(w0[:1], w1[:1]), 1)
    total = int(regions.sum())
    per_seg = {"walker": t_walk / len(x0), "two-pass": t_seed / len(x0), "dense": t_dense / n_dense}
    print(f"{name}: {len(x0)} segments, {total} regions (mean {regions.mean():.1f}, max {regions.max()} per segment)")
    for method, seconds, memory, found in (
        ("walker", t_walk, m_walk, total),
        ("two-pass", t_seed, m_seed, int(seed_counts.sum())),
        ("dense", t_dense, m_dense, int(dense_counts.sum())),
    ):
        print(f"  {method:9s} {found / seconds:9.0f} regions/s {per_seg[method] * 1e3:9.1f} ms/segment   peak memory +{memory / 2**20:6.1f} MiB")
    same = np.array_equal(regions, seed_counts)
    detail = "" if same else f" (differ on {(regions != seed_counts).sum()} segments, max |diff| {np.abs(regions - seed_counts).max()})"
    print(f"  counts walker == two-pass: {same}{detail}")
    missed = regions[:n_dense] - dense_counts
    print(f"  dense ({dense_points} points) on {n_dense} segment(s) finds {dense_counts.sum()} of {regions[:n_dense].sum()} regions (never more: {bool((missed >= 0).all())})")
    speed_seed, speed_dense = per_seg["two-pass"] / per_seg["walker"], per_seg["dense"] / per_seg["walker"]
    print(f"  speedup: {speed_seed:.2f}x over two-pass, {speed_dense:.1f}x over dense", flush=True)
    return speed_seed, speed_dense


def main() -> None:
    from netgeom.progress import set_quiet

    set_quiet(True)  # the forked children inherit it: no progress bars between the result lines
    torch.set_num_threads(1)
    torch.manual_seed(0)
    ratios = []
    x, y = mnist1d_data()
    pool = x[3000:]
    paths = make_paths(pool[choose_paths(len(pool), 32)], n_anchors=8, radius=4)
    x0, x1 = paths.segments()
    mlp = mlp_model()
    options = dict(n_dense=8, dense_points=DENSE_POINTS, chunk=2000, repeats=5)
    ratios.append(compare("mlp 40-256-256-10 untrained", mlp, x0, x1, **options))
    ratios.append(compare("mlp 40-256-256-10 trained", train(mlp, x[:3000], y[:3000], 400, lr=0.05), x0, x1, **options))
    # vgg8 crosses ~8000 regions per full segment: walk the first 3% of 16 segments to stay in
    # budget, and sample it as densely as 10^4 points would sample a whole segment
    images, labels = image_data()
    paths = make_paths(images[1024 + choose_paths(1024, 2)], n_anchors=8, radius=4)
    x0, x1 = paths.segments()
    x1 = x0 + VGG_PIECE * (x1 - x0)
    vgg = vgg8_model()
    options = dict(n_dense=2, dense_points=round(DENSE_POINTS * VGG_PIECE), chunk=300, repeats=1)
    ratios.append(compare(f"vgg8 untrained (first {VGG_PIECE:.0%} of each segment)", vgg, x0, x1, **options))
    trained = train(vgg, images[:1024], labels[:1024], 200, lr=0.01)
    ratios.append(compare(f"vgg8 trained (first {VGG_PIECE:.0%} of each segment)", trained, x0, x1, **options))
    geo = [math.exp(np.mean(np.log(r))) for r in zip(*ratios)]
    print(f"geometric mean over the four models: {geo[0]:.2f}x over two-pass, {geo[1]:.1f}x over dense")
    print(f"ratio_vs_seed={geo[0]:.2f} ratio_vs_dense={geo[1]:.1f}")


if __name__ == "__main__":
    main()
