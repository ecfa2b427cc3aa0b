"""Oracles for weight-space helpers: which entries are weights, distances, progress, the plane grid."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from netgeom.errors import NetgeomError
from netgeom.studies.interpolation import interpolate_state
from netgeom.studies.weight_space import (
    is_bn_statistic,
    normalised_weight_distance,
    plane_grid,
    plane_point,
    plane_through,
    training_progress,
    weight_distance,
    weight_keys,
)
from tests.test_interpolation import bn_net, trained_like


def test_weight_keys_leave_out_bn_statistics():
    state = bn_net().state_dict()
    assert is_bn_statistic("1.running_mean") and is_bn_statistic("num_batches_tracked") and not is_bn_statistic("1.weight")
    assert weight_keys(state) == [k for k in state if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]


def test_weight_distances_exclude_bn_statistics_and_progress_is_linear():
    model = bn_net()
    a, b = trained_like(model, 1), trained_like(model, 2)
    only_stats = dict(a) | {k: b[k] for k in a if "running" in k or "num_batches" in k}
    assert weight_distance(a, only_stats) == 0.0
    keys = [k for k in a if "running" not in k and "num_batches" not in k]
    expected = math.sqrt(sum(((b[k] - a[k]) ** 2).sum().item() for k in keys))
    assert weight_distance(a, b) == pytest.approx(expected)
    assert normalised_weight_distance(a, b) == pytest.approx(expected / math.sqrt(sum((a[k] ** 2).sum().item() for k in keys)))
    fractions = [0.0, 0.25, 0.6, 1.0]
    np.testing.assert_allclose(training_progress([interpolate_state(a, b, f) for f in fractions], b), fractions, atol=1e-12)
    with pytest.raises(NetgeomError):
        training_progress([b], b)


def test_plane_points_and_grid_margins():
    torch.manual_seed(1)
    t0, t0b, tT = ({"w": torch.randn(3, 2, dtype=torch.float64), "b": torch.randn(2, dtype=torch.float64)} for _ in range(3))
    plane = plane_through(t0, t0b, tT)
    for name, state in (("theta_0", t0), ("theta_0_other", t0b), ("theta_T", tT)):
        x, y = plane.points[name]
        rebuilt = plane_point(plane, x, y, like={**state, "n": torch.tensor(3)})
        assert rebuilt["n"] == 3 and all(torch.allclose(rebuilt[k], state[k], atol=1e-12) for k in state)
    xs, ys = plane_grid(plane, (5, 3), margin=0.5)
    pts = np.array(list(plane.points.values()))
    span = pts.max(0) - pts.min(0)
    assert (xs[0], xs[-1]) == pytest.approx((pts[:, 0].min() - span[0] / 2, pts[:, 0].max() + span[0] / 2))
    assert (ys[0], ys[-1]) == pytest.approx((pts[:, 1].min() - span[1] / 2, pts[:, 1].max() + span[1] / 2))
    assert len(xs) == 5 and len(ys) == 3 and span[1] > 0
    with pytest.raises(NetgeomError):
        plane_through(t0, interpolate_state(t0, tT, 0.5), tT)  # on the line
