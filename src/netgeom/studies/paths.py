"""Data-driven paths for the linear-regions study: closed loops of translated copies of an input.

A path is K anchors, anchor k being the input translated by `radius` pixels at angle 2 pi k / K
(shift snapped to whole pixels, edge padding), and its segments are k -> k + 1, plus K-1 -> 0
when the path is closed. 1-D signals (C, L) shift along L by round(radius cos(2 pi k / K)), the
projection of the same circle. Translation with edge padding only moves values around, so it
commutes with per-channel normalisation: pass normalised inputs, or raw ones with (mean, std)
and each anchor is normalised once after translating; both give identical anchors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from netgeom.errors import NetgeomError

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
    """Whole-pixel shifts of the anchors: (dy, dx) = round(r sin, r cos) of 2 pi k / K for
    images; (round(r cos),) for 1-D signals. Rounding is half-to-even (numpy)."""
    if isinstance(n_anchors, bool) or not isinstance(n_anchors, int) or n_anchors < 2:
        raise NetgeomError("regions.anchors", f"must be an integer >= 2, got {n_anchors!r}")
    if not radius > 0:
        raise NetgeomError("regions.radius", f"must be > 0 pixels, got {radius!r}")
    angles = 2 * math.pi * np.arange(n_anchors) / n_anchors
    dx = np.round(radius * np.cos(angles)).astype(int)
    dy = np.round(radius * np.sin(angles)).astype(int)
    if rank == 1:
        return [(int(x),) for x in dx]
    return [(int(y), int(x)) for y, x in zip(dy, dx)]


def translate(x: torch.Tensor, shift: tuple[int, ...]) -> torch.Tensor:
    """Move the content of the last len(shift) axes by `shift` pixels, padding with edge values.

    out[..., i, j] = x[..., clip(i - dy), clip(j - dx)]: a positive shift moves content towards
    higher indices."""
    out = x
    for axis, s in zip(range(x.dim() - len(shift), x.dim()), shift):
        size = x.shape[axis]
        index = (torch.arange(size) - s).clamp_(0, size - 1)
        out = out.index_select(axis, index)
    return out


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
    anchors = torch.stack([translate(inputs, s) for s in shifts], dim=1).to(torch.float32)
    if (mean is None) != (std is None):
        raise NetgeomError("regions.normalisation", "give both mean and std, or neither")
    if mean is not None:
        view = (1, 1, -1) + (1,) * len(spatial)
        mean_t = torch.as_tensor(mean, dtype=torch.float32).view(view)
        std_t = torch.as_tensor(std, dtype=torch.float32).view(view)
        if mean_t.numel() != inputs.shape[1] or std_t.numel() != inputs.shape[1] or not bool((std_t > 0).all()):
            raise NetgeomError("regions.normalisation", f"need {inputs.shape[1]} means and positive stds, one per channel")
        anchors = (anchors - mean_t) / std_t
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
        view = (1, -1) + (1,) * (len(input_shape) - 1)
        u = torch.as_tensor(mean, dtype=torch.float64).view(view) + u * torch.as_tensor(std, dtype=torch.float64).view(view)
    return u.to(torch.float32)


def shard(index: int, count: int, n_items: int) -> range:
    """The contiguous range of item indices that shard `index` of `count` handles."""
    if not 0 <= index < count:
        raise NetgeomError("shard", f"index must be in [0, {count}), got {index}")
    return range(index * n_items // count, (index + 1) * n_items // count)
