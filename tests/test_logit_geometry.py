"""Oracles for the logit-path geometry: closed-form curves, the seed's double-backward
derivatives, finite differences, and regular polygons."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from netgeom.errors import NetgeomError
from netgeom.studies.interpolation import interpolate_state
from netgeom.studies.logit_geometry import (
    LogitPath,
    gauss_length,
    gauss_rates,
    logit_linearity,
    logit_path,
    polyline_turning,
    sample_path,
)
from tests.devicecheck import FactoryCalls
from tests.test_interpolation import bn_net, reference_recalibrate, trained_like

PI = math.pi


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(7)
    return torch.randn(40, 3, 8, 8, generator=g, dtype=torch.float64)


# --------------------------------------------------------------------------- closed-form curves


def test_gauss_length_of_semicircles_and_lines():
    semicircle = lambda a: torch.stack([torch.cos(PI * a), torch.sin(PI * a)])  # noqa: E731
    phi = lambda a: PI * (torch.exp(a) - 1) / (math.e - 1)  # noqa: E731  non-uniform speed
    uneven = lambda a: torch.stack([torch.cos(phi(a)), torch.sin(phi(a)), 2 + 0 * a])  # noqa: E731
    line = lambda a: torch.stack([a**2 + a, 3 * (a**2 + a), -a**2 - a])  # noqa: E731
    assert gauss_length(semicircle, 51) == pytest.approx(PI, abs=1e-3)
    assert gauss_length(uneven, 101) == pytest.approx(PI, abs=1e-3)
    assert gauss_length(line, 21) == pytest.approx(0.0, abs=1e-12)
    two = lambda a: torch.stack([semicircle(a), torch.stack([torch.cos(PI * a / 2), torch.sin(PI * a / 2)])])  # noqa: E731
    np.testing.assert_allclose(gauss_length(two, 51, per_sample=True), [PI, PI / 2], atol=1e-3)
    assert gauss_length(two, 51) == pytest.approx(0.75 * PI, abs=1e-3)
    for per_pass in (1, 4, 60):  # vmapped passes give the loop's values
        assert gauss_length(two, 51, alphas_per_pass=per_pass) == pytest.approx(0.75 * PI, abs=1e-3)


def helix(radius, pitch: float, turns: float = 1.0):
    return lambda w, r: torch.stack([r * torch.cos(2 * PI * turns * w), r * torch.sin(2 * PI * turns * w), pitch * w + 0 * r])


def test_gauss_length_of_a_helix_with_interpolated_and_held_statistics():
    """A helix whose radius is a "statistic" s(alpha) = 1 + alpha: differentiated (interpolate
    variant) or re-estimated at each alpha and held constant (recompute variant)."""
    c = 3.0
    curve = helix(None, c)
    # constant radius: the tangent turns at 4 pi^2 / sqrt(4 pi^2 + c^2) everywhere
    constant = LogitPath(lambda p, _: curve(p["w"], 1.0 + 0 * p["w"]), {"w": torch.zeros((), dtype=torch.float64)}, {"w": torch.ones((), dtype=torch.float64)})
    assert gauss_length(constant, 51) == pytest.approx(4 * PI**2 / math.sqrt(4 * PI**2 + c**2), rel=1e-10)
    # held radius R(alpha): rate 4 pi^2 R / sqrt(4 pi^2 R^2 + c^2), integral sqrt(4 pi^2 R^2 + c^2) from R=1 to 2
    held = LogitPath(
        lambda p, h: curve(p["w"], h["s"]), {"w": torch.zeros((), dtype=torch.float64)}, {"w": torch.ones((), dtype=torch.float64)},
        held=lambda a: {"s": torch.tensor(1.0 + a, dtype=torch.float64)},
    )
    expected_held = math.sqrt(16 * PI**2 + c**2) - math.sqrt(4 * PI**2 + c**2)
    assert gauss_length(held, 201) == pytest.approx(expected_held, rel=1e-8)
    assert gauss_length(held, 201, alphas_per_pass=5) == pytest.approx(expected_held, rel=1e-8)


def test_gauss_length_of_a_spiral_with_interpolated_and_held_statistics():
    """z = R(s) (cos pi w, sin pi w), R(s) = 1 + s, w = alpha. Held statistics: every local curve
    is a circle arc, total turning pi. Differentiated statistics: the spiral r = 1 + theta/pi,
    whose tangent angle is theta + atan(pi r), total turning pi + atan(2 pi) - atan(pi)."""
    arc = lambda w, s: (1 + s) * torch.stack([torch.cos(PI * w), torch.sin(PI * w)])  # noqa: E731
    zero, one = torch.zeros((), dtype=torch.float64), torch.ones((), dtype=torch.float64)
    interpolated = LogitPath(lambda p, _: arc(p["w"], p["s"]), {"w": zero, "s": zero}, {"w": one, "s": one})
    held = LogitPath(lambda p, h: arc(p["w"], h["s"]), {"w": zero}, {"w": one}, held=lambda a: {"s": torch.tensor(a, dtype=torch.float64)})
    assert gauss_length(interpolated, 201) == pytest.approx(PI + math.atan(2 * PI) - math.atan(PI), rel=1e-8)
    assert gauss_length(held, 201) == pytest.approx(PI, rel=1e-10)
    torch.testing.assert_close(held(0.5), arc(torch.tensor(0.5), torch.tensor(0.5)).double())


def test_a_path_that_stands_still_or_breaks_down():
    still = lambda a: torch.stack([0 * a, 0 * a + 1])  # noqa: E731
    assert gauss_length(still, 11) == 0.0
    broken = lambda a: torch.stack([torch.cos(PI * a), torch.sin(PI * a) / (a - 0.5) * (a - 0.5)])  # noqa: E731  NaN at 0.5
    assert math.isnan(gauss_length(broken, 11))
    with pytest.raises(NetgeomError) as err:
        gauss_length(still, 2)
    assert err.value.key == "interpolation.gauss_points"


# --------------------------------------------------------------------------- polyline turning


def test_polyline_turning_of_regular_polygons_semicircles_and_kinks():
    for sides in (3, 4, 7, 12):
        angles = 2 * PI * torch.arange(sides + 2, dtype=torch.float64) / sides  # first edge repeated at the end
        polygon = torch.stack([torch.cos(angles), torch.sin(angles)], -1)
        assert polyline_turning(polygon) == pytest.approx(2 * PI, rel=1e-12)
    n = 41
    a = torch.linspace(0, 1, n, dtype=torch.float64)
    semicircle = torch.stack([torch.cos(PI * a), torch.sin(PI * a)], -1)
    assert polyline_turning(semicircle) == pytest.approx(PI * (n - 2) / (n - 1), rel=1e-12)
    # a right-angle kink: the pointwise Gauss length sees a straight path, the polyline the kink
    kink = lambda t: torch.stack([torch.clamp(t, max=0.5), torch.clamp(t - 0.5, min=0.0)])  # noqa: E731
    assert gauss_length(kink, 21) == 0.0
    assert polyline_turning(sample_path(kink, np.linspace(0, 1, 21))) == pytest.approx(PI / 2, rel=1e-12)
    # per sample, standing still between points, and a broken sample
    repeated = torch.cat([semicircle[:10], semicircle[9:]])  # one zero-length chord
    assert polyline_turning(repeated) == pytest.approx(PI * (n - 2) / (n - 1), rel=1e-12)
    both = torch.stack([semicircle, torch.full_like(semicircle, math.nan)], 1)
    per_sample = polyline_turning(both, per_sample=True)
    assert per_sample[0] == pytest.approx(PI * (n - 2) / (n - 1)) and math.isnan(per_sample[1])
    assert polyline_turning(torch.stack([a, 2 * a], -1)) == pytest.approx(0.0, abs=1e-12)


def test_logit_linearity_of_a_parabola_and_a_line():
    alphas = np.linspace(0, 1, 201)
    a = torch.as_tensor(alphas)
    assert logit_linearity(alphas, torch.stack([a, a * (1 - a)], 1)) == pytest.approx(1 / 30, rel=1e-6)
    assert logit_linearity(alphas, torch.stack([a**3, 2 * a**3], 1)) == pytest.approx(0.0, abs=1e-15)
    samples = torch.stack([torch.stack([a, a * (1 - a)], 1), torch.stack([a, 0 * a], 1)], 1)  # (n, N=2, K=2)
    assert logit_linearity(alphas, samples) == pytest.approx(1 / 60, rel=1e-6)
    path = lambda t: torch.stack([t, t * (1 - t)])  # noqa: E731
    assert logit_linearity(alphas, sample_path(path, alphas)) == pytest.approx(1 / 30, rel=1e-6)


# --------------------------------------------------------------------------- the network's path


def double_backward_rates(model, state_a, state_b, x, alphas, statistics_at=None):
    """The MLI seed's method: d/dalpha through autograd.grad twice on a dummy vector, the unit
    tangent differentiated again the same way; BN statistics (if given) held at each alpha."""

    def rop(y, wrt):
        dummy = torch.ones_like(y, requires_grad=True)
        (g,) = torch.autograd.grad(y, wrt, dummy, create_graph=True)
        (out,) = torch.autograd.grad(g, dummy, torch.ones_like(wrt), create_graph=True)
        return out

    net = copy.deepcopy(model).eval()
    rates = []
    for a in alphas:
        alpha = torch.tensor([a], dtype=torch.float64, requires_grad=True)
        state = {k: (1 - alpha) * v + alpha * state_b[k] if v.is_floating_point() else v for k, v in state_a.items()}
        if statistics_at is not None:
            state.update(statistics_at(a))
        z = functional_call(net, state, (x,))
        v = rop(z, alpha)
        unit = v / v.norm(dim=-1, keepdim=True)
        rates.append(rop(unit, alpha).norm(dim=-1).detach())
    return torch.stack(rates)


def test_recomputed_statistics_path_matches_the_seeds_double_backward(inputs):
    model = bn_net()
    a, b = trained_like(model, 1), trained_like(model, 2)
    calib, x = inputs[:32], inputs[32:]
    alphas = [0.1, 0.45, 0.8]

    def statistics_at(alpha):
        fresh = reference_recalibrate(model, interpolate_state(a, b, alpha), calib, 8)
        return {k: v for k, v in fresh.items() if "running" in k}

    path = logit_path(model, a, b, x, bn="recompute", calibration_inputs=calib, bn_batch_size=8)
    expected = double_backward_rates(model, a, b, x, alphas, statistics_at)
    torch.testing.assert_close(gauss_rates(path, alphas), expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(gauss_rates(path, alphas, alphas_per_pass=2), expected, rtol=1e-9, atol=1e-12)
    for alpha in alphas:  # the path itself is the network with recomputed statistics
        state = interpolate_state(a, b, alpha) | statistics_at(alpha)
        net = copy.deepcopy(model).eval()
        net.load_state_dict(state)
        torch.testing.assert_close(path(alpha), net(x), rtol=1e-12, atol=1e-12)


def test_bn_free_networks_give_one_path_under_both_variants_and_match_the_seed(inputs):
    torch.manual_seed(2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(192, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)).double()
    a = {k: torch.randn_like(v) * 0.3 for k, v in model.state_dict().items()}
    b = {k: torch.randn_like(v) * 0.3 for k, v in model.state_dict().items()}
    x, alphas = inputs[:10], [0.05, 0.3, 0.62, 0.9]
    expected = double_backward_rates(model, a, b, x, alphas)
    interpolated = logit_path(model, a, b, x)
    recomputed = logit_path(model, a, b, x, bn="recompute")  # no BN: nothing to recompute, no inputs needed
    assert interpolated.alphas_per_pass > 1  # dense nets batch alphas
    for path in (interpolated, recomputed):
        torch.testing.assert_close(gauss_rates(path, alphas), expected, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(gauss_rates(path, alphas, alphas_per_pass=1), expected, rtol=1e-9, atol=1e-12)


def test_interpolated_statistics_path_matches_finite_differences():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3)).double()  # smooth in alpha
    a, b = trained_like(model, 1), trained_like(model, 2)
    x = torch.randn(7, 5, dtype=torch.float64)
    path = logit_path(model, a, b, x)
    h = 1e-3
    for alpha in (0.2, 0.7):
        z = [path(alpha + k * h) for k in (-2, -1, 0, 1, 2)]
        v = (z[3] - z[1]) / (2 * h)
        acc = (z[3] - 2 * z[2] + z[1]) / h**2
        u = v / v.norm(dim=-1, keepdim=True)
        expected = (acc - (acc * u).sum(-1, keepdim=True) * u).norm(dim=-1) / v.norm(dim=-1)
        torch.testing.assert_close(gauss_rates(path, [alpha])[0], expected, rtol=1e-5, atol=1e-8)
        net = copy.deepcopy(model).eval()
        net.load_state_dict(interpolate_state(a, b, alpha))
        torch.testing.assert_close(path(alpha), net(x), rtol=1e-12, atol=1e-12)


def test_logit_path_of_a_linear_model_is_straight_and_the_template_is_untouched(inputs):
    torch.manual_seed(0)
    lin = nn.Linear(6, 3).double()
    a = {k: torch.randn_like(v) for k, v in lin.state_dict().items()}
    b = {k: torch.randn_like(v) for k, v in lin.state_dict().items()}
    assert gauss_length(logit_path(lin, a, b, torch.randn(5, 6, dtype=torch.float64)), 11) == pytest.approx(0.0, abs=1e-10)
    model = bn_net().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a, b = trained_like(model, 1), trained_like(model, 2)
    path = logit_path(model, a, b, inputs[:4], bn="recompute_ema", calibration_inputs=inputs, bn_batch_size=8, bn_batches=2)
    assert gauss_length(path, 5) > 0.0
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_bad_logit_path_options_raise_with_the_right_key(inputs):
    model = bn_net()
    a, b = trained_like(model, 1), trained_like(model, 2)
    for kw, key in [
        (dict(bn="frozen"), "interpolation.gauss_bn"),
        (dict(bn="recompute"), "calibration_inputs"),
        (dict(bn="recompute_ema", calibration_inputs=inputs, bn_momentum=2.0), "interpolation.bn_momentum"),
        (dict(state_b=trained_like(bn_net(5), 2)), "interpolation.models"),
    ]:
        with pytest.raises(NetgeomError) as err:
            logit_path(model, a, kw.pop("state_b", b), inputs[:4], **kw)
        assert err.value.key == key
    with pytest.raises(NetgeomError) as err:
        gauss_rates(logit_path(model, a, b, inputs[:4]), [0.5], alphas_per_pass=0)
    assert err.value.key == "interpolation.gauss_alphas_per_pass"


# --------------------------------------------------------------------------- process cost (issue #22)


@pytest.mark.parametrize("n", [2, 3, 4, 5, 10, 11, 51, 100, 101])
def test_simpson_on_uniform_grids_equals_scipys_rule(n):
    from scipy.integrate import simpson as scipy_simpson

    from netgeom.studies.logit_geometry import simpson

    y = np.random.default_rng(n).normal(size=(n, 4))
    x = np.linspace(0.0, 1.0, n)
    np.testing.assert_allclose(simpson(y, x), scipy_simpson(y, x=x, axis=0), rtol=1e-13, atol=1e-15)
    if n > 2:  # parabolas are integrated exactly, odd or even number of points
        np.testing.assert_allclose(simpson(3 * x**2 - x, x), 0.5, rtol=1e-12)
    uneven = np.sort(np.concatenate([[0.0, 1.0], np.random.default_rng(n + 1).uniform(size=max(n - 2, 0))]))
    np.testing.assert_allclose(simpson(y, uneven), scipy_simpson(y, x=uneven, axis=0), rtol=1e-13, atol=1e-15)


GAUSS_PROBE = """
import sys, torch
from torch import nn
from netgeom.studies.logit_geometry import gauss_length, logit_path
torch.manual_seed(0)
net = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 3)).double()
a = {k: v.clone() for k, v in net.state_dict().items()}
b = {k: v + 0.3 * torch.randn_like(v) for k, v in a.items()}
print(gauss_length(logit_path(net, a, b, torch.randn(5, 12, dtype=torch.float64)), n_points=11))
print(sorted(m for m in ("torch._dynamo", "sympy", "scipy.integrate") if m in sys.modules))
"""


def test_the_gauss_length_of_a_bias_net_imports_no_dynamo_sympy_or_scipy_integrate():
    """Nested forward AD through `W x + b` once sent the outer level's add of a plain tensor to
    torch's Python reference kernels: 2 s of imports (torch._dynamo, sympy) in every stage."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", GAUSS_PROBE], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    length, imported = done.stdout.strip().splitlines()[-2:]
    assert float(length) > 0 and imported == "[]"


def test_the_paths_tensors_stay_on_the_weights_device():
    """The interpolation stage runs these on execution.device: alphas given as a CPU tensor are
    moved to the weights' device (checked with the meta device, which refuses mixing as CUDA
    does), and the polyline turning makes no CPU tensor beside its logits."""
    start = {"w": torch.zeros(3, device="meta"), "b": torch.zeros((), device="meta")}
    path = LogitPath(lambda p, _: p["w"], start, {k: torch.ones_like(v) for k, v in start.items()})
    points = path.points(torch.tensor([0.0, 0.5]))
    assert points["w"].device.type == "meta" and points["w"].shape == (2, 3) and points["b"].shape == (2,)
    calls = FactoryCalls()
    with calls:
        polyline_turning(torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(0)))
    assert calls.without_device == []
