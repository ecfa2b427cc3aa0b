"""Oracles for netgeom.studies.hyperplanes: hand-made weights with known projections."""

from __future__ import annotations

import math

import numpy as np
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
