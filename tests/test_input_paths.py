"""Paths of translated anchors: geometry, normalisation, seeds, validation and sharding."""

import numpy as np
import pytest
import torch
from torch import nn

from netgeom.errors import NetgeomError
from netgeom.execution import shard_range
from netgeom.studies.input_paths import anchor_shifts, choose_paths, make_paths, random_inputs
from netgeom.studies.shifts import shift
from netgeom.studies.regions import study_paths


def images(n=3, shape=(2, 9, 9), seed=0):
    return torch.rand((n, *shape), generator=torch.Generator().manual_seed(seed))


def test_anchor_shifts_are_the_pixel_snapped_circle():
    assert anchor_shifts(8, 4) == [(0, 4), (3, 3), (4, 0), (3, -3), (0, -4), (-3, -3), (-4, 0), (-3, 3)]
    assert anchor_shifts(4, 2, rank=1) == [(2,), (0,), (-2,), (0,)]
    # halves up to float noise (3 cos 120deg = -1.4999999999999993) round like exact halves, to
    # even, so the triangle stays mirror-symmetric (numpy's plain round gave (3, -1) vs (-3, -2))
    assert anchor_shifts(3, 3) == [(0, 3), (3, -2), (-3, -2)]


def test_closed_and_open_paths_walk_the_anchors_in_order():
    x = images(3)
    closed = make_paths(x, n_anchors=8, radius=4)
    assert closed.anchors.shape == (3, 8, 2, 9, 9) and closed.segments_per_path == 8
    for k, offset in enumerate(anchor_shifts(8, 4)):
        torch.testing.assert_close(closed.anchors[:, k], shift(x, offset, "edge"), rtol=0, atol=0)
    x0, x1 = closed.segments()
    assert x0.shape == (24, 2, 9, 9)
    torch.testing.assert_close(x1[7], closed.anchors[0, 0], rtol=0, atol=0)  # closes on anchor 0
    torch.testing.assert_close(x1[:7], x0[1:8], rtol=0, atol=0)  # consecutive within the path
    torch.testing.assert_close(x0[8], closed.anchors[1, 0], rtol=0, atol=0)  # next path starts fresh
    opened = make_paths(x, n_anchors=8, radius=4, closed=False)
    o0, o1 = opened.segments()
    assert opened.segments_per_path == 7 and o0.shape[0] == 21
    torch.testing.assert_close(o1[6], opened.anchors[0, 7], rtol=0, atol=0)


def test_normalising_after_translating_equals_translating_normalised_inputs():
    raw = images(2) * 255
    mean, std = (120.0, 80.0), (60.0, 30.0)
    view = torch.tensor(mean).view(1, 2, 1, 1), torch.tensor(std).view(1, 2, 1, 1)
    from_raw = make_paths(raw, mean=mean, std=std)
    from_normalised = make_paths((raw - view[0]) / view[1])
    torch.testing.assert_close(from_raw.anchors, from_normalised.anchors, rtol=0, atol=0)


def test_signals_shift_along_their_length():
    x = images(2, shape=(1, 40))
    paths = make_paths(x, n_anchors=4, radius=3)
    assert paths.anchors.shape == (2, 4, 1, 40)
    torch.testing.assert_close(paths.anchors[:, 2], shift(x, (-3,), "edge"), rtol=0, atol=0)


@pytest.mark.parametrize(
    "kwargs, key",
    [({"n_anchors": 1}, "regions.anchors"), ({"radius": 9}, "regions.radius"), ({"radius": 0}, "regions.radius")],
)
def test_bad_path_settings_are_refused(kwargs, key):
    with pytest.raises(NetgeomError) as error:
        make_paths(images(1), **kwargs)
    assert error.value.key == key


def test_path_seed_chooses_a_deterministic_subset():
    chosen = choose_paths(100, 10)
    np.testing.assert_array_equal(chosen, choose_paths(100, 10, path_seed=4321))
    assert len(set(chosen)) == 10 and chosen.min() >= 0 and chosen.max() < 100
    assert list(chosen) == sorted(chosen)
    assert not np.array_equal(chosen, choose_paths(100, 10, path_seed=1))
    with pytest.raises(NetgeomError):
        choose_paths(5, 6)


def test_random_inputs_are_uniform_within_mean_plus_minus_std():
    x = random_inputs(500, (2, 4, 4), seed=3, mean=(10.0, -1.0), std=(2.0, 0.5))
    assert x[:, 0].min() >= 8 and x[:, 0].max() <= 12 and x[:, 1].min() >= -1.5 and x[:, 1].max() <= -0.5
    assert x[:, 0].std() > 1.0  # spread over the interval (uniform std = 2 / sqrt 3)
    torch.testing.assert_close(x, random_inputs(500, (2, 4, 4), seed=3, mean=(10.0, -1.0), std=(2.0, 0.5)))
    assert random_inputs(5, (3,)).abs().max() <= 1


def test_shards_cover_the_paths_once():
    for count in (1, 3, 7, 20, 25):
        ranges = [shard_range(i, count, 20) for i in range(count)]
        assert [i for r in ranges for i in r] == list(range(20))
        assert max(len(r) for r in ranges) - min(len(r) for r in ranges) <= 1


def conv_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(3), nn.Flatten(), nn.Linear(36, 3))


def test_study_is_shard_count_invariant_and_closed_paths_return_to_their_start():
    paths = make_paths(images(5), n_anchors=4, radius=2)
    whole = study_paths(conv_model(), paths, batch_size=8)
    for count in (2, 3):
        parts = [study_paths(conv_model(), paths.select(shard_range(i, count, 5))) for i in range(count)]
        np.testing.assert_array_equal(np.concatenate([p.regions for p in parts]), whole.regions)
        deviation = np.concatenate([p.absolute_deviation for p in parts])
        np.testing.assert_allclose(deviation, whole.absolute_deviation, rtol=1e-10)
    assert (whole.regions > paths.segments_per_path).all()  # the paths do cross boundaries
    np.testing.assert_allclose(whole.signed_variation, 0.0, atol=1e-9)  # f comes back to f(anchor 0)
    assert (whole.variation > 0).all()
