"""Oracles for weight matching: known permutations are recovered exactly and keep the function."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from netgeom.errors import NetgeomError
from netgeom.models import create_model
from netgeom.studies.alignment import align, apply_permutation, permutation_spec, sinkhorn_assignment, sinkhorn_plan, weight_matching
from netgeom.studies.interpolation import recalibrate_bn

ZOO = [
    ("mlp", (1, 6, 6), dict(width=16, depth=2, batch_norm=True)),
    ("mlp", (1, 6, 6), dict(width=16, depth=3, bottleneck=5)),  # the bottleneck's units permute too
    ("cnn_k", (3, 16, 16), dict(width=4, batch_norm=True)),
    ("resnet20", (3, 16, 16), dict(width=4)),
    ("vgg11", (3, 32, 32), dict(width=8, batch_norm=True)),
]


def random_state(model: nn.Module, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in model.state_dict().items():
        if k.endswith("running_var"):
            out[k] = torch.rand(v.shape, generator=g, dtype=v.dtype) + 0.5
        elif v.is_floating_point():
            out[k] = 0.3 * torch.randn(v.shape, generator=g, dtype=v.dtype)
        else:
            out[k] = v.clone()
    return out


def random_perms(spec, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {p: torch.randperm(n, generator=g) for p, n in spec.sizes.items()}


@pytest.mark.parametrize("arch,shape,options", ZOO, ids=[z[0] + ("_bottleneck" if "bottleneck" in z[2] else "") for z in ZOO])
def test_matching_recovers_a_known_permutation_exactly(arch, shape, options):
    torch.manual_seed(0)
    model = create_model(arch, shape, 5, **options).double().eval()
    spec = permutation_spec(model)
    a = random_state(model, 1)
    perms = random_perms(spec, 2)
    b = apply_permutation(spec, perms, a)
    assert any(not torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(6, *shape, dtype=torch.float64)
    # the permuted model computes the same function (BN statistics move with their channels)
    torch.testing.assert_close(functional_call(model, b, (x,)), functional_call(model, a, (x,)), rtol=1e-10, atol=1e-10)
    found, sweeps = weight_matching(spec, a, b, seed=3)
    assert sweeps >= 2  # at least one improving sweep plus the one that confirms convergence
    for p in spec.sizes:  # B = perm(A) -> matching returns the inverse permutation
        assert torch.equal(found[p], torch.argsort(perms[p])), p
    aligned = apply_permutation(spec, found, b)
    assert all(torch.equal(aligned[k], a[k]) for k in a)


def test_residual_stream_shares_one_permutation_per_stage():
    model = create_model("resnet20", (3, 16, 16), 5, width=4)
    spec = permutation_spec(model)
    out = lambda key: spec.axes[key][0][0]  # noqa: E731  output-axis permutation of a weight
    stage0 = {out("stem.0.weight")} | {out(f"stages.0.{i}.conv2.weight") for i in range(3)} | {out(f"stages.0.{i}.bn2.weight") for i in range(3)}
    stage1 = {out("stages.1.0.shortcut.0.weight")} | {out(f"stages.1.{i}.conv2.weight") for i in range(3)}
    assert len(stage0) == 1 and len(stage1) == 1 and stage0 != stage1
    assert spec.axes["stages.1.0.shortcut.0.weight"][1][0] == stage0.pop()  # shortcut reads stage 0's stream
    # inner conv1 outputs are free; the classifier output and the network input are not permuted
    assert out("stages.0.0.conv1.weight") not in stage1
    assert spec.axes["fc.weight"][0] is None and spec.axes["stem.0.weight"][1] is None
    assert spec.axes["stages.0.0.bn1.num_batches_tracked"] == ()
    # 3 stream groups + 9 inner groups (one per block)
    assert len(spec.sizes) == 12


def test_flatten_after_conv_permutes_blocks_of_the_linear_inputs():
    model = create_model("vgg8", (3, 32, 32), 10)  # 64 channels x 4 x 4 -> linear
    spec = permutation_spec(model)
    first_linear = next(k for k in spec.axes if k.endswith("weight") and len(spec.axes[k]) == 2)
    perm, block = spec.axes[first_linear][1]
    assert spec.sizes[perm] == 64 and block == 16


def test_single_group_matching_is_the_brute_force_optimum():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2)).double()
    spec = permutation_spec(model)
    assert list(spec.sizes.values()) == [5]
    a, b = random_state(model, 1), random_state(model, 2)
    (name,) = spec.sizes

    def similarity(perm):
        pb = apply_permutation(spec, {name: torch.as_tensor(perm)}, b)
        return sum((a[k] * pb[k]).sum().item() for k in a)

    best = max(similarity(list(p)) for p in itertools.permutations(range(5)))
    found, _ = weight_matching(spec, a, b)
    assert similarity(found[name].tolist()) == pytest.approx(best, abs=1e-12)


def test_matching_does_not_decrease_similarity_and_is_seeded():
    model = create_model("cnn_k", (3, 16, 16), 5, width=4, batch_norm=True).double()
    spec = permutation_spec(model)
    a, b = random_state(model, 1), random_state(model, 2)
    keys = [k for k in a if a[k].is_floating_point() and "running" not in k]
    similarity = lambda s: sum((a[k] * s[k]).sum().item() for k in keys)  # noqa: E731
    found, _ = weight_matching(spec, a, b, seed=0)
    assert similarity(apply_permutation(spec, found, b)) > similarity(b)
    again, _ = weight_matching(spec, a, b, seed=0)
    assert all(torch.equal(found[p], again[p]) for p in found)


def test_align_recomputes_bn_statistics_of_the_permuted_model():
    torch.manual_seed(0)
    model = create_model("cnn_k", (3, 16, 16), 5, width=4, batch_norm=True).double()
    a, b = random_state(model, 1), random_state(model, 2)
    inputs = torch.randn(32, 3, 16, 16, dtype=torch.float64)
    result = align(model, a, b, calibration_inputs=inputs, bn_batch_size=8)
    permuted = apply_permutation(result.spec, result.permutations, b)
    expected = recalibrate_bn(model, permuted, inputs, batch_size=8)
    assert all(torch.allclose(result.state[k], expected[k], rtol=1e-12, atol=1e-14) for k in expected)
    assert not torch.allclose(result.state["1.running_mean"], permuted["1.running_mean"])
    plain = align(model, a, b)
    assert all(torch.equal(plain.state[k], permuted[k]) for k in permuted)


def test_unsupported_models_and_mismatched_widths_raise():
    class Concat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 3), nn.Linear(4, 3)

        def forward(self, x):
            return torch.cat([self.a(x), self.b(x)], 1)

    with pytest.raises(NetgeomError) as err:
        permutation_spec(Concat())
    assert err.value.key == "alignment.model"
    with pytest.raises(NetgeomError) as err:
        permutation_spec(nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.Linear(6, 2)))
    assert err.value.key == "alignment.model"
    narrow = create_model("mlp", (4,), 2, width=8)
    wide = create_model("mlp", (4,), 2, width=9)
    with pytest.raises(NetgeomError) as err:
        align(narrow, narrow.state_dict(), wide.state_dict())
    assert err.value.key == "alignment.models"
    np.testing.assert_equal(len(permutation_spec(narrow).sizes), 2)


class ViewFlattenNet(nn.Module):
    """conv + MLP head flattened the way the starlight seed writes it (and its variants)."""

    FLATTENS = {
        "shape": lambda h, x: h.view(h.shape[0], -1),
        "input_shape": lambda h, x: h.view(x.shape[0], -1),
        "size": lambda h, x: h.reshape(h.size(0), -1),
        "size_tuple": lambda h, x: h.view(h.size()[0], -1),
        "shape_tuple": lambda h, x: h.reshape((x.shape[0], -1)),
        "count": lambda h, x: h.view(h.size(0), h.size(1) * h.size(2) * h.size(3)),
        "torch_flatten": lambda h, x: torch.flatten(h, 1),
        "method_flatten": lambda h, x: h.flatten(1),
        "torch_reshape": lambda h, x: torch.reshape(h, (h.shape[0], -1)),
    }

    def __init__(self, how: str = "shape"):
        super().__init__()
        self.how = how
        self.conv = nn.Conv2d(2, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc1 = nn.Linear(4 * 4 * 4, 6)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x)))
        h = self.FLATTENS[self.how](h, x)
        return self.fc2(torch.relu(self.fc1(h)))


class SeedMLP(nn.Module):
    """The starlight seed's MLP style: x.view(x.shape[0], -1) on the raw input, then linears."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(12, 8), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        x = x.view(x.shape[0], -1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


@pytest.mark.parametrize("model,shape", [(ViewFlattenNet(), (2, 6, 6)), (SeedMLP(), (3, 2, 2))], ids=["conv_view", "seed_mlp"])
def test_matching_recovers_a_known_permutation_on_view_flattening_models(model, shape):
    model = model.double().eval()
    spec = permutation_spec(model)
    a = random_state(model, 1)
    perms = random_perms(spec, 2)
    b = apply_permutation(spec, perms, a)
    x = torch.randn(5, *shape, dtype=torch.float64)
    torch.testing.assert_close(functional_call(model, b, (x,)), functional_call(model, a, (x,)), rtol=1e-10, atol=1e-10)
    found, _ = weight_matching(spec, a, b, seed=4)
    for p in spec.sizes:
        assert torch.equal(found[p], torch.argsort(perms[p])), p
    assert all(torch.equal(v, a[k]) for k, v in apply_permutation(spec, found, b).items())


def test_every_batch_size_flatten_gives_the_nn_flatten_spec():
    reference = permutation_spec(ViewFlattenNet("torch_flatten"))
    assert reference.axes["fc1.weight"][1][1] == 16  # blocks of 4 x 4 positions per channel
    for how in ViewFlattenNet.FLATTENS:
        assert permutation_spec(ViewFlattenNet(how)) == reference, how


def test_views_that_are_not_a_batch_flatten_are_refused():
    cases = {
        "literal batch size": lambda h, x: h.view(5, -1),
        "batch inferred": lambda h, x: h.view(-1, 64),
        "channel axis kept": lambda h, x: h.reshape(h.shape[0], 4, -1).flatten(1),
        "second size": lambda h, x: h.view(h.size(1), -1),
    }
    for name, flatten in cases.items():
        model = ViewFlattenNet()
        model.FLATTENS = {"shape": flatten}
        with pytest.raises(NetgeomError) as err:
            permutation_spec(model)
        assert err.value.key == "alignment.model", name


# --------------------------------------------------------------------------- Sinkhorn (issue #28)


def test_the_sinkhorn_plan_is_doubly_stochastic_uniform_when_hot_and_the_exact_assignment_when_cold():
    from scipy.optimize import linear_sum_assignment

    similarity = np.random.default_rng(4).normal(size=(7, 7))
    exact = np.eye(7)[linear_sum_assignment(similarity, maximize=True)[1]]
    plan = sinkhorn_plan(similarity, 0.3)
    np.testing.assert_allclose(plan.sum(0), 1.0, atol=1e-8)
    np.testing.assert_allclose(plan.sum(1), 1.0, atol=1e-8)
    np.testing.assert_allclose(sinkhorn_plan(similarity, 1e4), 1 / 7, atol=1e-4)  # entropy wins
    distances = [np.abs(sinkhorn_plan(similarity, t) - exact).max() for t in (1.0, 0.1, 0.01, 0.001)]
    assert all(later < earlier for earlier, later in zip(distances, distances[1:])) and distances[-1] < 0.01
    # brute force over all 5040 permutations: the cold plan's permutation is the optimum
    best = max(itertools.permutations(range(7)), key=lambda p: similarity[np.arange(7), list(p)].sum())
    assert list(sinkhorn_assignment(similarity, 0.001)) == list(best)


def test_sinkhorn_weight_matching_recovers_a_known_permutation_and_refuses_bad_settings():
    torch.manual_seed(0)
    model = create_model("mlp", (1, 6, 6), 5, width=16, depth=2).double()
    spec = permutation_spec(model)
    a = random_state(model, 1)
    perms = random_perms(spec, 2)
    found, _ = weight_matching(spec, a, apply_permutation(spec, perms, a), method="sinkhorn", temperature=0.01)
    assert all(torch.equal(found[p], torch.argsort(perms[p])) for p in spec.sizes)
    with pytest.raises(NetgeomError, match="sinkhorn_temperature"):
        weight_matching(spec, a, a, method="sinkhorn", temperature=0.0)
    with pytest.raises(NetgeomError, match="matching"):
        weight_matching(spec, a, a, method="hungarian")
