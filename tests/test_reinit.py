"""Oracles for netgeom.studies.reinit: the prefix-cached sweep against an independent full
forward pass per (layer, checkpoint), exact resets, the seeded `rand` draw and bad input."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from netgeom.errors import NetgeomError
from netgeom.models import create_model
from netgeom.studies.reinit import eligible_layers, random_init_state, reinit_sweep

SHAPE = (3, 8, 8)
BATCH = 16


def builder(arch: str, **options):
    return lambda: create_model(arch, SHAPE, 10, **options)


def randomise_bn_statistics(state: dict, seed: int) -> dict:
    """BN running statistics away from their 0/1 init, so that which ones are used shows."""
    g = torch.Generator().manual_seed(seed)
    out = dict(state)
    for key, value in state.items():
        if key.endswith("running_mean"):
            out[key] = 0.3 * torch.randn(value.shape, generator=g)
        elif key.endswith("running_var"):
            out[key] = 0.5 + torch.rand(value.shape, generator=g)
    return out


def setup(arch: str, **options):
    """(model, trained state, {epoch: state}, x, y) with y = the trained model's predictions,
    so the trained accuracy is 1 and every reset shows as a drop."""
    make = builder(arch, **options)
    torch.manual_seed(0)
    model = make()
    trained = randomise_bn_statistics(model.state_dict(), 100)
    checkpoints = {}
    for epoch in (0, 3):
        torch.manual_seed(epoch + 1)
        checkpoints[epoch] = randomise_bn_statistics(make().state_dict(), epoch + 200)
    x = torch.randn(40, *SHAPE, generator=torch.Generator().manual_seed(5))
    net = copy.deepcopy(model)
    net.load_state_dict(trained)
    with torch.no_grad():
        y = net.eval()(x).argmax(dim=1)
    return model, trained, checkpoints, x, y


def module_keys(model: nn.Module, name: str) -> list[str]:
    return [key for key in model.state_dict() if key.rpartition(".")[0] == name]


def next_bn(model: nn.Module, name: str) -> str | None:
    """The zoo's conv blocks register the conv's BN right after it (an independent pairing)."""
    names = [n for n, _ in model.named_modules()] + [""]
    following = names[names.index(name) + 1]
    return following if following and isinstance(model.get_submodule(following), _BatchNorm) else None


def full_forward(model, trained, source, keys, x, y):
    """The naive reference: a fresh copy with `keys` from `source`, one full pass over x."""
    net = copy.deepcopy(model)
    state = dict(trained)
    state.update({k: source[k] for k in keys})
    net.load_state_dict(state)
    net.eval()
    correct, loss = 0, 0.0
    with torch.no_grad():
        for lo in range(0, len(x), BATCH):
            out = net(x[lo : lo + BATCH])
            correct += int((out.argmax(1) == y[lo : lo + BATCH]).sum())
            loss += float(F.cross_entropy(out.double(), y[lo : lo + BATCH], reduction="sum"))
    return correct / len(x), loss / len(x)


CASES = {
    "cnn_bn": ("cnn_k", {"width": 2, "batch_norm": True}, False),
    "cnn_bn_reset_bn": ("cnn_k", {"width": 2, "batch_norm": True}, True),
    "resnet20_residual": ("resnet20", {"width": 2}, False),
    "resnet20_reset_bn": ("resnet20", {"width": 2}, True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_cached_prefix_equals_a_full_forward_for_every_layer_and_checkpoint(case):
    arch, options, reset_bn = CASES[case]
    model, trained, checkpoints, x, y = setup(arch, **options)
    table = reinit_sweep(model, trained, checkpoints, x, y, make_model=builder(arch, **options), rand_seed=7, reset_bn=reset_bn, batch_size=BATCH)
    sources = {**{str(e): s for e, s in checkpoints.items()}, "rand": random_init_state(builder(arch, **options), 7)}
    layers = eligible_layers(model)
    assert table["layer"].unique().tolist() == layers
    assert len(table) == len(layers) * 3 and table["prefix_cached"].all()
    for row in table.itertuples():
        keys = module_keys(model, row.layer)
        bn = next_bn(model, row.layer) if reset_bn else None
        keys += module_keys(model, bn) if bn else []
        accuracy, loss = full_forward(model, trained, sources[row.checkpoint], keys, x, y)
        assert row.accuracy == accuracy, (row.layer, row.checkpoint)
        assert row.loss == pytest.approx(loss, rel=1e-12, abs=1e-12), (row.layer, row.checkpoint)
        assert row.relative_drop == pytest.approx(1.0 - row.accuracy)  # trained accuracy is 1
    assert (table["trained_accuracy"] == 1.0).all()
    assert (table["relative_drop"] > 0).any()  # resets do hurt: the comparison is not vacuous


def test_resnet_cut_inside_a_residual_block_reads_the_block_input():
    """The second conv of a block: the suffix needs the block input (for the shortcut) too."""
    model, trained, checkpoints, x, y = setup("resnet20", width=2)
    layer = "stages.1.0.conv2"  # a block with a projection shortcut
    table = reinit_sweep(model, trained, checkpoints, x, y, layers=[layer], epochs=[3], batch_size=BATCH)
    accuracy, loss = full_forward(model, trained, checkpoints[3], module_keys(model, layer), x, y)
    assert table["accuracy"].tolist() == [accuracy]
    assert table["loss"].tolist() == pytest.approx([loss], rel=1e-12)


@pytest.mark.parametrize("arch, options", [("cnn_k", {"width": 2, "batch_norm": True}), ("resnet20", {"width": 2})])
def test_resetting_a_layer_to_its_trained_value_gives_the_trained_accuracy_exactly(arch, options):
    model, trained, _, x, y = setup(arch, **options)
    table = reinit_sweep(model, trained, {0: trained}, x, y, reset_bn=True, batch_size=BATCH)
    assert (table["accuracy"] == table["trained_accuracy"]).all()
    assert (table["loss"] == table["trained_loss"]).all()
    assert (table["relative_drop"] == 0).all()


def test_the_prefix_runs_once_per_batch_not_per_checkpoint():
    model, trained, checkpoints, x, y = setup("cnn_k", width=2, batch_norm=True)
    calls = {"first": 0, "last": 0}
    first, last = eligible_layers(model)[0], eligible_layers(model)[-1]

    def counting_copy(module):
        # reinit_sweep deep-copies the model, and deepcopy keeps forward hooks.
        module.get_submodule(first).register_forward_hook(lambda *a: calls.__setitem__("first", calls["first"] + 1))
        module.get_submodule(last).register_forward_hook(lambda *a: calls.__setitem__("last", calls["last"] + 1))
        return module

    reinit_sweep(counting_copy(model), trained, checkpoints, x, y, batch_size=BATCH)
    batches, layers, sources = 3, len(eligible_layers(model)), len(checkpoints)
    assert calls["first"] == batches * (1 + sources)  # the trained pass + its own resets only
    assert calls["last"] == batches * (1 + layers * sources)  # every suffix ends in the classifier


def test_rand_is_reproducible_from_its_seed_and_changes_with_it():
    make = builder("cnn_k", width=2)
    before = torch.get_rng_state()
    a, b, other = random_init_state(make, 3), random_init_state(make, 3), random_init_state(make, 4)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's RNG is left alone
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["0.weight"], other["0.weight"])
    torch.manual_seed(3)
    assert not torch.equal(a["0.weight"], make().state_dict()["0.weight"])  # not the seed-3 training init
    model, trained, checkpoints, x, y = setup("cnn_k", width=2)
    runs = [reinit_sweep(model, trained, {}, x, y, make_model=make, rand_seed=s, batch_size=BATCH) for s in (3, 3, 4)]
    assert runs[0]["loss"].tolist() == runs[1]["loss"].tolist()
    assert runs[0]["loss"].tolist() != runs[2]["loss"].tolist()
    assert runs[0]["checkpoint"].unique().tolist() == ["rand"] and runs[0]["epoch"].isna().all()


class DataDependent(nn.Module):
    """Untraceable by torch.fx (a branch on a tensor value)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 10)

    def forward(self, x):
        h = self.conv(x)
        if h.sum() > 0:
            h = h * 2
        return self.fc(torch.relu(h).flatten(1))


def test_an_untraceable_model_falls_back_to_full_forward_passes():
    torch.manual_seed(0)
    model = DataDependent()
    trained = model.state_dict()
    checkpoints = {1: DataDependent().state_dict()}
    x = torch.randn(20, *SHAPE, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 10, (20,), generator=torch.Generator().manual_seed(2))
    table = reinit_sweep(model, trained, checkpoints, x, y, batch_size=BATCH)
    assert table["layer"].tolist() == ["conv", "fc"] and not table["prefix_cached"].any()
    for row in table.itertuples():
        accuracy, loss = full_forward(model, trained, checkpoints[1], module_keys(model, row.layer), x, y)
        assert (row.accuracy, row.loss) == (accuracy, pytest.approx(loss, rel=1e-12))


def test_bad_input_raises_netgeom_error_naming_the_setting():
    model, trained, checkpoints, x, y = setup("cnn_k", width=2)
    bad = {
        "reinit.layers": dict(layers=["no.such.layer"]),
        "reinit.epochs": dict(epochs=[0, 99]),
        "reinit.rand": dict(rand_seed=1),  # no make_model to draw from
        "reinit.batch_size": dict(batch_size=0),
    }
    for key, options in bad.items():
        with pytest.raises(NetgeomError) as err:
            reinit_sweep(model, trained, checkpoints, x, y, **options)
        assert err.value.key == key, options
    with pytest.raises(NetgeomError) as err:
        reinit_sweep(model, trained, {}, x, y)
    assert err.value.key == "reinit.epochs"
    with pytest.raises(NetgeomError) as err:
        reinit_sweep(nn.Sequential(nn.Flatten(), nn.ReLU()), {}, {0: {}}, x, y)
    assert err.value.key == "reinit.layers"
    with pytest.raises(NetgeomError) as err:
        reinit_sweep(model, trained, {0: {k: v for k, v in trained.items() if k != "0.bias"}}, x, y)
    assert err.value.key == "reinit.epochs"


def _top5_by_sorting(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Brute force: each sample's classes sorted by logit, the label among the first five."""
    with torch.no_grad():
        logits = net.eval()(x)
    hits = 0
    for row, label in zip(logits.tolist(), y.tolist()):
        ranked = sorted(range(len(row)), key=lambda c: -row[c])
        hits += label in ranked[:5]
    return hits / len(y)


def test_top5_accuracy_against_a_brute_force_sort():
    model, trained, checkpoints, x, _ = setup("cnn_k", width=2)
    y = torch.randint(0, 10, (len(x),), generator=torch.Generator().manual_seed(9))  # not the predictions: top-5 < 1
    table = reinit_sweep(model, trained, checkpoints, x, y, batch_size=BATCH)
    net = copy.deepcopy(model)
    net.load_state_dict(trained)
    expected_trained = _top5_by_sorting(net, x, y)
    assert 0 < expected_trained < 1 and (table["trained_accuracy_top5"] == expected_trained).all()
    row = table.iloc[0]
    reset = copy.deepcopy(model)
    state = dict(trained)
    state.update({k: checkpoints[int(row.checkpoint)][k] for k in module_keys(model, row.layer)})
    reset.load_state_dict(state)
    assert row.accuracy_top5 == _top5_by_sorting(reset, x, y)
    assert (table["accuracy_top5"] >= table["accuracy"]).all()
    # below a trained accuracy of 1 the drop is relative to it, not the absolute difference
    trained_accuracy = float((net.eval()(x).argmax(1) == y).double().mean())
    assert 0 < trained_accuracy < 1 and (table["trained_accuracy"] == trained_accuracy).all()
    assert np.allclose(table["relative_drop"], (trained_accuracy - table["accuracy"]) / trained_accuracy)


def test_conv_only_resets_every_convolution_and_no_linear_layer():
    """The hp_arrangements seed resets convolutions only by default: `layer_kinds="conv"`."""
    model, trained, checkpoints, x, y = setup("cnn_k", width=2)
    both = reinit_sweep(model, trained, checkpoints, x, y, batch_size=BATCH)
    conv = reinit_sweep(model, trained, checkpoints, x, y, batch_size=BATCH, layer_kinds="conv")
    modules = dict(model.named_modules())
    assert set(conv["layer"]) == {n for n in set(both["layer"]) if isinstance(modules[n], nn.Conv2d)} != set(both["layer"])
    assert all(isinstance(modules[n], nn.Conv2d) for n in conv["layer"])
    same = both[both["layer"].isin(conv["layer"])].reset_index(drop=True)
    assert same[["layer", "checkpoint", "accuracy", "loss"]].equals(conv[["layer", "checkpoint", "accuracy", "loss"]])
    with pytest.raises(NetgeomError, match="reinit.layer_kinds: conv: .* has no convolutional layer"):
        mlp, mlp_trained, mlp_checkpoints, mx, my = setup("mlp")
        reinit_sweep(mlp, mlp_trained, mlp_checkpoints, mx, my, layer_kinds="conv")


def test_a_reset_to_weights_from_a_file_equals_the_reset_to_the_same_tensors_as_a_checkpoint(tmp_path):
    """The hp_arrangements seed's --inits-from: weights from any file are one more reset source."""
    from safetensors.torch import save_file

    from netgeom.models.pretrained import read_state_dict

    model, trained, checkpoints, x, y = setup("cnn_k", width=2)
    save_file({k: v.contiguous() for k, v in checkpoints[3].items()}, str(tmp_path / "snapshot.safetensors"))
    files = {"file:snapshot": read_state_dict(tmp_path / "snapshot.safetensors")}
    table = reinit_sweep(model, trained, checkpoints, x, y, batch_size=BATCH, extra_sources=files, rand_seed=1, make_model=builder("cnn_k", width=2))
    assert list(dict.fromkeys(table["checkpoint"])) == ["0", "3", "file:snapshot", "rand"]
    from_file = table[table["checkpoint"] == "file:snapshot"].reset_index(drop=True)
    as_epoch = table[table["checkpoint"] == "3"].reset_index(drop=True)
    for column in ("layer", "accuracy", "loss", "accuracy_top5", "relative_drop"):
        assert from_file[column].equals(as_epoch[column]), column
    assert from_file["epoch"].isna().all()
    wrong = {"file:other": create_model("cnn_k", SHAPE, 10, width=4).state_dict()}
    with pytest.raises(NetgeomError, match=r"reinit.inits_from: checkpoint file:other does not fit the model"):
        reinit_sweep(model, trained, checkpoints, x, y, batch_size=BATCH, extra_sources=wrong)
