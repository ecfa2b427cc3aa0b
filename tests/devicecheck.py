"""Device checks that run on a CPU-only machine: code that will meet CUDA tensors must not make
CPU tensors beside them. A GPU run is the real test (tests/test_devices.py); these catch the
mistake where it is made."""

from __future__ import annotations

import torch

FACTORIES = {torch.empty, torch.zeros, torch.ones, torch.full, torch.arange, torch.linspace, torch.tensor, torch.as_tensor}


class FactoryCalls(torch.overrides.TorchFunctionMode):
    """Records the names of tensor factories called without a device: on a GPU they would make
    CPU tensors beside CUDA inputs."""

    def __init__(self):
        super().__init__()
        self.without_device: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FACTORIES and kwargs.get("device") is None:
            self.without_device.append(func.__name__)
        return func(*args, **kwargs)
