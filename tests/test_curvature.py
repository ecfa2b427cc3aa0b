"""Curvature and loss surfaces against oracles: the dense Hessian, closed forms, invariances."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from netgeom.studies.curvature import (
    Flat,
    filter_normalized_direction,
    hessian_operator,
    hutchinson_trace,
    hvp,
    parameters_of,
    smoothed_density,
    spectral_density,
    surface,
    top_eigenvalues,
)


def small_problem(activation=nn.Tanh, seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 6), activation(), nn.Linear(6, 3)).double()
    x = torch.randn(40, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (40,))
    return model, [(x[:25], y[:25]), (x[25:], y[25:])]  # unequal batches: weighted by size


def dense_hessian(model, batches) -> np.ndarray:
    params = parameters_of(model)
    flat = Flat(params)
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])

    def loss(v):
        return torch.nn.functional.cross_entropy(functional_call(model, flat.unflatten(v), (x,)), y)

    return torch.autograd.functional.hessian(loss, flat.flatten(params)).numpy()


def test_hvp_and_top_eigenvalues_equal_the_dense_hessians():
    model, batches = small_problem()
    dense = dense_hessian(model, batches)
    matvec, dim = hessian_operator(model, batches)
    v = torch.randn(dim, dtype=torch.float64)
    assert np.allclose(matvec(v).numpy(), dense @ v.numpy(), atol=1e-10)
    # and forward-over-reverse from scratch (retain_graph=False, `hvp`), the batches weighted by size
    scratch, _ = hessian_operator(model, batches, retain_graph=False)
    assert np.allclose(scratch(v).numpy(), dense @ v.numpy(), atol=1e-10)
    exact = np.sort(np.linalg.eigvalsh(dense))[::-1]
    top, steps = top_eigenvalues(matvec, dim, k=3, tol=1e-10, max_steps=dim)
    assert np.allclose(top, exact[:3], rtol=1e-7, atol=1e-10) and steps <= dim


def known_spectrum(eigenvalues, seed: int):
    """v -> A v for a symmetric A with the given eigenvalues in a random orthonormal basis."""
    d = torch.tensor(eigenvalues, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(len(d), len(d), generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    a = q @ torch.diag(d) @ q.T
    return (lambda v: a @ v), len(d)


@pytest.mark.parametrize("k", [3, 5])
def test_the_top_k_below_a_tight_cluster_are_not_replaced_by_a_separated_eigenvalue(k):
    # A cluster at the top with relative gaps (2e-4) under tol (1e-3), then two separated outliers
    # and a bulk near 0. Checked on the top-k pairs alone, the k-th Ritz value converged on the
    # outlier 1.0 before the cluster split (wrong in 5/10 seeds for k = 3, 10/10 for k = 5).
    bulk = np.abs(np.random.default_rng(0).normal(0, 0.05, 300))
    cluster = [5.0 - 1e-3 * i for i in range(k)]
    for seed in range(10):
        matvec, dim = known_spectrum(cluster + [1.0, 0.8] + list(bulk), seed)
        top, _ = top_eigenvalues(matvec, dim, k=k, tol=1e-3, seed=seed)
        assert np.allclose(top, cluster, atol=2e-3), (seed, top)


def test_top_eigenvalues_are_the_algebraically_largest_and_k1_needs_no_guard_steps():
    matvec, dim = known_spectrum([-10.0, 3.0, 2.0, 1.0] + [0.01 * i for i in range(40)], seed=0)
    top, _ = top_eigenvalues(matvec, dim, k=3, tol=1e-8, max_steps=dim)
    assert np.allclose(top, [3.0, 2.0, 1.0])
    # k = 1 stops on its own residual: no more steps than the top pair alone needs.
    _, steps_one = top_eigenvalues(matvec, dim, k=1, tol=1e-3)
    _, steps_three = top_eigenvalues(matvec, dim, k=3, tol=1e-3)
    assert steps_one < steps_three


def test_the_curvature_functions_leave_every_submodules_mode_as_they_found_it():
    # A training model with its BatchNorm frozen (in eval): `model.train(was)` on exit would put
    # the BN back in train mode; each submodule's own flag must come back.
    from netgeom.training.loop import predict

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3)).double()
    model.train()
    model[1].eval()
    x, y = torch.randn(16, 4, dtype=torch.float64), torch.randint(0, 3, (16,))
    params = parameters_of(model)
    zero = {k: torch.zeros_like(v) for k, v in params.items()}
    calls = {
        "hvp": lambda: hvp(model, params, [(x, y)], zero),
        "hessian_operator": lambda: hessian_operator(model, [(x, y)]),
        "surface": lambda: surface(model, params, [zero], [(0.0,)], [(x, y)]),
        "predict": lambda: predict(model, x, batch_size=8),
    }
    for name, call in calls.items():
        call()
        assert [m.training for m in model] == [True, False, True, True], name


def test_hutchinson_converges_to_the_exact_trace():
    model, batches = small_problem()
    exact = float(np.trace(dense_hessian(model, batches)))
    matvec, dim = hessian_operator(model, batches)
    few, few_se = hutchinson_trace(matvec, dim, probes=20, seed=1)
    many, many_se = hutchinson_trace(matvec, dim, probes=800, seed=1)
    assert abs(many - exact) <= 4 * many_se and many_se < few_se
    assert abs(few - exact) <= 5 * few_se


def test_spectral_density_integrates_to_one_and_matches_the_spectrums_moments():
    model, batches = small_problem()
    dense = dense_hessian(model, batches)
    matvec, dim = hessian_operator(model, batches)
    probes, steps = 3, 8
    nodes, weights = spectral_density(matvec, dim, probes=probes, steps=steps, seed=2)
    assert weights.sum() == pytest.approx(1.0, abs=1e-12) and (weights >= 0).all()
    # Gauss quadrature is exact up to degree 2m - 1: each probe's rule reproduces v^T H^p v / v^T v
    g = torch.Generator().manual_seed(2)
    vs = [(torch.randint(0, 2, (dim,), generator=g, dtype=torch.float64) * 2 - 1).numpy() for _ in range(probes)]
    for p in range(0, 2 * steps):
        expected = np.mean([v @ np.linalg.matrix_power(dense, p) @ v / (v @ v) for v in vs])
        assert (weights * nodes**p).sum() == pytest.approx(expected, rel=1e-6, abs=1e-9), p
    grid = np.linspace(nodes.min() - 1, nodes.max() + 1, 4001)
    assert np.trapezoid(smoothed_density(nodes, weights, grid, 0.05), grid) == pytest.approx(1.0, abs=1e-4)


def test_a_quadratic_models_surface_is_its_closed_form():
    torch.manual_seed(3)
    a = torch.randn(5, 5, dtype=torch.float64)
    a = a @ a.T

    class Quadratic(nn.Module):  # logits (0, -q(theta)) with q = theta^T A theta / 2: CE(label 0) = log(1 + e^-q)
        def __init__(self):
            super().__init__()
            self.theta = nn.Parameter(torch.randn(1, 5, dtype=torch.float64))

        def forward(self, x):
            q = 0.5 * (self.theta @ a @ self.theta.T).reshape(1, 1).expand(x.shape[0], 1)
            return torch.cat([torch.zeros_like(q), -q], 1)

    model = Quadratic()
    params = parameters_of(model)
    x, y = torch.zeros(4, 1, dtype=torch.float64), torch.zeros(4, dtype=torch.long)
    d = {"theta": torch.randn(1, 5, dtype=torch.float64)}
    alphas = [-1.0, -0.3, 0.0, 0.5, 1.2]
    got = [loss for loss, _ in surface(model, params, [d], [(t,) for t in alphas], [(x, y)])]
    theta = params["theta"][0]
    for t, loss in zip(alphas, got):
        point = theta + t * d["theta"][0]
        q = float(0.5 * point @ a @ point)
        assert loss == pytest.approx(float(np.log1p(np.exp(-q))), rel=1e-10)  # CE of logits (0, -q), label 0


def test_filter_normalisation_gives_each_filter_the_weights_norm_and_biases_none():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 4 * 4, 7))
    params = parameters_of(model)
    d = filter_normalized_direction(params, torch.Generator().manual_seed(0))
    draws = torch.Generator().manual_seed(0)  # the same Gaussian draws, in parameter order
    for name, w in params.items():
        drawn = torch.randn(w.shape, generator=draws, dtype=w.dtype).reshape(w.shape[0], -1)
        if w.dim() > 1:
            rows = d[name].reshape(w.shape[0], -1)
            assert torch.allclose(rows.norm(dim=1), w.reshape(w.shape[0], -1).norm(dim=1), rtol=1e-5)
            # each filter is its random draw rescaled (not the weights themselves)
            assert torch.allclose(rows, drawn * (rows.norm(dim=1) / drawn.norm(dim=1))[:, None], rtol=1e-5, atol=1e-7)
        else:
            assert torch.equal(d[name], torch.zeros_like(w))


def test_the_surface_is_invariant_to_a_positive_rescaling_of_relu_layers():
    model, batches = small_problem(nn.ReLU, seed=5)
    params = parameters_of(model)
    c = 3.7  # layer 1 times c, layer 2's weights over c: the same function
    scaled = {"0.weight": params["0.weight"] * c, "0.bias": params["0.bias"] * c, "2.weight": params["2.weight"] / c, "2.bias": params["2.bias"]}
    points = [(a, b) for a in (-0.8, 0.0, 0.6) for b in (-0.5, 0.4)]
    surfaces = []
    for p in (params, scaled):
        g = torch.Generator().manual_seed(9)
        directions = [filter_normalized_direction(p, g), filter_normalized_direction(p, g)]
        surfaces.append(surface(model, p, directions, points, batches))
    assert np.allclose(np.array(surfaces[0]), np.array(surfaces[1]), rtol=1e-9, atol=1e-12)
    assert surfaces[0][0] != surfaces[0][1]  # and the surface is not flat


def test_the_surfaces_loss_and_accuracy_at_a_moved_point_are_the_models_by_hand():
    model, batches = small_problem(nn.ReLU, seed=6)
    params = parameters_of(model)
    g = torch.Generator().manual_seed(2)
    directions = [filter_normalized_direction(params, g), filter_normalized_direction(params, g)]
    (loss, accuracy), = surface(model, params, directions, [(0.7, -0.4)], batches)
    moved = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in moved.named_parameters():
            p += 0.7 * directions[0][name] - 0.4 * directions[1][name]
        x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
        logits = moved(x)
    assert loss == pytest.approx(float(torch.nn.functional.cross_entropy(logits, y)), rel=1e-12)
    assert accuracy == pytest.approx(float((logits.argmax(1) == y).double().mean()), abs=1e-15)
    assert 0 < accuracy < 1  # a point where correct and wrong samples both count


# --------------------------------------------------------------------------- the stage

CURVATURE = {"enabled": True, "samples": 96, "batch_size": 40, "groups": ["all", "clean", "noisy"], "top_k": 2, "trace_probes": 4,
             "density_probes": 1, "density_steps": 6, "surface": {"resolution": 3, "span": 0.5, "shards": 3, "line": 5}}


@pytest.fixture
def curvature_project(trained_projects, tmp_path, monkeypatch):
    root = trained_projects.copy(tmp_path / "project", {"train": {"epochs": 2, "checkpoints": {"epochs": [1]}}}, [("split",), ("corrupt",), ("train",)])
    monkeypatch.chdir(root)
    from tests.conftest import write_params

    write_params(root, train={"epochs": 2, "checkpoints": {"epochs": [1]}}, curvature={**CURVATURE, "checkpoints": "all"})
    return root


def test_the_stage_measures_each_checkpoint_and_fills_the_surface_resumably(curvature_project):
    import pandas as pd

    from netgeom.layout import Layout
    from netgeom.params import load_params
    from netgeom.runs import Cell, cell_run, load_cell_data, load_state, model_for_run
    from netgeom.stages.curvature import _subset
    from tests.conftest import ok

    out = ok("curvature")
    folder = curvature_project / "artifacts/studies/curvature/mlp_w16-n0.2-r0"
    table = pd.read_parquet(folder / "curvature.parquet")
    assert sorted(table["epoch"].unique()) == [0, 1, 2] and set(table["group"]) == {"all", "clean", "noisy"}
    assert "top eigenvalue" in out
    # the final checkpoint's top eigenvalue, recomputed from the same subset with the study's functions
    params = load_params()
    settings, run = cell_run(params, Layout(curvature_project), Cell(16, 0.2, 0))
    model = model_for_run(run.info)
    model.load_state_dict(load_state(run.final_checkpoint()))
    batches = _subset(load_cell_data(settings, Layout(curvature_project)), params.curvature)
    matvec, dim = hessian_operator(model, batches["all"])
    top, _ = top_eigenvalues(matvec, dim, k=2, tol=1e-3, max_steps=100)
    final = table[(table["epoch"] == 2) & (table["group"] == "all")].iloc[0]
    assert final["lambda_max"] == pytest.approx(top[0], rel=1e-9)
    assert final["samples"] == 96 and table[table["group"] == "clean"]["samples"].iloc[0] + table[table["group"] == "noisy"]["samples"].iloc[0] == 96
    # the surface: 9 points in 3 shards; a lost shard is the only one recomputed
    shards = sorted(folder.glob("shard-*-of-003.parquet"))
    assert len(shards) == 3 and sum(len(pd.read_parquet(s)) for s in shards) == 9
    kept = {s.name: s.stat().st_mtime_ns for s in shards[1:]}
    shards[0].unlink()
    ok("curvature")
    assert shards[0].exists() and {s.name: s.stat().st_mtime_ns for s in shards[1:]} == kept
    centre = pd.concat([pd.read_parquet(s) for s in shards]).query("x == 0 and y == 0").iloc[0]
    assert centre["loss"] == pytest.approx(surface(model, parameters_of(model), [{k: 0 * v for k, v in parameters_of(model).items()}], [(0.0,)],
                                                   batches["all"])[0][0], rel=1e-6)


def test_pieces_of_another_surface_are_not_reused(curvature_project):
    import pandas as pd

    from tests.conftest import ok, write_params

    ok("curvature")
    folder = curvature_project / "artifacts/studies/curvature/mlp_w16-n0.2-r0"
    write_params(curvature_project, train={"epochs": 2, "checkpoints": {"epochs": [1]}},
                 curvature={**CURVATURE, "surface": {**CURVATURE["surface"], "span": 0.25}})
    ok("curvature")
    merged = pd.concat([pd.read_parquet(s) for s in sorted(folder.glob("shard-*-of-003.parquet"))])
    assert sorted(merged["x"].unique()) == [-0.25, 0.0, 0.25]  # every piece is of the new grid


def test_the_1d_cut_runs_through_the_surfaces_first_axis(curvature_project):
    """The cut follows the 2-D surface's first direction: where their points meet (y = 0) they agree."""
    import pandas as pd

    from tests.conftest import ok

    ok("curvature")
    folder = curvature_project / "artifacts/studies/curvature/mlp_w16-n0.2-r0"
    line = pd.read_parquet(folder / "line.parquet").set_index("x")
    assert list(line.index) == [-0.5, -0.25, 0.0, 0.25, 0.5]
    grid = pd.concat([pd.read_parquet(s) for s in folder.glob("shard-*-of-003.parquet")]).query("y == 0").set_index("x")
    for x in (-0.5, 0.0, 0.5):
        assert line.loc[x, "loss"] == pytest.approx(grid.loc[x, "loss"], rel=1e-9)
        assert line.loc[x, "accuracy"] == grid.loc[x, "accuracy"]


def test_curvature_metrics_reach_mlflow_per_checkpoint_and_figures_the_report(curvature_project, monkeypatch):
    import json

    import mlflow

    from netgeom.layout import Layout
    from netgeom.tracking import runs_table
    from tests.conftest import ok, write_params

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    write_params(curvature_project, train={"epochs": 2, "checkpoints": {"epochs": [1]}}, curvature={**CURVATURE, "checkpoints": "all"},
                 mlflow={"enabled": True, "experiment": "curvature"}, grid={"widths": [16], "noise": [0.2], "seed_offsets": [0]})
    ok("train"), ok("curvature"), ok("mlflow", "sync")
    summary = json.loads((curvature_project / "artifacts/studies/curvature/mlp_w16-n0.2-r0/summary.json").read_text())
    runs = runs_table(Layout(curvature_project), "curvature")
    history = mlflow.MlflowClient().get_metric_history(runs["run_id"].iloc[0], "curvature/lambda_max.noisy")
    assert [m.step for m in history] == [0, 1, 2]
    assert [m.value for m in history] == pytest.approx([summary[str(e)]["lambda_max"]["noisy"] for e in (0, 1, 2)])
    ok("report")
    names = {p.name for p in (curvature_project / "reports/figures").iterdir()}
    assert {"curvature_sharpness.png", "curvature_groups.png", "curvature_epochs.png", "curvature_line.png",
            "curvature_density.png", "curvature_surface.png"} <= names
    headline = json.loads((curvature_project / "reports/summary.json").read_text())
    assert "curvature_lambda_max" in json.dumps(headline)


def _stage_tables(folder) -> dict:
    import pandas as pd

    names = ["curvature", "spectrum", "density", "line"] + sorted(s.stem for s in folder.glob("shard-*.parquet"))
    return {name: pd.read_parquet(folder / f"{name}.parquet") for name in names}


def test_the_stage_with_execution_device_cpu_given_explicitly_equals_the_default(curvature_project):
    """The stage moves the model, the subset and the Krylov vectors to `execution.device`: named
    explicitly as the CPU, every table is bit-identical to the default's (auto on a CPU-only host)."""
    import shutil

    import pandas as pd

    from tests.conftest import ok, write_params

    folder = curvature_project / "artifacts/studies/curvature/mlp_w16-n0.2-r0"
    ok("curvature")
    default = _stage_tables(folder)
    shutil.rmtree(folder)
    write_params(curvature_project, train={"epochs": 2, "checkpoints": {"epochs": [1]}}, curvature={**CURVATURE, "checkpoints": "all"},
                 execution={"device": "cpu"})
    ok("curvature")
    explicit = _stage_tables(folder)
    assert default.keys() == explicit.keys() and len(default) == 4 + 3
    for name, table in default.items():
        pd.testing.assert_frame_equal(table, explicit[name], check_exact=True)


def test_the_krylov_functions_keep_their_vectors_on_the_device_they_are_given():
    """The probes come from a CPU generator whatever the device: the same seed, the same numbers."""
    model, batches = small_problem()
    matvec, dim = hessian_operator(model, batches)
    seen = []

    def recording(v):
        seen.append(v.device)
        return matvec(v)

    assert hutchinson_trace(recording, dim, probes=3, seed=2, device="cpu") == hutchinson_trace(matvec, dim, probes=3, seed=2)
    assert top_eigenvalues(recording, dim, k=2, seed=2, device=torch.device("cpu"))[0].tolist() == top_eigenvalues(matvec, dim, k=2, seed=2)[0].tolist()
    assert set(seen) == {torch.device("cpu")}


def test_a_surface_cut_off_midway_is_resumed_after_dvc_deleted_the_outputs(curvature_project, monkeypatch):
    """A crash after two of the three pieces: DVC deletes the stage's outputs before it re-runs it,
    but the finished pieces wait in the staging folder, so the rerun computes only the third and
    the result equals an uninterrupted run's."""
    import shutil

    import pandas as pd
    from typer.testing import CliRunner

    from netgeom.cli import app
    from netgeom.stages import curvature as stage
    from tests.conftest import ok

    folder = curvature_project / "artifacts/studies/curvature/mlp_w16-n0.2-r0"
    staging = curvature_project / ".netgeom/staging/studies/curvature/mlp_w16-n0.2-r0"
    ok("curvature")
    uninterrupted = _stage_tables(folder)
    assert not staging.exists()  # gone once the surface is whole
    shutil.rmtree(folder)
    real, computed = stage.compute_surface_shard, []

    def killed_after_two(params, layout, cell, out, index, count):
        if len(computed) == 2:
            raise KeyboardInterrupt  # the process dies here
        real(params, layout, cell, out, index, count)
        computed.append(index)

    monkeypatch.setattr(stage, "compute_surface_shard", killed_after_two)
    try:
        result = CliRunner().invoke(app, ["curvature"])
        assert result.exit_code != 0
    except KeyboardInterrupt:
        pass
    assert sorted(p.name for p in staging.glob("shard-*.parquet")) == ["shard-000-of-003.parquet", "shard-001-of-003.parquet"]
    assert not folder.exists()  # the crashed run published nothing (DVC would delete a folder there before the rerun)
    computed.clear()

    def counted(params, layout, cell, out, index, count):
        computed.append(index)
        real(params, layout, cell, out, index, count)

    monkeypatch.setattr(stage, "compute_surface_shard", counted)
    out = ok("curvature")
    assert "mlp_w16-n0.2-r0: 2 of 3 surface pieces found from an earlier run; computing the other 1" in out  # the rerun says so
    assert computed == [2] and not staging.exists()
    again = _stage_tables(folder)
    assert again.keys() == uninterrupted.keys()
    for name, table in uninterrupted.items():
        pd.testing.assert_frame_equal(table, again[name], check_exact=True)
