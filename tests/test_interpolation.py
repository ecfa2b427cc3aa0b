"""Oracles for the interpolation curve engine and the pure curve summaries."""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from netgeom.errors import NetgeomError
from netgeom.studies.curve_summaries import (
    accuracy_barrier,
    bumps,
    gauss_length,
    is_monotone,
    largest_rise,
    logit_linearity,
    loss_barrier,
    non_monotonic_fraction,
    normalised_weight_distance,
    plane_through,
    project_onto_plane,
    sample_path,
    training_progress,
    weight_distance,
)
from netgeom.studies.interpolation import (
    curve_values,
    evaluate_state,
    interpolate_state,
    interpolation_curve,
    logit_path,
    plane_landscape,
    random_init_curves,
    recalibrate_bn,
)

def bn_net(width: int = 4, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, width, 3), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(width * 9, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3),
    ).double()  # fmt: skip


def trained_like(model: nn.Module, seed: int) -> dict:
    """A state dict with random weights and non-trivial BN statistics."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, v in model.state_dict().items():
        if k.endswith("running_var"):
            state[k] = torch.rand(v.shape, generator=g, dtype=v.dtype) + 0.5
        elif k.endswith("num_batches_tracked"):
            state[k] = torch.tensor(seed + 3)
        else:
            state[k] = 0.5 * torch.randn(v.shape, generator=g, dtype=v.dtype)
    return state


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(48, 3, 8, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (48,), generator=g)
    return {"train": (x[:32], y[:32]), "test": (x[32:], y[32:])}, x[:32]


def reference_eval(model, state, x, y):
    """Independent evaluation: a deep copy with the state loaded, eval mode, one full batch."""
    net = copy.deepcopy(model)
    net.load_state_dict(state)
    net.eval()
    with torch.no_grad():
        out = net(x)
    return F.cross_entropy(out, y).item(), (out.argmax(1) == y).double().mean().item()


def reference_recalibrate(model, state, inputs, batch_size):
    """PyTorch's own cumulative average (momentum=None) on a deep copy, only BN in train mode."""
    net = copy.deepcopy(model)
    net.load_state_dict(state)
    net.eval()
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
            m.train()
    with torch.no_grad():
        for lo in range(0, inputs.shape[0], batch_size):
            net(inputs[lo : lo + batch_size])
    return net.state_dict()


# --------------------------------------------------------------------------- curve engine


@pytest.mark.parametrize("bn,endpoints", [("interpolate", "curve"), ("frozen", "curve"), ("recompute", "direct")])
def test_endpoints_equal_each_models_own_loss_and_accuracy(data, bn, endpoints):
    sets, calib = data
    model = bn_net()
    a, b = trained_like(model, 1), trained_like(model, 2)
    curve = interpolation_curve(model, a, b, sets, n=5, bn=bn, endpoints=endpoints, calibration_inputs=calib, bn_batch_size=8)
    assert list(curve.columns) == ["t", "split", "loss", "accuracy"] and len(curve) == 10
    for split, (x, y) in sets.items():
        ts, losses = curve_values(curve, split, "loss")
        _, accs = curve_values(curve, split, "accuracy")
        np.testing.assert_allclose(ts, np.linspace(0, 1, 5))
        for i, state in ((0, a), (-1, b)):
            loss, acc = reference_eval(model, state, x, y)
            assert losses[i] == pytest.approx(loss, abs=1e-12)
            assert accs[i] == pytest.approx(acc, abs=1e-12)


def test_recompute_mode_matches_reference_recalibration_at_every_point(data):
    sets, calib = data
    model = bn_net()
    a, b = trained_like(model, 1), trained_like(model, 2)
    curve = interpolation_curve(model, a, b, sets, n=4, bn="recompute", calibration_inputs=calib, bn_batch_size=8)
    x, y = sets["test"]
    _, losses = curve_values(curve, "test")
    for i, t in enumerate(np.linspace(0, 1, 4)):  # endpoints are recalibrated too in "curve" mode
        ref_state = reference_recalibrate(model, interpolate_state(a, b, float(t)), calib, 8)
        assert losses[i] == pytest.approx(reference_eval(model, ref_state, x, y)[0], abs=1e-12)
    # and the recalibrated endpoint differs from the stored-statistics one
    assert losses[0] != pytest.approx(reference_eval(model, a, x, y)[0], abs=1e-6)


def test_frozen_mode_uses_the_nearer_endpoints_buffers(data):
    sets, _ = data
    model = bn_net()
    a, b = trained_like(model, 1), trained_like(model, 2)
    curve = interpolation_curve(model, a, b, sets, alphas=[0.3, 0.7], bn="frozen")
    x, y = sets["train"]
    _, losses = curve_values(curve, "train")
    for loss, t, near in zip(losses, (0.3, 0.7), (a, b)):
        state = interpolate_state(a, b, t)
        state.update({k: near[k] for k in state if "running" in k or "num_batches" in k})
        assert loss == pytest.approx(reference_eval(model, state, x, y)[0], abs=1e-12)


def test_linear_model_mse_curve_is_the_exact_quadratic():
    torch.manual_seed(3)
    model = nn.Linear(5, 2).double()
    a = {k: torch.randn_like(v) for k, v in model.state_dict().items()}
    b = {k: torch.randn_like(v) for k, v in model.state_dict().items()}
    x, y = torch.randn(30, 5, dtype=torch.float64), torch.randn(30, 2, dtype=torch.float64)
    # L(t) = mean_i |r0_i + t dr_i|^2 with r0 = W_a x + b_a - y and dr = (W_b - W_a) x + (b_b - b_a)
    r0 = x @ a["weight"].T + a["bias"] - y
    dr = x @ (b["weight"] - a["weight"]).T + (b["bias"] - a["bias"])
    c0, c1, c2 = (r0 * r0).sum(1).mean(), 2 * (r0 * dr).sum(1).mean(), (dr * dr).sum(1).mean()
    mse = lambda out, target: ((out - target) ** 2).sum(-1)  # noqa: E731
    for ppp in (1, 4):
        curve = interpolation_curve(model, a, b, {"d": (x, y)}, n=9, loss_fn=mse, batch_size=7, points_per_pass=ppp)
        ts, losses = curve_values(curve, "d")
        np.testing.assert_allclose(losses, c0.item() + c1.item() * ts + c2.item() * ts**2, rtol=1e-12)
        assert curve.accuracy.isna().all()  # regression targets: no accuracy


@pytest.mark.parametrize("bn", ["interpolate", "frozen", "recompute"])
def test_vmap_and_loop_paths_agree(data, bn):
    sets, calib = data
    model = bn_net()
    a, b = trained_like(model, 1), trained_like(model, 2)
    kw = dict(n=7, bn=bn, calibration_inputs=calib, bn_batch_size=8, batch_size=10)
    loop = interpolation_curve(model, a, b, sets, points_per_pass=1, **kw)
    batched = interpolation_curve(model, a, b, sets, points_per_pass=3, **kw)
    np.testing.assert_allclose(batched.loss, loop.loss, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(batched.accuracy, loop.accuracy)


@pytest.mark.parametrize("bn", ["interpolate", "recompute"])
def test_channels_last_layout_gives_the_contiguous_values(data, bn):
    sets, calib = data
    model = bn_net().float()
    a = {k: v.float() if v.is_floating_point() else v for k, v in trained_like(model, 1).items()}
    b = {k: v.float() if v.is_floating_point() else v for k, v in trained_like(model, 2).items()}
    sets = {k: (x.float(), y) for k, (x, y) in sets.items()}
    kw = dict(n=5, bn=bn, calibration_inputs=calib.float(), bn_batch_size=8, batch_size=10)
    plain = interpolation_curve(model, a, b, sets, memory_format="contiguous", **kw)
    for fmt in ("channels_last", "auto"):
        fast = interpolation_curve(model, a, b, sets, memory_format=fmt, **kw)
        np.testing.assert_allclose(fast.loss, plain.loss, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(fast.accuracy, plain.accuracy)
    assert a["0.weight"].is_contiguous()  # the caller's tensors keep their layout


def test_bn_recompute_equals_exact_statistics_of_the_subset():
    torch.manual_seed(4)
    model = nn.Sequential(nn.BatchNorm1d(3), nn.Linear(3, 4), nn.BatchNorm1d(4)).double()
    state = trained_like(model, 5)
    x = torch.randn(24, 3, dtype=torch.float64) * 2 + 1
    one = recalibrate_bn(model, state, x, batch_size=24)  # one batch: exact mean and unbiased var
    torch.testing.assert_close(one["0.running_mean"], x.mean(0), rtol=0, atol=1e-14)
    torch.testing.assert_close(one["0.running_var"], x.var(0), rtol=1e-13, atol=0)
    four = recalibrate_bn(model, state, x, batch_size=6)  # equal batches: exact mean, mean of batch vars
    torch.testing.assert_close(four["0.running_mean"], x.mean(0), rtol=0, atol=1e-14)
    torch.testing.assert_close(four["0.running_var"], x.reshape(4, 6, 3).var(1).mean(0), rtol=1e-13, atol=0)
    assert int(four["0.num_batches_tracked"]) == 4
    uneven = recalibrate_bn(model, state, x, batch_size=10)  # 10, 10, 4: size-weighted, mean still exact
    torch.testing.assert_close(uneven["0.running_mean"], x.mean(0), rtol=0, atol=1e-14)
    ref = reference_recalibrate(model, state, x, 6)  # deeper layer: PyTorch's momentum=None
    for k in ("2.running_mean", "2.running_var"):
        torch.testing.assert_close(four[k], ref[k], rtol=1e-13, atol=1e-15)
    assert state["0.running_mean"].abs().sum() > 0  # input untouched (fresh tensors)


def test_the_template_module_is_left_unchanged(data):
    sets, calib = data
    model = bn_net()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    interpolation_curve(model, trained_like(model, 1), trained_like(model, 2), sets, n=3, calibration_inputs=calib)
    assert model.training and all(m.training for m in model.modules())
    assert model[1].momentum == 0.1
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_bad_inputs_raise_with_the_right_key(data):
    sets, calib = data
    model = bn_net(4)
    a, b = trained_like(model, 1), trained_like(model, 2)
    wide = trained_like(bn_net(5), 1)
    cases = [
        (dict(state_b=wide), "interpolation.models"),
        (dict(state_b={k: v for k, v in b.items() if k != "5.bias"}), "interpolation.models"),
        (dict(n=1), "interpolation.points"),
        (dict(bn="swap"), "interpolation.bn"),
        (dict(endpoints="both"), "interpolation.endpoints"),
        (dict(memory_format="nhwc"), "interpolation.memory_format"),
        (dict(bn="recompute", calibration_inputs=None), "calibration_inputs"),
        (dict(eval_sets={}), "eval_sets"),
    ]
    for overrides, key in cases:
        kw = dict(state_a=a, state_b=b, eval_sets=sets, n=3, calibration_inputs=calib) | overrides
        with pytest.raises(NetgeomError) as err:
            interpolation_curve(model, **kw)
        assert err.value.key == key
    with pytest.raises(NetgeomError, match="allowed: interpolate, recompute, frozen"):
        interpolation_curve(model, a, b, sets, bn="swap")


def test_random_init_curves_end_at_the_same_solution(data):
    sets, _ = data
    model = bn_net()
    target = trained_like(model, 9)
    curves = random_init_curves(model, lambda r: trained_like(model, 20 + r), target, sets, repeats=3, n=3, bn="interpolate")
    assert sorted(curves.init.unique()) == [0, 1, 2]
    ends = curves[(curves.t == 1.0) & (curves.split == "train")].loss
    assert ends.nunique() == 1 and ends.iloc[0] == pytest.approx(evaluate_state(model, target, sets)["train"][0])
    starts = curves[(curves.t == 0.0) & (curves.split == "train")].loss
    assert starts.nunique() == 3


# --------------------------------------------------------------------------- summaries


def test_largest_rise_counts_a_rise_at_the_last_point_and_matches_brute_force():
    assert largest_rise([3, 2, 1, 1.5]) == pytest.approx(0.5)
    assert largest_rise([3, 2, 2, 1, 0.5]) == 0.0 and is_monotone([3, 2, 2, 1])
    assert not is_monotone([1, 1.002], tol=1e-3) and is_monotone([1, 1.0005], tol=1e-3)
    rng = np.random.default_rng(0)
    for _ in range(20):
        c = rng.normal(size=12)
        brute = max(0.0, max(c[j] - c[i] for i in range(12) for j in range(i + 1, 12)))
        assert largest_rise(c) == pytest.approx(brute)
        assert max([b.height for b in bumps(np.linspace(0, 1, 12), c)], default=0.0) == pytest.approx(brute)


def test_bumps_widths_and_heights():
    alphas = np.linspace(0, 1, 7)
    found = bumps(alphas, [3, 2, 2.5, 1.5, 1, 1.4, 1.2])
    assert [(b.start, b.peak, b.end) for b in found] == [(1, 2, 3), (4, 5, 6)]
    assert [b.height for b in found] == pytest.approx([0.5, 0.4])
    assert [b.width for b in found] == pytest.approx([2 / 6, 2 / 6])
    assert bumps(alphas, [3, 2, 2.5, 1.5, 1, 1.4, 1.2], tol=0.45)[0].height == pytest.approx(0.5)
    assert len(bumps(alphas, [3, 2, 2.5, 1.5, 1, 1.4, 1.2], tol=0.45)) == 1


def test_barriers_against_the_chord():
    assert loss_barrier([0, 0.5, 1], [1, 3, 2]) == pytest.approx(1.5)
    assert accuracy_barrier([0, 0.5, 1], [0.9, 0.5, 0.8]) == pytest.approx(-0.35)
    t = np.linspace(0, 1, 11)
    assert loss_barrier(t, 1 + t - t * (1 - t)) == 0.0  # below the chord
    assert accuracy_barrier(t, 0.5 + t * (1 - t)) == 0.0  # above the chord
    assert loss_barrier(t, 1 + 4 * t * (1 - t)) == pytest.approx(1.0)
    with pytest.raises(NetgeomError):
        loss_barrier([0, 1], [1, 2])


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


def test_gauss_length_of_semicircles_and_lines():
    semicircle = lambda a: torch.stack([torch.cos(math.pi * a), torch.sin(math.pi * a)])  # noqa: E731
    phi = lambda a: math.pi * (torch.exp(a) - 1) / (math.e - 1)  # noqa: E731  non-uniform speed
    uneven = lambda a: torch.stack([torch.cos(phi(a)), torch.sin(phi(a)), 2 + 0 * a])  # noqa: E731
    line = lambda a: torch.stack([a**2 + a, 3 * (a**2 + a), -a**2 - a])  # noqa: E731
    assert gauss_length(semicircle, 51) == pytest.approx(math.pi, abs=1e-3)
    assert gauss_length(uneven, 101) == pytest.approx(math.pi, abs=1e-3)
    assert gauss_length(line, 21) == pytest.approx(0.0, abs=1e-12)
    two = lambda a: torch.stack([semicircle(a), torch.stack([torch.cos(math.pi * a / 2), torch.sin(math.pi * a / 2)])])  # noqa: E731
    np.testing.assert_allclose(gauss_length(two, 51, per_sample=True), [math.pi, math.pi / 2], atol=1e-3)
    assert gauss_length(two, 51) == pytest.approx(0.75 * math.pi, abs=1e-3)


def test_logit_path_of_a_linear_model_is_straight_and_bn_path_matches_the_network(data):
    sets, _ = data
    torch.manual_seed(0)
    lin = nn.Linear(6, 3).double()
    a = {k: torch.randn_like(v) for k, v in lin.state_dict().items()}
    b = {k: torch.randn_like(v) for k, v in lin.state_dict().items()}
    x = torch.randn(5, 6, dtype=torch.float64)
    assert gauss_length(logit_path(lin, a, b, x), 11) == pytest.approx(0.0, abs=1e-10)
    model = bn_net()
    a, b = trained_like(model, 1), trained_like(model, 2)
    xb = sets["test"][0][:4]
    path = logit_path(model, a, b, xb)
    for t in (0.0, 0.4, 1.0):
        net = copy.deepcopy(model).eval()
        net.load_state_dict(interpolate_state(a, b, t))
        torch.testing.assert_close(path(torch.tensor(t, dtype=torch.float64)), net(xb), rtol=1e-12, atol=1e-12)
    assert gauss_length(path, 11) > 0.0


def test_logit_linearity_of_a_parabola_and_a_line():
    alphas = np.linspace(0, 1, 201)
    a = torch.as_tensor(alphas)
    assert logit_linearity(alphas, torch.stack([a, a * (1 - a)], 1)) == pytest.approx(1 / 30, rel=1e-6)
    assert logit_linearity(alphas, torch.stack([a**3, 2 * a**3], 1)) == pytest.approx(0.0, abs=1e-15)
    samples = torch.stack([torch.stack([a, a * (1 - a)], 1), torch.stack([a, 0 * a], 1)], 1)  # (n, N=2, K=2)
    assert logit_linearity(alphas, samples) == pytest.approx(1 / 60, rel=1e-6)
    path = lambda t: torch.stack([t, t * (1 - t)])  # noqa: E731
    assert logit_linearity(alphas, sample_path(path, alphas)) == pytest.approx(1 / 30, rel=1e-6)


def test_non_monotonic_fraction_by_config():
    runs = pd.DataFrame(
        {
            "optimizer": ["sgd", "sgd", "sgd", "adam", "adam", "adam"],
            "bn": [True] * 6,
            "delta": [0.0, 0.2, 0.5, 0.3, 0.1, 0.0],
            "final_train_loss": [0.5, 0.5, 1.5, 0.2, 0.2, 0.9],
        }
    )
    out = non_monotonic_fraction(runs, ["optimizer", "bn"], max_final_loss=1.0).set_index("optimizer")
    assert out.loc["sgd", "n_runs"] == 3 and out.loc["sgd", "n_converged"] == 2
    assert out.loc["sgd", "frac_non_monotonic"] == pytest.approx(0.5)
    assert out.loc["sgd", "mean_delta_non_monotonic"] == pytest.approx(0.2)  # the 0.5 run did not converge
    assert out.loc["adam", "frac_non_monotonic"] == pytest.approx(2 / 3)
    assert out.loc["adam", "mean_delta_non_monotonic"] == pytest.approx(0.2)
    tol = non_monotonic_fraction(runs.assign(tol=0.15), ["optimizer"], tol="tol").set_index("optimizer")
    assert tol.loc["adam", "n_non_monotonic"] == 1
    with pytest.raises(NetgeomError):
        non_monotonic_fraction(runs, ["width"])


def test_plane_basis_projection_and_landscape():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).double()
    t0, tT = ({k: torch.randn_like(v) for k, v in model.state_dict().items()} for _ in range(2))
    t0b = {k: v + 0.3 * torch.randn_like(v) for k, v in interpolate_state(t0, tT, 0.3).items()}  # projects inside
    plane = plane_through(t0, t0b, tT)
    keys = list(plane.origin)
    dot = lambda u, v: sum((u[k] * v[k]).sum().item() for k in keys)  # noqa: E731
    assert dot(plane.e1, plane.e1) == pytest.approx(1) and dot(plane.e2, plane.e2) == pytest.approx(1)
    assert dot(plane.e1, plane.e2) == pytest.approx(0, abs=1e-12)
    coords = project_onto_plane(plane, [t0, t0b, tT, interpolate_state(t0, tT, 0.5)])
    np.testing.assert_allclose(coords[:3], np.array(list(plane.points.values())), atol=1e-12)
    np.testing.assert_allclose(coords[3], [plane.points["theta_T"][0] / 2, 0.0], atol=1e-12)
    assert plane.points["theta_T"][0] == pytest.approx(weight_distance(t0, tT))
    x, y = torch.randn(20, 4, dtype=torch.float64), torch.randint(0, 2, (20,))
    grid = plane_landscape(model, plane, {"d": (x, y)}, tT, resolution=(4, 3), margin=0.0)
    assert len(grid) == 12 and grid.x.min() == pytest.approx(min(p[0] for p in plane.points.values()))
    corner = grid[(grid.x == grid.x.max()) & (grid.y == grid.y.min())].loss.item()  # theta_T sits there
    assert corner == pytest.approx(evaluate_state(model, tT, {"d": (x, y)})["d"][0], abs=1e-10)
