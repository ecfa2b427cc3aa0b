"""Smoothness metrics against closed forms (linear models) and explicitly built Jacobians."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from netgeom.errors import NetgeomError
from netgeom.studies.channels import ChannelStats
from netgeom.studies.smoothness import NORMALIZATIONS, choose_targets, compute_metric, compute_point_values
from netgeom.studies.volumes import Volume, perturb

NORMS = list(NORMALIZATIONS)
SHAPE = (2, 4, 4)
CLASSES = 5


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _data(n=6, seed=0):
    x = torch.randn(n, *SHAPE, dtype=torch.float64, generator=_gen(seed))
    y = torch.randint(0, CLASSES, (n,), generator=_gen(seed + 1))
    return x, y


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(32, 12), nn.Tanh(), nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, CLASSES)
    ).double()


def _convnet():
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(12, CLASSES)
    ).double()
    with torch.no_grad():  # non-trivial running statistics, then leave it in train mode
        for seed in range(3):
            net(torch.randn(8, *SHAPE, dtype=torch.float64, generator=_gen(100 + seed)) * 2 + 1)
    return net


def _reference_jacobians(model, x, y, normalization):
    """(N, K', D) built one sample at a time with torch.autograd.functional.jacobian."""
    g = NORMALIZATIONS[normalization]
    was_training = model.training
    model.eval()
    jacs = []
    for xi, yi in zip(x, y):
        jac = torch.autograd.functional.jacobian(lambda z: g(model(z.unsqueeze(0)), yi.view(1))[0], xi)
        jacs.append(jac.reshape(jac.shape[0], -1))
    model.train(was_training)
    return torch.stack(jacs)


@pytest.mark.parametrize("make_model", [_mlp, _convnet], ids=["mlp", "conv"])
@pytest.mark.parametrize("normalization", NORMS)
def test_jacobian_norms_match_explicit_jacobian(make_model, normalization):
    model = make_model()
    x, y = _data()
    jac = _reference_jacobians(model, x, y, normalization)
    operator = torch.linalg.matrix_norm(jac, ord=2).numpy()
    frobenius = torch.linalg.matrix_norm(jac, ord="fro").numpy()
    for backend in ("vjp", "vmap"):
        got_op = compute_metric(model, x, y, "jacobian_operator", normalization, backend=backend)
        got_fro = compute_metric(model, x, y, "jacobian_frobenius", normalization, backend=backend)
        np.testing.assert_allclose(got_op, operator, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(got_fro, frobenius, rtol=1e-10, atol=1e-14)
    power = compute_metric(
        model, x, y, "jacobian_operator", normalization, operator_method="power", power_iters=5000, power_tol=1e-13
    )
    np.testing.assert_allclose(power, operator, rtol=1e-8, atol=1e-14)
    assert model.training  # mode restored


def test_linear_model_closed_forms():
    weight = torch.randn(CLASSES, 32, dtype=torch.float64, generator=_gen(3))
    model = nn.Sequential(nn.Flatten(), nn.Linear(32, CLASSES)).double()
    with torch.no_grad():
        model[1].weight.copy_(weight)
    x, y = _data(seed=4)
    w = weight.numpy()
    p = torch.softmax(model(x), dim=1).detach().numpy()
    onehot = np.eye(CLASSES)[y.numpy()]
    jacobians = {
        "logits": [w for _ in p],
        "softmax": [(np.diag(pi) - np.outer(pi, pi)) @ w for pi in p],
        "logsoftmax": [(np.eye(CLASSES) - np.outer(np.ones(CLASSES), pi)) @ w for pi in p],
        "crossentropy": [((pi - ei) @ w)[None] for pi, ei in zip(p, onehot)],
        "target_logit": [w[[yi]] for yi in y.numpy()],
    }
    for normalization, jacs in jacobians.items():
        expected_op = [np.linalg.norm(j, 2) for j in jacs]
        expected_fro = [np.linalg.norm(j, "fro") for j in jacs]
        np.testing.assert_allclose(compute_metric(model, x, y, "jacobian_operator", normalization), expected_op, rtol=1e-10)
        np.testing.assert_allclose(compute_metric(model, x, y, "jacobian_frobenius", normalization), expected_fro, rtol=1e-10)
    # the logits Jacobian is W everywhere, so every volume integrates to the same constant
    images = x.reshape(len(x), 2, 4, 4)
    stats = ChannelStats((0.3, 0.6), (0.5, 2.0))
    for volume in (Volume("euclidean", "shift", 4, 1), Volume("geodesic", "svd", 3, anchors=(1, 2, 3), cumulative=True)):
        got = compute_metric(model, images, y, "jacobian_operator", "logits", volume=volume, batch_size=7, channel_stats=stats)
        np.testing.assert_allclose(got, np.full(got.shape, np.linalg.norm(w, 2)), rtol=1e-10)
    assert got.shape == (len(x), 3)


def test_crossentropy_gradient_norm_equals_autograd_on_single_samples():
    model = _convnet()
    x, y = _data(n=4, seed=5)
    expected = []
    model.eval()
    for xi, yi in zip(x, y):
        xi = xi.clone().unsqueeze(0).requires_grad_(True)
        F.cross_entropy(model(xi), yi.view(1)).backward()
        expected.append(xi.grad.norm().item())
    model.zero_grad(set_to_none=True)
    for metric in ("jacobian_frobenius", "jacobian_operator"):
        np.testing.assert_allclose(compute_metric(model, x, y, metric), expected, rtol=1e-12)


def test_pointwise_metrics_and_clean_targets():
    model = _mlp()
    x, noisy = _data(n=8, seed=6)
    clean = (noisy + 1) % CLASSES
    logits = model(x).detach()
    for labels, flag in ((noisy, False), (clean, True)):
        y = choose_targets(noisy, clean, clean_targets=flag)
        assert torch.equal(y, labels)
        probs = logits.softmax(1).numpy()
        expected = {
            "crossentropy": F.cross_entropy(logits, labels, reduction="none").numpy(),
            "accuracy": (logits.argmax(1) == labels).double().numpy(),
            "confidence": np.linalg.norm(np.eye(CLASSES)[labels.numpy()] - probs, axis=1),
        }
        for metric, value in expected.items():
            np.testing.assert_allclose(compute_metric(model, x, y, metric), value, rtol=1e-12)
    with pytest.raises(NetgeomError, match="smoothness.clean_targets"):
        choose_targets(noisy, None, clean_targets=True)


def test_crossentropy_over_shift_volume_matches_hand_shifted_images():
    model = _convnet()
    x, y = _data(n=3, seed=7)
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    shifted = [padded[..., 1:-1, :-2], padded[..., :-2, 1:-1], padded[..., 1:-1, 2:], padded[..., 2:, 1:-1]]
    model.eval()
    with torch.no_grad():
        ce = [F.cross_entropy(model(z), y, reduction="none") for z in [x] + shifted]
    model.train()
    expected = 0.5 * ce[0] + 0.5 * torch.stack(ce[1:]).mean(0)
    got = compute_metric(model, x, y, "crossentropy", volume=Volume("euclidean", "shift", 4, 1), batch_size=4)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-12)


def test_batch_size_and_class_chunk_invariance():
    model = _convnet()
    x, y = _data(n=7, seed=8)
    volume = Volume("euclidean", "shift", 4, 1)
    reference = compute_metric(model, x, y, "jacobian_operator", "softmax", volume=volume, batch_size=64)
    for batch_size, backend, chunk in [(1, "vjp", None), (3, "vjp", 2), (11, "vjp", 5), (6, "vmap", 2), (64, "vmap", None)]:
        got = compute_metric(
            model, x, y, "jacobian_operator", "softmax", volume=volume, batch_size=batch_size, backend=backend, class_chunk=chunk
        )
        np.testing.assert_allclose(got, reference, rtol=1e-12, atol=0)
    # power iteration stops per sample, so a loose tolerance still gives batch-invariant values
    loose = dict(operator_method="power", power_tol=1e-3)
    power = [compute_metric(model, x, y, "jacobian_operator", "softmax", batch_size=b, **loose) for b in (2, 64)]
    np.testing.assert_allclose(power[0], power[1], rtol=1e-12, atol=0)


def test_parameters_and_modes_are_restored_and_get_no_gradient():
    model = _convnet()
    model[0].bias.requires_grad_(False)
    model[1].eval()  # a submodule in its own mode
    flags = [p.requires_grad for p in model.parameters()]
    x, y = _data(n=4, seed=9)
    for metric, method in [("jacobian_operator", "gram"), ("jacobian_operator", "power"), ("jacobian_frobenius", "gram")]:
        for backend in ("vjp", "vmap"):
            compute_metric(model, x, y, metric, "logits", backend=backend, operator_method=method)
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert model.training and model[0].training and not model[1].training


def test_bad_inputs_name_their_key():
    model = _mlp()
    x, y = _data(n=2)
    cases = [
        (dict(metric="sharpness"), "smoothness.metric.*jacobian_frobenius"),
        (dict(metric="jacobian_operator", normalization="probits"), "smoothness.normalization.*softmax"),
        (dict(metric="crossentropy", normalization="target_logit"), "smoothness.normalization"),
        (dict(metric="jacobian_operator", backend="jax"), "smoothness.backend"),
        (dict(metric="jacobian_operator", operator_method="eigvalsh"), "smoothness.operator_method.*gram, power"),
        (dict(metric="jacobian_operator", power_iters=0), "smoothness.power_iters"),
        (dict(metric="jacobian_operator", power_tol=float("nan")), "smoothness.power_tol"),
        (dict(metric="jacobian_operator", class_chunk=0), "smoothness.class_chunk"),
        (dict(metric="jacobian_operator", batch_size=0), "smoothness.batch_size"),
    ]
    for kwargs, pattern in cases:
        with pytest.raises(NetgeomError, match=pattern):
            compute_metric(model, x, y, **kwargs)
    with pytest.raises(NetgeomError, match="targets"):
        compute_metric(model, x, torch.tensor([0, CLASSES]), "accuracy")
    with pytest.raises(NetgeomError, match="^x"):
        compute_metric(model, x, torch.tensor([0]), "accuracy")
    with pytest.raises(NetgeomError, match="targets"):
        compute_metric(model, x, torch.tensor([0.0, 1.0]), "accuracy")


def _scaled(model, factor):
    """The model with its logits multiplied by `factor` (last layer's weight and bias scaled)."""
    scaled = copy.deepcopy(model)
    with torch.no_grad():
        scaled[-1].weight.mul_(factor)
        scaled[-1].bias.mul_(factor)
    return scaled


def test_power_iteration_stops_on_a_relative_change_and_approaches_gram():
    x, y = _data(n=8, seed=10)
    for make_model in (_mlp, _convnet):
        model = make_model()
        exact = compute_metric(model, x, y, "jacobian_operator", "logits", operator_method="gram")
        power = {
            tol: compute_metric(model, x, y, "jacobian_operator", "logits", operator_method="power", power_tol=tol, power_iters=10_000)
            for tol in (1e-3, 1e-6, 1e-10)
        }
        error = {tol: np.abs(value - exact) / exact for tol, value in power.items()}
        assert error[1e-3].max() > error[1e-6].max() > error[1e-10].max()
        assert error[1e-6].max() < 5e-5 and error[1e-10].max() < 1e-8  # see operator_norm_power's docstring
        assert (power[1e-6] <= exact * (1 + 1e-12)).all()  # a Rayleigh quotient never overshoots
        # a relative rule stops at the same step for J and c J, so the loose estimate scales exactly
        for factor in (1e-3, 1e3):
            scaled = compute_metric(_scaled(model, factor), x, y, "jacobian_operator", "logits", operator_method="power", power_tol=1e-3)
            np.testing.assert_allclose(scaled, factor * power[1e-3], rtol=1e-12)


@pytest.mark.parametrize(
    "volume",
    [
        Volume("euclidean", "shift", 4, 1),
        Volume("geodesic", "shift", 3, anchors=(1, 2)),
        Volume("geodesic", "shift", 4, anchors=(1, 2, 3), cumulative=True),
        Volume("geodesic", "svd", 2, anchors=(1, 3), space="raw"),
    ],
    ids=["euclidean", "geodesic", "cumulative", "svd-raw"],
)
def test_per_point_values_integrate_to_the_volume_metric(volume):
    model = _convnet()
    x, y = _data(n=5, seed=11)
    stats = ChannelStats((0.4, 0.5), (0.3, 0.2))
    ids = np.array([9, 4, 0, 22, 13])
    options = dict(volume=volume, channel_stats=stats, batch_size=6)
    integrated = compute_metric(model, x, y, "jacobian_frobenius", "softmax", **options)
    raw = compute_point_values(model, x, y, "jacobian_frobenius", "softmax", **options)
    table = raw.to_frame(ids)
    assert len(table) == len(x) * volume.points_per_sample
    # every point's value is the metric at that point, every step the distance between anchors
    points = perturb(x, volume, stats)
    direct = compute_metric(model, points.flatten(0, points.dim() - 4), y.repeat_interleave(volume.points_per_sample), "jacobian_frobenius", "softmax")
    np.testing.assert_allclose(table["value"], direct, rtol=1e-12)
    for i, sample_id in enumerate(ids):
        rows = table[table["sample_id"] == sample_id]
        if volume.strategy == "euclidean":
            centre = rows.loc[rows["direction"] == -1, "value"].item()
            expected = 0.5 * centre + 0.5 * rows.loc[rows["direction"] >= 0, "value"].mean()
            np.testing.assert_allclose(integrated[i], expected, rtol=1e-12)
            continue
        prefixes = []
        for _, path in rows.groupby("direction"):
            path = path.sort_values("anchor")
            v, step = path["value"].to_numpy(), path["step_length"].to_numpy()[1:]
            np.testing.assert_allclose(step, np.linalg.norm((points[i, path["direction"].iloc[0], 1:] - points[i, path["direction"].iloc[0], :-1]).flatten(1), axis=1))
            weighted = np.cumsum(step * (v[1:] + v[:-1]) / 2)
            prefixes.append(weighted / np.cumsum(step))
        expected = np.mean(prefixes, axis=0)
        np.testing.assert_allclose(integrated[i], expected if volume.cumulative else expected[-1], rtol=1e-12)
