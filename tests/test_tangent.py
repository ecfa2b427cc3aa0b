"""Colour jitter and the tangent metrics against torchvision and explicit per-image autograd loops."""

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torch import nn

from netgeom.errors import NetgeomError
from netgeom.studies.channels import ChannelStats
from netgeom.studies.jitter import JITTER_RANGE, VARIANTS, draw_jitter, jitter_images
from netgeom.studies.shifts import circle_offsets, shift
from netgeom.studies.smoothness import NORMALIZATIONS, compute_metric, compute_point_values
from netgeom.studies.volumes import Volume

STATS = {3: ChannelStats((0.49, 0.48, 0.45), (0.25, 0.24, 0.26)), 1: ChannelStats((0.3,), (0.35,))}
CLASSES = 4
TORCHVISION_OPS = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)


def _raw_images(n, channels, seed=0, size=6):
    return torch.rand((n, channels, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 0.9 + 0.05


def _model(channels, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(channels, 4, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(36, CLASSES)
    ).double()


def _jitter_by_torchvision(raw_image, key, seed):
    """The variants of one raw image, one torchvision call per op, in the drawn order."""
    draws = draw_jitter(np.array([key]), seed)
    variants = []
    for order, factors in zip(draws.order[0], draws.factors[0]):
        image = raw_image
        for op in order:
            image = TORCHVISION_OPS[op](image, float(factors[op]))
        variants.append(image)
    return variants


def _h_by_autograd(model, image, label, normalization, metric):
    """h at one standardised image: g itself, or its input Jacobian from torch.autograd."""
    g = NORMALIZATIONS[normalization]

    def single(z):
        return g(model(z.unsqueeze(0)), label.view(1))[0]

    if metric == "tangent_jacobian":
        with torch.no_grad():
            return single(image)
    return torch.autograd.functional.jacobian(single, image).reshape(-1)


def _tangent_by_loop(model, raw_image, label, key, seed, stats, normalization, metric, step):
    mean, std = (torch.tensor(v, dtype=torch.float64).view(-1, 1, 1) for v in (stats.mean, stats.std))
    standardise = lambda z: (z - mean) / std  # noqa: E731
    x = standardise(raw_image)
    h0 = _h_by_autograd(model, x, label, normalization, metric)
    if normalization == "logits":
        h0 = h0 / h0.norm()
    total = 0.0
    for variant in _jitter_by_torchvision(raw_image, key, seed):
        xj = standardise(variant)
        hj = _h_by_autograd(model, xj, label, normalization, metric)
        if normalization == "logits":
            hj = hj / hj.norm()
        scale = (xj - x).norm() if step == "distance" else step
        total += ((h0 - hj).norm() / scale) ** 2
    return float(torch.sqrt(total / VARIANTS))


@pytest.mark.parametrize("channels", [3, 1])
def test_jitter_images_equal_torchvision_op_by_op(channels):
    raw = _raw_images(5, channels, seed=1)
    raw[0, :, :2] = 1.0  # saturated pixels exercise the clamp
    keys = np.array([[3, 0, 0], [3, 1, 1], [8, 0, 0], [0, 2, 4], [1, 0, 0]])
    got = jitter_images(raw, draw_jitter(keys, seed=7))
    assert got.shape == (5, VARIANTS, channels, 6, 6)
    for p in range(5):
        for v, expected in enumerate(_jitter_by_torchvision(raw[p], keys[p], seed=7)):
            torch.testing.assert_close(got[p, v], expected, rtol=0, atol=1e-15)
    assert (got - raw.unsqueeze(1)).abs().max() <= 2 * JITTER_RANGE  # small photometric moves


def test_jitter_draws_are_keyed_not_sequential():
    keys = np.array([[0, 0, 0], [5, 1, 2], [5, 0, 0]])
    draws = draw_jitter(keys, seed=3)
    alone = draw_jitter(keys[1:2], seed=3)
    np.testing.assert_array_equal(draws.factors[1], alone.factors[0])  # independent of the neighbours
    np.testing.assert_array_equal(draws.order[1], alone.order[0])
    assert not np.array_equal(draws.factors[1], draws.factors[2])
    assert not np.array_equal(draw_jitter(keys, seed=4).factors, draws.factors)
    assert (np.abs(draws.factors - 1) <= JITTER_RANGE).all()
    assert (np.sort(draws.order, axis=-1) == np.arange(3)).all()  # every variant orders all three ops
    # by hand: per point one generator keyed by (seed, *key); per variant an order, then factors
    # uniform on [1 - r, 1 + r] (torchvision's ColorJitter(r, r, r) draw)
    rng = np.random.default_rng([3, 5, 1, 2])
    for v in range(draws.order.shape[1]):
        np.testing.assert_array_equal(draws.order[1, v], rng.permutation(3))
        np.testing.assert_array_equal(draws.factors[1, v], rng.uniform(1 - JITTER_RANGE, 1 + JITTER_RANGE, size=3))
    many = draw_jitter(np.arange(400).reshape(-1, 1), seed=0).factors
    assert many.min() < 1 - 0.9 * JITTER_RANGE and many.max() > 1 + 0.9 * JITTER_RANGE  # both sides of 1


@pytest.mark.parametrize("metric", ["tangent_jacobian", "tangent_hessian"])
@pytest.mark.parametrize("normalization", ["logits", "crossentropy", "softmax"])
@pytest.mark.parametrize("step", [0.1, "distance"])
def test_tangent_metrics_equal_an_explicit_loop_over_jittered_copies(metric, normalization, step):
    channels = 3
    model, stats = _model(channels), STATS[channels]
    raw = _raw_images(3, channels, seed=2)
    x = stats.standardise(raw, channel_axis=1)
    y = torch.tensor([0, 3, 1])
    ids = np.array([12, 5, 40])
    got = compute_metric(
        model, x, y, metric, normalization, channel_stats=stats, sample_ids=ids, tangent_seed=9, tangent_step=step
    )
    expected = [
        _tangent_by_loop(model, raw[i], y[i], (ids[i], 0, 0), 9, stats, normalization, metric, step) for i in range(3)
    ]
    np.testing.assert_allclose(got, expected, rtol=1e-9)


def test_tangent_on_one_channel_images_jitters_brightness_and_contrast_only():
    model, stats = _model(1, seed=1), STATS[1]
    raw = _raw_images(2, 1, seed=3)
    x = stats.standardise(raw, channel_axis=1)
    y = torch.tensor([2, 0])
    got = compute_metric(model, x, y, "tangent_hessian", "logits", channel_stats=stats, sample_ids=np.array([4, 9]))
    expected = [_tangent_by_loop(model, raw[i], y[i], (k, 0, 0), 0, stats, "logits", "tangent_hessian", 0.1) for i, k in enumerate((4, 9))]
    np.testing.assert_allclose(got, expected, rtol=1e-9)


def test_tangent_points_of_a_volume_are_jittered_with_their_own_keys():
    model, stats = _model(3, seed=2), STATS[3]
    raw = _raw_images(2, 3, seed=4)
    x = stats.standardise(raw, channel_axis=1)
    y = torch.tensor([1, 2])
    ids = np.array([7, 3])
    volume = Volume("euclidean", "shift", directions=4, strength=1)
    values = compute_point_values(
        model, x, y, "tangent_jacobian", "softmax", volume=volume, channel_stats=stats, sample_ids=ids, tangent_seed=5
    ).values
    for i in range(2):
        # x_0 is keyed (id, 0, 0); direction m at strength r is keyed (id, m + 1, r)
        points = [(raw[i], (ids[i], 0, 0))]
        points += [(shift(raw[i], offset, "edge"), (ids[i], m + 1, 1)) for m, offset in enumerate(circle_offsets(4, 1))]
        for p, (image, key) in enumerate(points):
            expected = _tangent_by_loop(model, image, y[i], key, 5, stats, "softmax", "tangent_jacobian", 0.1)
            np.testing.assert_allclose(values[i, p], expected, rtol=1e-9)
    centre = compute_metric(model, x, y, "tangent_jacobian", "softmax", channel_stats=stats, sample_ids=ids, tangent_seed=5)
    np.testing.assert_array_equal(values[:, 0], centre)  # x_0 gets the same jitter in every volume


def test_tangent_values_do_not_depend_on_batching_or_sharding():
    model, stats = _model(3, seed=3), STATS[3]
    x = stats.standardise(_raw_images(7, 3, seed=5), channel_axis=1)
    y = torch.randint(0, CLASSES, (7,), generator=torch.Generator().manual_seed(6))
    ids = np.array([30, 2, 17, 5, 11, 8, 1])
    volume = Volume("geodesic", "shift", directions=2, anchors=(1, 2))
    options = dict(volume=volume, channel_stats=stats, sample_ids=ids, tangent_seed=1)
    whole = compute_metric(model, x, y, "tangent_hessian", "logits", batch_size=64, **options)
    for batch_size in (1, 7, 13):
        got = compute_metric(model, x, y, "tangent_hessian", "logits", **{**options, "batch_size": batch_size})
        np.testing.assert_allclose(got, whole, rtol=1e-12, atol=0)
    shards = [slice(0, 3), slice(3, 4), slice(4, 7)]
    parts = [
        compute_metric(model, x[s], y[s], "tangent_hessian", "logits", **{**options, "sample_ids": ids[s]}) for s in shards
    ]
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=1e-12, atol=0)
    reseeded = compute_metric(model, x, y, "tangent_hessian", "logits", **{**options, "tangent_seed": 2})
    assert not np.allclose(reseeded, whole)


def test_tangent_metrics_refuse_what_they_cannot_jitter():
    model = _model(3)
    x = torch.zeros(2, 3, 6, 6, dtype=torch.float64)
    y = torch.tensor([0, 1])
    with pytest.raises(NetgeomError, match="channel_stats.*mean and std"):
        compute_metric(model, x, y, "tangent_jacobian")
    with pytest.raises(NetgeomError, match="smoothness.metric.*1 or 3 channels"):
        two = nn.Sequential(nn.Flatten(), nn.Linear(72, CLASSES)).double()
        compute_metric(two, torch.zeros(2, 2, 6, 6, dtype=torch.float64), y, "tangent_jacobian", channel_stats=ChannelStats((0, 0), (1, 1)))
    with pytest.raises(NetgeomError, match="smoothness.metric.*images"):
        signal = nn.Sequential(nn.Flatten(), nn.Linear(40, CLASSES)).double()
        compute_metric(signal, torch.zeros(2, 1, 40, dtype=torch.float64), y, "tangent_jacobian", channel_stats=STATS[1])
    with pytest.raises(NetgeomError, match="smoothness.tangent_step"):
        compute_metric(model, x, y, "tangent_jacobian", channel_stats=STATS[3], tangent_step=0)
    with pytest.raises(NetgeomError, match="smoothness.tangent_seed"):
        compute_metric(model, x, y, "tangent_jacobian", channel_stats=STATS[3], tangent_seed=-1)
    with pytest.raises(NetgeomError, match="sample_ids"):
        compute_metric(model, x, y, "tangent_jacobian", channel_stats=STATS[3], sample_ids=np.array([-1, 0]))
    with pytest.raises(NetgeomError, match="sample_ids"):
        compute_metric(model, x, y, "accuracy", sample_ids=np.array([0]))
