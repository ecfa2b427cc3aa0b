"""Oracles for netgeom.studies.hyperplanes: hand-made weights with known projections."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from netgeom.errors import NetgeomError
from netgeom.models import create_model
from netgeom.studies.hyperplanes import (
    filter_projections,
    hyperplane_evolution,
    hyperplane_layers,
    layer_statistics,
    network_evolution,
    network_statistics,
    projection_table,
)


def conv_with(weight: torch.Tensor) -> nn.Sequential:
    """A one-conv net whose conv has exactly `weight` (N, C, kh, kw)."""
    conv = nn.Conv2d(weight.shape[1], weight.shape[0], tuple(weight.shape[2:]))
    with torch.no_grad():
        conv.weight.copy_(weight)
    return nn.Sequential(conv, nn.ReLU())


def test_all_ones_filter_has_normalised_projection_one():
    weight = torch.stack([torch.ones(3, 3, 3), 0.25 * torch.ones(3, 3, 3), -torch.ones(3, 3, 3)])
    raw, normalised = filter_projections(weight)
    assert raw.tolist() == [27.0, 6.75, -27.0]
    assert normalised == pytest.approx([1.0, 1.0, -1.0], abs=1e-15)
    table = layer_statistics(conv_with(weight[:2]), conv_with(weight[:2]).state_dict())
    assert table.loc[0, "mean"] == pytest.approx(1.0, abs=1e-15)
    assert table.loc[0, "mass"] == 0.0
    assert (table.loc[0, "filters"], table.loc[0, "fan_in"]) == (2, 27)


def test_filters_closed_under_negation_have_mass_half_and_mean_zero():
    half = torch.randn(7, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    model = conv_with(torch.cat([half, -half]))
    row = layer_statistics(model, model.state_dict()).iloc[0]
    assert row["mass"] == 0.5
    assert row["mean"] == pytest.approx(0.0, abs=1e-15)
    assert row["mean_raw"] == pytest.approx(0.0, abs=1e-14)
    assert row["positive"] == 7
    assert row["sign_pvalue"] == pytest.approx(1.0)
    pooled = network_statistics(model, model.state_dict()).iloc[0]
    assert (pooled["mass"], pooled["filters"]) == (0.5, 14)


def test_exact_zeros_count_as_negative():
    zero = torch.zeros(1, 2, 2)
    cancelling = torch.tensor([[[1.0, -1.0], [2.0, -2.0]]])  # non-zero filter, sum exactly 0
    positive = torch.full((1, 2, 2), 0.5)
    model = conv_with(torch.stack([zero, cancelling, positive]))
    row = layer_statistics(model, model.state_dict()).iloc[0]
    assert row["mass"] == pytest.approx(2 / 3)
    assert (row["zero"], row["positive"]) == (2, 1)
    # Sign test drops the ties: one positive out of one non-zero.
    assert row["sign_pvalue"] == 1.0
    raw, normalised = filter_projections(model[0].weight)
    assert raw.tolist() == [0.0, 0.0, 2.0] and normalised[:2].tolist() == [0.0, 0.0]


def test_sign_test_pvalue_is_the_exact_binomial_tail():
    weight = torch.rand(10, 1, 2, 2, generator=torch.Generator().manual_seed(1)) + 0.1  # all positive
    model = conv_with(weight)
    row = layer_statistics(model, model.state_dict(), init_state=model.state_dict()).iloc[0]
    assert row["sign_pvalue"] == pytest.approx(2 * 0.5**10)
    # Against itself: no shift, nothing moved.
    assert row["shift_auc"] == 0.5 and row["shift_pvalue"] == pytest.approx(1.0)
    assert (row["distance_fro"], row["distance_max"]) == (0.0, 0.0)


def test_shift_auc_is_one_when_every_trained_projection_exceeds_every_init_one():
    init = conv_with(-torch.rand(8, 1, 3, 3, generator=torch.Generator().manual_seed(2)) - 0.1)
    trained = conv_with(torch.rand(8, 1, 3, 3, generator=torch.Generator().manual_seed(3)) + 0.1)
    row = layer_statistics(trained, trained.state_dict(), init_state=init.state_dict()).iloc[0]
    assert row["shift_auc"] == 1.0
    assert row["shift_pvalue"] < 1e-3
    assert (row["mass"], row["init_mass"]) == (0.0, 1.0)


def test_pointwise_convs_are_skipped():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, (1, 3)), nn.Flatten(), nn.Linear(4, 2))
    assert [layer.name for layer in hyperplane_layers(model)] == ["0", "3"]
    resnet = create_model("resnet20", (3, 16, 16), 10, width=4)
    names = [layer.name for layer in hyperplane_layers(resnet)]
    assert not any("shortcut" in name for name in names)
    assert len(names) == 19  # stem + 18 block convs; the two 1x1 shortcuts are left out
    with pytest.raises(NetgeomError) as err:
        hyperplane_layers(nn.Sequential(nn.Conv2d(3, 4, 1), nn.Flatten(), nn.Linear(4, 2)))
    assert err.value.key == "hyperplanes.with_linear"


def test_linear_layers_only_with_with_linear():
    mlp = create_model("mlp", (3, 4, 4), 10, width=8, depth=2)
    with pytest.raises(NetgeomError):
        hyperplane_layers(mlp)
    layers = hyperplane_layers(mlp, with_linear=True)
    assert [(layer.name, layer.kind, layer.stage, layer.block) for layer in layers] == [("1", "linear", 0, 0), ("3", "linear", 0, 1), ("5", "linear", 0, 2)]


def _stages(layers) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for layer in layers:
        assert layer.block == len(out.get(layer.stage, []))  # blocks count up within a stage
        out.setdefault(layer.stage, []).append(layer.name)
    return out


def test_torchvision_vgg11_stage_block_keys():
    with torch.device("meta"):  # structure only: skip allocating VGG's 100M+ classifier weights
        model = create_model("tv_vgg11", (3, 32, 32), 10)
    c = [f"features.{i}" for i in (0, 3, 6, 8, 11, 13, 16, 18)]  # torchvision's conv indices
    assert all(isinstance(model.get_submodule(name), nn.Conv2d) for name in c)
    assert _stages(hyperplane_layers(model)) == {0: [c[0]], 1: [c[1]], 2: [c[2], c[3]], 3: [c[4], c[5]], 4: [c[6], c[7]]}
    with_fc = _stages(hyperplane_layers(model, with_linear=True))
    assert with_fc[5] == ["classifier.0", "classifier.3", "classifier.6"]
    assert {k: v for k, v in with_fc.items() if k < 5} == {0: [c[0]], 1: [c[1]], 2: [c[2], c[3]], 3: [c[4], c[5]], 4: [c[6], c[7]]}


def test_zoo_max_pool_nets_stage_keys():
    assert _stages(hyperplane_layers(create_model("lenet", (3, 32, 32), 10), with_linear=True)) == {0: ["0"], 1: ["3"], 2: ["7", "9", "11"]}
    vgg8 = _stages(hyperplane_layers(create_model("vgg8_maxpool", (3, 32, 32), 10)))
    assert vgg8 == {0: ["0", "2"], 1: ["5", "7"], 2: ["10", "12"]}


class RegisteredOutOfOrder(nn.Module):
    """Registers the pool and the second conv before the first conv, and pools functionally too."""

    def __init__(self):
        super().__init__()
        self.pool = nn.MaxPool2d(2)
        self.late = nn.Conv2d(4, 4, 3, padding=1)
        self.early = nn.Conv2d(3, 4, 3, padding=1)
        self.last = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        x = self.pool(self.early(x))
        x = F.max_pool2d(self.late(x), 2)
        return self.last(x)


def test_stages_follow_the_forward_order_and_count_functional_max_pools():
    keys = [(layer.name, layer.stage, layer.block) for layer in hyperplane_layers(RegisteredOutOfOrder())]
    assert keys == [("early", 0, 0), ("late", 1, 0), ("last", 2, 0)]


def two_layer_net(w1: torch.Tensor, w2: torch.Tensor) -> nn.Sequential:
    net = nn.Sequential(nn.Conv2d(1, w1.shape[0], (1, 2), bias=False), nn.Flatten(), nn.Linear(w2.shape[1], w2.shape[0], bias=False))
    with torch.no_grad():
        net[0].weight.copy_(w1)
        net[2].weight.copy_(w2)
    return net


def test_distance_from_init_against_hand_computation():
    w1_0 = torch.tensor([[1.0, 2.0], [-2.0, 0.0]]).reshape(2, 1, 1, 2)  # ||.||_F = 3, max 2
    w1 = w1_0 + torch.tensor([[0.0, 0.0], [0.0, 4.0]]).reshape(2, 1, 1, 2)  # diff: F 4, max 4
    w2_0 = torch.tensor([[0.0, 4.0]])  # F 4, max 4
    w2 = torch.tensor([[3.0, 4.0]])  # diff: F 3, max 3
    init, trained = two_layer_net(w1_0, w2_0), two_layer_net(w1, w2)
    table = layer_statistics(trained, trained.state_dict(), init.state_dict(), with_linear=True)
    assert table["distance_fro"].tolist() == pytest.approx([4 / 3, 3 / 4])
    assert table["distance_max"].tolist() == pytest.approx([4 / 2, 3 / 4])
    pooled = network_statistics(trained, trained.state_dict(), init.state_dict(), with_linear=True).iloc[0]
    assert pooled["distance_fro"] == pytest.approx(5 / 5)  # sqrt(16 + 9) / sqrt(9 + 16)
    assert pooled["distance_max"] == pytest.approx(4 / 4)
    # Hand projections: conv rows (1, 2) -> 3 and (-2, 4) -> 2; linear row (3, 4) -> 7.
    proj = projection_table(trained, trained.state_dict(), with_linear=True)
    assert proj["raw"].tolist() == [3.0, 2.0, 7.0]
    assert proj["normalised"].tolist() == pytest.approx([3 / (math.sqrt(5) * math.sqrt(2)), 2 / (math.sqrt(20) * math.sqrt(2)), 7 / (5 * math.sqrt(2))])


def test_evolution_tables_stack_every_checkpoint_against_the_earliest():
    torch.manual_seed(0)
    model = create_model("lenet", (3, 32, 32), 10)
    states = {e: create_model("lenet", (3, 32, 32), 10).state_dict() for e in (5, 0, 2)}
    table = hyperplane_evolution(model, states, with_linear=True)
    assert table.columns[0] == "epoch"
    assert table["epoch"].tolist() == [0] * 5 + [2] * 5 + [5] * 5
    first = table[table["epoch"] == 0]
    assert (first["distance_fro"] == 0).all() and (first["shift_auc"] == 0.5).all()
    expected = layer_statistics(model, states[5], states[0], with_linear=True)
    last = table[table["epoch"] == 5].drop(columns="epoch").reset_index(drop=True)
    assert np.array_equal(last.to_numpy(), expected.to_numpy())
    pooled = network_evolution(model, states, init_epoch=2)
    assert pooled["epoch"].tolist() == [0, 2, 5] and pooled.loc[1, "distance_fro"] == 0


def test_bad_checkpoints_raise_with_the_key():
    model = create_model("lenet", (3, 32, 32), 10)
    with pytest.raises(NetgeomError) as err:
        hyperplane_evolution(model, {0: model.state_dict()}, init_epoch=3)
    assert err.value.key == "hyperplanes.init_epoch"
    with pytest.raises(NetgeomError) as err:
        hyperplane_evolution(model, {})
    assert err.value.key == "hyperplanes.checkpoints"
    with pytest.raises(NetgeomError) as err:
        layer_statistics(model, {"0.weight": model[0].weight})
    assert err.value.key == "hyperplanes.checkpoint"


class Untraceable(nn.Module):
    """A branch on a tensor value defeats torch.fx; modules are registered in forward order."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3)
        self.pool = nn.MaxPool2d(2)
        self.b = nn.Conv2d(4, 4, 3)
        self.c = nn.Conv2d(4, 4, 3)

    def forward(self, x):
        x = self.pool(self.a(x))
        return self.c(self.b(x)) if x.sum() > 0 else self.b(x)


def test_an_untraceable_model_falls_back_to_registration_order():
    keys = [(layer.name, layer.stage, layer.block) for layer in hyperplane_layers(Untraceable())]
    assert keys == [("a", 0, 0), ("b", 1, 0), ("c", 1, 1)]


# --------------------------------------------------------------------------- the vectorised tests against scipy


def test_sign_test_pvalues_equal_scipy_binomtest_for_every_count():
    from scipy.stats import binomtest

    from netgeom.studies.hyperplanes import sign_test_pvalues

    n = np.concatenate([np.arange(1, 60), [99, 100, 301]])
    for trials in n:
        positive = np.arange(trials + 1)
        ours = sign_test_pvalues(positive, np.full_like(positive, trials))
        reference = [binomtest(int(k), int(trials), 0.5).pvalue for k in positive]
        np.testing.assert_allclose(ours, reference, rtol=1e-12, atol=0)
    assert np.isnan(sign_test_pvalues(np.array([0]), np.array([0])))[0]  # every projection zero


@pytest.mark.parametrize("n1", [1, 3, 6, 8, 9, 40])
@pytest.mark.parametrize("n0", [2, 6, 8, 9, 40])
def test_shift_tests_equal_scipy_mannwhitneyu_row_by_row(n1, n0):
    """Exact (small samples), normal approximation (large) and tie-corrected (rounded values,
    a row equal to the init sample) rows, all in one call."""
    from scipy.stats import mannwhitneyu

    from netgeom.studies.hyperplanes import shift_tests

    rng = np.random.default_rng(n1 * 100 + n0)
    p0 = rng.normal(size=n0)
    rows = [rng.normal(size=n1) + shift for shift in (-1.0, 0.0, 0.3, 2.0)]
    rows += [np.round(rng.normal(size=n1), 1), np.resize(np.round(p0, 1), n1)]
    p = np.stack(rows)
    for sample in (p0, np.round(p0, 1)):
        auc, pvalue = shift_tests(p, sample)
        for row, a, q in zip(p, auc, pvalue):
            reference = mannwhitneyu(row, sample, alternative="two-sided")
            assert a * n1 * n0 == pytest.approx(reference.statistic, abs=1e-9)
            assert q == pytest.approx(reference.pvalue, rel=1e-11, abs=1e-300)


def _reference_layer_rows(model, state, init, layers):
    """Today's definitions, one checkpoint and one layer at a time with scipy's own tests."""
    from scipy.stats import binomtest, mannwhitneyu

    rows = []
    for layer in layers:
        w = state[f"{layer.name}.weight"].double().reshape(state[f"{layer.name}.weight"].shape[0], -1)
        w0 = init[f"{layer.name}.weight"].double().reshape(w.shape)
        p = (w.sum(1) / (w.norm(dim=1) * w.shape[1] ** 0.5)).numpy()
        p0 = (w0.sum(1) / (w0.norm(dim=1) * w0.shape[1] ** 0.5)).numpy()
        shift = mannwhitneyu(p, p0, alternative="two-sided")
        rows.append({
            "mean": p.mean(), "mass": np.mean(p <= 0), "sign_pvalue": binomtest(int((p > 0).sum()), int((p != 0).sum()), 0.5).pvalue,
            "distance_fro": ((w - w0).norm() / w0.norm()).item(), "distance_max": ((w - w0).abs().max() / w0.abs().max()).item(),
            "shift_auc": shift.statistic / (len(p) * len(p0)), "shift_pvalue": shift.pvalue,
        })  # fmt: skip
    return rows


def test_evolution_tables_equal_the_checkpoint_by_checkpoint_definitions_on_a_trained_conv_net(monkeypatch):
    """A LeNet trained a few Adam steps (checkpoints at init, 2, 5, 10 steps): every statistic
    of the vectorised tables equals the one computed layer by layer with scipy; the model is
    traced once for all checkpoints."""
    from netgeom.studies import hyperplanes as hp

    torch.manual_seed(0)
    model = create_model("lenet", input_shape=(1, 28, 28), num_classes=10)
    x, y = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    checkpoints = {0: {k: v.clone() for k, v in model.state_dict().items()}}
    for step in range(1, 11):
        optimiser.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimiser.step()
        if step in (2, 5, 10):
            checkpoints[step] = {k: v.clone() for k, v in model.state_dict().items()}
    traces = []
    real_trace = hp.trace
    monkeypatch.setattr(hp, "trace", lambda m: traces.append(m) or real_trace(m))
    layers, network = hp.evolution_tables(model, checkpoints, init_epoch=0, with_linear=True)
    assert len(traces) == 1
    analysed = hp.hyperplane_layers(model, with_linear=True)
    for epoch, state in checkpoints.items():
        got = layers[layers["epoch"] == epoch].reset_index(drop=True)
        for i, expected in enumerate(_reference_layer_rows(model, state, checkpoints[0], analysed)):
            for key, value in expected.items():
                assert got.loc[i, key] == pytest.approx(value, rel=1e-10, abs=1e-14), (epoch, analysed[i].name, key)
    pooled = network.set_index("epoch")
    assert pooled.loc[10, "filters"] == sum(int(checkpoints[10][f"{layer.name}.weight"].shape[0]) for layer in analysed)
    flat = lambda s: torch.cat([s[f"{layer.name}.weight"].double().reshape(-1) for layer in analysed])  # noqa: E731
    assert pooled.loc[10, "distance_fro"] == pytest.approx(((flat(checkpoints[10]) - flat(checkpoints[0])).norm() / flat(checkpoints[0]).norm()).item(), rel=1e-12)


def test_checkpoints_are_stacked_in_chunks_with_the_same_numbers(monkeypatch):
    """A layer too large to stack every checkpoint at once is taken a few at a time."""
    from netgeom.studies import hyperplanes as hp

    torch.manual_seed(1)
    model = create_model("lenet", input_shape=(1, 28, 28), num_classes=10)
    states = {e: {k: v + 0.01 * e * torch.randn_like(v) for k, v in model.state_dict().items()} for e in range(6)}
    whole = hp.evolution_tables(model, states, with_linear=True)
    monkeypatch.setattr(hp, "STACK_BYTES", 8 * 2000)  # fewer than two checkpoints of the big linear layer
    chunked = hp.evolution_tables(model, states, with_linear=True)
    for a, b in zip(whole, chunked):
        pd.testing.assert_frame_equal(a, b, rtol=1e-13)
