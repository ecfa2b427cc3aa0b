"""Volumes: perturbations against hand-written images, integrals against hand-computed numbers."""

import numpy as np
import pytest
import torch

from netgeom.errors import NetgeomError
from netgeom.studies.channels import ChannelStats
from netgeom.studies.volumes import (
    PointValues,
    Volume,
    erase_in_space,
    erase_singular_values,
    euclidean_integral,
    geodesic_integral,
    integrate,
    perturb,
    segment_lengths,
)

IMAGE = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
RIGHT = [[1, 1, 2], [4, 4, 5], [7, 7, 8]]
DOWN = [[1, 2, 3], [1, 2, 3], [4, 5, 6]]
LEFT = [[2, 3, 3], [5, 6, 6], [8, 9, 9]]
UP = [[4, 5, 6], [7, 8, 9], [7, 8, 9]]


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
    points = perturb(x, Volume("geodesic", "svd", directions=2, anchors=(1, 3), space="standardised"))
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


def _erase_by_hand(image: torch.Tensor, window: slice) -> torch.Tensor:
    u, s, vh = torch.linalg.svd(image)
    s = s.clone()
    s[window] = 0.0
    return u @ torch.diag(s) @ vh


def test_raw_and_standardised_erasure_match_hand_computed_svds():
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    stats = ChannelStats((0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    mean, std = torch.tensor(stats.mean).view(3, 1, 1), torch.tensor(stats.std).view(3, 1, 1)
    volume = dict(strategy="euclidean", perturbation="svd", directions=2, strength=2)
    raw = perturb(x, Volume(**volume, space="raw"), stats)
    standardised = perturb(x, Volume(**volume, space="standardised"))
    for b in range(2):
        for direction, window in ((0, slice(4, 6)), (1, slice(3, 5))):  # n=6, s=2: [n-s-i, n-i)
            for c in range(3):
                by_hand = (_erase_by_hand(x[b, c] * std[c] + mean[c], window) - mean[c]) / std[c]
                torch.testing.assert_close(raw[b, 1 + direction, c], by_hand, rtol=0, atol=1e-12)
                torch.testing.assert_close(standardised[b, 1 + direction, c], _erase_by_hand(x[b, c], window), rtol=0, atol=1e-12)
    assert (raw - standardised).abs().max() > 0.1  # the mean offset is part of the raw image only
    # erasure is homogeneous, so a scale alone (zero mean) makes the two spaces agree
    scale_only = perturb(x, Volume(**volume, space="raw"), ChannelStats((0.0, 0.0, 0.0), (0.2, 0.25, 0.3)))
    torch.testing.assert_close(scale_only, standardised, rtol=0, atol=1e-12)
    torch.testing.assert_close(erase_in_space(x, 2, 1, "raw", stats), raw[:, 2], rtol=0, atol=0)


def test_shift_volumes_are_the_same_in_both_spaces():
    x = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(4))
    a = perturb(x, Volume("geodesic", "shift", directions=4, space="raw"))
    b = perturb(x, Volume("geodesic", "shift", directions=4, space="standardised"))
    assert torch.equal(a, b)


def test_point_labels_follow_perturb_order():
    assert [list(a) for a in Volume().point_labels()] == [[-1], [0], [0]]
    assert [list(a) for a in Volume("euclidean", directions=2, strength=3).point_labels()] == [[-1, 0, 1], [0, 1, 1], [0, 3, 3]]
    direction, anchor, strength = Volume("geodesic", directions=2, anchors=(1, 4)).point_labels()
    assert list(direction) == [0, 0, 0, 1, 1, 1] and list(anchor) == [0, 1, 2, 0, 1, 2] and list(strength) == [0, 1, 4, 0, 1, 4]


def test_point_values_table_lists_every_point_with_its_step_length():
    volume = Volume("geodesic", directions=2, anchors=(1, 2))
    values = np.arange(12.0).reshape(2, 2, 3)
    lengths = np.array([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]])
    frame = PointValues(volume, values, lengths).to_frame(np.array([10, 20]))
    assert list(frame.columns) == ["sample_id", "direction", "anchor", "strength", "value", "step_length"]
    assert list(frame["sample_id"]) == [10] * 6 + [20] * 6
    assert list(frame["value"]) == list(range(12))
    np.testing.assert_array_equal(frame["step_length"], [np.nan, 1, 2, np.nan, 3, 4, np.nan, 5, 6, np.nan, 7, 8])
    # path 0 of sample 0: (1 * 0.5 + 2 * 1.5) / 3; path 1: (3 * 3.5 + 4 * 4.5) / 7
    np.testing.assert_allclose(PointValues(volume, values, lengths).integrate()[0], 0.5 * (3.5 / 3 + 28.5 / 7))


def test_bad_volumes_name_their_key():
    with pytest.raises(NetgeomError, match="smoothness.volume.strategy.*euclidean"):
        Volume("ball")
    with pytest.raises(NetgeomError, match="smoothness.volume.perturbation"):
        Volume("euclidean", "blur")
    with pytest.raises(NetgeomError, match="smoothness.volume.directions"):
        Volume("euclidean", directions=0)
    with pytest.raises(NetgeomError, match="smoothness.volume.anchors"):
        Volume("geodesic", anchors=(2, 1))
    with pytest.raises(NetgeomError, match="smoothness.volume.cumulative"):
        Volume("euclidean", cumulative=True)
    with pytest.raises(NetgeomError, match="smoothness.volume.space.*standardised"):
        Volume("euclidean", space="pixels")
    with pytest.raises(NetgeomError, match="smoothness.volume.perturbation"):
        perturb(torch.zeros(1, 1, 5), Volume("euclidean", "svd", strength=2))
    with pytest.raises(NetgeomError, match="smoothness.volume.space.*mean and std"):
        perturb(torch.zeros(1, 1, 5, 5), Volume("euclidean", "svd", strength=2))
    with pytest.raises(NetgeomError, match="channel_stats.*1 channels"):
        perturb(torch.zeros(1, 3, 5, 5), Volume("euclidean", "svd", strength=2), ChannelStats((0.5,), (0.2,)))
    with pytest.raises(NetgeomError, match="channel_stats"):
        ChannelStats((0.5, 0.5), (0.2, 0.0))
