"""Data-driven paths for the linear-regions study: closed loops of translated copies of an input.

A path is K anchors, anchor k being the input translated by `radius` pixels at angle 2 pi k / K
(`netgeom.studies.shifts`: snapped to whole pixels with halves to even, edge padding), and its
segments are k -> k + 1, plus K-1 -> 0 when the path is closed. 1-D signals (C, L) shift along L
by the snapped radius cos(2 pi k / K), the projection of the same circle, also with edge padding
(the smoothness volumes wrap signals around instead). Translation with edge padding only moves
values around, so it commutes with per-channel normalisation: pass normalised inputs, or raw
ones with (mean, std) and each anchor is normalised once after translating; both give identical
anchors. Shard paths with `netgeom.execution.shard_range` and `Paths.select`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from netgeom.errors import NetgeomError
from netgeom.studies.channels import ChannelStats
from netgeom.studies.shifts import circle_offsets, shift

DEFAULT_PATH_SEED = 4321


@dataclass(frozen=True)
class Paths:
    """anchors: (P, K, *input_shape) float32; source: (P,) pool index of each path's input."""

    anchors: torch.Tensor
    closed: bool
    source: np.ndarray

    @property
    def n_paths(self) -> int:
        return self.anchors.shape[0]

    @property
    def n_anchors(self) -> int:
        return self.anchors.shape[1]

    @property
    def segments_per_path(self) -> int:
        return self.n_anchors if self.closed else self.n_anchors - 1

    def segments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0, x1), each (P * segments_per_path, *input_shape), path-major, in walking order."""
        start = self.anchors[:, : self.segments_per_path]
        end = torch.roll(self.anchors, -1, dims=1)[:, : self.segments_per_path]
        return start.flatten(0, 1), end.flatten(0, 1)

    def select(self, index: range | Sequence[int]) -> Paths:
        """The paths at `index` (e.g. a shard's range)."""
        index = list(index)
        return Paths(self.anchors[index], self.closed, self.source[index])


def anchor_shifts(n_anchors: int = 8, radius: float = 4, rank: int = 2) -> list[tuple[int, ...]]:
    """Whole-pixel shifts of the anchors: (dy, dx) = r (sin, cos) of 2 pi k / K for images,
    (dx,) for 1-D signals, snapped with halves to even (`shifts.snap_to_pixel`)."""
    if isinstance(n_anchors, bool) or not isinstance(n_anchors, int) or n_anchors < 2:
        raise NetgeomError("regions.anchors", f"must be an integer >= 2, got {n_anchors!r}")
    if not radius > 0:
        raise NetgeomError("regions.radius", f"must be > 0 pixels, got {radius!r}")
    offsets = circle_offsets(n_anchors, radius, rounding="half_even")
    return [(dx,) for _, dx in offsets] if rank == 1 else offsets


def make_paths(
    inputs: torch.Tensor,
    *,
    n_anchors: int = 8,
    radius: float = 4,
    closed: bool = True,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    source: np.ndarray | None = None,
) -> Paths:
    """Paths from inputs (N, C, H, W) or (N, C, L). With mean and std the inputs are raw and
    each anchor is normalised once per channel; without them they are already normalised."""
    if inputs.dim() not in (3, 4):
        raise NetgeomError("inputs", f"must be (N, C, L) signals or (N, C, H, W) images, got shape {tuple(inputs.shape)}")
    spatial = inputs.shape[2:]
    if not radius < min(spatial):
        raise NetgeomError("regions.radius", f"must be smaller than the input side {min(spatial)}, got {radius!r}")
    shifts = anchor_shifts(n_anchors, radius, rank=len(spatial))
    anchors = torch.stack([shift(inputs, s, padding="edge") for s in shifts], dim=1).to(torch.float32)
    if (mean is None) != (std is None):
        raise NetgeomError("regions.normalisation", "give both mean and std, or neither")
    if mean is not None:
        anchors = _channel_stats(mean, std, inputs.shape[1]).standardise(anchors, channel_axis=2)
    source = np.arange(len(inputs)) if source is None else np.asarray(source)
    return Paths(anchors, closed, source)


def choose_paths(pool_size: int, n_paths: int, path_seed: int = DEFAULT_PATH_SEED) -> np.ndarray:
    """A deterministic subset of n_paths indices of a pool, sorted; depends on path_seed only."""
    if not 1 <= n_paths <= pool_size:
        raise NetgeomError("regions.n_paths", f"must be between 1 and the pool size {pool_size}, got {n_paths}")
    generator = torch.Generator().manual_seed(path_seed)
    return np.sort(torch.randperm(pool_size, generator=generator)[:n_paths].numpy())


def random_inputs(
    n: int,
    input_shape: tuple[int, ...],
    *,
    seed: int = DEFAULT_PATH_SEED,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> torch.Tensor:
    """Off-manifold inputs, uniform within mean +- std per channel (raw values when mean/std are
    given, so pass the same mean/std to make_paths; otherwise normalised: uniform in [-1, 1])."""
    generator = torch.Generator().manual_seed(seed)
    u = torch.rand((n, *input_shape), generator=generator, dtype=torch.float64) * 2 - 1
    if mean is not None and std is not None:
        u = _channel_stats(mean, std, input_shape[0]).to_raw(u, channel_axis=1)
    return u.to(torch.float32)


def _channel_stats(mean: Sequence[float], std: Sequence[float], channels: int) -> ChannelStats:
    try:
        stats = ChannelStats(tuple(mean), tuple(std))
        stats.check_channels(channels)
    except NetgeomError as error:
        raise NetgeomError("regions.normalisation", f"need {channels} means and positive stds, one per channel ({error.problem})") from None
    return stats
