"""Per-sample input Jacobian (K = 10) and its operator norm on CIFAR-shaped inputs.

Compares, in one run and on the same batches:
  seed   the seed's method re-implemented: parameters keep requires_grad (their .grad
         accumulates), K backward passes with retain_graph, J stacked, power iteration on J;
  floor  one forward + K input-only vjps over the whole batch with frozen parameters (J only,
         no norm): the least any exact K-pass method has to do;
  ours   netgeom.studies.smoothness.compute_metric(..., "jacobian_operator", "logits"):
         forward + K input-only vjps + eigvalsh of the K x K Gram matrix.
Checks ours == seed (rtol 1e-4; the check doubles as warm-up). Prints samples/s (best of
REPEATS, the order of the methods rotated each repeat so background load hits all alike; glibc
told to keep freed memory, see keep_freed_memory) and peak memory: the resident-set peak of one
call above the resident size before it, in a fresh child process after a warm-up call, with
glibc's mmap threshold fixed there so freed blocks leave and RSS follows the live tensors.
Last line: ratio_vs_seed=<seed time / ours time> ratio_vs_floor=<ours time / floor time>,
over the summed best times of all models.

Threads: torch.set_num_threads(2), the cores of the machine this was written on.
Run: .venv/bin/python bench/jacobian.py
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import time

import numpy as np
import torch

THREADS = 2
CLASSES = 10
INPUT_SHAPE = (3, 32, 32)
CASES = [("cnn_k", {"width": 8}, 128), ("resnet18_k", {"width": 4}, 64)]
REPEATS = 8
POWER_ITERS, POWER_TOL = 1000, 1e-6  # float32 J: stop when every sigma changes < 1e-6 relative


def _setup(arch: str, options: dict, batch: int):
    from netgeom.models import create_model

    torch.manual_seed(0)
    model = create_model(arch, INPUT_SHAPE, CLASSES, **options).eval()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(batch, *INPUT_SHAPE, generator=generator)
    y = torch.randint(0, CLASSES, (batch,), generator=generator)
    return model, x, y


def seed_method(model, x, y) -> np.ndarray:
    """K backward passes with parameter gradients on, then power iteration on the stacked J."""
    for param in model.parameters():
        param.requires_grad_(True)
    x = x.clone().requires_grad_(True)
    out = model(x)
    rows = []
    for k in range(out.shape[1]):
        out[:, k].sum().backward(retain_graph=k < out.shape[1] - 1)
        rows.append(x.grad.flatten(1).clone())
        x.grad.zero_()
    jac = torch.stack(rows, dim=1)  # (B, K, D)
    # Power iteration on J^T J in input space, as the seed, but correct (no zeroing of small sigma,
    # no reshaping) and with the fast row-vector products: (B,1,D) @ (B,D,K) then @ (B,K,D).
    v = torch.randn(jac.shape[0], 1, jac.shape[2], generator=torch.Generator().manual_seed(0))
    sigma = torch.zeros(jac.shape[0])
    for _ in range(POWER_ITERS):
        v = v / v.norm(dim=2, keepdim=True)
        jv = v @ jac.transpose(1, 2)
        new_sigma = jv.norm(dim=(1, 2))
        converged = bool(((new_sigma - sigma).abs() <= POWER_TOL * new_sigma).all())
        sigma = new_sigma
        if converged:
            break
        v = jv @ jac
    model.zero_grad(set_to_none=True)
    return sigma.numpy()


def floor_method(model, x, y) -> torch.Tensor:
    """Forward + K input-only vjps over the batch, frozen parameters; returns J, no norm."""
    flags = [p.requires_grad for p in model.parameters()]
    for param in model.parameters():
        param.requires_grad_(False)
    x = x.clone().requires_grad_(True)
    out = model(x)
    jac = out.new_empty(out.shape[0], out.shape[1], x[0].numel())
    for k in range(out.shape[1]):
        cotangent = torch.zeros_like(out)
        cotangent[:, k] = 1.0
        (grad,) = torch.autograd.grad(out, x, grad_outputs=cotangent, retain_graph=k < out.shape[1] - 1)
        jac[:, k] = grad.flatten(1)
    for param, flag in zip(model.parameters(), flags):
        param.requires_grad_(flag)
    return jac


def ours_method(model, x, y) -> np.ndarray:
    from netgeom.studies.smoothness import compute_metric

    return compute_metric(model, x, y, "jacobian_operator", "logits", batch_size=len(x))


METHODS = {"seed": seed_method, "floor": floor_method, "ours": ours_method}


def _rss_kb(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def _peak_child(arch, options, batch, method, queue) -> None:
    """Run the method in a fresh process (warm-up, then once more); report the resident-memory
    peak of the second run above the resident size before it (clear_refs resets VmHWM)."""
    torch.set_num_threads(THREADS)
    from netgeom.progress import set_quiet

    set_quiet(True)
    model, x, y = _setup(arch, options, batch)
    METHODS[method](model, x, y)  # warm-up: one-time kernel/allocator set-up is not the method's
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    before = _rss_kb("VmRSS")
    METHODS[method](model, x, y)
    queue.put((_rss_kb("VmHWM") - before) / 1024.0)


def peak_memory_mb(arch, options, batch, method) -> float:
    context = mp.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_peak_child, args=(arch, options, batch, method, queue))
    # A fixed mmap threshold makes glibc map every block >= 64 KiB on its own and unmap it on
    # free, so resident memory follows the live tensors instead of the heap's history.
    previous = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
    try:
        child.start()
    finally:
        if previous is None:
            del os.environ["MALLOC_MMAP_THRESHOLD_"]
        else:
            os.environ["MALLOC_MMAP_THRESHOLD_"] = previous
    peak = queue.get()
    child.join()
    return peak


def keep_freed_memory() -> None:
    """Stop glibc from handing freed blocks back to the OS between calls (what jemalloc or
    tcmalloc do by default). Otherwise every call re-faults its multi-MB activation and gradient
    buffers, and those page faults (10k-130k a call here) swing all three timings by 2x."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: the maximum, serve blocks up to 32 MiB from the heap
    libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: never trim the heap top back to the OS


def main() -> None:
    torch.set_num_threads(THREADS)
    keep_freed_memory()
    from netgeom.progress import set_quiet

    set_quiet(True)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, K={CLASSES}, input {INPUT_SHAPE}")
    totals = dict.fromkeys(METHODS, 0.0)
    for arch, options, batch in CASES:
        model, x, y = _setup(arch, options, batch)
        name = f"{arch}{options.get('width', '')}"
        ours = ours_method(model, x, y)
        seed = seed_method(model, x, y)
        np.testing.assert_allclose(ours, seed, rtol=1e-4)
        exact = torch.linalg.matrix_norm(floor_method(model, x, y), ord=2).numpy()
        np.testing.assert_allclose(ours, exact, rtol=1e-4)
        best = dict.fromkeys(METHODS, float("inf"))
        names = list(METHODS)
        for repeat in range(REPEATS):  # rotate the order so no method always follows the same one
            for method in names[repeat % 3 :] + names[: repeat % 3]:
                start = time.perf_counter()
                METHODS[method](model, x, y)
                best[method] = min(best[method], time.perf_counter() - start)
        n_params = sum(p.numel() for p in model.parameters())
        print(f"{name} ({n_params} params), batch {batch}: values equal (max rel diff "
              f"{np.max(np.abs(ours - seed) / np.abs(seed)):.1e}), mean sigma {ours.mean():.4g}")
        for method in METHODS:
            peak = peak_memory_mb(arch, options, batch, method)
            totals[method] += best[method]
            print(f"  {method:5s} {batch / best[method]:8.1f} samples/s  {best[method] * 1e3:8.1f} ms/batch  "
                  f"peak +{peak:7.1f} MB")
        print(f"  {name}: ours speedup over seed {best['seed'] / best['ours']:.2f}x, "
              f"ours / floor {best['ours'] / best['floor']:.3f}")
    print(f"ratio_vs_seed={totals['seed'] / totals['ours']:.3f} ratio_vs_floor={totals['ours'] / totals['floor']:.3f}")


if __name__ == "__main__":
    main()
