"""netgeom in a notebook (issue #23): `netgeom.open_run`, `progress=` on the study functions,
the package docstring, and the README's "In a notebook" code, run as written."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

import netgeom
from netgeom import progress as progress_module
from netgeom.errors import NetgeomError
from netgeom.layout import run_name
from netgeom.runs import identity_hash, model_for_run, read_run


README = Path(__file__).resolve().parents[1] / "README.md"
HEADING = "## In a notebook"
RUN_NAME = re.compile(
    r"^(?P<arch>\w+)_w(?P<width>\d+)-n(?P<noise>[\d.]+)-r(?P<replicate>\d+)$"
)


def notebook_code() -> str:
    """The one python block under README's "## In a notebook" (up to the next "## ")."""
    text = README.read_text()
    start = re.search(rf"^{HEADING}\s*$", text, re.MULTILINE)
    assert start, f"README.md has no {HEADING!r} section"
    section = text[start.end() :]
    following = re.search(r"^## ", section, re.MULTILINE)
    section = section[: following.start()] if following else section
    blocks = re.findall(r"^```python\n(.*?)^```", section, re.DOTALL | re.MULTILINE)
    assert len(blocks) == 1, (
        f"{HEADING!r} should hold one python block, has {len(blocks)}"
    )
    return blocks[0]


def readme_run() -> str:
    found = re.search(r"open_run\(\s*[\"']([^\"']+)[\"']", notebook_code())
    assert found, "the README code opens no run by name"
    return found.group(1)


@pytest.fixture(scope="module")
def trained(trained_projects, tmp_path_factory) -> Path:
    """A project with the README's run trained in it: split, corrupt, train, as `make repro`
    does for that cell. Module-scoped: copied once from the shared trained projects."""
    name = readme_run()
    cell = RUN_NAME.match(name)
    assert cell, f"{name!r} is not a grid run name like mlp_w64-n0.2-r0"
    arch, width = cell["arch"], int(cell["width"])
    noise, replicate = float(cell["noise"]), int(cell["replicate"])
    assert run_name(arch, width, noise, replicate) == name
    params = {
        "model": {"arch": arch, "width": width, "depth": 1},
        "noise": {"label": noise},
        "grid": {"widths": [width], "noise": [noise], "seed_offsets": [replicate]},
    }
    cell_options = ("--width", str(width), "--noise", str(noise), "--replicate", str(replicate))
    root = trained_projects.copy(tmp_path_factory.mktemp("notebook") / "project", params, [("split",), ("corrupt",), ("train", *cell_options)])
    assert (root / "artifacts" / "runs" / name / "run.json").exists()
    return root


@pytest.fixture
def run(trained, monkeypatch):
    monkeypatch.chdir(trained)
    return netgeom.open_run(readme_run())


def test_the_readme_notebook_code_runs_as_written(trained, monkeypatch, capsys):
    monkeypatch.chdir(trained)
    # bars would show here by default (a watched terminal, nothing quiet): progress=False must
    # silence every one of them
    monkeypatch.delenv("NETGEOM_QUIET", raising=False)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(progress_module, "_quiet", False)
    monkeypatch.setattr(progress_module, "_stderr_is_terminal", lambda: True)
    namespace: dict = {"__name__": "__notebook__"}
    code = compile(notebook_code(), f"{README.name}: {HEADING}", "exec")
    exec(code, namespace)  # noqa: S102  (the README's own code, run as a reader would)
    out, err = capsys.readouterr()
    assert err == ""
    assert out.strip()
    opened = [v for v in namespace.values() if isinstance(v, netgeom.NotebookRun)]
    assert [r.name for r in opened] == [readme_run()]


def test_open_run_gives_each_checkpoint_exactly_as_model_for_run(run, trained):
    folder = trained / "artifacts" / "runs" / run.name
    on_disk = read_run(folder)
    assert run.epochs == on_disk.scheduled_epochs == [0, 1, 3]
    assert run.epoch == 3 and run.info == on_disk.info
    assert list(run.history["epoch"]) == list(on_disk.history["epoch"])
    x = run.data.test[0][:32]
    for epoch, path in on_disk.checkpoints:
        model = run.model(epoch)
        assert not model.training
        with torch.no_grad():
            assert torch.equal(model(x), model_for_run(on_disk.info, path)(x))
        state = run.state(epoch)
        assert state.keys() == model.state_dict().keys()
        assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        final = model_for_run(on_disk.info, on_disk.final_checkpoint())(x)
        assert torch.equal(run.model()(x), final)
    at_init = netgeom.open_run(run.name, root=trained, epoch=0)
    assert at_init.epoch == 0
    assert all(torch.equal(v, run.state(0)[k]) for k, v in at_init.state().items())


def test_data_is_the_split_the_run_trained_on(run):
    data, info = run.data, run.info
    assert data.digest() == info["dataset"]["digest"]
    # the run's identity hashes the same params and data: nothing was rebuilt differently
    device = torch.device(info["device"]).type
    assert identity_hash(run.params, data.digest(), device) == info["params_hash"]
    assert (
        len(data.y) == info["dataset"]["train_size"] == len(data.x) == len(data.clean)
    )
    assert data.noisy.dtype == torch.bool
    assert torch.equal(data.noisy, data.y != data.clean)
    noise = info["cell"]["noise"]
    assert noise > 0 and abs(data.noisy.float().mean().item() - noise) < 0.01
    assert data.train[1] is data.y
    assert (
        tuple(data.x.shape[1:])
        == data.input_shape
        == tuple(info["dataset"]["input_shape"])
    )
    assert data.num_classes == info["dataset"]["num_classes"]
    x_test, y_test = data.test
    assert len(x_test) == len(y_test) > 0 and len(data.val[1]) > 0
    assert run.data is data  # read once


def test_data_that_differs_from_what_the_run_saw_is_refused(run, monkeypatch):
    from netgeom import notebook

    real = notebook.load_cell_data

    def relabelled(params, layout):
        bundle = real(params, layout)
        bundle.train.y[0] = (bundle.train.y[0] + 1) % bundle.info.num_classes
        return bundle

    monkeypatch.setattr(notebook, "load_cell_data", relabelled)
    with pytest.raises(NetgeomError) as refused:
        netgeom.open_run(run.name).data  # noqa: B018
    assert refused.value.key == "data" and run.name in refused.value.problem


def test_unknown_runs_and_epochs_are_refused_naming_what_exists(run, trained):
    with pytest.raises(NetgeomError) as unknown:
        netgeom.open_run("mlp_w65-n0.2-r0")
    assert unknown.value.key == "run" and run.name in unknown.value.problem
    for bad in ("../runs", "", "."):
        with pytest.raises(NetgeomError) as outside:
            netgeom.open_run(bad)
        assert outside.value.key == "run"
    with pytest.raises(NetgeomError) as empty:
        netgeom.open_run(run.name, root=trained / "elsewhere")
    assert empty.value.key == "run" and "make repro" in empty.value.problem
    with pytest.raises(NetgeomError) as epoch:
        netgeom.open_run(run.name, epoch=2)
    assert epoch.value.key == "epoch" and "[0, 1, 3]" in epoch.value.problem
    with pytest.raises(NetgeomError) as model_epoch:
        run.model(2)
    assert model_epoch.value.key == "epoch"


def _tiny_case():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(12, 8),
        torch.nn.ReLU(),
        torch.nn.Linear(8, 3),
    )
    return net.eval(), torch.randn(40, 1, 12), torch.randint(0, 3, (40,))


def test_progress_false_silences_a_study_and_none_keeps_the_default(
    monkeypatch, capsys
):
    from netgeom.studies import smoothness

    monkeypatch.delenv("NETGEOM_QUIET", raising=False)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(progress_module, "_quiet", False)
    net, x, y = _tiny_case()

    def stderr_of(**kwargs) -> str:
        capsys.readouterr()
        options = {"batch_size": 8, **kwargs}
        smoothness.compute_metric(net, x, y, "jacobian_frobenius", **options)
        return capsys.readouterr().err

    expected = smoothness.compute_metric(
        net, x, y, "jacobian_frobenius", progress=False
    )
    assert "smoothness" in stderr_of(progress=True)
    assert stderr_of(progress=False) == ""
    assert stderr_of() == ""  # stderr is no terminal here: no bar by default
    monkeypatch.setattr(progress_module, "_stderr_is_terminal", lambda: True)
    assert "smoothness" in stderr_of()  # a terminal: the bar, as before
    assert stderr_of(progress=False) == ""
    monkeypatch.setenv("NETGEOM_QUIET", "1")
    assert stderr_of() == ""  # --quiet, CI and NETGEOM_QUIET still silence the default
    assert "smoothness" in stderr_of(progress=True)  # an explicit request wins
    quiet = smoothness.compute_metric(net, x, y, "jacobian_frobenius", progress=False)
    assert (quiet == expected).all()


def test_bars_show_by_default_in_a_notebook_kernel(monkeypatch):
    monkeypatch.delenv("NETGEOM_QUIET", raising=False)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(progress_module, "_quiet", False)
    monkeypatch.setattr(progress_module, "_stderr_is_terminal", lambda: False)
    assert not progress_module.shows_progress()
    terminal_ipython = types.SimpleNamespace(
        get_ipython=lambda: types.SimpleNamespace()
    )
    monkeypatch.setitem(sys.modules, "IPython", terminal_ipython)
    assert not progress_module.in_notebook()
    kernel = types.SimpleNamespace(kernel=object())
    monkeypatch.setitem(
        sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: kernel)
    )
    assert progress_module.in_notebook() and progress_module.shows_progress()
    assert not progress_module.shows_progress(False)
    monkeypatch.setattr(progress_module, "_quiet", True)  # --quiet
    assert not progress_module.shows_progress()


def test_the_study_functions_that_draw_bars_take_progress():
    from netgeom.studies import interpolation, regions, reinit, smoothness

    functions = [
        smoothness.compute_point_values,
        smoothness.compute_metric,
        regions.walk_segments,
        regions.study_paths,
        regions.walk_paths,
        interpolation.interpolation_curve,
        interpolation.plane_landscape,
        reinit.reinit_sweep,
    ]
    for function in functions:
        parameter = inspect.signature(function).parameters.get("progress")
        assert parameter is not None, function.__qualname__
        assert parameter.default is None, function.__qualname__
        assert parameter.kind in (
            parameter.KEYWORD_ONLY,
            parameter.POSITIONAL_OR_KEYWORD,
        )


def test_the_package_docstring_names_real_functions_and_arguments():
    doc = netgeom.__doc__
    assert "netgeom --help" in doc and "make repro" in doc and "netgeom.open_run" in doc
    named = re.findall(r"netgeom\.studies\.(\w+)\.(\w+)\(([^)]*)\)", doc)
    modules = {module for module, _, _ in named}
    assert {"smoothness", "regions", "interpolation", "hyperplanes"} <= modules
    for module, function, arguments in named:
        study = __import__(f"netgeom.studies.{module}", fromlist=[function])
        parameters = inspect.signature(getattr(study, function)).parameters
        for argument in arguments.split(","):
            name = argument.split("=")[0].strip().lstrip("*")
            if name not in ("", "..."):
                assert name in parameters, f"{module}.{function} takes no {name}"


def test_import_netgeom_stays_light():
    probe = (
        "import sys, netgeom\n"
        "assert 'open_run' in dir(netgeom) and 'open_run' in netgeom.__doc__\n"
        "print(sorted(m for m in ('torch', 'pandas', 'numpy') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    with pytest.raises(AttributeError):
        netgeom.no_such_name  # noqa: B018
