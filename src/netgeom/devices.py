"""Which device a stage computes on: `execution.device` resolved against the machine.

`auto` takes the first visible GPU, else the CPU. The CPU is the tested default; a run trained on
one device is studied on any other (checkpoints are always CPU tensors).
"""

from __future__ import annotations

import os
import re

import torch

from netgeom.errors import NetgeomError

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def resolve_device(spec: str) -> torch.device:
    """`auto` | `cpu` | `cuda` | `cuda:N` -> a torch.device that exists here."""
    if not DEVICE_PATTERN.match(spec):
        raise NetgeomError("execution.device", f"must be auto, cpu, cuda or cuda:N (got {spec!r})")
    if spec == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise NetgeomError("execution.device", f"{spec} asked for, but no GPU is visible here; use auto or cpu")
        if (device.index or 0) >= torch.cuda.device_count():
            raise NetgeomError("execution.device", f"{spec} asked for, but only {torch.cuda.device_count()} GPU(s) are visible")
        return torch.device("cuda", device.index or 0)
    return device


def set_deterministic(enabled: bool) -> None:
    """Deterministic kernels (and cuBLAS's fixed workspace) where the backend offers them."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=False)
    torch.backends.cudnn.benchmark = not enabled
