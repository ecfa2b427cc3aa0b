"""The glue between params, the study registry, the CLI and DVC: settings do what they say, and a
changed file or a misspelt key never leaves a stale or wrong result behind (issue 11)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from netgeom.cli import app
from netgeom.code import import_closure
from netgeom.dvc_yaml import code_deps, render
from netgeom.errors import NetgeomError
from netgeom.stages.registry import STUDIES
from tests.conftest import refused, write_params

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]



def test_execution_threads_is_applied_inside_a_stage(project, monkeypatch):
    import netgeom.stages.split as split_stage

    seen = []
    real = split_stage.run_split
    monkeypatch.setattr(split_stage, "run_split", lambda *a: (seen.append(torch.get_num_threads()), real(*a))[1])
    before = torch.get_num_threads()
    try:
        for threads in (2, 1):
            write_params(project, execution={"threads": threads})
            assert runner.invoke(app, ["split"]).exit_code == 0
    finally:
        torch.set_num_threads(before)
    assert seen == [2, 1]


@pytest.mark.parametrize(
    ("groups", "key"),
    [
        ({"regions": {"paht": 3}}, "regions.paht"),
        ({"smoothness": {"volume": {"space": "hsv"}}}, "smoothness.volume.space"),
        ({"interpolation": {"points": 1}}, "interpolation.points"),
        ({"mli": {"optimizers": ["lbfgs"]}}, "mli.optimizers"),
        ({"mli": {"depth": [2, 2]}}, "mli.depth"),
        ({"mli": {"autoencoder": [64, 0]}}, "mli.autoencoder"),
        ({"mli": {"objective": "denoising"}}, "mli.objective"),
        ({"mli": {"lr": {"sgd": [0.1, -1.0]}}}, "mli.lr"),
        ({"smoothness": {"measures": [{"metric": "jacobian_operator", "normalization": "jacobian"}]}}, "normalization"),  # the seed's name
    ],
)
def test_study_groups_are_typed_and_validated_by_every_command(project, groups, key):
    write_params(project, **groups)
    for command in (["split"], ["check"], ["report"]):
        refused(*command, key=key)
    assert not (project / "artifacts").exists() and not (project / "reports").exists()


def _number_fields(model, prefix=""):
    """(dotted key, default) of every field, in every group, that takes only numbers."""
    from netgeom.params import Group, _takes_only_numbers

    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, Group):
            yield from _number_fields(field.annotation, f"{prefix}{name}.")
        elif _takes_only_numbers(field.annotation):
            yield f"{prefix}{name}", field.annotation


def test_a_yaml_boolean_for_a_number_is_refused_in_every_group(project):
    """`train.epochs: yes` is True to YAML, and pydantic reads True as 1: one epoch, silently."""
    from netgeom.params import params_model, validate

    keys = [key for key, _ in _number_fields(params_model())]
    assert {"seed", "train.epochs", "train.lr", "grid.widths", "noise.label", "model.bottleneck", "train.checkpoints.every", "smoothness.samples", "mli.lr"} <= set(keys)
    for key in keys:
        *groups, name = key.split(".")
        raw: dict = {}
        node = raw
        for group in groups:
            node = node.setdefault(group, {})
        node[name] = {"sgd": [0.1, True]} if key == "mli.lr" else True
        with pytest.raises(NetgeomError) as err:
            validate(raw)
        assert err.value.key == key and "must be" in err.value.problem and "boolean" in err.value.problem, (key, err.value)
    # booleans stay booleans where a field takes one, and numbers stay numbers
    assert validate({"model": {"batch_norm": True}, "train": {"epochs": 3}}).model.batch_norm is True
    write_params(project, train={"epochs": "yes"})  # written as YAML below: `epochs: yes`
    (project / "params.yaml").write_text((project / "params.yaml").read_text().replace("epochs: 'yes'", "epochs: yes"))
    assert "yes/no" in refused("check", key="train.epochs")


def test_params_objects_carry_typed_study_groups(project):
    from netgeom.params import load_params
    from netgeom.groups.regions import RegionsParams

    write_params(project, regions={"paths": 5})
    params = load_params(project / "params.yaml")
    assert isinstance(params.regions, RegionsParams) and params.regions.paths == 5 and params.regions.anchors == 8


def test_an_option_the_family_ignores_is_refused_unless_it_is_the_default(project):
    write_params(project, model={"arch": "cnn5_k", "width": 4, "depth": 2})
    runner.invoke(app, ["split"]), runner.invoke(app, ["corrupt"])
    refused("train", "--width", "4", key="model.depth")
    # the params default (activation relu) is dropped silently and not recorded
    write_params(project, model={"arch": "cnn5_k", "width": 4, "depth": None, "activation": "relu"}, train={"epochs": 1, "checkpoints": {"epochs": []}})
    result = runner.invoke(app, ["train", "--width", "4"])
    assert result.exit_code == 0, result.output
    import json

    info = json.loads((project / "artifacts" / "runs" / "cnn5_k_w4-n0.2-r0" / "run.json").read_text())
    assert info["params"]["model"]["activation"] is None and info["params"]["model"]["depth"] is None
    from netgeom.runs import model_for_run, read_run

    model_for_run(read_run(project / "artifacts" / "runs" / "cnn5_k_w4-n0.2-r0").info)  # the recorded options rebuild it
    write_params(project, model={"arch": "cnn5_k", "width": 4, "depth": None, "activation": "tanh"})
    refused("train", "--width", "4", key="model.activation")


def test_the_bottleneck_option_is_an_mlp_option_that_leaves_existing_identities_alone(project):
    from netgeom.params import ModelParams, Params
    from netgeom.runs import effective_model, identity_hash

    params = Params()
    plain = identity_hash(params, "d")
    assert ModelParams().identity_dump() == ModelParams(bottleneck=None).identity_dump()  # runs before the option keep theirs
    assert "bottleneck" not in ModelParams().identity_dump()
    narrowed = params.model_copy(update={"model": ModelParams(arch="mlp", depth=2, bottleneck=8)})
    assert identity_hash(narrowed, "d") != identity_hash(params.model_copy(update={"model": ModelParams(arch="mlp", depth=2)}), "d")
    assert identity_hash(params, "d") == plain
    with pytest.raises(NetgeomError) as err:
        effective_model(ModelParams(arch="cnn5_k", width=4, depth=None, bottleneck=8))
    assert err.value.key == "model.bottleneck"
    write_params(project, model={"arch": "mlp", "width": 8, "depth": 2, "bottleneck": 0})
    refused("check", key="model.bottleneck")
    write_params(project, model={"arch": "mlp", "width": 8, "depth": 1, "bottleneck": 4})
    assert "depth >= 2" in refused("check", key="model.bottleneck")


# --------------------------------------------------------------------------- the generated pipeline


def test_the_committed_dvc_yaml_is_the_registrys_pipeline():
    assert (REPO / "dvc.yaml").read_text() == render(), "run `netgeom pipeline --write`"


def test_check_refuses_a_params_file_without_a_group_the_stages_list(project):
    # Validation fills the group with defaults, so every command would run; DVC would not
    # (`deleted: train` for every stage that lists it). `check`, the pipeline's gate, says so.
    import shutil

    shutil.copy(REPO / "dvc.yaml", project / "dvc.yaml")
    full = yaml.safe_load((REPO / "params.yaml").read_text())
    for group in ("train", "seed", "execution"):
        (project / "params.yaml").write_text(yaml.safe_dump({k: v for k, v in full.items() if k != group}))
        assert "missing from params.yaml" in refused("check", key=group)
    (project / "params.yaml").write_text(yaml.safe_dump(full))
    assert runner.invoke(app, ["check"]).exit_code == 0


def test_every_registered_study_has_a_stage_and_a_command():
    stages = yaml.safe_load(render())["stages"]
    names = set(runner.invoke(app, ["--help"]).output.split())
    for entry in STUDIES:
        assert entry.name in stages and entry.name in names
        assert f"src/netgeom/stages/{entry.name}.py" in stages[entry.name]["deps"] or any(
            d.startswith("src/netgeom/stages") and not d.endswith(".py") for d in stages[entry.name]["deps"]
        )


def test_import_closure_follows_function_level_imports_and_parent_packages():
    closure = {p.relative_to(REPO / "src").as_posix() for p in import_closure("netgeom.stages.train")}
    assert {"netgeom/__init__.py", "netgeom/stages/__init__.py", "netgeom/runs.py", "netgeom/training/loop.py"} <= closure
    # function-level: `finished` imports stages.sync (and so tracking) only when asked to track
    assert "netgeom/tracking.py" in closure and "netgeom/report/figures.py" not in closure
    deps = code_deps("netgeom.stages.train", "netgeom.stages.sync")
    assert "src/netgeom/tracking.py" in deps and "src/netgeom/report/figures.py" not in deps


def test_the_code_digest_changes_with_an_edit_inside_the_closure_only(tmp_path, monkeypatch):
    import shutil

    import netgeom.code as code
    from netgeom.runs import TRAINING_CODE

    copy = tmp_path / "netgeom"
    shutil.copytree(code.PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(code, "PACKAGE_DIR", copy)

    def digest() -> str:
        code.import_closure.cache_clear(), code.code_digest.cache_clear()
        return code.code_digest(*TRAINING_CODE)

    try:
        original = digest()
        assert copy / "training" / "loop.py" in code.import_closure(*TRAINING_CODE)
        assert copy / "report" / "__init__.py" not in code.import_closure(*TRAINING_CODE)
        for edited, changes in (("training/loop.py", True), ("models/mlp.py", True), ("report/__init__.py", False), ("cli.py", False)):
            path = copy / edited
            text = path.read_text()
            path.write_text(text + "\n# an edit\n")
            assert (digest() != original) is changes, edited
            path.write_text(text)
            assert digest() == original
    finally:  # the real package's closure again for the tests after this one
        code.import_closure.cache_clear(), code.code_digest.cache_clear()


def test_a_switched_off_study_records_that_it_was_skipped(project):
    import json

    write_params(project, regions={"enabled": False}, train={"epochs": 1, "checkpoints": {"epochs": []}})
    for command in (["split"], ["corrupt"], ["train"], ["regions"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 0, result.output
    assert "skipped (regions.enabled is false)" in result.output
    summary = json.loads((project / "artifacts" / "studies" / "regions" / "mlp_w16-n0.2-r0" / "summary.json").read_text())
    assert summary == {"skipped": "regions.enabled is false"}
    assert runner.invoke(app, ["report"]).exit_code == 0  # the report leaves the study out
    # a cell that cannot exist gets the enabled study's refusal, not a skip record named after it
    refused("regions", "--width", "0", key="model.width")
    refused("regions", "--noise", "nan", key="noise.label")
    assert sorted(p.name for p in (project / "artifacts" / "studies" / "regions").iterdir()) == ["mlp_w16-n0.2-r0"]


def test_the_cli_entry_point_adds_no_study_or_training_code_to_every_stage():
    """Every stage's deps include the CLI; anything it imports at module level reruns everything."""
    deps = code_deps("netgeom.stages.split")
    assert not any(d.startswith(("src/netgeom/models", "src/netgeom/training", "src/netgeom/studies", "src/netgeom/tracking")) for d in deps)


def test_no_stage_depends_on_the_scheduler():
    """The studies reach Ray through netgeom.ray_cluster, not netgeom.repro: an edit of the
    scheduler (how stages are run) reruns no stage (what they compute)."""
    from netgeom.dvc_yaml import stages

    on_scheduler = {name for name, stage in stages().items() if any("netgeom/repro/" in str(d) for d in stage.get("deps", []))}
    assert on_scheduler == set()
    assert "src/netgeom/ray_cluster.py" in code_deps("netgeom.stages.smoothness")


def test_the_hyperplanes_preset_runs_its_studies_on_a_fixed_width_family(project, monkeypatch):
    """presets/hyperplanes_convnet.yaml on one epoch: vgg8_maxpool (no width option), tracked in
    MLflow, both studies; the regions study is switched off (the exact walk refuses max-pools)."""
    import yaml

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    preset = yaml.safe_load((REPO / "presets" / "hyperplanes_convnet.yaml").read_text())
    groups = {k: v for k, v in preset.items() if k not in ("star",)}
    groups["train"] = {**groups["train"], "epochs": 2, "checkpoints": {"epochs": [1]}}
    write_params(project, mlflow={"enabled": True, "experiment": "preset"}, **groups)
    for command in (["split"], ["corrupt", "--noise", "0.0"], ["train", "--width", "64", "--noise", "0.0"], ["regions", "--noise", "0.0"],
                    ["hyperplanes", "--noise", "0.0"], ["reinit", "--noise", "0.0"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 0, (command, result.output)
    import pandas as pd

    layers = pd.read_parquet(project / "artifacts" / "studies" / "hyperplanes" / "vgg8_maxpool_w64-n0.0-r0" / "layers.parquet")
    assert set(layers["stage"]) == {0, 1, 2, 3}  # three max-pools; the classifier as stage 3


def _top_level_imports(path: Path) -> set[str]:
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_each_framework_is_imported_only_where_the_house_says():
    """typer only in the command-line modules (cli*.py); mlflow only in tracking and the store;
    DVC only where DVC's graph is read and its plots page is written; Ray only in the execution
    back ends; the studies none of them (inside functions too)."""
    allowed = {
        "typer": lambda rel: rel.startswith("netgeom/cli"),
        "mlflow": lambda rel: rel in {"netgeom/tracking.py", "netgeom/store.py"},
        "dvc": lambda rel: rel in {"netgeom/repro/pipeline.py"},
        "dvc_render": lambda rel: rel in {"netgeom/report/dvc_plots.py"},
        "ray": lambda rel: rel in {"netgeom/execution.py", "netgeom/ray_cluster.py", "netgeom/repro/executors.py"},
    }
    wrong = []
    for path in sorted((REPO / "src" / "netgeom").rglob("*.py")):
        rel = path.relative_to(REPO / "src").as_posix()
        for framework in _top_level_imports(path) & set(allowed):
            if not allowed[framework](rel) or rel.startswith("netgeom/studies/"):
                wrong.append(f"{rel} imports {framework}")
    assert wrong == []


def test_every_stage_that_trains_or_measures_declares_what_changes_its_numbers():
    """DVC reruns a stage only for the params it declares: the execution settings that change
    numbers (device, deterministic kernels, CPU threads) on every training and study stage, the
    curve settings on the barriers, the star training's options on the stars."""
    from netgeom.dvc_yaml import stages
    from netgeom.params import EXECUTION_PARAMS

    declared = {name: set(stage.get("params", [])) for name, stage in stages().items() if name not in ("check", "report")}
    for name, params in declared.items():
        if name not in ("split", "corrupt"):
            assert set(EXECUTION_PARAMS) <= params, name
    assert "interpolation" in declared["barriers"]
    assert {"star.realign", "star.anti", "star.calibration_samples"} <= declared["star"]
