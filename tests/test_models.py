"""Model zoo: every registered model builds, runs, back-propagates and has the published size.

Generated over `list_models()` (timm style); each model is built once per module. Expected
parameter counts are oracles derived by hand or from published tables (see the comments), not
read off the code.
"""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from netgeom.errors import NetgeomError
from netgeom.models import count_parameters, create_model, list_models, register_model

IMAGE, TV_IMAGE, SIGNAL, K = (3, 32, 32), (3, 64, 64), (1, 40), 10

# Options that keep each family small in the generated tests (others use their defaults).
OPTIONS = {
    "mlp": dict(width=16),
    "cnn_k": dict(width=1),
    "cnn5_k": dict(width=1),
    "resnet18_k": dict(width=1),  # with BN (the default), so BN's train-mode gradients are tested
}


def _tv_k10(k1000: int, fan_in: int) -> int:
    """A torchvision count for 10 classes from its published 1000-class count."""
    return k1000 - (fan_in + 1) * 990


# Parameter counts on CIFAR-10 shapes with OPTIONS. Every registered model must be listed.
EXPECTED = {
    "mlp": 3072 * 16 + 16 + 16 * 16 + 16 + 16 * 10 + 10,  # 49,610
    "cnn_k": 510,  # brief / smoothness seed
    "cnn5_k": 510,  # same layers, other pools
    "resnet18_k": 2724 + 257 + 10,  # 2724 k^2 + 257 k + 10 with BN (k=64: 11,173,962, the usual ResNet18)
    # akamaster's option-A CIFAR ResNets (269,722 / 464,154 / 658,586 / 853,018) plus our two
    # projection shortcuts: 1x1 convs 16*32 + 32*64 and their BNs 2*(32+64) = 2,752.
    "resnet20": 269_722 + 2_752,
    "resnet32": 464_154 + 2_752,
    "resnet44": 658_586 + 2_752,
    "resnet56": 853_018 + 2_752,
    # kuangliu's CIFAR VGGs (conv bias + BN): 9,231,114 / 9,416,010 / 14,728,266 / 20,040,522
    # minus 2 BN parameters per conv channel (ours have no BN by default).
    "vgg11": 9_231_114 - 2 * 2752,
    "vgg13": 9_416_010 - 2 * 2944,
    "vgg16": 14_728_266 - 2 * 4224,
    "vgg19": 20_040_522 - 2 * 5504,
    # convs 3-6-6-16-16-64-64 (3x3, bias), 1024-120-10 (hand sum).
    "vgg8": 168 + 330 + 880 + 2320 + 9280 + 36928 + 123_000 + 1210,
    "vgg8_maxpool": 174_116,
    "lenet": 62_006,  # the classic LeNet-5 count on 32x32x3
    # convs 3*64*121 + 64, 64*192*25 + 192, 192*384*9 + 384, 384*256*9 + 256, 256*256*9 + 256, then
    # 256 -> 10: bearpaw's CIFAR AlexNet, 2.47M
    "alexnet_cifar": 23_296 + 307_392 + 663_936 + 884_992 + 590_080 + 2_570,
    # stem 432; dense layers (BN + 3x3 conv to 12) cost 110 per input channel, with input channels
    # summing to 984 / 2712 / 4440 over the three blocks; transitions 160 and 304 channels
    # (BN + 1x1 conv); final BN 448 and linear 448 -> 10.
    "densenet40_12": 432 + 110 * (984 + 2712 + 4440) + (320 + 160**2) + (608 + 304**2) + 896 + 4490,
    "tv_alexnet": _tv_k10(61_100_840, 4096),
    "tv_vgg11": _tv_k10(132_863_336, 4096),
    "tv_vgg13": _tv_k10(133_047_848, 4096),
    "tv_vgg16": _tv_k10(138_357_544, 4096),
    "tv_vgg19": _tv_k10(143_667_240, 4096),
    "tv_resnet18": _tv_k10(11_689_512, 512),
    "tv_resnet50": _tv_k10(25_557_032, 2048),
}

ALL = list_models()
TORCHVISION = list_models("tv_*")
OWN = [name for name in ALL if name not in TORCHVISION]


def _shape(name: str) -> tuple[int, ...]:
    return TV_IMAGE if name in TORCHVISION else IMAGE


@pytest.fixture(scope="module", params=ALL)
def built(request):
    name = request.param
    torch.manual_seed(0)
    return name, create_model(name, _shape(name), K, **OPTIONS.get(name, {}))


def test_registry_lists_the_families_sorted():
    assert ALL == sorted(ALL)
    assert {"mlp", "cnn_k", "cnn5_k", "resnet18_k", "vgg8", "tv_resnet18"} <= set(ALL)
    assert list_models("resnet*") == ["resnet18_k", "resnet20", "resnet32", "resnet44", "resnet56"]
    assert list_models("nothing*") == []


def test_parameter_count(built):
    name, model = built
    assert count_parameters(model) == EXPECTED[name]


def test_forward_backward(built):
    name, model = built
    torch.manual_seed(1)
    model.train()
    model.zero_grad(set_to_none=True)
    x = torch.randn(2, *_shape(name))
    out = model(x)
    assert out.shape == (2, K)
    assert torch.isfinite(out).all()
    nn.functional.cross_entropy(out, torch.tensor([1, 7])).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


def test_no_inplace_modules(built):
    _, model = built
    assert not [n for n, m in model.named_modules() if getattr(m, "inplace", False)]


@pytest.mark.parametrize("name", OWN)
def test_each_relu_module_is_one_call_site(name):
    """Own families: every nn.ReLU module runs exactly once per forward, so a hook on it sees
    exactly one set of pre-activations."""
    model = create_model(name, IMAGE, K, **OPTIONS.get(name, {})).eval()
    calls = {}
    for n, m in model.named_modules():
        if isinstance(m, nn.ReLU):
            calls[n] = 0
            m.register_forward_hook(lambda mod, inp, out, n=n: calls.__setitem__(n, calls[n] + 1))
    with torch.no_grad():
        model(torch.randn(1, *IMAGE))
    assert calls and set(calls.values()) == {1}


# Own families without max-pools (cnn_k, lenet, vgg8_maxpool and vgg11..19 have them).
WITHOUT_MAX_POOL = ["mlp", "cnn5_k", "resnet18_k", "resnet20", "resnet32", "resnet44", "resnet56", "vgg8", "densenet40_12"]


@pytest.mark.parametrize("name", WITHOUT_MAX_POOL)
def test_relu_modules_are_the_only_nonlinearity(name):
    """Replacing every nn.ReLU module by identity leaves an affine map (eval mode, no max-pools):
    no hidden F.relu the region walker could not see."""
    torch.manual_seed(0)
    model = create_model(name, IMAGE, K, **OPTIONS.get(name, {})).double().eval()
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    for parent in list(model.modules()):
        for child_name, child in parent.named_children():
            if isinstance(child, nn.ReLU):
                setattr(parent, child_name, nn.Identity())
    x, y = torch.randn(2, 1, *IMAGE, dtype=torch.float64)
    with torch.no_grad():
        mixed = model(0.3 * x + 0.7 * y)
        expected = 0.3 * model(x) + 0.7 * model(y)
    torch.testing.assert_close(mixed, expected, rtol=1e-9, atol=1e-9)
    assert not torch.allclose(model(x), model(y))


@pytest.mark.parametrize("name", OWN)  # every own family has a Conv1d/pool1d twin; torchvision's have none
def test_one_d_inputs(name):
    model = create_model(name, SIGNAL, K, **OPTIONS.get(name, {}))
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AvgPool2d))]
    assert not convs
    out = model(torch.randn(3, *SIGNAL))
    assert out.shape == (3, K) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_refuses_one_d(name):
    with pytest.raises(NetgeomError, match="1-D") as err:
        create_model(name, SIGNAL, K)
    assert err.value.key == "model.arch"


@pytest.mark.parametrize(
    "arch, options, count",
    [
        ("cnn_k1", {}, 510),
        ("cnn_k64", {}, 1_556_106),
        ("cnn_k64", {"batch_norm": True}, 1_556_106 - 960 + 2 * 960),  # biases out, BN in
        ("resnet18_k1", {"batch_norm": False}, 2_902),
        ("resnet18_k8", {"batch_norm": False}, 175_690),
        ("resnet18_k64", {"batch_norm": False}, 11_168_266),
        ("resnet18_k64", {"batch_norm": True}, 11_173_962),  # the standard CIFAR ResNet18
        ("resnet18_k", {"width": 8, "batch_norm": False}, 175_690),
        ("mlp", {"depth": 0}, 3072 * 10 + 10),
        ("vgg16", {"batch_norm": True}, 14_728_266 - 4224),  # kuangliu's minus the redundant conv biases
    ],
)
def test_published_counts(arch, options, count):
    assert count_parameters(create_model(arch, IMAGE, K, **options)) == count


def test_width_in_the_name_equals_the_option():
    torch.manual_seed(3)
    a = create_model("cnn5_k3", SIGNAL, K)
    torch.manual_seed(3)
    b = create_model("cnn5_k", SIGNAL, K, width=3)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_same_seed_same_weights_other_seed_other_weights():
    def weights(seed):
        torch.manual_seed(seed)
        return torch.cat([p.flatten() for p in create_model("resnet18_k2", IMAGE, K).parameters()])

    assert torch.equal(weights(0), weights(0))
    assert not torch.equal(weights(0), weights(1))


def test_options_a_family_does_not_take_are_ignored_and_none_means_default():
    model = create_model("lenet", IMAGE, K, depth=7, activation="tanh", init="fixup", batch_norm=True, width=None)
    assert count_parameters(model) == 62_006
    assert count_parameters(create_model("cnn_k", IMAGE, K, width=None)) == 1_556_106  # default width 64


def test_mlp_activation_and_batch_norm():
    tanh = create_model("mlp", (5,), 3, width=4, depth=3, activation="tanh")
    assert sum(isinstance(m, nn.Tanh) for m in tanh.modules()) == 3
    assert not any(isinstance(m, nn.ReLU) for m in tanh.modules())
    bn = create_model("mlp", (5,), 3, width=4, depth=3, batch_norm=True)
    assert sum(isinstance(m, nn.BatchNorm1d) for m in bn.modules()) == 3
    # identity activation: the whole net is one affine map
    lin = create_model("mlp", (2, 3), 3, width=4, activation="identity").double()
    x, y = torch.randn(2, 5, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(lin(0.25 * x + 0.75 * y), 0.25 * lin(x) + 0.75 * lin(y))


def test_a_bottleneck_mlp_is_the_plain_mlp_with_rank_limited_hidden_weights():
    torch.manual_seed(0)
    narrow = create_model("mlp", (5,), 3, width=6, depth=3, bottleneck=2).double()
    # 5->6, then (6->2 without bias, 2->6) twice, then 6->3
    assert count_parameters(narrow) == (5 * 6 + 6) + 2 * (6 * 2 + 2 * 6 + 6) + (6 * 3 + 3)
    linears = [m for m in narrow if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features, m.bias is not None) for m in linears] == [
        (5, 6, True), (6, 2, False), (2, 6, True), (6, 2, False), (2, 6, True), (6, 3, True)]
    assert sum(isinstance(m, nn.ReLU) for m in narrow.modules()) == 3  # none after a bottleneck
    # the oracle: a plain MLP whose hidden-to-hidden weights are the products up @ down
    plain = create_model("mlp", (5,), 3, width=6, depth=3).double()
    plain_linears = [m for m in plain if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for target, source in zip(plain_linears, [linears[0], (linears[1], linears[2]), (linears[3], linears[4]), linears[5]]):
            if isinstance(source, tuple):
                down, up = source
                target.weight.copy_(up.weight @ down.weight)
                target.bias.copy_(up.bias)
            else:
                target.weight.copy_(source.weight)
                target.bias.copy_(source.bias)
    x = torch.randn(7, 5, dtype=torch.float64)
    torch.testing.assert_close(narrow(x), plain(x), rtol=1e-12, atol=1e-12)
    assert torch.linalg.matrix_rank(plain_linears[1].weight).item() == 2
    bn = create_model("mlp", (5,), 3, width=6, depth=2, bottleneck=2, batch_norm=True)
    assert sum(isinstance(m, nn.BatchNorm1d) for m in bn.modules()) == 2  # BN on the wide layers only


def test_kaiming_gives_a_bottleneck_unit_gain():
    torch.manual_seed(0)
    model = create_model("mlp", (100,), 10, width=1000, depth=2, bottleneck=400, init="kaiming")
    assert model[3].out_features == 400 and model[3].bias is None
    assert model[3].weight.std().item() == pytest.approx((1 / 1000) ** 0.5, rel=0.05)  # no ReLU follows
    assert model[4].weight.std().item() == pytest.approx((2 / 400) ** 0.5, rel=0.05)  # a ReLU follows


def test_fixup_init():
    torch.manual_seed(0)
    model = create_model("resnet20", IMAGE, K, batch_norm=False, init="fixup", width=32)
    blocks = [m for m in model.modules() if type(m).__name__ == "BasicBlock"]
    assert len(blocks) == 9
    for block in blocks:
        assert not block.conv2.weight.any()
        he_std = (2 / (block.conv1.weight.shape[0] * 9)) ** 0.5  # fan_out of a 3x3 conv
        assert block.conv1.weight.std().item() == pytest.approx(he_std / 3, rel=0.1)  # L^-1/2, L = 9
    assert not model.fc.weight.any() and not model.fc.bias.any()
    with torch.no_grad():
        assert not model(torch.randn(2, *IMAGE)).any()  # zero classifier: zero logits at init
    with pytest.raises(NetgeomError) as err:
        create_model("resnet20", IMAGE, K, batch_norm=True, init="fixup")
    assert err.value.key == "model.init"


def test_kaiming_init_draws_he_normal():
    torch.manual_seed(0)
    model = create_model("mlp", (1000,), 10, width=500, depth=1, init="kaiming")
    assert model[1].weight.std().item() == pytest.approx((2 / 1000) ** 0.5, rel=0.05)
    assert not model[1].bias.any()


@pytest.mark.parametrize(
    "arch, shape, options, key",
    [
        ("resnet99", IMAGE, {}, "model.arch"),
        ("mlp", IMAGE, {"width": 0}, "model.width"),
        ("mlp", IMAGE, {"width": -3}, "model.width"),
        ("cnn_k0", IMAGE, {}, "model.width"),
        ("resnet18_k8", IMAGE, {"width": 16}, "model.width"),
        ("mlp", IMAGE, {"depth": -1}, "model.depth"),
        ("mlp", IMAGE, {"activation": "gelu"}, "model.activation"),
        ("mlp", IMAGE, {"init": "orthogonal"}, "model.init"),
        ("mlp", IMAGE, {"bottleneck": 0}, "model.bottleneck"),
        ("mlp", IMAGE, {"bottleneck": 8, "depth": 1}, "model.bottleneck"),
        ("resnet18_k4", IMAGE, {"init": "xavier"}, "model.init"),
        ("resnet20", IMAGE, {"batch_norm": "yes"}, "model.batch_norm"),
        ("cnn_k4", (3, 4, 4), {}, "input_shape"),
        ("vgg11", (3, 16, 16), {}, "input_shape"),
        ("tv_alexnet", (3, 32, 32), {}, "input_shape"),
        ("tv_resnet18", (1, 32, 32), {}, "input_shape"),
        ("cnn_k4", (3072,), {}, "model.arch"),
        ("mlp", (3, 0, 4), {}, "input_shape"),
    ],
)
def test_bad_input_names_the_key(arch, shape, options, key):
    with pytest.raises(NetgeomError) as err:
        create_model(arch, shape, K, **options)
    assert err.value.key == key


def test_unknown_arch_lists_known_names():
    with pytest.raises(NetgeomError, match="resnet18_k") as err:
        create_model("resnet18k8", IMAGE, K)
    assert err.value.key == "model.arch"
    with pytest.raises(NetgeomError) as err:
        create_model("mlp", IMAGE, 0)
    assert err.value.key == "num_classes"


def test_register_model_adds_a_family():
    @register_model("test_tiny_k")
    def build(input_shape, num_classes, *, width=2):
        return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0], width), nn.ReLU(inplace=True), nn.Linear(width, num_classes))

    model = create_model("test_tiny_k5", (3,), 4, batch_norm=True)
    assert model[1].out_features == 5
    assert model[2].inplace is False  # create_model switches in-place off
    assert "test_tiny_k" in list_models("test_*")
    with pytest.raises(ValueError):
        register_model("test_tiny_k")(build)


# ---- pretrained weights -------------------------------------------------------------------


def _trained_bn_model():
    """resnet18_k2 with non-trivial BN running statistics (one train-mode forward)."""
    torch.manual_seed(0)
    model = create_model("resnet18_k2", IMAGE, K)
    with torch.no_grad():
        model.train()(torch.randn(4, *IMAGE) * 3 + 1)
    return model.eval()


@pytest.mark.parametrize("fmt", ["safetensors", "torch", "torch_wrapped"])
def test_pretrained_round_trip(tmp_path, fmt):
    source = _trained_bn_model()
    state = {k: v.clone() for k, v in source.state_dict().items()}
    path = tmp_path / ("w.safetensors" if fmt == "safetensors" else "w.pt")
    if fmt == "safetensors":
        save_file(state, str(path))
    elif fmt == "torch":
        torch.save(state, path)
    else:  # a training checkpoint layout: {"state_dict": ..., "epoch": ...}, DataParallel prefix
        torch.save({"state_dict": {"module." + k: v for k, v in state.items()}, "epoch": 3}, path)
    torch.manual_seed(1)  # a different fresh init, so only the file can make them agree
    loaded = create_model("resnet18_k2", IMAGE, K, pretrained=str(path)).eval()
    x = torch.randn(3, *IMAGE)
    with torch.no_grad():
        assert torch.equal(loaded(x), source(x))


def test_pretrained_other_class_count_keeps_the_fresh_classifier(tmp_path):
    torch.manual_seed(0)
    source = create_model("tv_resnet18", TV_IMAGE, 1000)
    path = tmp_path / "imagenet.pt"
    torch.save(source.state_dict(), path)
    with pytest.warns(UserWarning, match="classifier"):
        model = create_model("tv_resnet18", TV_IMAGE, K, pretrained=path)
    assert model.fc.out_features == K
    theirs = source.state_dict()
    for key, value in model.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(value, theirs[key]), key


def test_pretrained_that_does_not_fit_is_refused(tmp_path):
    path = tmp_path / "cnn3.safetensors"
    save_file(create_model("cnn_k3", IMAGE, K).state_dict(), str(path))
    with pytest.raises(NetgeomError, match="shape mismatch") as err:
        create_model("cnn_k4", IMAGE, K, pretrained=path)
    assert err.value.key == "model.pretrained"


def test_missing_or_corrupt_pretrained_file(tmp_path):
    good = tmp_path / "good.safetensors"
    save_file(create_model("cnn_k1", IMAGE, K).state_dict(), str(good))
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-50])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00\x01not a checkpoint" * 10)
    not_tensors = tmp_path / "list.pt"
    torch.save([1, 2, 3], not_tensors)
    for path in (tmp_path / "absent.pt", truncated, garbage, not_tensors):
        with pytest.raises(NetgeomError) as err:
            create_model("cnn_k1", IMAGE, K, pretrained=path)
        assert err.value.key == "model.pretrained", path


class _Payload:
    """Unpickling this writes a marker file: the shape of a malicious checkpoint."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_malicious_pickle_is_refused_without_running_it(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"conv.weight": torch.zeros(1), "evil": _Payload(marker)}
    if writer == "pickle":
        path.write_bytes(pickle.dumps(payload))
        pickle.loads(path.read_bytes())  # the payload is live: plain unpickling runs it
        assert marker.exists()
        marker.unlink()
    else:
        torch.save(payload, path)
    with pytest.raises(NetgeomError, match="refused") as err:
        create_model("cnn_k1", IMAGE, K, pretrained=path)
    assert err.value.key == "model.pretrained"
    assert not marker.exists()


def test_the_light_traits_match_what_every_registered_family_builds():
    """netgeom.model_traits (read by `netgeom check` without torch) against the built modules."""
    from netgeom.models import list_models
    from netgeom.model_traits import CONV_FREE_FAMILIES, MAX_POOL_FAMILIES, family

    from netgeom.models.registry import _BUILDERS

    zoo = [arch for arch in list_models() if _BUILDERS[arch].__module__.startswith("netgeom.models.")]  # not a test's toy
    assert len(zoo) >= 20
    for arch in zoo:
        name = f"{arch}8" if arch.endswith("_k") else arch
        assert family(name) == arch
        model = create_model(name, (3, 224, 224) if arch.startswith("tv_") else (3, 32, 32), 10)
        pools = any(isinstance(m, (torch.nn.MaxPool1d, torch.nn.MaxPool2d, torch.nn.MaxPool3d)) for m in model.modules())
        convs = any(isinstance(m, torch.nn.modules.conv._ConvNd) for m in model.modules())
        assert pools == (arch in MAX_POOL_FAMILIES), f"{arch}: max-pool {pools}; update netgeom/model_traits.py"
        assert (not convs) == (arch in CONV_FREE_FAMILIES), f"{arch}: conv layers {convs}; update netgeom/model_traits.py"


def test_the_mli_autoencoder_mirrors_its_encoder_and_reconstructs_the_input_shape():
    from netgeom.models.autoencoder import build_mlp_autoencoder

    model = build_mlp_autoencoder((1, 28, 28))  # Hinton and Salakhutdinov's 784-1000-500-250-30
    linears = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears == [(784, 1000), (1000, 500), (500, 250), (250, 30), (30, 250), (250, 500), (500, 1000), (1000, 784)]
    assert count_parameters(model) == sum(i * o + o for i, o in linears)
    x = torch.randn(2, 1, 28, 28)
    assert model(x).shape == x.shape
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == 6  # the code layer is linear
    bn = build_mlp_autoencoder((3, 8, 8), (16, 4), batch_norm=True)
    assert sum(isinstance(m, nn.BatchNorm1d) for m in bn.modules()) == 2
    with pytest.raises(NetgeomError, match="mli.autoencoder"):
        build_mlp_autoencoder((1, 8, 8), (16, 0))
