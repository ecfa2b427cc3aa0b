"""Every preset validates; each real-data preset runs, scaled down, through the real pipeline and
writes the headline numbers the README's findings table quotes."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import yaml

from typer.testing import CliRunner

from netgeom.cli import app
from tests.conftest import ok
from tests.presets_helpers import REPO, merge, run_preset
from tests.test_pipeline import sh

PRESETS = sorted(p.stem for p in (REPO / "presets").glob("*.yaml"))


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_validates(project, name):
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    preset = yaml.safe_load((REPO / "presets" / f"{name}.yaml").read_text())
    merged = merge(merge(base, preset), {"mlflow": {"enabled": False}})
    (project / "params.yaml").write_text(yaml.safe_dump(merged))
    assert ok("preset", str(REPO / "presets" / f"{name}.yaml")).startswith("-S ")
    from netgeom.data import get_source
    from netgeom.data.embedded import NpyDataset
    from netgeom.models import create_model
    from netgeom.params import ModelParams
    from netgeom.runs import effective_model

    source = get_source(merged["data"]["name"])
    # the preset's model builds for its data, as training will (check imports no torch, so it cannot tell)
    model = effective_model(ModelParams(**{**merged["model"], "width": merged["grid"]["widths"][0]}))
    create_model(model.arch, source.info.input_shape, source.info.num_classes, **model.options())
    if isinstance(source, NpyDataset):  # embedded: materialised where params.yaml points, as `make data` does
        source.materialise(project / merged["data"]["root"])
        assert "groups valid" in ok("check")
    else:  # real files this machine may lack: check's only refusal may be their absence
        result = CliRunner().invoke(app, ["check"])
        assert "groups valid" in result.output or result.output.startswith("netgeom: error: data.root: "), result.output


def finite(*values) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def test_mnist5k_double_descent_scaled_down(tmp_path):
    summary = run_preset("mnist5k_double_descent", tmp_path, sh)
    for noise in ("noise_0pct", "noise_20pct"):
        numbers = summary[noise]
        assert finite(numbers["test_error_rise"], numbers["lipschitz_at_peak"], numbers["peak_test_error"])
        assert numbers["test_error_rise"] >= 0 and numbers["rise_width"] in (2, 4)
    assert "star" not in summary and "mli" not in summary


def test_mnist5k_star_width_sweep_scaled_down(tmp_path):
    summary = run_preset("mnist5k_star_width_sweep", tmp_path, sh)
    star = summary["star"]
    assert finite(star["star_barrier"], star["regular_barrier"]) and 0 <= star["p_value"] <= 1
    assert (tmp_path / "reports" / "figures" / "star_barriers.png").exists()


def test_fashion_mnist_mli_scaled_down(tmp_path):
    summary = run_preset("fashion_mnist_mli", tmp_path, sh)
    mli = summary["mli"]
    assert {"sgd_converged", "sgd_bn_converged", "adam_converged", "adam_bn_converged"} <= set(mli)
    assert (tmp_path / "reports" / "figures" / "mli_preset.png").exists()


def test_fashion_mnist_hyperplanes_scaled_down(tmp_path):
    summary = run_preset("fashion_mnist_hyperplanes", tmp_path, sh)
    assert 0 <= summary["noise_0pct"]["hyperplane_mass"] <= 1 and 0 <= summary["noise_0pct"]["hyperplane_mass_init"] <= 1
    rhos = summary["reinit"]
    for reset in ("init", "rand"):  # the seed's claim (reset to init) and the fresh draw
        seeds = [v for k, v in rhos.items() if k.startswith(f"bias_{reset}_drop_rho_replicate")]
        # a seed still at chance after two epochs drops nothing under any reset: no rho, left out
        assert seeds and {k for k in rhos if k.startswith(f"bias_{reset}")} <= {f"bias_{reset}_drop_rho_replicate0", f"bias_{reset}_drop_rho_replicate1", f"bias_{reset}_drop_rho_mean"}
        assert all(-1 <= v <= 1 for v in seeds) and rhos[f"bias_{reset}_drop_rho_mean"] == pytest.approx(sum(seeds) / len(seeds))


def test_cifar10_mlp_hyperplanes_scaled_down(tmp_path):
    """The seed's fully connected supplement (BN MLP with linear bottlenecks, SGD, step decay,
    augmentation) on CIFAR-10-format files: every linear layer, bottlenecks included, gets its
    projection statistics and a re-initialisation row per checkpoint."""
    overrides = {"model": {"bottleneck": 8}, "grid": {"widths": [32], "seed_offsets": [0]}, "train": {"step_size": 1}}
    summary = run_preset("cifar10_mlp_hyperplanes", tmp_path, sh, overrides)
    assert 0 <= summary["noise_0pct"]["hyperplane_mass"] <= 1
    run = "mlp_w32-n0.0-r0"
    info = json.loads((tmp_path / "artifacts" / "runs" / run / "run.json").read_text())
    assert info["params"]["model"]["bottleneck"] == 8 and info["params"]["train"]["augment"] is True
    layers = pd.read_parquet(tmp_path / "artifacts" / "studies" / "hyperplanes" / run / "layers.parquet")
    # 3072 -> 32 -> (8) -> 32 -> (8) -> 32 -> 10: six linear layers, all of the one max-pool-free stage
    assert layers["layer"].nunique() == 6 and set(layers["stage"]) == {0}
    reinit = pd.read_parquet(tmp_path / "artifacts" / "studies" / "reinit" / run / "reinit.parquet")
    assert reinit["layer"].nunique() == 6


def test_fashion_mnist_regions_scaled_down(tmp_path):
    summary = run_preset("fashion_mnist_regions", tmp_path, sh)
    assert (tmp_path / "reports" / "figures" / "regions_vs_width.png").exists()
    assert sorted(p.name for p in (tmp_path / "artifacts" / "studies" / "regions").iterdir()) == [
        "cnn5_k_w1-n0.0-r0", "cnn5_k_w1-n0.2-r0", "cnn5_k_w2-n0.0-r0", "cnn5_k_w2-n0.2-r0"]
    assert finite(summary["noise_20pct"]["test_error_rise"])


def test_cifar10_regions_seed_scaled_down(tmp_path):
    """The regions seed's recipe (resnet18_k without BN, fixup init, SGD with lr x0.2 at two
    milestones, crop + flip, closed radius-4 paths) on CIFAR-10-format files: the preset's stages
    run and the walk finds regions on every path."""
    overrides = {"data": {"val_size": 60}, "grid": {"widths": [4], "noise": [0.0]}, "train": {"milestones": [1], "epochs": 2}, "regions": {"checkpoints": "final", "shards": 2}}
    summary = run_preset("cifar10_regions_seed", tmp_path, sh, overrides)
    assert finite(summary["noise_0pct"]["test_error_widest"])
    info = json.loads((tmp_path / "artifacts" / "runs" / "resnet18_k_w4-n0.0-r0" / "run.json").read_text())
    assert info["dataset"]["name"] == "cifar10" and info["params"]["model"]["init"] == "fixup" and info["params"]["model"]["batch_norm"] is False
    table = pd.concat([pd.read_parquet(f) for f in sorted((tmp_path / "artifacts" / "studies" / "regions" / "resnet18_k_w4-n0.0-r0").glob("shard-*.parquet"))])
    assert len(table) == 2 and (table["crossings"] > 0).all()  # two closed paths of 8 segments
    for study in ("smoothness", "interpolation", "hyperplanes", "reinit"):  # the preset switches the others off
        skipped = json.loads((tmp_path / "artifacts" / "studies" / study / "resnet18_k_w4-n0.0-r0" / "summary.json").read_text())
        assert skipped == {"skipped": f"{study}.enabled is false"}


def test_an_empty_preset_or_a_params_file_that_is_no_mapping_is_one_line(project):
    """An empty preset printed no options, so `make preset` ran the default experiment; a
    params.yaml of the wrong shape gave a traceback in the merge."""
    from tests.conftest import refused, write_params

    write_params(project)
    empty = project / "empty.yaml"
    empty.write_text("# nothing\n")
    assert "non-empty mapping" in refused("preset", str(empty), key="preset")
    preset = str(REPO / "presets" / "mnist1d_double_descent.yaml")
    (project / "params.yaml").write_text("- 1\n")
    assert "must be a mapping of params groups" in refused("preset", preset, key="params.yaml")
    (project / "params.yaml").write_text("train: 5\n")
    refused("preset", preset, key="train")
