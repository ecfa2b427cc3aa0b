"""Whole-pixel shifts of images (..., H, W) and 1-D signals (..., L): one implementation for the
smoothness volumes and the regions paths.

A shift moves content by an integer offset along the trailing axes: out[..., i] = x[..., i - s]
(a positive offset moves content towards higher indices). The two callers differ in two choices,
which are arguments here rather than two copies of the code:

* rounding of the points r (cos, sin) of a circle to whole pixels: `half_away` (halves go away
  from zero; the volumes' rule, which keeps opposite angles opposite) or `half_even` (Python's
  and numpy's rule; the paths'). Both first round to 1e-9, so that a value that is a half up to
  floating-point noise (r cos 60deg = 0.5000000000000001, r cos 120deg = -0.4999999999999998)
  counts as an exact half and the rounded polygon keeps the circle's symmetry.
* padding: `edge` (replicate the border: nearest resampling with edge padding, both callers for
  images, the paths for signals) or `circular` (wrap around: the volumes for signals).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from netgeom.errors import NetgeomError

ROUNDINGS = ("half_away", "half_even")
PADDINGS = ("edge", "circular")
# cos and sin of the angles 2 pi m / M are exact to ~1e-16: this many decimals drop the noise only.
_SNAP_DECIMALS = 9


def snap_to_pixel(value: float, rounding: str = "half_away") -> int:
    """`value` rounded to an integer, halves resolved by `rounding` (see the module docstring)."""
    value = round(value, _SNAP_DECIMALS)
    if rounding == "half_even":
        return int(round(value))
    if rounding == "half_away":
        return int(math.copysign(math.floor(abs(value) + 0.5), value))
    raise NetgeomError("rounding", f"got {rounding!r}, allowed: {', '.join(ROUNDINGS)}")


def circle_offsets(directions: int, radius: float, rounding: str = "half_away") -> list[tuple[int, int]]:
    """(dy, dx) = the point r (sin, cos) of the angle 2 pi m / M snapped to whole pixels, m = 0..M-1.

    The angle runs from the +width axis towards +height (rows grow downwards), so M=4, r=1 gives
    right, down, left, up: (0, 1), (1, 0), (0, -1), (-1, 0).
    """
    offsets = []
    for m in range(directions):
        angle = 2.0 * math.pi * m / directions
        offsets.append((snap_to_pixel(radius * math.sin(angle), rounding), snap_to_pixel(radius * math.cos(angle), rounding)))
    return offsets


def line_offsets(directions: int, radius: int) -> list[tuple[int]]:
    """The two directions of a line, alternating: (+r,), (-r,), (+r,), ... (M=2: one each way)."""
    return [(radius if m % 2 == 0 else -radius,) for m in range(directions)]


def shift(x: torch.Tensor, offset: Sequence[int], padding: str = "edge") -> torch.Tensor:
    """x moved by `offset` along its last len(offset) axes: out[..., i, j] = x[..., i - dy, j - dx],
    the indices clamped to the border (`edge`) or taken modulo the size (`circular`)."""
    axes = tuple(range(x.dim() - len(offset), x.dim()))
    if padding == "circular":
        return torch.roll(x, shifts=tuple(int(s) for s in offset), dims=axes)
    if padding != "edge":
        raise NetgeomError("padding", f"got {padding!r}, allowed: {', '.join(PADDINGS)}")
    out = x
    for axis, step in zip(axes, offset):
        size = x.shape[axis]
        index = (torch.arange(size, device=x.device) - int(step)).clamp_(0, size - 1)
        out = out.index_select(axis, index)
    return out
