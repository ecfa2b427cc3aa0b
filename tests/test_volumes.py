"""Volumes: perturbations against hand-written images, integrals against hand-computed numbers."""

import pytest
import torch

from netgeom.errors import NetgeomError
from netgeom.studies.volumes import (
    Volume,
    erase_singular_values,
    euclidean_integral,
    geodesic_integral,
    integrate,
    perturb,
    segment_lengths,
    shift_offsets,
)

IMAGE = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
RIGHT = [[1, 1, 2], [4, 4, 5], [7, 7, 8]]
DOWN = [[1, 2, 3], [1, 2, 3], [4, 5, 6]]
LEFT = [[2, 3, 3], [5, 6, 6], [8, 9, 9]]
UP = [[4, 5, 6], [7, 8, 9], [7, 8, 9]]


def test_shift_offsets_follow_rounded_angles():
    assert shift_offsets(4, 1) == [(0, 1), (1, 0), (0, -1), (-1, 0)]
    assert shift_offsets(8, 1) == [(0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1)]
    assert shift_offsets(8, 4)[1] == (3, 3)  # 4 / sqrt(2) = 2.83 -> 3
    # exact halves (cos 60deg) round away from zero on both sides, keeping the set symmetric
    assert shift_offsets(6, 1) == [(0, 1), (1, 1), (1, -1), (0, -1), (-1, -1), (-1, 1)]


def test_euclidean_shifts_are_the_four_axis_shifts_with_edge_padding():
    x = torch.stack([IMAGE, 10 * IMAGE]).unsqueeze(0)  # (1, 2, 3, 3)
    points = perturb(x, Volume("euclidean", "shift", directions=4, strength=1))
    assert points.shape == (1, 5, 2, 3, 3)
    assert torch.equal(points[0, 0], x[0])
    for index, expected in enumerate([RIGHT, DOWN, LEFT, UP], start=1):
        expected = torch.tensor(expected, dtype=torch.float32)
        assert torch.equal(points[0, index, 0], expected)
        assert torch.equal(points[0, index, 1], 10 * expected)


def test_geodesic_shift_paths_grow_one_pixel_per_anchor():
    x = IMAGE.reshape(1, 1, 3, 3)
    points = perturb(x, Volume("geodesic", "shift", directions=4))
    assert points.shape == (1, 4, 5, 1, 3, 3)
    assert torch.equal(points[0, 0, 0, 0], IMAGE)
    assert torch.equal(points[0, 0, 1, 0], torch.tensor(RIGHT, dtype=torch.float32))
    assert torch.equal(points[0, 0, 2, 0], torch.tensor([[1.0, 1, 1], [4, 4, 4], [7, 7, 7]]))
    assert torch.equal(points[0, 3, 4, 0], torch.tensor([[7.0, 8, 9]] * 3))  # 4 px up: the last row


def test_signal_shifts_are_circular_and_alternate_direction():
    x = torch.tensor([[[1.0, 2, 3, 4, 5]]])  # (1, 1, 5)
    points = perturb(x, Volume("euclidean", "shift", directions=2, strength=1))
    assert torch.equal(points[0, 1, 0], torch.tensor([5.0, 1, 2, 3, 4]))
    assert torch.equal(points[0, 2, 0], torch.tensor([2.0, 3, 4, 5, 1]))
    paths = perturb(x, Volume("geodesic", "shift", directions=2, anchors=(1, 2)))
    assert torch.equal(paths[0, 1, 2, 0], torch.tensor([3.0, 4, 5, 1, 2]))


@pytest.mark.parametrize(
    "count, offset, erased",
    [(3, 0, [5, 6, 7]), (3, 1, [4, 5, 6]), (5, 6, [0, 1]), (25, 0, list(range(8))), (2, 8, [])],
)
def test_svd_erasure_zeroes_exactly_the_stated_singular_values(count, offset, erased):
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    before = torch.linalg.svdvals(x)
    after = torch.linalg.svdvals(erase_singular_values(x, count, offset))
    expected = before.clone()
    expected[..., erased] = 0.0
    expected = expected.sort(dim=-1, descending=True).values
    torch.testing.assert_close(after, expected, rtol=0, atol=1e-12)


def test_svd_volume_directions_slide_the_window():
    x = torch.randn(1, 1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    points = perturb(x, Volume("geodesic", "svd", directions=2, anchors=(1, 3)))
    assert points.shape == (1, 2, 3, 1, 6, 6)
    torch.testing.assert_close(points[0, 1, 2], erase_singular_values(x[0], 3, 1), rtol=0, atol=0)
    s = torch.linalg.svdvals(x[0, 0])
    s_path1 = torch.linalg.svdvals(points[0, 1, 2, 0])
    torch.testing.assert_close(s_path1[:2], s[:2], rtol=0, atol=1e-12)  # window [2, 5) erased
    torch.testing.assert_close(s_path1[2], s[5], rtol=0, atol=1e-12)


def test_euclidean_integral_is_half_centre_half_mean():
    values = torch.tensor([[2.0, 4.0, 6.0, 8.0, 10.0], [1.0, 1.0, 1.0, 1.0, 5.0]])
    torch.testing.assert_close(euclidean_integral(values), torch.tensor([4.5, 1.5]))


def test_geodesic_integral_hand_computed():
    values = torch.tensor([[[1.0, 3.0, 5.0], [0.0, 2.0, 2.0]]])
    lengths = torch.tensor([[[1.0, 3.0], [2.0, 2.0]]])
    # path 0: segments 2, 4 -> prefixes 2, (1*2 + 3*4)/4 = 3.5; path 1: 1, (2*1 + 2*2)/4 = 1.5
    cumulative = geodesic_integral(values, lengths, cumulative=True)
    torch.testing.assert_close(cumulative, torch.tensor([[1.5, 2.5]], dtype=torch.float64))
    torch.testing.assert_close(geodesic_integral(values, lengths), torch.tensor([2.5], dtype=torch.float64))
    # a zero-length path weighs its segments equally: (2 + 3) / 2
    flat = geodesic_integral(torch.tensor([[[1.0, 3.0, 3.0]]]), torch.zeros(1, 1, 2))
    torch.testing.assert_close(flat, torch.tensor([2.5], dtype=torch.float64))


def test_segment_lengths_are_euclidean_distances_between_anchors():
    points = torch.tensor([[[[0.0, 0.0], [3.0, 4.0], [3.0, 4.0], [4.0, 4.0]]]])  # (1, 1, 4, 2)
    torch.testing.assert_close(segment_lengths(points), torch.tensor([[[5.0, 0.0, 1.0]]], dtype=torch.float64))


def test_integrate_composes_perturb_and_path_weights():
    x = torch.tensor([[[0.0, 1.0, 0.0, 0.0]]])  # a spike: each anchor is the spike moved by 1..2 samples
    volume = Volume("geodesic", "shift", directions=2, anchors=(1, 2))
    points = perturb(x, volume)
    values = points[..., 0, 0]  # v = first sample of the signal
    # path +1: first entries 0, 0, 0 -> 0; path -1: 0, 1, 0 with equal segment lengths sqrt(2)
    # -> (0.5 + 0.5) / 2 = 0.5; mean over the two paths 0.25
    torch.testing.assert_close(integrate(values, points, volume), torch.tensor([0.25], dtype=torch.float64))


def test_bad_volumes_name_their_key():
    with pytest.raises(NetgeomError, match="smoothness.strategy.*euclidean"):
        Volume("ball")
    with pytest.raises(NetgeomError, match="smoothness.perturbation"):
        Volume("euclidean", "blur")
    with pytest.raises(NetgeomError, match="smoothness.directions"):
        Volume("euclidean", directions=0)
    with pytest.raises(NetgeomError, match="smoothness.anchors"):
        Volume("geodesic", anchors=(2, 1))
    with pytest.raises(NetgeomError, match="smoothness.cumulative"):
        Volume("euclidean", cumulative=True)
    with pytest.raises(NetgeomError, match="smoothness.perturbation"):
        perturb(torch.zeros(1, 1, 5), Volume("euclidean", "svd", strength=2))
