"""Devices (issue 16): the device is a validated param recorded with the run; every stage runs
with `execution.device: cpu` given explicitly and gives the numbers of the default; bf16
autocast trains with fp32 weights and checkpoints. GPU checks run only where a GPU is visible."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from netgeom.cli import app
from netgeom.devices import resolve_device
from netgeom.errors import NetgeomError
from tests.conftest import ok, write_params

runner = CliRunner()
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU visible")



def test_device_specs_resolve_or_are_refused():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == (torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu"))
    with pytest.raises(NetgeomError, match="execution.device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(NetgeomError, match="execution.device: cuda asked for, but no GPU is visible"):
            resolve_device("cuda")


@pytest.mark.parametrize("spec", ["cuda:x", "gpu", "CPU"])
def test_a_malformed_device_is_one_line_naming_the_key(project, spec):
    write_params(project, execution={"device": spec})
    result = runner.invoke(app, ["check"])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "execution.device" in result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible here")
def test_asking_for_a_gpu_without_one_stops_before_anything_is_written(project):
    write_params(project, execution={"device": "cuda"})
    ok("split"), ok("corrupt")
    result = runner.invoke(app, ["train"])
    assert result.exit_code == 2 and "execution.device" in result.output
    assert not (project / "artifacts" / "runs").exists()


def _all_stages(root) -> dict[str, object]:
    """Every study's output on a tiny trained project, as comparable values."""
    ok("train"), ok("train", "--replicate", "1")
    for study in ("smoothness", "regions", "interpolation", "hyperplanes", "reinit", "barriers", "mli"):
        ok(study)
    curve = root / "curve.csv"
    ok("curve", "mlp_w16-n0.2-r0@init", "mlp_w16-n0.2-r0", "--points", "3", "--out", str(curve))
    studies = root / "artifacts" / "studies"
    out = {name: json.loads((studies / name / "mlp_w16-n0.2-r0" / "summary.json").read_text())
           for name in ("smoothness", "regions", "interpolation", "hyperplanes", "reinit")}
    out["barriers"] = pd.read_parquet(studies / "barriers" / "barriers.parquet")
    out["mli"] = pd.read_parquet(studies / "mli" / "runs.parquet")
    out["curve"] = pd.read_csv(curve)
    out["run"] = json.loads((root / "artifacts" / "runs" / "mlp_w16-n0.2-r0" / "metrics.json").read_text())
    return out


def test_every_stage_with_device_cpu_given_explicitly_equals_the_default(project):
    groups = {"train": {"epochs": 2, "checkpoints": {"epochs": [1]}}, "grid": {"widths": [16], "noise": [0.2], "seed_offsets": [0, 1]},
              "interpolation": {"points": 3, "random_inits": 1, "gauss_samples": 4, "landscape": {"resolution": 0}}}
    write_params(project, **groups)
    ok("split"), ok("corrupt")
    default = _all_stages(project)
    write_params(project, execution={"device": "cpu", "threads": 1}, **groups)
    for folder in ("artifacts/runs", "artifacts/studies"):
        import shutil

        shutil.rmtree(project / folder)
    explicit = _all_stages(project)
    info = json.loads((project / "artifacts" / "runs" / "mlp_w16-n0.2-r0" / "run.json").read_text())
    assert info["device"] == "cpu"
    for key, value in default.items():
        if isinstance(value, pd.DataFrame):
            pd.testing.assert_frame_equal(value, explicit[key])
        else:
            assert value == explicit[key], key


def test_bf16_autocast_trains_on_the_cpu_with_fp32_weights_and_checkpoints(project):
    write_params(project, train={"epochs": 2, "precision": "bf16", "checkpoints": {"epochs": [1]}})
    ok("split"), ok("corrupt"), ok("train")
    from netgeom.runs import read_run
    from netgeom.training.checkpoints import load_checkpoint

    run = read_run(project / "artifacts" / "runs" / "mlp_w16-n0.2-r0")
    weights = load_checkpoint(run.final_checkpoint())[0]
    assert {v.dtype for v in weights.values()} == {torch.float32}
    assert run.metrics["train_acc"] > 0.3  # it learnt (10 classes)
    write_params(project, train={"epochs": 2, "checkpoints": {"epochs": [1]}})
    ok("train", "--fresh")
    fp32 = load_checkpoint(read_run(project / "artifacts" / "runs" / "mlp_w16-n0.2-r0").final_checkpoint())[0]
    assert any(not torch.equal(weights[k], fp32[k]) for k in fp32)  # bf16 matmuls: other numbers


@needs_gpu
def test_a_run_trained_on_the_gpu_is_studied_on_the_cpu(project):
    write_params(project, execution={"device": "cuda"}, train={"epochs": 2, "checkpoints": {"epochs": [1]}})
    ok("split"), ok("corrupt"), ok("train")
    write_params(project, execution={"device": "cpu"}, train={"epochs": 2, "checkpoints": {"epochs": [1]}})
    ok("smoothness"), ok("interpolation")
    info = json.loads((project / "artifacts" / "runs" / "mlp_w16-n0.2-r0" / "run.json").read_text())
    assert info["device"].startswith("cuda")


@needs_gpu
def test_gpu_training_resumes_bit_exactly_when_deterministic(project):
    from netgeom.runs import read_run
    from netgeom.training.checkpoints import load_checkpoint

    write_params(project, execution={"device": "cuda", "deterministic": True}, train={"epochs": 3, "checkpoints": {"every": 1}})
    ok("split"), ok("corrupt"), ok("train")
    first = load_checkpoint(read_run(project / "artifacts" / "runs" / "mlp_w16-n0.2-r0").final_checkpoint())[0]
    ok("train", "--fresh")
    again = load_checkpoint(read_run(project / "artifacts" / "runs" / "mlp_w16-n0.2-r0").final_checkpoint())[0]
    assert all(torch.equal(first[k], again[k]) for k in first)


@needs_gpu
def test_a_gpu_checkpoint_gives_the_same_statistics_on_the_cpu_and_the_gpu(project):
    """Studies are device-independent up to float tolerance: a GPU-trained run's smoothness and
    interpolation summaries on the GPU equal those on the CPU."""
    from netgeom.summary import read_summary

    train = {"epochs": 2, "checkpoints": {"epochs": [1]}}
    write_params(project, execution={"device": "cuda"}, train=train)
    ok("split"), ok("corrupt"), ok("train")
    values = {}
    for device in ("cuda", "cpu"):
        write_params(project, execution={"device": device}, train=train)
        ok("smoothness"), ok("interpolation")
        values[device] = {
            study: read_summary(project / "artifacts" / "studies" / study / "mlp_w16-n0.2-r0").epochs
            for study in ("smoothness", "interpolation")
        }
    for study, epochs in values["cuda"].items():
        for epoch, measures in epochs.items():
            for measure, groups in measures.items():
                for group, value in groups.items():
                    other = values["cpu"][study][epoch][measure][group]
                    if value is not None and other is not None:
                        assert abs(value - other) <= 1e-4 * max(1.0, abs(other)), (study, epoch, measure, group, value, other)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible here")
def test_the_gpu_check_script_says_there_is_no_gpu_and_exits_0(tmp_path):
    import os
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.sh"
    done = subprocess.run(["bash", str(script)], env={**os.environ, "OUT": str(tmp_path)}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "gpu_check: no GPU visible (torch.cuda.is_available() is False here); nothing measured"
    assert (tmp_path / "gpu_check.txt").read_text().strip() == done.stdout.strip()


def test_bf16_on_a_cpu_without_native_bf16_warns_once_with_the_measured_ratio(monkeypatch, capsys):
    from netgeom import precision

    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "avx512f"})  # an AVX-512 CPU without bf16 units
    monkeypatch.setattr(precision, "bf16_slowdown", lambda: 38.7)
    precision.warn_if_bf16_is_emulated.cache_clear()
    try:
        first, second = precision.warn_if_bf16_is_emulated(), precision.warn_if_bf16_is_emulated()
        err = capsys.readouterr().err
        assert err.count("netgeom: warning: train.precision: bf16") == 1 and "38.7x the time of fp32" in err
        assert first == second and err.strip() == first
        monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx512f", "amx_bf16"})
        precision.warn_if_bf16_is_emulated.cache_clear()
        assert precision.warn_if_bf16_is_emulated() is None and capsys.readouterr().err == ""
    finally:
        precision.warn_if_bf16_is_emulated.cache_clear()


def test_the_cpu_flags_come_from_proc_cpuinfo(tmp_path):
    from netgeom.precision import cpu_flags

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 amx_bf16\n\nprocessor\t: 1\nflags\t\t: fpu avx2 amx_bf16\n")
    assert cpu_flags(info) == {"fpu", "avx2", "amx_bf16"} and cpu_flags(tmp_path / "none") == set()


def test_bf16_slowdown_is_a_positive_ratio():
    from netgeom.precision import bf16_slowdown

    assert 0 < bf16_slowdown(size=64, repeats=1) < 1e4


GPU_STAGE_TRAIN = {"epochs": 2, "checkpoints": {"epochs": [1]}}


def stage_on_each_device(project, stage: str, settings: dict, read) -> dict:
    """Train one run on the GPU, then run `stage` (its params group `settings`) on the GPU and on
    the CPU: {device: read(folder)} of the run's study folder, emptied between the two."""
    import shutil

    write_params(project, execution={"device": "cuda"}, train=GPU_STAGE_TRAIN, **{stage: settings})
    ok("split"), ok("corrupt"), ok("train")
    folder = project / "artifacts" / "studies" / stage / "mlp_w16-n0.2-r0"
    tables = {}
    for device in ("cuda", "cpu"):
        write_params(project, execution={"device": device}, train=GPU_STAGE_TRAIN, **{stage: settings})
        ok(stage)
        tables[device] = read(folder)
        shutil.rmtree(folder)
    return tables


def _concat(folder, pattern: str) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(f) for f in sorted(folder.glob(pattern))], ignore_index=True)


@needs_gpu
def test_the_regions_stage_walks_on_the_gpu_and_finds_the_cpu_regions(project):
    """The exact walk in float64 on the GPU (model and paths there) against the CPU: the same
    regions on every path, statistics equal to float64 rounding."""
    regions = {"paths": 8, "radius": 1, "checkpoints": "all", "per_region": True}
    tables = stage_on_each_device(project, "regions", regions, lambda folder: {kind: _concat(folder, f"{kind}-*.parquet") for kind in ("shard", "regions")})
    gpu, cpu = tables["cuda"], tables["cpu"]
    assert len(gpu["regions"]) == len(cpu["regions"]) > 8
    pd.testing.assert_series_equal(gpu["shard"]["regions"], cpu["shard"]["regions"])
    for column in ("density", "t_start", "t_end"):
        table = "shard" if column == "density" else "regions"
        assert gpu[table][column].to_numpy() == pytest.approx(cpu[table][column].to_numpy(), rel=1e-9, abs=1e-12), column


@needs_gpu
def test_the_curvature_stage_on_the_gpu_equals_the_cpu_within_float_tolerance(project):
    """Issue 29: the Hessian's top eigenvalues, trace and the loss surface computed on the GPU
    (model, subset and Krylov vectors there) against the CPU, the same checkpoint and probes."""
    curvature = {"enabled": True, "samples": 96, "batch_size": 40, "top_k": 2, "trace_probes": 4, "density_probes": 1,
                 "density_steps": 6, "tol": 1e-6, "surface": {"resolution": 3, "span": 0.5, "shards": 3, "line": 5}}

    def read(folder):
        tables = {name: pd.read_parquet(folder / f"{name}.parquet") for name in ("curvature", "spectrum", "line")}
        return tables | {"surface": _concat(folder, "shard-*.parquet").sort_values(["x", "y"])}

    tables = stage_on_each_device(project, "curvature", curvature, read)
    gpu, cpu = tables["cuda"], tables["cpu"]
    for column in ("lambda_max", "trace"):
        assert gpu["curvature"][column].to_numpy() == pytest.approx(cpu["curvature"][column].to_numpy(), rel=1e-4), column
    assert gpu["spectrum"]["eigenvalue"].to_numpy() == pytest.approx(cpu["spectrum"]["eigenvalue"].to_numpy(), rel=1e-4)
    for name in ("line", "surface"):
        assert gpu[name]["loss"].to_numpy() == pytest.approx(cpu[name]["loss"].to_numpy(), rel=1e-4), name
