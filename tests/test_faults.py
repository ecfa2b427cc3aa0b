"""Faults a researcher's machine throws at a run: the disk filling up mid-write. Each ends in one
line (exit 2), leaves the last complete result as it was, and a rerun recovers bit-identically."""

from __future__ import annotations

import errno
import shutil

import pytest

from tests.conftest import ok, refused, write_params


def disk_full_at(monkeypatch, module, name: str, when: str):
    """`module.name` (a write helper) raises ENOSPC when writing a file whose name contains `when`."""
    real = getattr(module, name)

    def writing(path, *args, **kwargs):
        if when in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(module, name, writing)


@pytest.fixture
def prepared(project):
    write_params(project, train={"epochs": 2, "checkpoints": {"epochs": [1]}})
    ok("split")
    ok("corrupt")
    return project


@pytest.mark.parametrize("when", ["metrics.json", "run.json"])
def test_a_full_disk_while_a_run_is_assembled_is_one_line_and_the_rerun_is_identical(prepared, monkeypatch, when):
    from netgeom.stages import train

    run = prepared / "artifacts" / "runs" / "mlp_w16-n0.2-r0"
    with monkeypatch.context() as patched:
        disk_full_at(patched, train, "atomic_write_json", when)
        line = refused("train", key="disk full")
    assert when in line and "free space and rerun" in line
    assert not run.exists()  # nothing half-published
    ok("train")
    reference = prepared / "reference"
    shutil.copytree(run, reference)
    shutil.rmtree(run)
    ok("train", "--fresh")
    for name in ("checkpoints/e0001.safetensors", "checkpoints/e0002.safetensors", "metrics.json"):
        assert (run / name).read_bytes() == (reference / name).read_bytes(), name


def test_a_full_disk_while_the_report_is_written_keeps_the_old_report(prepared, monkeypatch):
    from netgeom.stages import report

    ok("train")
    ok("report", "--quiet")
    before = {p.relative_to(prepared / "reports"): p.read_bytes() for p in (prepared / "reports").rglob("*") if p.is_file()}
    with monkeypatch.context() as patched:
        disk_full_at(patched, report, "atomic_write_json", "summary.json")
        line = refused("report", "--quiet", key="disk full")
    assert "summary.json" in line
    after = {p.relative_to(prepared / "reports"): p.read_bytes() for p in (prepared / "reports").rglob("*") if p.is_file()}
    assert after == before


def test_other_os_errors_are_not_dressed_up_as_a_full_disk(prepared, monkeypatch):
    from typer.testing import CliRunner

    from netgeom.cli import app
    from netgeom.stages import train

    def denied(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(train, "atomic_write_json", denied)
    result = CliRunner().invoke(app, ["train"])
    assert isinstance(result.exception, PermissionError)  # a real bug stays a traceback


def test_a_local_ray_that_does_not_come_up_is_one_line_and_shuts_down(monkeypatch):
    """On a busy machine `ray.init` may time out starting the local cluster: one line naming the
    key, and what it half-started is shut down (no agent left behind)."""
    ray = pytest.importorskip("ray")
    from netgeom.errors import NetgeomError
    from netgeom.repro.executors import connect_ray

    shutdowns = []

    def timed_out(**options):
        raise TimeoutError("Timed out while waiting for the raylet to start")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", timed_out)
    monkeypatch.setattr(ray, "shutdown", lambda: shutdowns.append(True))
    with pytest.raises(NetgeomError, match="local Ray cluster did not start: Timed out") as raised:
        connect_ray(None, key="--backend")
    assert str(raised.value).startswith("--backend: ") and "\n" not in str(raised.value) and shutdowns == [True]
