"""Monte-Carlo volumes around an input, for integrating a per-point quantity v near each sample.

Two halves, kept apart so each can be tested on its own:

* generation (`perturb`): pure tensor ops that turn a batch x of shape (B, *input_shape) into the
  points at which v is evaluated — (B, 1, ...) for `none`, (B, M+1, ...) for `euclidean`
  (x_0 then the M perturbations), (B, M, A, ...) for `geodesic` (M paths of A anchors, anchor
  0 = x_0, then increasing strength);
* integration (`euclidean_integral`, `geodesic_integral`): pure functions of v at those points
  (and, for paths, of the distances between consecutive anchors). `PointValues` keeps v at every
  point and the path lengths (the seed's "disable geodesic integration" output) and integrates
  them with the same rule.

Perturbations act on the normalised inputs the model sees. A per-channel affine normalisation
commutes with edge padding, nearest resampling and shifts, so shifting a normalised image equals
normalising a shifted raw one (`netgeom.studies.shifts`: whole-pixel offsets rounded half away
from zero, edge padding). SVD erasure does not commute with it: erasing singular values of the
standardised image treats the mean offset as part of the image. `Volume.space` chooses: `raw`
(default, as the smoothness seed did: de-normalise with the dataset's per-channel mean and std,
erase singular values of the raw [0, 1] image, re-normalise; needs `ChannelStats`) or
`standardised` (erase the standardised image itself; its points differ from the seed's by up
to 1.97 standardised units in issue 17's side-by-side run). Distances between anchors are always measured between the
standardised points, where the model is evaluated.

Inputs are images (C, H, W) or 1-D signals (C, L) (mnist1d). For signals a shift is circular
along L, and the M "angles" reduce to the two directions of the line: direction m shifts by +r
for even m and -r for odd m (so M=2 gives one shift each way; use an even M for symmetry).
SVD erasure needs images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from netgeom.errors import NetgeomError
from netgeom.studies.channels import ChannelStats
from netgeom.studies.shifts import circle_offsets, line_offsets, shift

STRATEGIES = ("none", "euclidean", "geodesic")
PERTURBATIONS = ("shift", "svd")
SPACES = ("raw", "standardised")
# Geodesic anchor strengths from the seed: shifts of 1..4 px (A=5), SVD erasure of 5..25 (A=7).
DEFAULT_ANCHORS = {"shift": (1, 2, 3, 4), "svd": (5, 10, 15, 20, 22, 25)}


@dataclass(frozen=True)
class Volume:
    """How to sample the neighbourhood of each input.

    strategy: none | euclidean | geodesic. perturbation: shift (pixels) | svd (erased singular
    values). directions: M. strength: r or s for `euclidean`. anchors: the increasing strengths
    of a geodesic path (anchor 0 = x_0 is implicit). cumulative: geodesic only, return the A-1
    prefix averages instead of the whole-path average. space: where SVD erasure acts, raw
    (the seed's) | standardised (see the module docstring; shifts are the same in both).
    Errors name the params keys `smoothness.volume.*`.
    """

    strategy: str = "none"
    perturbation: str = "shift"
    directions: int = 4
    strength: int = 1
    anchors: tuple[int, ...] | None = None
    cumulative: bool = False
    space: str = "raw"

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise NetgeomError("smoothness.volume.strategy", f"got {self.strategy!r}, allowed: {', '.join(STRATEGIES)}")
        if self.perturbation not in PERTURBATIONS:
            raise NetgeomError(
                "smoothness.volume.perturbation", f"got {self.perturbation!r}, allowed: {', '.join(PERTURBATIONS)}"
            )
        if not _is_int(self.directions) or self.directions < 1:
            raise NetgeomError("smoothness.volume.directions", f"must be an integer >= 1, got {self.directions!r}")
        if not _is_int(self.strength) or self.strength < 1:
            raise NetgeomError("smoothness.volume.strength", f"must be an integer >= 1, got {self.strength!r}")
        if self.anchors is not None:
            anchors = tuple(self.anchors)
            if not anchors or not all(_is_int(a) and a >= 1 for a in anchors) or list(anchors) != sorted(set(anchors)):
                raise NetgeomError(
                    "smoothness.volume.anchors", f"must be strictly increasing integers >= 1, got {self.anchors!r}"
                )
            object.__setattr__(self, "anchors", anchors)
        if self.cumulative and self.strategy != "geodesic":
            raise NetgeomError("smoothness.volume.cumulative", "only allowed with strategy 'geodesic'")
        if self.space not in SPACES:
            raise NetgeomError("smoothness.volume.space", f"got {self.space!r}, allowed: {', '.join(SPACES)}")

    @property
    def anchor_strengths(self) -> tuple[int, ...]:
        """Strengths of anchors 1..A-1 of a geodesic path."""
        return self.anchors if self.anchors is not None else DEFAULT_ANCHORS[self.perturbation]

    @property
    def points_shape(self) -> tuple[int, ...]:
        """Shape of the per-sample point axes that `perturb` inserts after the batch axis."""
        if self.strategy == "none":
            return (1,)
        if self.strategy == "euclidean":
            return (self.directions + 1,)
        return (self.directions, len(self.anchor_strengths) + 1)

    @property
    def points_per_sample(self) -> int:
        return math.prod(self.points_shape)

    def point_labels(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(direction, anchor, strength) of each point of a sample, flattened in `points_shape`
        order. The centre x_0 of `none` and `euclidean` has direction -1, anchor 0, strength 0;
        a euclidean perturbation is anchor 1; anchor 0 of geodesic path m (x_0 again) has
        direction m and strength 0."""
        if self.strategy == "none":
            return np.array([-1]), np.array([0]), np.array([0])
        m = np.arange(self.directions)
        if self.strategy == "euclidean":
            return np.r_[-1, m], np.r_[0, np.ones_like(m)], np.r_[0, np.full_like(m, self.strength)]
        strengths = np.array((0, *self.anchor_strengths))
        anchors = np.arange(len(strengths))
        return np.repeat(m, len(anchors)), np.tile(anchors, len(m)), np.tile(strengths, len(m))


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --------------------------------------------------------------------------- generation


def erase_singular_values(x: torch.Tensor, count: int, offset: int = 0) -> torch.Tensor:
    """Zero the descending singular values with indices in [n - count - offset, n - offset) (clamped
    at 0) of every (H, W) channel of x, n = min(H, W), and rebuild the image.

    offset 0 removes the `count` smallest singular values; direction i of a volume uses offset i.
    Computed in float64 so the kept part of the spectrum is reproduced to double precision.
    """
    n = min(x.shape[-2:])
    start, stop = max(0, n - count - offset), max(0, n - offset)
    u, s, vh = torch.linalg.svd(x.to(torch.float64), full_matrices=False)
    s = s.clone()
    s[..., start:stop] = 0.0
    return ((u * s.unsqueeze(-2)) @ vh).to(x.dtype)


def erase_in_space(x: torch.Tensor, count: int, offset: int, space: str, channels: ChannelStats | None) -> torch.Tensor:
    """`erase_singular_values` of standardised images x (..., C, H, W), acting on the raw image
    (de-normalised with `channels`, erased, re-normalised; in float64) or on x itself."""
    if space == "standardised":
        return erase_singular_values(x, count, offset)
    raw = channels.to_raw(x.to(torch.float64), channel_axis=-3)
    return channels.standardise(erase_singular_values(raw, count, offset), channel_axis=-3).to(x.dtype)


def _perturbation(x: torch.Tensor, volume: Volume, strength: int, direction: int, channels: ChannelStats | None) -> torch.Tensor:
    """x perturbed along direction `direction` (of M) with the given strength."""
    if volume.perturbation == "svd":
        return erase_in_space(x, strength, direction, volume.space, channels)
    if x.dim() - 1 == 2:  # (B, C, L) signals: the two directions of the line, wrapping around
        return shift(x, line_offsets(volume.directions, strength)[direction], padding="circular")
    return shift(x, circle_offsets(volume.directions, strength, rounding="half_away")[direction], padding="edge")


def perturb(x: torch.Tensor, volume: Volume, channels: ChannelStats | None = None) -> torch.Tensor:
    """The points of `volume` around every sample of x (B, *input_shape), standardised inputs.

    Returns (B, 1, ...) for none, (B, M+1, ...) for euclidean (index 0 is x itself),
    (B, M, A, ...) for geodesic (anchor 0 is x itself, then the anchor strengths in order).
    `channels` (the dataset's mean and std) is needed by SVD erasure in the raw space only.
    """
    if volume.strategy == "none":
        return x.unsqueeze(1)
    if x.dim() not in (3, 4):
        raise NetgeomError("x", f"volumes need a batch of (C, L) signals or (C, H, W) images, got {tuple(x.shape)}")
    if volume.perturbation == "svd":
        _check_svd(x, volume, channels)
    m_total = volume.directions
    if volume.strategy == "euclidean":
        points = [x] + [_perturbation(x, volume, volume.strength, m, channels) for m in range(m_total)]
        return torch.stack(points, dim=1)
    paths = [
        torch.stack([x] + [_perturbation(x, volume, a, m, channels) for a in volume.anchor_strengths], 1)
        for m in range(m_total)
    ]
    return torch.stack(paths, dim=1)


def _check_svd(x: torch.Tensor, volume: Volume, channels: ChannelStats | None) -> None:
    if x.dim() != 4:
        raise NetgeomError("smoothness.volume.perturbation", "svd erasure needs (C, H, W) images; use 'shift' for signals")
    if volume.space == "raw":
        if channels is None:
            raise NetgeomError(
                "smoothness.volume.space",
                "'raw' erases singular values of the raw image: pass the dataset's per-channel mean and std "
                "(channel_stats), or use 'standardised'",
            )
        channels.check_channels(x.shape[1])


# --------------------------------------------------------------------------- integration


def euclidean_integral(values: torch.Tensor) -> torch.Tensor:
    """S = 1/2 v(x_0) + 1/2 mean_m v(x_m) for values of shape (B, M+1) (column 0 is x_0)."""
    return 0.5 * values[:, 0] + 0.5 * values[:, 1:].mean(dim=1)


def segment_lengths(points: torch.Tensor) -> torch.Tensor:
    """Input-space Euclidean distances between consecutive anchors: (B, M, A, ...) -> (B, M, A-1)."""
    steps = (points[:, :, 1:] - points[:, :, :-1]).to(torch.float64)
    return torch.linalg.vector_norm(steps.flatten(3), dim=-1)


def geodesic_integral(values: torch.Tensor, lengths: torch.Tensor, cumulative: bool = False) -> torch.Tensor:
    """Length-weighted trapezoid average of v along each path, then the mean over paths.

    values (B, M, A) at the anchors, lengths (B, M, A-1) of the segments. Per path:
    sum_k L_k (v_k + v_{k+1}) / 2 / sum_k L_k. With `cumulative`, returns (B, A-1): entry j uses
    the first j+1 segments only; otherwise (B,), the whole path. A path of zero length (every
    anchor equal, e.g. a constant image shifted) has one point only, so its segments count equally.
    """
    values = values.to(torch.float64)
    lengths = lengths.to(torch.float64)
    segment_means = 0.5 * (values[..., 1:] + values[..., :-1])
    weighted = torch.cumsum(lengths * segment_means, dim=-1)
    total_length = torch.cumsum(lengths, dim=-1)
    count = torch.arange(1, segment_means.shape[-1] + 1, dtype=torch.float64, device=values.device)
    unweighted = torch.cumsum(segment_means, dim=-1) / count
    per_path = torch.where(total_length > 0, weighted / total_length.clamp_min(torch.finfo(torch.float64).tiny), unweighted)
    prefix_means = per_path.mean(dim=1)
    return prefix_means if cumulative else prefix_means[:, -1]


def integrate(values: torch.Tensor, points: torch.Tensor, volume: Volume) -> torch.Tensor:
    """Per-sample integral of v over `volume`: values (B, *volume.points_shape) at `points`
    (as returned by `perturb`). Returns float64 (B,), or (B, A-1) for cumulative geodesics."""
    lengths = segment_lengths(points) if volume.strategy == "geodesic" else None
    return integrate_values(values, lengths, volume)


def integrate_values(values: torch.Tensor, lengths: torch.Tensor | None, volume: Volume) -> torch.Tensor:
    """`integrate` from the values and, for geodesic volumes, the segment lengths (B, M, A-1)."""
    if volume.strategy == "none":
        return values[:, 0].to(torch.float64)
    if volume.strategy == "euclidean":
        return euclidean_integral(values.to(torch.float64))
    return geodesic_integral(values, lengths, volume.cumulative)


@dataclass(frozen=True)
class PointValues:
    """v at every point of every sample's volume, before integration (what the seed's "disable
    geodesic integration" gives), and the path lengths that weigh them.

    values: (N, *volume.points_shape) float64; lengths: (N, M, A-1) float64 distances between
    consecutive anchors of each geodesic path (standardised inputs), None for other strategies.
    """

    volume: Volume
    values: np.ndarray
    lengths: np.ndarray | None = None

    def integrate(self) -> np.ndarray:
        """The per-sample integral, exactly as `compute_metric` returns it."""
        lengths = None if self.lengths is None else torch.from_numpy(self.lengths)
        return integrate_values(torch.from_numpy(self.values), lengths, self.volume).numpy()

    def to_frame(self, sample_ids: np.ndarray | None = None) -> pd.DataFrame:
        """A long table, one row per (sample, point): sample_id (default: the row of x),
        direction, anchor, strength (see `Volume.point_labels`), value, and step_length, the
        distance from the previous anchor of the same path (NaN for anchor 0 and off geodesics)."""
        n, per_sample = len(self.values), self.volume.points_per_sample
        ids = np.arange(n) if sample_ids is None else np.asarray(sample_ids)
        direction, anchor, strength = self.volume.point_labels()
        step = np.full((n, per_sample), np.nan)
        if self.lengths is not None:
            with_previous = np.flatnonzero(anchor > 0)
            step[:, with_previous] = self.lengths.reshape(n, -1)
        return pd.DataFrame(
            {
                "sample_id": np.repeat(ids, per_sample),
                "direction": np.tile(direction, n),
                "anchor": np.tile(anchor, n),
                "strength": np.tile(strength, n),
                "value": self.values.reshape(-1),
                "step_length": step.reshape(-1),
            }
        )
