"""The exact region walker against dense sampling, closed forms and numerical integration."""

import numpy as np
import pytest
import torch
from scipy import integrate
from torch import nn
from torch.nn import functional as F

from netgeom.errors import NetgeomError
from netgeom.studies.input_paths import Paths
from netgeom.studies.regions import (
    PathRegions,
    count_regions_dense,
    path_statistics,
    segment_statistics,
    study_paths,
    walk_paths,
    walk_segments,
)
from tests.devicecheck import FactoryCalls

def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 20), nn.ReLU(), nn.Linear(20, 20), nn.ReLU(), nn.Linear(20, 3)).double()


def convnet(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(27, 8), nn.ReLU(), nn.Linear(8, 2)
    ).double()


class TinyResBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.ReLU())
        self.conv1 = nn.Conv1d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm1d(4)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv1d(4, 4, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.head = nn.Sequential(nn.AdaptiveAvgPool1d(2), nn.Flatten(), nn.Dropout(0.5), nn.Linear(8, 2))

    def forward(self, x):
        h = self.stem(x)
        h = self.relu2(self.conv2(self.relu1(self.bn(self.conv1(h)))) + h)
        return self.head(h)


def resnet(seed=0):
    torch.manual_seed(seed)
    net = TinyResBlock().double()
    with torch.no_grad():  # non-trivial running statistics
        net.bn.running_mean.uniform_(-0.3, 0.3)
        net.bn.running_var.uniform_(0.5, 2.0)
        net.bn.weight.uniform_(0.5, 1.5)
        net.bn.bias.uniform_(-0.2, 0.2)
    return net


def segments(shape, n, seed):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn((n, *shape), generator=g, dtype=torch.float64)
    x1 = torch.randn((n, *shape), generator=g, dtype=torch.float64)
    return x0, x1


def forward(net, x):
    with torch.no_grad():
        return net.eval()(x).reshape(len(x), -1)


def assert_matches_dense(net, x0, x1):
    regions = walk_segments(net, x0, x1)
    exact = regions.counts()
    # sample finely enough that every region holds at least two samples, so none can hide
    narrowest = (regions.t_end - regions.t_start).min()
    n_points = int(np.ceil(3.0 / narrowest))
    assert n_points <= 300_000  # fixtures keep the oracle affordable
    dense = count_regions_dense(net, x0, x1, n_points=max(n_points, 10_000), chunk=8192)
    np.testing.assert_array_equal(exact, dense)
    coarse = count_regions_dense(net, x0, x1, n_points=200)
    assert (coarse <= exact).all() and (coarse < exact).any()  # sampling undercounts, never overcounts
    assert exact.min() > 3  # non-trivial segments
    return regions


def test_mlp_counts_match_dense_sampling():
    x0, x1 = segments((12,), 6, seed=1)
    assert_matches_dense(mlp(), x0, x1)


def test_a_bottleneck_mlp_counts_match_dense_sampling():
    from netgeom.models import create_model

    torch.manual_seed(0)
    net = create_model("mlp", (12,), 3, width=20, depth=3, bottleneck=4).double()  # linear, ReLU-free bottlenecks
    x0, x1 = segments((12,), 6, seed=1)
    assert_matches_dense(net, x0, x1)


def test_conv_counts_match_dense_sampling():
    x0, x1 = segments((1, 6, 6), 4, seed=2)
    assert_matches_dense(convnet(), x0, x1)


def test_residual_block_with_batchnorm_matches_dense_sampling():
    x0, x1 = segments((1, 10), 4, seed=3)
    assert_matches_dense(resnet(), x0, x1)


def test_regions_tile_the_segment_and_outputs_are_continuous():
    net = mlp()
    x0, x1 = segments((12,), 5, seed=4)
    r = walk_segments(net, x0, x1)
    for i in range(len(x0)):
        rows = np.flatnonzero(r.segment == i)
        assert r.t_start[rows[0]] == 0.0 and r.t_end[rows[-1]] == 1.0
        np.testing.assert_array_equal(r.t_end[rows[:-1]], r.t_start[rows[1:]])
        np.testing.assert_allclose(r.f_exit[rows[:-1]], r.f_entry[rows[1:]], atol=1e-12)
        np.testing.assert_allclose(r.f_entry[rows[0]], forward(net, x0[i : i + 1])[0].numpy(), atol=1e-12)
        np.testing.assert_allclose(r.f_exit[rows[-1]], forward(net, x1[i : i + 1])[0].numpy(), atol=1e-10)
        # the region's affine map at x0 predicts f at a point inside the region
        k = rows[len(rows) // 2]
        t = 0.5 * (r.t_start[k] + r.t_end[k])
        inside = forward(net, (x0[i] + t * (x1[i] - x0[i]))[None])[0].numpy()
        np.testing.assert_allclose(r.offset[k] + t * r.slope[k], inside, atol=1e-10)


def test_linear_model_has_one_region_and_no_deviation():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(12, 7), nn.Identity(), nn.Linear(7, 3)).double()
    x0, x1 = segments((12,), 3, seed=5)
    r = walk_segments(net, x0, x1)
    stats = segment_statistics(r)
    np.testing.assert_array_equal(stats.regions, [1, 1, 1])
    np.testing.assert_array_equal(stats.density, [0, 0, 0])
    np.testing.assert_allclose(stats.absolute_deviation, 0.0, atol=1e-12)
    change = (forward(net, x1) - forward(net, x0)).numpy()
    np.testing.assert_allclose(stats.signed_variation, change, atol=1e-12)
    np.testing.assert_allclose(stats.variation, np.abs(change), atol=1e-12)


def test_a_zero_length_segment_is_one_region_and_bad_inputs_are_refused():
    x0, _ = segments((12,), 2, seed=12)
    stats = segment_statistics(walk_segments(mlp(), x0, x0.clone()))
    np.testing.assert_array_equal(stats.regions, [1, 1])
    np.testing.assert_array_equal(stats.density, [0.0, 0.0])
    np.testing.assert_array_equal(stats.absolute_deviation, 0.0)
    bad = x0.clone()
    bad[0, 3] = float("nan")
    with pytest.raises(NetgeomError, match="finite"):
        walk_segments(mlp(), x0, bad)


def test_absolute_deviation_and_variation_equal_numerical_integrals():
    net = mlp(seed=7)
    x0, x1 = segments((12,), 2, seed=6)
    r = walk_segments(net, x0, x1)
    stats = segment_statistics(r)
    for i in range(len(x0)):
        d = x1[i] - x0[i]
        f0, f1 = forward(net, x0[i : i + 1])[0], forward(net, x1[i : i + 1])[0]
        breaks = r.t_start[r.segment == i][1:]

        def f(t, j):
            return forward(net, (x0[i] + t * d)[None])[0, j].item()

        for j in range(3):
            dev = lambda t: abs(f(t, j) - (f0[j] + t * (f1[j] - f0[j])).item())  # noqa: E731
            numeric, _ = integrate.quad(dev, 0, 1, points=breaks, limit=500, epsabs=0, epsrel=1e-10)
            np.testing.assert_allclose(stats.absolute_deviation[i, j], d.norm().item() * numeric, rtol=1e-6)
            ts = np.sort(np.r_[0.0, breaks, 1.0])
            values = np.array([f(t, j) for t in ts])
            np.testing.assert_allclose(stats.variation[i, j], np.abs(np.diff(values)).sum(), rtol=1e-9)
        np.testing.assert_allclose(stats.length[i], d.norm().item())
        np.testing.assert_allclose(stats.density[i], (stats.regions[i] - 1) / d.norm().item())


def test_batching_does_not_change_results():
    net = convnet(seed=3)
    x0, x1 = segments((1, 6, 6), 6, seed=8)
    together = walk_segments(net, x0, x1)
    one_by_one = walk_segments(net, x0, x1, batch_size=1)
    np.testing.assert_array_equal(together.counts(), one_by_one.counts())
    np.testing.assert_allclose(together.t_start, one_by_one.t_start, rtol=0, atol=1e-12)
    a, b = segment_statistics(together), segment_statistics(one_by_one)
    np.testing.assert_allclose(a.absolute_deviation, b.absolute_deviation, rtol=1e-10)


def test_a_relu_after_a_relu_adds_no_regions():
    torch.manual_seed(0)
    once = nn.Sequential(nn.Linear(12, 20), nn.ReLU(), nn.Linear(20, 3)).double()
    twice = nn.Sequential(once[0], nn.ReLU(), nn.ReLU(), once[2])
    x0, x1 = segments((12,), 4, seed=9)
    np.testing.assert_array_equal(walk_segments(once, x0, x1).counts(), walk_segments(twice, x0, x1).counts())


def test_path_statistics_sum_segments_and_summary_averages():
    net = mlp()
    x0, x1 = segments((12,), 6, seed=10)
    seg = segment_statistics(walk_segments(net, x0, x1))
    path = path_statistics(seg, 3)
    np.testing.assert_array_equal(path.regions, [seg.regions[:3].sum(), seg.regions[3:].sum()])
    np.testing.assert_allclose(path.absolute_deviation[1], seg.absolute_deviation[3:].sum(axis=0))
    np.testing.assert_allclose(path.density, path.crossings / path.length)
    frame = path.to_frame()
    assert list(frame["variation_1"]) == list(path.variation[:, 1])
    with pytest.raises(NetgeomError):
        path_statistics(seg, 4)


class FunctionalRelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(12, 20), nn.Linear(20, 3)

    def forward(self, x):
        return self.b(F.relu(self.a(x)))


class OwnScale(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(12, 3)
        self.shift = nn.Parameter(torch.ones(3))

    def forward(self, x):
        return self.lin(x) + self.shift


@pytest.mark.parametrize(
    "model, words",
    [
        (nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2, 1)), "'1' is MaxPool2d"),
        (nn.Sequential(nn.Linear(12, 5), nn.ReLU(inplace=True), nn.Linear(5, 1)), "in-place ReLU"),
        (nn.Sequential(nn.Linear(12, 5), nn.Sigmoid(), nn.Linear(5, 1)), "'1' (Sigmoid) is not supported"),
        (OwnScale(), "holds parameters itself (shift)"),
    ],
)
def test_unsupported_models_are_refused(model, words):
    with pytest.raises(NetgeomError) as error:
        walk_segments(model, torch.zeros(1, 12), torch.ones(1, 12))
    assert error.value.key == "regions.model"
    assert words in str(error.value) and "Allowed" in str(error.value)


def test_a_functional_relu_is_caught_by_the_end_check():
    torch.manual_seed(0)
    x0, x1 = segments((12,), 4, seed=11)
    with pytest.raises(NetgeomError, match="nn.ReLU module"):
        walk_segments(FunctionalRelu().double(), x0, x1)


def test_zoo_models_walk_or_are_refused():
    from netgeom.models import create_model

    torch.manual_seed(0)
    net = create_model("resnet18_k", (3, 8, 8), 4, width=2)  # residual blocks with BatchNorm
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    x0 = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    x1 = x0 + 0.2 * torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(14), dtype=torch.float64)
    assert_matches_dense(net, x0, x1)
    with pytest.raises(NetgeomError, match="MaxPool2d"):
        walk_segments(create_model("vgg8_maxpool", (3, 32, 32), 10), x0, x1)


def closed_paths(n_paths=3, n_anchors=5, seed=20):
    g = torch.Generator().manual_seed(seed)
    return Paths(torch.randn(n_paths, n_anchors, 12, generator=g, dtype=torch.float64), True, np.arange(n_paths))


def _patterns(net, x):
    """Activation patterns (N, units) of every nn.ReLU, recorded with forward hooks."""
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(i[0].reshape(len(x), -1) > 0)) for m in net.modules() if isinstance(m, nn.ReLU)]
    with torch.no_grad():
        net.eval()(x)
    for hook in hooks:
        hook.remove()
    return torch.cat(seen, dim=1)


def test_closed_path_regions_count_anchor_straddling_regions_twice_and_crossings_do_not():
    net, paths = mlp(seed=4), closed_paths()
    stats = study_paths(net, paths)
    np.testing.assert_array_equal(stats.regions, stats.crossings + paths.segments_per_path)
    narrowest = np.diff(np.sort(walk_paths(net, paths).to_frame()[["t_start", "t_end"]].to_numpy(), axis=1)).min()
    n = int(np.ceil(3.0 / narrowest))
    assert n <= 300_000
    t = torch.linspace(0.0, 1.0, n + 1, dtype=torch.float64)[:-1]  # t = 1 is the next segment's t = 0
    for p in range(paths.n_paths):
        anchors = paths.anchors[p]
        loop = torch.cat([a + t[:, None] * (b - a) for a, b in zip(anchors, torch.roll(anchors, -1, 0))])
        pattern = _patterns(net, loop)
        pieces = int((pattern != torch.roll(pattern, 1, 0)).any(dim=1).sum())  # cyclic: the loop closes
        assert pieces == stats.crossings[p] > 0
    opened = Paths(paths.anchors, False, paths.source)
    open_stats = study_paths(net, opened)
    np.testing.assert_array_equal(open_stats.regions, open_stats.crossings + opened.segments_per_path)


@pytest.mark.parametrize("closed", [True, False])
def test_per_region_table_reproduces_the_path_statistics(closed):
    net = mlp(seed=5)
    paths = Paths(closed_paths(n_paths=4, n_anchors=4, seed=21).anchors, closed, np.arange(4))
    expected = study_paths(net, paths, batch_size=5)
    walked = walk_paths(net, paths, batch_size=5)  # several chunks of whole paths
    table = walked.to_frame()
    assert list(table.columns[:6]) == ["path", "segment", "region", "t_start", "t_end", "length"]
    per_path = paths.segments_per_path
    outputs = 3
    for p in range(paths.n_paths):
        crossings, length, variation, signed, deviation = 0, 0.0, np.zeros(outputs), np.zeros(outputs), np.zeros(outputs)
        for k in range(per_path):
            rows = table[(table["path"] == p) & (table["segment"] == k)].sort_values("region")
            assert list(rows["region"]) == list(range(len(rows)))
            assert rows["t_start"].iloc[0] == 0.0 and rows["t_end"].iloc[-1] == 1.0
            np.testing.assert_array_equal(rows["t_end"].to_numpy()[:-1], rows["t_start"].to_numpy()[1:])
            f_entry = rows[[f"f_entry_{j}" for j in range(outputs)]].to_numpy()
            slope = rows[[f"slope_{j}" for j in range(outputs)]].to_numpy()
            t0, t1 = rows["t_start"].to_numpy(), rows["t_end"].to_numpy()
            f_exit = f_entry + (t1 - t0)[:, None] * slope
            x0, x1 = paths.anchors[p, k], paths.anchors[p, (k + 1) % paths.n_anchors]
            np.testing.assert_allclose(rows["length"], (x1 - x0).norm().item())
            np.testing.assert_allclose(f_entry[0], forward(net, x0[None])[0].numpy(), atol=1e-12)
            np.testing.assert_allclose(f_exit[-1], forward(net, x1[None])[0].numpy(), atol=1e-10)
            crossings += len(rows) - 1
            length += rows["length"].iloc[0]
            variation += np.abs(f_exit - f_entry).sum(axis=0)
            signed += (f_exit - f_entry).sum(axis=0)
            chord = lambda t, j: f_entry[0, j] + t * (f_exit[-1, j] - f_entry[0, j])  # noqa: E731
            for j in range(outputs):
                for r in range(len(rows)):
                    h = lambda t: f_entry[r, j] + (t - t0[r]) * slope[r, j] - chord(t, j)  # noqa: E731
                    value, _ = integrate.quad(lambda t: abs(h(t)), t0[r], t1[r], epsabs=0, epsrel=1e-12, limit=200)
                    deviation[j] += rows["length"].iloc[0] * value
        assert expected.crossings[p] == crossings and expected.regions[p] == crossings + per_path
        np.testing.assert_allclose(expected.density[p], crossings / length, rtol=1e-12)
        np.testing.assert_allclose(expected.variation[p], variation, rtol=1e-10)
        np.testing.assert_allclose(expected.signed_variation[p], signed, rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(expected.absolute_deviation[p], deviation, rtol=1e-8)
    shuffled = table.sample(frac=1.0, random_state=0)
    again = PathRegions.from_frame(shuffled, per_path).statistics()
    for name in ("regions", "crossings", "length", "density", "variation", "signed_variation", "absolute_deviation"):
        np.testing.assert_array_equal(getattr(again, name), getattr(expected, name))


def test_the_walk_makes_every_tensor_on_the_inputs_device():
    """The walk runs where its inputs are (the regions stage puts them on execution.device); a
    factory without a device would put a tensor on the CPU beside CUDA inputs. Checked here on the
    CPU by the calls themselves; tests/test_devices.py compares a GPU walk with the CPU's."""
    net, paths = resnet(seed=2), Paths(torch.randn(2, 3, 1, 10, generator=torch.Generator().manual_seed(4), dtype=torch.float64), True, np.arange(2))
    x0, x1 = paths.segments()
    calls = FactoryCalls()
    with calls:
        walk_segments(net, x0, x1, batch_size=2)
        count_regions_dense(net, x0[:1], x1[:1], n_points=50)
        walk_paths(net, paths, batch_size=3).statistics()
    assert calls.without_device == []


def test_a_model_prepared_on_one_device_refuses_inputs_on_another():
    from netgeom.studies.regions import prepare_model

    prep = prepare_model(mlp())
    assert prep.device == torch.device("cpu") and prepare_model(prep, "cpu") is prep
    with pytest.raises(NetgeomError, match="prepared on cpu, the inputs are on meta"):
        prepare_model(prep, "meta")
