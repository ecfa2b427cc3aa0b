"""Whole-pixel shifts shared by volumes and paths: rounding rules, symmetry, padding oracles."""

import math

import numpy as np
import pytest
import torch

from netgeom.errors import NetgeomError
from netgeom.studies.shifts import circle_offsets, line_offsets, shift, snap_to_pixel


@pytest.mark.parametrize(
    "value, away, even",
    [
        (0.5, 1, 0),
        (-0.5, -1, 0),
        (1.5, 2, 2),
        (2.5, 3, 2),
        (-2.5, -3, -2),
        (0.5000000000000001, 1, 0),  # 1 cos(60deg): a half up to noise
        (-0.4999999999999998, -1, 0),  # 1 cos(120deg)
        (2.4999, 2, 2),
        (2.83, 3, 3),
        (0.0, 0, 0),
    ],
)
def test_snap_to_pixel_rounds_halves_by_rule_and_ignores_float_noise(value, away, even):
    assert snap_to_pixel(value, "half_away") == away
    assert snap_to_pixel(value, "half_even") == even


def test_circle_offsets_half_away_are_the_volume_shifts():
    assert circle_offsets(4, 1) == [(0, 1), (1, 0), (0, -1), (-1, 0)]  # right, down, left, up
    assert circle_offsets(8, 1) == [(0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1)]
    assert circle_offsets(8, 4)[1] == (3, 3)  # 4 / sqrt(2) = 2.83 -> 3
    # exact halves (cos 60deg) round away from zero on both sides, keeping the set symmetric
    assert circle_offsets(6, 1) == [(0, 1), (1, 1), (1, -1), (0, -1), (-1, -1), (-1, 1)]


def test_circle_offsets_half_even_are_the_path_shifts():
    assert circle_offsets(8, 4, "half_even") == [(0, 4), (3, 3), (4, 0), (3, -3), (0, -4), (-3, -3), (-4, 0), (-3, 3)]
    assert circle_offsets(6, 1, "half_even") == [(0, 1), (1, 0), (1, 0), (0, -1), (-1, 0), (-1, 0)]
    assert circle_offsets(4, 2.5, "half_even")[::2] == [(0, 2), (0, -2)]


@pytest.mark.parametrize("rounding", ["half_away", "half_even"])
def test_snapped_circles_keep_the_circles_mirror_symmetries(rounding):
    # angle -a is the mirror image of a across the width axis; a + pi is its opposite
    for directions in range(2, 33):
        for radius in (0.5, 1, 1.5, 2, 2.5, 3, 4, 5, 7):
            offsets = circle_offsets(directions, radius, rounding)
            for m, (dy, dx) in enumerate(offsets):
                assert offsets[-m % directions] == (-dy, dx), (directions, radius, m)
                if directions % 2 == 0:
                    assert offsets[(m + directions // 2) % directions] == (-dy, -dx)
                exact = (radius * math.sin(2 * math.pi * m / directions), radius * math.cos(2 * math.pi * m / directions))
                assert max(abs(dy - exact[0]), abs(dx - exact[1])) <= 0.5 + 1e-9


def test_line_offsets_alternate():
    assert line_offsets(4, 3) == [(3,), (-3,), (3,), (-3,)]


def test_edge_shift_equals_numpy_edge_padding_and_cropping():
    x = torch.rand((2, 3, 9, 7), generator=torch.Generator().manual_seed(0))
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (5, 5), (5, 5)), mode="edge")
    for dy, dx in [(3, -2), (-4, 0), (0, 1), (5, 5)]:
        expected = padded[:, :, 5 - dy : 5 - dy + 9, 5 - dx : 5 - dx + 7]
        np.testing.assert_array_equal(shift(x, (dy, dx), "edge").numpy(), expected)
    signal = torch.arange(6.0).view(1, 1, 6)
    assert shift(signal, (2,), "edge").flatten().tolist() == [0, 0, 0, 1, 2, 3]
    assert shift(signal, (-2,), "edge").flatten().tolist() == [2, 3, 4, 5, 5, 5]


def test_circular_shift_equals_numpy_roll():
    x = torch.rand((2, 1, 5, 6), generator=torch.Generator().manual_seed(1))
    np.testing.assert_array_equal(shift(x, (1, -2), "circular").numpy(), np.roll(x.numpy(), (1, -2), axis=(2, 3)))
    signal = torch.arange(5.0).view(1, 1, 5)
    assert shift(signal, (1,), "circular").flatten().tolist() == [4, 0, 1, 2, 3]


def test_bad_rounding_and_padding_are_refused():
    with pytest.raises(NetgeomError, match="rounding"):
        snap_to_pixel(0.5, "down")
    with pytest.raises(NetgeomError, match="padding"):
        shift(torch.zeros(1, 1, 3, 3), (1, 1), "zeros")
