"""Per-channel normalisation constants of a dataset, passed into the studies (which stay pure).

Models see standardised inputs (raw - mean) / std per channel. Some perturbations are defined on
the raw images (SVD erasure as the smoothness seed did it, colour jitter), so they de-normalise,
perturb and re-normalise with the dataset's constants, given as a `ChannelStats`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from netgeom.errors import NetgeomError


@dataclass(frozen=True)
class ChannelStats:
    """mean and std per channel of the raw inputs (e.g. a dataset's `DatasetInfo.mean/std`)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        mean, std = _floats(self.mean), _floats(self.std)
        if mean is None or std is None or len(mean) != len(std) or not mean:
            raise NetgeomError("channel_stats", f"need one mean and one std per channel, got {self.mean!r} and {self.std!r}")
        if not all(math.isfinite(m) for m in mean) or not all(math.isfinite(s) and s > 0 for s in std):
            raise NetgeomError("channel_stats", f"means must be finite and stds finite and > 0, got {mean} and {std}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @property
    def channels(self) -> int:
        return len(self.mean)

    def check_channels(self, channels: int) -> None:
        if channels != self.channels:
            raise NetgeomError("channel_stats", f"have {self.channels} channels, the inputs have {channels}")

    def _views(self, x: torch.Tensor, channel_axis: int) -> tuple[torch.Tensor, torch.Tensor]:
        axis = channel_axis % x.dim()
        self.check_channels(x.shape[axis])
        shape = [1] * x.dim()
        shape[axis] = -1
        mean = torch.as_tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.as_tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
        return mean, std

    def to_raw(self, x: torch.Tensor, channel_axis: int) -> torch.Tensor:
        """x * std + mean: standardised inputs back to raw values."""
        mean, std = self._views(x, channel_axis)
        return x * std + mean

    def standardise(self, x: torch.Tensor, channel_axis: int) -> torch.Tensor:
        """(x - mean) / std: raw values to what the model sees."""
        mean, std = self._views(x, channel_axis)
        return (x - mean) / std


def _floats(values: Sequence[float]) -> tuple[float, ...] | None:
    try:
        return tuple(float(v) for v in values)
    except (TypeError, ValueError):
        return None
