"""Monte-Carlo volumes around an input, for integrating a per-point quantity v near each sample.

Two halves, kept apart so each can be tested on its own:

* generation (`perturb`): pure tensor ops that turn a batch x of shape (B, *input_shape) into the
  points at which v is evaluated — (B, 1, ...) for `none`, (B, M+1, ...) for `euclidean`
  (x_0 then the M perturbations), (B, M, A, ...) for `geodesic` (M paths of A anchors, anchor
  0 = x_0, then increasing strength);
* integration (`euclidean_integral`, `geodesic_integral`): pure functions of v at those points
  (and, for paths, of the distances between consecutive anchors).

Perturbations act on the normalised inputs the model sees. A per-channel affine normalisation
commutes with edge padding, nearest resampling and shifts, so shifting a normalised image equals
normalising a shifted raw one. SVD erasure is linear in each channel only up to the mean offset,
which it treats as part of the image (as the seed did).

Inputs are images (C, H, W) or 1-D signals (C, L) (mnist1d). For signals a shift is circular
along L, and the M "angles" reduce to the two directions of the line: direction m shifts by +r
for even m and -r for odd m (so M=2 gives one shift each way; use an even M for symmetry).
SVD erasure needs images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from netgeom.errors import NetgeomError

STRATEGIES = ("none", "euclidean", "geodesic")
PERTURBATIONS = ("shift", "svd")
# Geodesic anchor strengths from the seed: shifts of 1..4 px (A=5), SVD erasure of 5..25 (A=7).
DEFAULT_ANCHORS = {"shift": (1, 2, 3, 4), "svd": (5, 10, 15, 20, 22, 25)}


@dataclass(frozen=True)
class Volume:
    """How to sample the neighbourhood of each input.

    strategy: none | euclidean | geodesic. perturbation: shift (pixels) | svd (erased singular
    values). directions: M. strength: r or s for `euclidean`. anchors: the increasing strengths
    of a geodesic path (anchor 0 = x_0 is implicit). cumulative: geodesic only, return the A-1
    prefix averages instead of the whole-path average.
    """

    strategy: str = "none"
    perturbation: str = "shift"
    directions: int = 4
    strength: int = 1
    anchors: tuple[int, ...] | None = None
    cumulative: bool = False

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise NetgeomError("smoothness.strategy", f"got {self.strategy!r}, allowed: {', '.join(STRATEGIES)}")
        if self.perturbation not in PERTURBATIONS:
            raise NetgeomError(
                "smoothness.perturbation", f"got {self.perturbation!r}, allowed: {', '.join(PERTURBATIONS)}"
            )
        if not _is_int(self.directions) or self.directions < 1:
            raise NetgeomError("smoothness.directions", f"must be an integer >= 1, got {self.directions!r}")
        if not _is_int(self.strength) or self.strength < 1:
            raise NetgeomError("smoothness.strength", f"must be an integer >= 1, got {self.strength!r}")
        if self.anchors is not None:
            anchors = tuple(self.anchors)
            if not anchors or not all(_is_int(a) and a >= 1 for a in anchors) or list(anchors) != sorted(set(anchors)):
                raise NetgeomError(
                    "smoothness.anchors", f"must be strictly increasing integers >= 1, got {self.anchors!r}"
                )
            object.__setattr__(self, "anchors", anchors)
        if self.cumulative and self.strategy != "geodesic":
            raise NetgeomError("smoothness.cumulative", "only allowed with strategy 'geodesic'")

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


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --------------------------------------------------------------------------- generation


def _round_half_away(value: float) -> int:
    # Round at 1e-9 first so cos(60deg) = 0.5000000000000001 and cos(120deg) = -0.4999999999999998
    # both count as exact halves; halves go away from zero, which keeps opposite angles opposite.
    value = round(value, 9)
    return int(math.copysign(math.floor(abs(value) + 0.5), value))


def shift_offsets(directions: int, radius: int) -> list[tuple[int, int]]:
    """(dy, dx) pixel offsets for the angles 2 pi m / M, m = 0..M-1, at the given radius.

    The angle is measured from the +width axis towards +height (rows growing downwards), so
    M=4, r=1 gives right, down, left, up: (0, 1), (1, 0), (0, -1), (-1, 0).
    """
    offsets = []
    for m in range(directions):
        angle = 2.0 * math.pi * m / directions
        offsets.append((_round_half_away(radius * math.sin(angle)), _round_half_away(radius * math.cos(angle))))
    return offsets


def signal_offsets(directions: int, radius: int) -> list[int]:
    """The 1-D analogue of `shift_offsets`: +r, -r, +r, ... (the line has two directions)."""
    return [radius if m % 2 == 0 else -radius for m in range(directions)]


def shift_image(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Move the content of (..., H, W) images by dy rows and dx columns, replicating the edges.

    out[..., i, j] = x[..., clamp(i - dy), clamp(j - dx)]: nearest resampling with edge padding.
    """
    height, width = x.shape[-2:]
    rows = (torch.arange(height, device=x.device) - dy).clamp(0, height - 1)
    cols = (torch.arange(width, device=x.device) - dx).clamp(0, width - 1)
    return x.index_select(-2, rows).index_select(-1, cols)


def shift_signal(x: torch.Tensor, offset: int) -> torch.Tensor:
    """Circularly shift (..., L) signals by `offset` samples: out[..., i] = x[..., (i - offset) mod L]."""
    return torch.roll(x, shifts=offset, dims=-1)


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


def _perturbation(x: torch.Tensor, perturbation: str, strength: int, direction: int, directions: int) -> torch.Tensor:
    """x perturbed along direction `direction` (of M) with the given strength."""
    if perturbation == "shift":
        if x.dim() - 1 == 2:  # (B, C, L) signals
            return shift_signal(x, signal_offsets(directions, strength)[direction])
        dy, dx = shift_offsets(directions, strength)[direction]
        return shift_image(x, dy, dx)
    return erase_singular_values(x, strength, direction)


def perturb(x: torch.Tensor, volume: Volume) -> torch.Tensor:
    """The points of `volume` around every sample of x (B, *input_shape).

    Returns (B, 1, ...) for none, (B, M+1, ...) for euclidean (index 0 is x itself),
    (B, M, A, ...) for geodesic (anchor 0 is x itself, then the anchor strengths in order).
    """
    if volume.strategy == "none":
        return x.unsqueeze(1)
    if x.dim() not in (3, 4):
        raise NetgeomError("x", f"volumes need a batch of (C, L) signals or (C, H, W) images, got {tuple(x.shape)}")
    if volume.perturbation == "svd" and x.dim() != 4:
        raise NetgeomError("smoothness.perturbation", "svd erasure needs (C, H, W) images; use 'shift' for signals")
    m_total = volume.directions
    if volume.strategy == "euclidean":
        points = [x] + [_perturbation(x, volume.perturbation, volume.strength, m, m_total) for m in range(m_total)]
        return torch.stack(points, dim=1)
    paths = [
        torch.stack([x] + [_perturbation(x, volume.perturbation, a, m, m_total) for a in volume.anchor_strengths], 1)
        for m in range(m_total)
    ]
    return torch.stack(paths, dim=1)


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
    if volume.strategy == "none":
        return values[:, 0].to(torch.float64)
    if volume.strategy == "euclidean":
        return euclidean_integral(values.to(torch.float64))
    return geodesic_integral(values, segment_lengths(points), volume.cumulative)
