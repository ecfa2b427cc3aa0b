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
    curve_is_finite,
    is_monotone,
    largest_rise,
    loss_barrier,
    non_monotonic_fraction,
)
from netgeom.studies.interpolation import (
    curve_values,
    evaluate_state,
    interpolate_state,
    interpolation_curve,
    plane_landscape,
    random_init_curves,
    recalibrate_bn,
)
from netgeom.studies.weight_space import plane_through, project_onto_plane, weight_distance


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


def reference_recalibrate(model, state, inputs, batch_size, momentum=None, batches=None):
    """PyTorch's own BN averaging on a deep copy, only BN in train mode: momentum=None is its
    cumulative average over one pass; a momentum is its moving average over `batches` batches
    (cycling through the inputs)."""
    net = copy.deepcopy(model)
    net.load_state_dict(state)
    net.eval()
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = momentum
            m.train()
    starts = list(range(0, inputs.shape[0], batch_size))
    with torch.no_grad():
        for k in range(len(starts) if batches is None else batches):
            lo = starts[k % len(starts)]
            net(inputs[lo : lo + batch_size])
    return net.state_dict()


def reference_outputs(model, state, x):
    net = copy.deepcopy(model)
    net.load_state_dict(state)
    with torch.no_grad():
        return net.eval()(x)


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


def test_the_stages_curve_recalibrates_bn_in_batches_of_interpolation_bn_batch_size(data):
    """The stage's curves (interpolation, barriers, star barriers, `netgeom curve`) read
    `interpolation.bn_batch_size`: it changes the cumulative BN averages, so ignoring it (as they
    once did, always 256) gives other numbers than the setting asks for."""
    from types import SimpleNamespace

    from netgeom.groups.interpolation import InterpolationParams
    from netgeom.stages.interpolation import barrier_curve

    sets, calib = data
    model = bn_net()
    a, b = trained_like(model, 1), trained_like(model, 2)
    stage_data = SimpleNamespace(train=SimpleNamespace(x=calib), eval_sets=lambda: sets)
    x, y = sets["test"]
    losses = {}
    for size in (8, 32):
        settings = InterpolationParams(points=3, bn="recompute", bn_batch_size=size, calibration_samples=32)
        _, losses[size] = curve_values(barrier_curve(model, a, b, stage_data, settings), "test")
        middle = reference_recalibrate(model, interpolate_state(a, b, 0.5), calib, size)
        assert losses[size][1] == pytest.approx(reference_eval(model, middle, x, y)[0], abs=1e-12)
    assert losses[8][1] != pytest.approx(losses[32][1], abs=1e-9)


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
    tail = recalibrate_bn(model, state, x[:23], batch_size=11)  # 11, 12: a one-sample tail (train-mode BN raises on it) joins
    torch.testing.assert_close(tail["0.running_var"], (11 * x[:11].var(0) + 12 * x[11:23].var(0)) / 23, rtol=1e-13, atol=0)
    assert int(tail["0.num_batches_tracked"]) == 2
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
    with pytest.raises(NetgeomError, match="allowed: interpolate, recompute, recompute_ema, endpoint_ema, frozen"):
        interpolation_curve(model, a, b, sets, bn="swap")


# --------------------------------------------------------------------------- BN protocols and logits


def test_recompute_ema_without_momentum_is_the_cumulative_recompute(data):
    sets, calib = data
    model = bn_net()
    a, b = trained_like(model, 1), trained_like(model, 2)
    kw = dict(n=5, calibration_inputs=calib, bn_batch_size=8)
    exact = interpolation_curve(model, a, b, sets, bn="recompute", **kw)
    ema_none = interpolation_curve(model, a, b, sets, bn="recompute_ema", bn_momentum=None, **kw)
    pd.testing.assert_frame_equal(ema_none, exact)
    one = recalibrate_bn(model, a, calib, 8)
    again = recalibrate_bn(model, a, calib, 8, momentum=None, batches=calib.shape[0] // 8)
    assert all(torch.equal(one[k], again[k]) for k in one)


def hand_rolled_ema(state, x, batch_size, momentum, batches, eps=1e-5):
    """The moving average of BatchNorm1d(3) -> Linear(3, 4) -> BatchNorm1d(4) with plain tensor ops."""
    means = [torch.zeros(3, dtype=x.dtype), torch.zeros(4, dtype=x.dtype)]
    variances = [torch.ones(3, dtype=x.dtype), torch.ones(4, dtype=x.dtype)]
    starts = list(range(0, x.shape[0], batch_size))
    for k in range(batches):
        xb = x[starts[k % len(starts)] :][:batch_size]
        normed = (xb - xb.mean(0)) / torch.sqrt(xb.var(0, unbiased=False) + eps)
        hidden = (normed * state["0.weight"] + state["0.bias"]) @ state["1.weight"].T + state["1.bias"]
        for i, h in enumerate((xb, hidden)):
            means[i] = (1 - momentum) * means[i] + momentum * h.mean(0)
            variances[i] = (1 - momentum) * variances[i] + momentum * h.var(0, unbiased=True)
    return {"0.running_mean": means[0], "0.running_var": variances[0], "2.running_mean": means[1], "2.running_var": variances[1]}


def test_recompute_ema_equals_a_hand_rolled_moving_average():
    torch.manual_seed(4)
    model = nn.Sequential(nn.BatchNorm1d(3), nn.Linear(3, 4), nn.BatchNorm1d(4)).double()
    state = trained_like(model, 5)
    x = torch.randn(24, 3, dtype=torch.float64) * 2 + 1
    for batches in (3, 6):  # 6 batches cycle through the 4 of one pass
        ema = recalibrate_bn(model, state, x, batch_size=6, momentum=0.1, batches=batches)
        for key, expected in hand_rolled_ema(state, x, 6, 0.1, batches).items():
            torch.testing.assert_close(ema[key], expected, rtol=1e-12, atol=1e-14)
        assert int(ema["0.num_batches_tracked"]) == batches
    exact = recalibrate_bn(model, state, x, batch_size=6)
    assert not torch.allclose(ema["0.running_var"], exact["0.running_var"], rtol=1e-3)  # the protocols differ


@pytest.mark.parametrize("points_per_pass", [1, 3])
def test_recompute_ema_curve_matches_pytorchs_moving_average_at_every_point(data, points_per_pass):
    sets, calib = data
    model = bn_net()
    a, b = trained_like(model, 1), trained_like(model, 2)
    curve = interpolation_curve(
        model, a, b, sets, n=4, bn="recompute_ema", bn_momentum=0.1, bn_batches=5, calibration_inputs=calib,
        bn_batch_size=8, points_per_pass=points_per_pass,
    )
    x, y = sets["test"]
    _, losses = curve_values(curve, "test")
    for i, t in enumerate(np.linspace(0, 1, 4)):
        ref_state = reference_recalibrate(model, interpolate_state(a, b, float(t)), calib, 8, momentum=0.1, batches=5)
        assert losses[i] == pytest.approx(reference_eval(model, ref_state, x, y)[0], abs=1e-12)


@pytest.mark.parametrize("points_per_pass", [1, 2])
def test_endpoint_ema_is_the_starlight_seeds_loop_by_hand(data, points_per_pass):
    """The seed's barrier protocol written as a plain loop: a model per t with the interpolated
    weights, endpoint A's running statistics copied in (no reset), BN in train mode for the
    calibration batches at momentum 0.1, then evaluated in eval mode."""
    import copy

    sets, calib = data
    model = bn_net()
    a, b = trained_like(model, 1), trained_like(model, 2)
    curve = interpolation_curve(model, a, b, sets, n=4, bn="endpoint_ema", bn_momentum=0.1, bn_batches=5, calibration_inputs=calib,
                                bn_batch_size=8, points_per_pass=points_per_pass)
    x, y = sets["test"]
    _, losses = curve_values(curve, "test")
    statistics = ("running_mean", "running_var", "num_batches_tracked")
    for i, t in enumerate(np.linspace(0, 1, 4)):
        net = copy.deepcopy(model)
        net.load_state_dict({k: (a[k] if k.rsplit(".", 1)[-1] in statistics else (1 - t) * a[k] + t * b[k]) for k in a})
        net.eval()
        with torch.no_grad():
            for m in net.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.train()
                    m.momentum = 0.1
            starts = list(range(0, calib.shape[0], 8))
            for k in range(5):
                net(calib[starts[k % len(starts)] :][:8])
            net.eval()
            assert losses[i] == pytest.approx(F.cross_entropy(net(x), y).item(), abs=1e-10)
    exact = interpolation_curve(model, a, b, sets, n=4, bn="recompute", calibration_inputs=calib, bn_batch_size=8)
    assert not np.allclose(curve_values(exact, "test")[1][1:3], losses[1:3])  # the seed's bias is measurable


@pytest.mark.parametrize("bn,endpoints,points_per_pass", [("interpolate", "curve", 1), ("recompute", "direct", 3), ("recompute_ema", "curve", 2)])
def test_logits_along_the_path_equal_the_model_evaluated_by_hand(data, bn, endpoints, points_per_pass):
    sets, calib = data
    model = bn_net()
    a, b = trained_like(model, 1), trained_like(model, 2)
    ts = np.linspace(0, 1, 5)
    curve, logits = interpolation_curve(
        model, a, b, sets, n=5, bn=bn, endpoints=endpoints, calibration_inputs=calib, bn_batch_size=8, bn_batches=3,
        batch_size=7, points_per_pass=points_per_pass, return_logits=True,
    )
    assert set(logits) == set(sets)
    for split, (x, y) in sets.items():
        assert logits[split].shape == (5, x.shape[0], 3)
        _, losses = curve_values(curve, split)
        for i, t in enumerate(ts):
            state = interpolate_state(a, b, float(t))
            if bn != "interpolate" and not (endpoints == "direct" and t in (0.0, 1.0)):
                state = reference_recalibrate(model, state, calib, 8, momentum=0.1 if bn == "recompute_ema" else None, batches=3 if bn == "recompute_ema" else None)
            torch.testing.assert_close(logits[split][i], reference_outputs(model, state, x), rtol=1e-12, atol=1e-12)
            assert F.cross_entropy(logits[split][i], y).item() == pytest.approx(losses[i], abs=1e-12)


def test_bad_bn_protocols_raise_with_the_right_key(data):
    sets, calib = data
    model = bn_net()
    a, b = trained_like(model, 1), trained_like(model, 2)
    for overrides, key in [
        (dict(bn_momentum=0.0), "interpolation.bn_momentum"),
        (dict(bn_momentum=1.5), "interpolation.bn_momentum"),
        (dict(bn_batches=0), "interpolation.bn_batches"),
        (dict(bn_batch_size=0), "interpolation.bn_batch_size"),
        (dict(calibration_inputs=None), "calibration_inputs"),
    ]:
        kw = dict(n=3, bn="recompute_ema", calibration_inputs=calib) | overrides
        with pytest.raises(NetgeomError) as err:
            interpolation_curve(model, a, b, sets, **kw)
        assert err.value.key == key
    with pytest.raises(NetgeomError) as err:
        recalibrate_bn(model, a, calib, momentum=-0.1)
    assert err.value.key == "interpolation.bn_momentum"
    with pytest.raises(NetgeomError) as err:
        random_init_curves(model, lambda r: a, b, sets, repeats=1, return_logits=True)
    assert err.value.key == "return_logits"


def test_random_init_curves_end_at_the_same_solution(data):
    sets, _ = data
    model = bn_net()
    target = trained_like(model, 9)
    curves = random_init_curves(model, lambda r: trained_like(model, 20 + r), target, sets, repeats=3, n=3, bn="interpolate")
    assert sorted(curves.init.unique()) == [0, 1, 2]
    ends = curves[(curves.t == 1.0) & (curves.split == "train")].loss
    assert ends.nunique() == 1 and ends.iloc[0] == pytest.approx(evaluate_state(model, target, sets)["train"][0])
    starts = curves[(curves.t == 0.0) & (curves.split == "train")]
    assert starts.loss.nunique() == 3
    for r, loss in zip(starts.init, starts.loss):  # each curve starts at its own init_fn(r)
        assert loss == pytest.approx(evaluate_state(model, trained_like(model, 20 + r), sets)["train"][0], abs=1e-12)


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
    # interior points on both sides of the chord (0.8 / 1.0 flat): the barrier is the worst one
    quarters = [0, 0.25, 0.5, 0.75, 1]
    assert accuracy_barrier(quarters, [0.8, 0.9, 0.6, 0.85, 0.8]) == pytest.approx(-0.2)
    assert loss_barrier(quarters, [1.0, 0.5, 1.3, 0.9, 1.0]) == pytest.approx(0.3)
    assert accuracy_barrier(quarters, [0.6, 0.75, 0.7, 0.95, 1.0]) == pytest.approx(-0.1)  # chord 0.6 -> 1.0
    with pytest.raises(NetgeomError):
        loss_barrier([0, 1], [1, 2])


def test_non_finite_curves_give_nan_summaries_never_a_clean_zero():
    alphas = np.linspace(0, 1, 3)
    for bad in ([3, math.nan, 1], [3, math.inf, 1], [3, 2, -math.inf], [math.nan, 2, 1]):
        assert not curve_is_finite(bad)
        assert math.isnan(largest_rise(bad))
        assert is_monotone(bad) is False and is_monotone(bad, tol=math.inf) is False
        assert math.isnan(loss_barrier(alphas, bad))
        assert math.isnan(accuracy_barrier(alphas, bad))
        (bump,) = bumps(alphas, bad)  # one undetermined bump, no numpy error
        assert math.isnan(bump.height) and math.isnan(bump.width)
        assert (bump.start, bump.end) == (0, 2) and not math.isfinite(bad[bump.peak])
    assert curve_is_finite([3, 2, 1]) and is_monotone([3, 2, 1]) is True
    assert largest_rise([3, 2, 1]) == 0.0 and loss_barrier(alphas, [1, 1, 1]) == 0.0
    with pytest.raises(NetgeomError) as err:
        loss_barrier([0, math.nan, 1], [1, 2, 3])
    assert err.value.key == "alphas"


def test_non_finite_runs_are_counted_apart_in_the_non_monotonic_fraction():
    runs = pd.DataFrame({"opt": ["sgd"] * 4, "delta": [0.0, 0.5, math.nan, math.nan], "final_train_loss": [0.1, 0.1, 0.1, 5.0]})
    row = non_monotonic_fraction(runs, ["opt"], max_final_loss=1.0).iloc[0]
    assert (row.n_runs, row.n_converged, row.n_non_finite, row.n_non_monotonic) == (4, 3, 1, 1)
    assert row.frac_non_monotonic == pytest.approx(0.5)  # over the two converged finite runs


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
