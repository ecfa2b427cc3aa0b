"""Oracles for the star-domain study: the objective's gradient, star training's special cases,
sampling, the hypothesis-test summaries and validation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import beta as beta_dist
from torch.func import functional_call

from netgeom.errors import NetgeomError
from netgeom.models import create_model
from netgeom.studies.star import (
    anchor_parameters,
    anchor_subset_sizes,
    anchor_subsets,
    barrier_statistics,
    beta22_quantile,
    check_anchor_architectures,
    check_held_out_disjoint,
    draw_anchor_and_t,
    hypothesis_test,
    refresh_bn_statistics,
    star_objective,
    star_step,
    star_vs_regular_p_value,
    validate_star_settings,
)

ARCHS = {
    "mlp_bn": ("mlp", (1, 8, 8), {"width": 6, "depth": 2, "batch_norm": True}),
    "cnn_bn": ("cnn_k", (3, 8, 8), {"width": 2, "batch_norm": True}),
}


def make(name: str, seed: int, dtype=torch.float32):
    arch, shape, options = ARCHS[name]
    torch.manual_seed(seed)
    return create_model(arch, shape, 5, **options).to(dtype).train(), shape


def batch(shape, n: int, seed: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g, dtype=dtype), torch.randint(0, 5, (n,), generator=g)


def leaves(state) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().requires_grad_(True) for k, v in state.items()}


# --------------------------------------------------------------------------- the objective


@pytest.mark.parametrize("name", list(ARCHS))
@pytest.mark.parametrize("mu", [0.0, 0.5])
def test_gradient_is_one_minus_t_times_gradient_at_interpolated_point(name, mu):
    """d/dtheta* of (CE((1-t) theta* + t theta_n) + mu CE(theta*)) / (1 + mu) (the seed's
    normalisation) = ((1-t) grad CE(theta_t) + mu grad CE(theta*)) / (1 + mu), BN in train mode."""
    model, shape = make(name, 0, torch.float64)
    anchor_model, _ = make(name, 1, torch.float64)
    x, y = batch(shape, 12, 2, torch.float64)
    t = 0.3
    star = leaves(dict(model.named_parameters()))
    anchor = {k: v.detach().clone().requires_grad_(True) for k, v in anchor_model.named_parameters()}

    loss = star_objective(model, star, anchor, t, x, y, mu=mu)
    got = torch.autograd.grad(loss, list(star.values()))

    # Oracle 1: the gradient at the explicitly formed point, as its own leaves, times (1 - t).
    point = leaves({k: (1 - t) * star[k].detach() + t * anchor[k].detach() for k in star})
    at_point = torch.autograd.grad(F.cross_entropy(functional_call(model, point, (x,)), y), list(point.values()))
    at_star = torch.autograd.grad(F.cross_entropy(functional_call(model, star, (x,)), y), list(star.values()))
    for g, gp, gs in zip(got, at_point, at_star):
        torch.testing.assert_close(g, ((1 - t) * gp + mu * gs) / (1 + mu), rtol=1e-10, atol=1e-12)

    # Oracle 2: central finite difference along a random direction.
    gen = torch.Generator().manual_seed(3)
    direction = {k: torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in star.items()}
    eps = 1e-6

    def objective_at(sign):
        with torch.no_grad():
            shifted = {k: star[k] + sign * eps * direction[k] for k in star}
            return float(star_objective(model, shifted, anchor, t, x, y, mu=mu))

    finite_difference = (objective_at(1) - objective_at(-1)) / (2 * eps)
    analytic = sum(float((g * direction[k]).sum()) for g, k in zip(got, star))
    assert finite_difference == pytest.approx(analytic, rel=1e-6, abs=1e-9)

    # Anchors are constants: nothing flows into them.
    assert all(a.grad is None for a in anchor.values())
    loss2 = star_objective(model, star, anchor, t, x, y, mu=mu)
    loss2.backward()
    assert all(a.grad is None for a in anchor.values())


@pytest.mark.parametrize("name", list(ARCHS))
def test_star_steps_at_t_zero_are_plain_training_steps(name):
    """t = 0, mu = 0, one anchor: the same weights and BN buffers as plain training, bit for bit."""
    plain, shape = make(name, 0)
    star, _ = make(name, 0)
    anchor = anchor_parameters(star, make(name, 1)[0].state_dict())
    opt_plain = torch.optim.Adam(plain.parameters(), lr=0.01)
    opt_star = torch.optim.Adam(star.parameters(), lr=0.01)
    generator = torch.Generator().manual_seed(4)
    for step in range(6):
        x, y = batch(shape, 16, 10 + step)
        opt_plain.zero_grad(set_to_none=True)
        loss = F.cross_entropy(plain(x), y)
        loss.backward()
        opt_plain.step()

        before = generator.get_state()
        index, t = draw_anchor_and_t(generator, 1, "constant", constant=0.0)
        assert (index, t) == (0, 0.0)
        assert torch.equal(generator.get_state(), before)  # nothing drawn: the batch stream is untouched
        opt_star.zero_grad(set_to_none=True)
        value = star_step(star, anchor, t, x, y)
        opt_star.step()
        assert value == loss.item()
    for (k, a), (_, b) in zip(plain.state_dict().items(), star.state_dict().items()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_one_anchor_at_t_one_has_zero_gradient_and_star_stays(optimizer):
    model, shape = make("cnn_bn", 0)
    anchor_model, _ = make("cnn_bn", 1)
    anchor = anchor_parameters(model, anchor_model.state_dict())
    start = {k: v.detach().clone() for k, v in model.named_parameters()}
    opt = (
        torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        if optimizer == "sgd"
        else torch.optim.Adam(model.parameters(), lr=0.1)
    )
    generator = torch.Generator().manual_seed(5)
    for step in range(3):
        x, y = batch(shape, 16, 20 + step)
        index, t = draw_anchor_and_t(generator, 1, "constant", constant=1.0)
        opt.zero_grad(set_to_none=True)
        value = star_step(model, anchor, t, x, y)
        # The loss is the anchor's own (train-mode BN on this batch).
        with torch.no_grad():
            expected = F.cross_entropy(anchor_model(x), y).item()
        assert value == expected
        for name, p in model.named_parameters():
            assert torch.count_nonzero(p.grad) == 0, name
        opt.step()
    for name, p in model.named_parameters():
        assert torch.equal(p, start[name]), name


def test_refresh_gives_the_stars_own_statistics():
    """After star steps at t > 0 the buffers hold interpolated networks' statistics; refresh
    replaces them with the exact mean / unbiased variance of theta*'s pre-BN activations."""
    model, shape = make("mlp_bn", 0)
    anchor = anchor_parameters(model, make("mlp_bn", 1)[0].state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(3):
        x, y = batch(shape, 16, 30 + step)
        opt.zero_grad(set_to_none=True)
        star_step(model, anchor, 0.7, x, y)
        opt.step()
    weights = {k: v.detach().clone() for k, v in model.named_parameters()}
    calibration, _ = batch(shape, 40, 40)
    pre_bn = model[1](model[0](calibration)).detach()  # Flatten, Linear (no bias under BN)
    bn = model[2]
    assert not torch.allclose(bn.running_mean, pre_bn.mean(0), atol=1e-3)

    refresh_bn_statistics(model, calibration, batch_size=64)
    torch.testing.assert_close(bn.running_mean, pre_bn.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var, pre_bn.var(0, unbiased=True), rtol=1e-5, atol=1e-6)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(p, weights[k]) for k, p in model.named_parameters())


# --------------------------------------------------------------------------- sampling


def test_draws_are_reproducible_and_resumable_from_the_generator():
    def draws(generator, n, dist="uniform"):
        return [draw_anchor_and_t(generator, 4, dist) for _ in range(n)]

    g = torch.Generator().manual_seed(7)
    first = draws(g, 50)
    assert first == draws(torch.Generator().manual_seed(7), 50)
    assert first != draws(torch.Generator().manual_seed(8), 50)

    # A resumed run (generator state saved mid-way) continues with the same sequence.
    g = torch.Generator().manual_seed(7)
    draws(g, 20)
    saved = g.get_state()
    resumed = torch.Generator()
    resumed.set_state(saved)
    assert draws(resumed, 30) == first[20:]

    anchors = np.array([a for a, _ in draws(torch.Generator().manual_seed(9), 4000)])
    counts = np.bincount(anchors, minlength=4)
    assert counts.size == 4 and np.all(np.abs(counts - 1000) < 5 * math.sqrt(4000 * 0.25 * 0.75))


@pytest.mark.parametrize("dist, variance", [("uniform", 1 / 12), ("beta", 1 / 20)])
def test_t_distributions_have_the_right_moments(dist, variance):
    n = 20000
    g = torch.Generator().manual_seed(11)
    t = np.array([draw_anchor_and_t(g, 1, dist)[1] for _ in range(n)])
    assert t.min() >= 0.0 and t.max() < 1.0
    mean, var = t.mean(), t.var(ddof=1)
    se_mean = math.sqrt(variance / n)
    se_var = math.sqrt((np.mean((t - mean) ** 4) - var**2) / n)
    assert abs(mean - 0.5) < 4 * se_mean
    assert abs(var - variance) < 4 * se_var


def test_beta_quantile_matches_scipy_and_constant_draws_half():
    u = np.linspace(0.0, 1.0, 101)
    ours = np.array([beta22_quantile(v) for v in u])
    np.testing.assert_allclose(ours, beta_dist.ppf(u, 2, 2), atol=1e-12)
    g = torch.Generator().manual_seed(0)
    assert {draw_anchor_and_t(g, 1, "constant")[1] for _ in range(5)} == {0.5}


# --------------------------------------------------------------------------- barrier vs anchors


@pytest.mark.parametrize(
    "n, sizes",
    [(1, [1]), (2, [1, 2]), (5, [1, 2, 4, 5]), (8, [1, 2, 4, 8]), (50, [1, 2, 4, 8, 16, 32, 50])],
)
def test_anchor_subset_sizes(n, sizes):
    assert anchor_subset_sizes(n) == sizes
    subsets = anchor_subsets([f"s{i}" for i in range(n)])
    assert list(subsets) == sizes
    assert all(subsets[k] == [f"s{i}" for i in range(k)] for k in sizes)  # nested prefixes


# --------------------------------------------------------------------------- hypothesis test


def exact_one_sided_p(star, regular) -> float:
    """P(U_star <= observed) over every relabelling of the pooled sample (no ties)."""

    def u_of(a, b):
        return sum(1.0 if s > r else 0.5 if s == r else 0.0 for s in a for r in b)

    pooled = list(star) + list(regular)
    observed = u_of(star, regular)
    splits = list(itertools.combinations(range(len(pooled)), len(star)))
    hits = 0
    for chosen in splits:
        a = [pooled[i] for i in chosen]
        b = [pooled[i] for i in range(len(pooled)) if i not in chosen]
        hits += u_of(a, b) <= observed
    return hits / len(splits)


def test_mann_whitney_matches_exact_enumeration():
    star = [0.10, 0.30, 0.05]
    regular = [0.40, 0.20, 0.50, 0.60]
    expected = exact_one_sided_p(star, regular)  # U_star = 1 of 12 -> 2/35
    assert expected == pytest.approx(2 / 35)
    assert star_vs_regular_p_value(star, regular) == pytest.approx(expected, abs=1e-12)
    # Accuracy barriers (<= 0) are compared by magnitude: the same ordering, the same p.
    assert star_vs_regular_p_value(-np.array(star), -np.array(regular)) == pytest.approx(expected, abs=1e-12)
    # The other direction is not significant.
    assert star_vs_regular_p_value(regular, star) == pytest.approx(exact_one_sided_p(regular, star), abs=1e-12)
    assert math.isnan(star_vs_regular_p_value([], regular))


def test_hypothesis_table_means_stds_and_p_values_by_group():
    table = pd.DataFrame(
        {
            "split": ["train"] * 7 + ["test"] * 3,
            "kind": ["star"] * 3 + ["regular"] * 4 + ["star"] * 3,
            "barrier": [0.10, 0.30, 0.05, 0.40, 0.20, 0.50, 0.60, 1.0, 2.0, 4.0],
        }
    )
    out = hypothesis_test(table, by=["split"]).set_index("split")
    train = out.loc["train"]
    assert train.star_mean == pytest.approx(0.15)
    assert train.star_std == pytest.approx(math.sqrt((0.05**2 + 0.15**2 + 0.10**2) / 2))
    assert train.regular_mean == pytest.approx(0.425)
    assert train.regular_std == pytest.approx(math.sqrt((0.025**2 + 0.225**2 + 0.075**2 + 0.175**2) / 3))
    assert (train.star_n, train.regular_n) == (3, 4)
    assert train.p_value == pytest.approx(2 / 35)
    test = out.loc["test"]
    assert test.star_mean == pytest.approx(7 / 3) and test.regular_n == 0
    assert math.isnan(test.regular_mean) and math.isnan(test.p_value)

    stats = barrier_statistics(table, by=["split"]).set_index(["split", "kind"])
    assert stats.loc[("train", "regular"), "mean"] == pytest.approx(0.425)
    assert stats.loc[("test", "star"), "n"] == 3
    assert stats.loc[("test", "star"), "std"] == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2))

    with pytest.raises(NetgeomError) as err:
        hypothesis_test(table, by=["width"])
    assert err.value.key == "barriers"


# --------------------------------------------------------------------------- validation


def _other_width():
    torch.manual_seed(0)
    return create_model("mlp", (1, 8, 8), 5, width=7, depth=2).state_dict()


def _other_arch():
    torch.manual_seed(0)
    return create_model("mlp", (1, 8, 8), 5, width=6, depth=3).state_dict()


@pytest.mark.parametrize(
    "call, key",
    [
        (lambda: validate_star_settings(0, 3, "uniform"), "star.anchors"),
        (lambda: validate_star_settings(4, 1, "uniform"), "star.held_out"),
        (lambda: validate_star_settings(4, 3, "gaussian"), "star.t"),
        (lambda: validate_star_settings(4, 3, "beta", mu=-1.0), "star.mu"),
        (lambda: draw_anchor_and_t(torch.Generator(), 2, "normal"), "star.t"),
        (lambda: draw_anchor_and_t(torch.Generator(), 0, "uniform"), "star.anchors"),
        (lambda: anchor_subset_sizes(0), "star.anchors"),
        (lambda: check_anchor_architectures([]), "star.anchors"),
        (lambda: check_anchor_architectures([_base(), _other_width()]), "star.anchors"),
        (lambda: check_anchor_architectures([_base(), _other_arch()]), "star.anchors"),
        (lambda: anchor_parameters(_base_model(), _other_width()), "star.anchors"),
        (lambda: anchor_parameters(_base_model(), _other_arch()), "star.anchors"),
        (lambda: check_held_out_disjoint([42, 43, 44], [45, 43]), "star.held_out"),
    ],
)
def test_validation_errors_name_the_key(call, key):
    with pytest.raises(NetgeomError) as err:
        call()
    assert err.value.key == key


def _base_model():
    torch.manual_seed(0)
    return create_model("mlp", (1, 8, 8), 5, width=6, depth=2)


def _base():
    return _base_model().state_dict()


def test_valid_settings_pass():
    validate_star_settings(1, 2, "constant")
    check_anchor_architectures([_base(), _base()])
    check_held_out_disjoint([1, 2], [3, 4])


def test_ensemble_accuracy_averages_probabilities():
    """Oracle: the mean of the models' softmax by hand; one model alone is its own accuracy."""
    from netgeom.studies.star import ensemble_accuracy

    torch.manual_seed(0)
    models = [torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 4)) for _ in range(3)]
    x, y = torch.randn(50, 1, 6), torch.randint(0, 4, (50,))
    with torch.no_grad():
        probabilities = sum(F.softmax(m(x).double(), dim=1) for m in models) / 3
        single = int((models[0](x).argmax(dim=1) == y).sum()) / len(y)
    assert ensemble_accuracy(models, x, y, batch_size=7) == int((probabilities.argmax(dim=1) == y).sum()) / len(y)
    assert ensemble_accuracy(models[:1], x, y) == single


# --------------------------------------------------------------------------- re-alignment


def test_realigning_aligned_anchors_changes_nothing_and_undoes_a_known_permutation():
    from netgeom.studies.star import realign_anchors

    torch.manual_seed(3)
    model = create_model("mlp", (1, 8, 8), 10, width=16, depth=2)
    star = {k: v.detach().clone() for k, v in model.state_dict().items()}
    (same,) = realign_anchors(model, star, [star])
    assert all(torch.equal(same[k], star[k]) for k in star)  # already aligned: the identity
    # an anchor that is the star with its hidden units shuffled: re-alignment puts them back
    g = torch.Generator().manual_seed(0)
    p1, p2 = torch.randperm(16, generator=g), torch.randperm(16, generator=g)
    linears = [k.rsplit(".", 1)[0] for k in star if k.endswith("weight")]
    first, second, last = linears
    shuffled = dict(star)
    shuffled[f"{first}.weight"], shuffled[f"{first}.bias"] = star[f"{first}.weight"][p1], star[f"{first}.bias"][p1]
    shuffled[f"{second}.weight"] = star[f"{second}.weight"][p2][:, p1]
    shuffled[f"{second}.bias"] = star[f"{second}.bias"][p2]
    shuffled[f"{last}.weight"] = star[f"{last}.weight"][:, p2]
    x = torch.randn(5, 1, 8, 8)
    assert torch.allclose(functional_call(model, shuffled, (x,)), functional_call(model, star, (x,)), atol=1e-5)  # same function
    assert not torch.equal(shuffled[f"{first}.weight"], star[f"{first}.weight"])
    (back,) = realign_anchors(model, star, [shuffled])
    assert all(torch.equal(back[k], star[k]) for k in star)


# --------------------------------------------------------------------------- anti-star (issue #28)


def test_anti_star_gradient_matches_its_closed_form_and_finite_differences():
    model, shape = make("mlp_bn", 0, torch.float64)
    anchor_model, _ = make("mlp_bn", 1, torch.float64)
    x, y = batch(shape, 12, 2, torch.float64)
    t, mu = 0.3, 0.5
    star = leaves(dict(model.named_parameters()))
    anchor = {k: v.detach() for k, v in anchor_model.named_parameters()}
    got = torch.autograd.grad(star_objective(model, star, anchor, t, x, y, mu=mu, anti=True), list(star.values()))
    point = leaves({k: (1 - t) * star[k].detach() + t * anchor[k] for k in star})
    at_point = torch.autograd.grad(F.cross_entropy(functional_call(model, point, (x,)), y), list(point.values()))
    at_star = torch.autograd.grad(F.cross_entropy(functional_call(model, star, (x,)), y), list(star.values()))
    for g, gp, gs in zip(got, at_point, at_star):
        torch.testing.assert_close(g, (mu * gs - (1 - t) * gp) / (1 + mu), rtol=1e-10, atol=1e-12)
    direction = {k: torch.randn(v.shape, generator=torch.Generator().manual_seed(3), dtype=v.dtype) for k, v in star.items()}
    eps = 1e-6

    def objective_at(sign):
        with torch.no_grad():
            return float(star_objective(model, {k: star[k] + sign * eps * direction[k] for k in star}, anchor, t, x, y, mu=mu, anti=True))

    analytic = sum(float((g * direction[k]).sum()) for g, k in zip(got, star))
    assert (objective_at(1) - objective_at(-1)) / (2 * eps) == pytest.approx(analytic, rel=1e-6, abs=1e-9)


def line_barrier(model, star, anchor, x, y) -> float:
    """max over t of CE on the line minus the chord between the endpoints' CEs."""
    with torch.no_grad():
        ends = [float(F.cross_entropy(functional_call(model, s, (x,)), y)) for s in (star, anchor)]
        return max(
            float(F.cross_entropy(functional_call(model, {k: torch.lerp(star[k], anchor[k], t) for k in star}, (x,)), y))
            - ((1 - t) * ends[0] + t * ends[1])
            for t in np.linspace(0, 1, 11)
        )


def test_anti_star_training_raises_the_barrier_that_star_training_lowers():
    """Same start, same anchor, same draws of t: star steps lower the barrier to the anchor, anti
    steps raise it, and the anti-star stays a model (its own loss does not blow up)."""
    torch.manual_seed(0)
    model = create_model("mlp", (1, 4, 4), 3, width=16, depth=1).double().eval()
    x, y = batch((1, 4, 4), 64, 5, torch.float64)
    y = y % 3

    def trained(seed):
        torch.manual_seed(seed)
        params = {k: v.detach().clone().requires_grad_(True) for k, v in create_model("mlp", (1, 4, 4), 3, width=16, depth=1).double().named_parameters()}
        opt = torch.optim.Adam(params.values(), lr=0.02)
        for _ in range(300):
            opt.zero_grad()
            F.cross_entropy(functional_call(model, params, (x,)), y).backward()
            opt.step()
        return {k: v.detach() for k, v in params.items()}

    start, anchor = trained(1), trained(2)
    before = line_barrier(model, start, anchor, x, y)
    after = {}
    for anti in (False, True):
        params = {k: v.clone().requires_grad_(True) for k, v in start.items()}
        opt = torch.optim.SGD(params.values(), lr=0.05)
        for t in np.random.default_rng(0).uniform(size=200):
            opt.zero_grad()
            star_objective(model, params, anchor, float(t), x, y, mu=1.0, anti=anti).backward()
            opt.step()
        after[anti] = ({k: v.detach() for k, v in params.items()})
    assert line_barrier(model, after[False], anchor, x, y) < before < line_barrier(model, after[True], anchor, x, y)
    with torch.no_grad():
        own = float(F.cross_entropy(functional_call(model, after[True], (x,)), y))
    assert own < math.log(3)  # better than chance


def test_anti_star_needs_a_positive_mu(tmp_path):
    from netgeom.params import load_params
    from tests.conftest import write_params

    model, shape = make("mlp_bn", 0)
    x, y = batch(shape, 4, 0)
    with pytest.raises(NetgeomError, match="star.anti"):
        star_objective(model, dict(model.named_parameters()), dict(model.named_parameters()), 0.5, x, y, anti=True)
    with pytest.raises(NetgeomError) as refused:
        load_params(write_params(tmp_path, star={"anti": True, "mu": 0.0}))
    assert refused.value.key == "star.anti"
    assert load_params(write_params(tmp_path, star={"anti": True, "mu": 0.5})).star.anti
