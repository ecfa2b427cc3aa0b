"""Which memory layout a conv net runs fastest in, and moving tensors into it.

On CPU, oneDNN's channels-last convolutions, max-pooling and BatchNorm measured 1.2-2.7x faster
than the default NCHW layout for forward passes and 1.2-1.5x for training steps (cnn_k, vgg11,
resnet18_k, resnet20, 2-core x86). The layout changes strides only, never values' meaning:
results differ by float summation order alone.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

MEMORY_FORMATS = ("auto", "channels_last", "contiguous")


def preferred_format(choice: str, model: nn.Module, sample: Tensor) -> torch.memory_format:
    """channels_last for 4-D inputs when asked, or under "auto" when the model has a Conv2d."""
    if choice == "contiguous" or sample.ndim != 4:
        return torch.contiguous_format
    if choice == "auto" and not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return torch.contiguous_format
    return torch.channels_last


def in_format(tensor: Tensor, layout: torch.memory_format) -> Tensor:
    """`tensor` in `layout` when it is 4-D (images, conv weights); other tensors as they are."""
    return tensor.contiguous(memory_format=layout) if tensor.ndim == 4 else tensor


def state_in_format(state: Mapping[str, Tensor], layout: torch.memory_format) -> dict[str, Tensor]:
    return {k: in_format(v, layout) for k, v in state.items()}
