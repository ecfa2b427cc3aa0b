"""The DVC pipeline end to end in a temporary git repository: repro, a no-op second repro, and a
seed experiment with different metrics. Uses the digits data and tiny models to stay fast."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import commit_dvc_repo, copy_pipeline, write_params



def sh(*args, cwd, check=True):
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
        "DVC_NO_ANALYTICS": "1",
    }
    env.pop("DVC_ROOT", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True)
    assert not check or done.returncode == 0, f"{args}: {done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done.stdout if check else done


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    copy_pipeline(root)
    write_params(
        root,
        mlflow={"enabled": True, "experiment": "pipeline", "log_models": "final"},
        train={"epochs": 2, "checkpoints": {"epochs": [1]}},
        grid={"widths": [8], "noise": [0.2], "seed_offsets": [0]},
    )
    commit_dvc_repo(root, sh)
    sh(sys.executable, "-m", "netgeom", "repro", "-j", "2", "--quiet", cwd=root)  # parallel stages, one MLflow store
    return root


def stale(repo) -> set[str]:
    """The stages `dvc status` flags (matrix entries by their stage name)."""
    return {name.split("@")[0] for name in json.loads(sh("dvc", "status", "--json", cwd=repo) or "{}")}


def test_repro_builds_every_grid_cell_and_the_report(repo):
    runs = sorted(p.name for p in (repo / "artifacts" / "runs").iterdir())
    assert runs == ["mlp_w8-n0.2-r0"]
    summary = json.loads((repo / "reports" / "summary.json").read_text())
    assert set(summary) == {"noise_20pct", "star", "mli"}  # per noise level; the star, the MLI groups (no rho: a 2-layer MLP)
    assert {"star_barrier", "regular_barrier", "p_value"} <= set(summary["star"])
    assert {"peak_test_error", "peak_width", "test_error_rise", "rise_width", "lipschitz_at_peak", "mli_converged", "hyperplane_mass",
            "hyperplane_mass_init"} <= set(summary["noise_20pct"])
    assert ("mli_non_monotonic" in summary["noise_20pct"]) == (summary["noise_20pct"]["mli_converged"] > 0)  # a share of converged runs only
    assert {"sgd_converged", "adam_bn_converged"} <= set(summary["mli"])
    assert "NaN" not in (repo / "reports" / "summary.json").read_text()  # strict JSON
    assert (repo / "reports" / "index.html").exists() and (repo / "reports" / "tables" / "runs.csv").exists()
    figures = {p.name for p in (repo / "reports" / "figures").iterdir()}
    assert {"error_vs_width.png", "learning_curves.png", "smoothness_vs_width.png", "regions_vs_width.png", "mli_curves.png",
            "mli_preset.png", "hyperplane_projections.png", "reinit_heatmap.png", "bias_vs_reinit.png", "star_barriers.png"} <= figures
    for study in ("smoothness", "regions", "interpolation", "hyperplanes", "reinit"):
        assert sorted(p.name for p in (repo / "artifacts" / "studies" / study).iterdir()) == runs
    labels = json.loads((repo / "artifacts" / "labels" / "n0.2" / "summary.json").read_text())
    assert labels["flipped"] == round(0.2 * labels["train_size"])


def test_second_repro_is_a_no_op(repo):
    out = sh("dvc", "repro", cwd=repo)
    assert "Running stage" not in out
    assert "up to date" in sh("dvc", "status", cwd=repo)


def mlflow_record(repo, kind: str = "train@"):
    """(the grid's training runs, or the runs tagged `kind`; their logged models) in the store."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}")
    experiment = mlflow.get_experiment_by_name("pipeline")
    runs = mlflow.search_runs([experiment.experiment_id])
    chosen = runs["tags.dvc.stage"].fillna("").str.startswith(kind) if kind.endswith("@") else runs[f"tags.{kind}"].notna()
    runs = runs[chosen].reset_index(drop=True)
    models = mlflow.search_logged_models(experiment_ids=[experiment.experiment_id], output_format="list")
    return runs, [m for m in models if m.source_run_id in set(runs["run_id"])]


# one module each stage kind imports, and one it never imports
EDITS = {
    "train": ("src/netgeom/training/loop.py", "src/netgeom/report/figures.py"),
    "smoothness": ("src/netgeom/studies/volumes.py", "src/netgeom/studies/regions.py"),
    "regions": ("src/netgeom/studies/shifts.py", "src/netgeom/studies/alignment.py"),
    "report": ("src/netgeom/report/tables.py", "src/netgeom/stages/curve.py"),
    "split": ("src/netgeom/data/split.py", "src/netgeom/models/mlp.py"),
}


@pytest.mark.parametrize("stage", sorted(EDITS))
def test_editing_code_a_stage_runs_makes_dvc_status_flag_it(repo, stage):
    imported, unrelated = EDITS[stage]

    for path, flagged in ((imported, True), (unrelated, False)):
        original = (repo / path).read_text()
        try:
            (repo / path).write_text(original + "\n# edited\n")
            assert (stage in stale(repo)) is flagged, (stage, path)
        finally:
            (repo / path).write_text(original)
    assert not stale(repo)


def test_a_new_or_replaced_file_in_inits_makes_dvc_status_flag_the_reinit_stages_only(repo):
    weights = repo / "inits" / "snapshot.safetensors"
    try:
        weights.write_bytes(b"any weights")
        assert stale(repo) == {"reinit"}
    finally:
        weights.unlink()
    assert not stale(repo)


def test_a_new_or_replaced_file_in_pretrained_makes_dvc_status_flag_the_training_stages_only(repo):
    # model.pretrained is only a path in params.yaml: without the folder as a dependency, replaced
    # weights under the same name left every run (and what was measured on it) stale, unseen
    weights = repo / "pretrained" / "start.safetensors"
    try:
        weights.write_bytes(b"any weights")
        assert stale(repo) == {"train", "star_anchor", "star_held_out", "star"}
    finally:
        weights.unlink()
    assert not stale(repo)


def test_a_model_measured_outside_the_pipeline_leaves_every_stage_up_to_date(repo):
    import shutil

    out = sh(sys.executable, "-m", "netgeom", "hyperplanes-model", "vgg8", "--seed", "3", "--input-shape", "3,32,32", "--classes", "10", cwd=repo)
    try:
        assert (repo / "artifacts" / "models" / "hyperplanes" / "vgg8-init-s3").is_dir(), out
        assert not json.loads(sh("dvc", "status", "--json", cwd=repo) or "{}")
    finally:
        shutil.rmtree(repo / "artifacts" / "models")


def test_another_datasets_files_under_data_rerun_split_alone(repo):
    # `make fashion-mnist` adds a dataset beside digits: data/ changes, digits does not. Only
    # `split` depends on data/; its split.json (the digits files' digest) comes out the same, so
    # nothing after it re-runs and no training is repeated.
    import shutil

    from netgeom.data import get_source

    other = repo / "data" / "mnist1d"
    try:
        get_source("mnist1d").materialise(repo / "data")
        assert stale(repo) - {"data.dvc"} == {"split"}
        out = sh("dvc", "repro", cwd=repo)
        assert out.count("Running stage") == 1 and "Running stage 'split'" in out, out
    finally:
        shutil.rmtree(other, ignore_errors=True)
    sh("dvc", "repro", cwd=repo)
    assert not stale(repo) - {"data.dvc"}


def test_mlflow_holds_one_run_per_training_with_checkpoint_models(repo):
    runs, models = mlflow_record(repo)
    assert len(runs) == 1 and set(runs["tags.dvc.stage"]) == {"train@8-0.2-0"}
    assert set(runs["tags.mlflow.runName"]) == {"mlp w8 n0.2 s1"}
    assert len(models) == 1  # the final checkpoint (the others are run artifacts)
    stars, _ = mlflow_record(repo, "star@")  # star runs are training runs too, tagged with their anchors
    assert len(stars) == 1 and stars["tags.star.anchors"][0] == "mlp_w8-n0.2-s100"
    assert stars["tags.mlflow.runName"][0] == "star1 mlp w8 n0.2 s1"
    assert all(runs["tags.netgeom.complete"] == "true")
    assert runs["metrics.smoothness/jacobian_frobenius.crossentropy.all"].notna().all()
    # the report (barriers, the MLI preset, every figure and the page) is a run of its own
    reports, _ = mlflow_record(repo, "netgeom.report")
    assert len(reports) == 1 and reports["metrics.noise_20pct/peak_test_error"].notna().all()
    import mlflow

    stored = {a.path for a in mlflow.MlflowClient().list_artifacts(reports["run_id"][0], "report")}
    assert {"report/index.html", "report/figures", "report/tables", "report/summary.json"} <= stored


def test_mlflow_sync_rebuilds_a_lost_store_with_the_report_run_and_says_what_it_created(repo):
    # `make clean && make repro` restores every stage from DVC's cache and logs nothing: sync is
    # then the way back, report run (barriers, MLI preset, figures) included.
    import shutil

    store, aside = repo / "mlruns", repo / "mlruns.aside"
    trainings = len(mlflow_record(repo)[0]) + len(mlflow_record(repo, "star@")[0])
    shutil.move(store, aside)
    try:
        out = sh(sys.executable, "-m", "netgeom", "mlflow", "sync", cwd=repo)
        runs, models = mlflow_record(repo)
        reports, _ = mlflow_record(repo, "netgeom.report")
        assert len(runs) == 1 and len(models) == 1 and len(reports) == 1
        created = int(out.split(": ")[-1].split()[0])
        assert "and the report in sync" in out and created >= trainings + 1, out
        again = sh(sys.executable, "-m", "netgeom", "mlflow", "sync", cwd=repo)
        assert ": 0 created" in again, again
    finally:
        shutil.rmtree(store, ignore_errors=True)
        shutil.move(aside, store)


def test_seed_experiment_runs_and_differs(repo):
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "baseline", cwd=repo)
    sh("dvc", "exp", "run", "-S", "seed=43", cwd=repo)
    shown = json.loads(sh("dvc", "exp", "show", "--json", cwd=repo))
    metrics = []
    for entry in shown:
        for exp in [entry] + [e for group in entry.get("experiments") or [] for e in group.get("revs", [])]:
            data = exp.get("data") or {}
            values = (data.get("metrics") or {}).get("reports/summary.json", {}).get("data")
            if values:
                metrics.append((data["params"]["params.yaml"]["data"]["seed"], values))
    seeds = {seed for seed, _ in metrics}
    assert {1, 43} <= seeds
    by_seed = dict(metrics)
    assert by_seed[1] != by_seed[43]
    # the experiment is its own MLflow runs, tagged with its name; the seed-1 runs are untouched
    runs, models = mlflow_record(repo)
    assert len(runs) == 2 and len(models) == 2
    assert sorted(runs["params.seed"]) == ["1", "43"]
    seed43 = runs[runs["params.seed"] == "43"]
    assert seed43["tags.dvc.exp_name"].notna().all() and seed43["tags.dvc.exp_name"].str.len().gt(0).all()
    for _, run in runs.iterrows():
        history = mlflow_history(repo, run["run_id"], "smoothness/jacobian_frobenius.crossentropy.all")
        assert len(history) == 1  # one value per step: no other seed's summary on top
    # back to the baseline for the tests after this one (the experiment left its seed-43 workspace)
    sh("git", "checkout", "--", "params.yaml", "dvc.lock", cwd=repo)
    sh("dvc", "checkout", "--force", "--quiet", cwd=repo)


def mlflow_history(repo, run_id, key):
    import mlflow

    return mlflow.MlflowClient(f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}").get_metric_history(run_id, key)


def test_queued_seed_grid_on_two_workers(repo):
    """The README's "grid of seeds on one box" recipe, as written."""
    main_run = json.loads((repo / "artifacts" / "runs" / "mlp_w8-n0.2-r0" / "run.json").read_text())
    sh("dvc", "exp", "run", "--queue", "-S", "seed=44", cwd=repo)
    sh("dvc", "exp", "run", "--queue", "-S", "seed=45", cwd=repo)
    sh("dvc", "queue", "start", "-j", "2", cwd=repo)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        status = sh("dvc", "queue", "status", cwd=repo)
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(5)
    status = sh("dvc", "queue", "status", cwd=repo)
    assert status.count("Success") == 2 and "Failed" not in status, status
    assert json.loads((repo / "artifacts" / "runs" / "mlp_w8-n0.2-r0" / "run.json").read_text()) == main_run
    runs, models = mlflow_record(repo)
    by_seed = runs.groupby("params.seed").size().to_dict()
    assert by_seed["44"] == 1 and by_seed["45"] == 1
    assert all(runs["tags.netgeom.complete"] == "true")
    queued = runs[runs["params.seed"].isin(["44", "45"])]
    assert queued["metrics.smoothness/jacobian_frobenius.crossentropy.all"].notna().all()
    assert len(models) == len(runs)


@pytest.mark.parametrize("override", ["mlflow.enabled=maybe", "execution.threads=0", "colour=1"])
def test_a_bad_value_in_any_group_stops_dvc_exp_run(repo, override):
    """No stage but `check` depends on these groups: without it the experiment 'succeeds'."""
    done = sh("dvc", "exp", "run", "-S", override, cwd=repo, check=False)
    assert done.returncode != 0
    assert override.split("=")[0] in done.stdout + done.stderr
    sh("git", "checkout", "--", "params.yaml", cwd=repo)


CLAIMS = ("peak sits", "reaches 0 where", "critical ones", "double descent")


def _figure_texts(figure) -> list[tuple[str, object]]:
    """(text, window extent) of every title and axis label a figure draws (drawn first)."""
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    artists = [figure._suptitle] if figure._suptitle is not None else []
    for axis in figure.axes:
        artists += [axis.title, axis._left_title, axis._right_title, axis.xaxis.label, axis.yaxis.label]
    return [(a.get_text(), a.get_window_extent(renderer)) for a in artists if a.get_visible() and a.get_text().strip()]


def test_no_figure_or_caption_claims_what_the_run_lacks(repo, monkeypatch, tmp_path):
    """The fixture's run lacks every finding: two epochs fit no labels, one width has no curve to
    peak, a 2-layer MLP gives no rank correlation, few star pairs. Every figure is drawn anew:
    no title claims a finding or overprints another title or label, and no caption reads nan."""
    import re

    from matplotlib.figure import Figure

    from netgeom.layout import Layout
    from netgeom.params import load_params
    from netgeom.stages.report import render

    drawn: list[list[tuple[str, object]]] = []
    savefig = Figure.savefig

    def recording(self, *args, **kwargs):
        drawn.append(_figure_texts(self))
        return savefig(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recording)
    monkeypatch.chdir(repo)
    render(load_params(repo / "params.yaml"), Layout(repo), tmp_path / "reports")
    assert len(drawn) == len(list((tmp_path / "reports" / "figures").iterdir())) >= 10
    for texts in drawn:
        for text, _ in texts:
            assert not re.search(r"\bnan\b", text, re.I) and not any(claim in text.lower() for claim in CLAIMS), text
        for i, (a, box_a) in enumerate(texts):
            for b, box_b in texts[i + 1 :]:
                assert not box_a.overlaps(box_b), f"{a!r} overprints {b!r}"
    page = re.sub(r'src="data:[^"]+"', "", (tmp_path / "reports" / "index.html").read_text())
    captions = [re.sub(r"<[^>]+>", " ", c) for c in re.findall(r"<figcaption>(.*?)</figcaption>", page, re.S)]
    titles = re.findall(r"<h3>(.*?) <a", page)
    assert captions and titles
    for text in captions + titles:
        assert not re.search(r"\bnan\b", text, re.I) and "+-" not in text and not any(claim in text.lower() for claim in CLAIMS), text
    assert any("no width fits the training labels" in c for c in captions)
    assert any("n/a (2 layers" in c for c in captions)  # the bias-vs-drop rank correlation
    headline = re.findall(r"<th>(.*?)</th>", page)
    assert headline and not any("_" in row for row in headline)  # readable labels, not keys
    from tests.test_report_page import CHROMIUM, images_loaded

    if CHROMIUM:  # and every figure of the page loads in a real browser
        assert images_loaded(tmp_path / "reports" / "index.html", tmp_path) == (len(drawn), len(drawn))


def test_dvc_plots_show_renders_offline_in_the_reports_order(repo, tmp_path):
    """DVC's page loads Vega from a CDN; ours (the report's template, .dvc/config) carries it, and
    lists the report's figures in its order with their captions. Chromium opens it with every
    host unresolvable: the interactive plot still draws."""
    import re
    import shutil

    out = tmp_path / "plots"
    sh("dvc", "plots", "show", "-o", str(out), cwd=repo)
    page = (out / "index.html").read_text()
    assert "cdn.jsdelivr" not in page and "window.vegaEmbed" in page
    listed = json.loads(re.search(r"const FIGURES = (.*?);\n", page).group(1))
    report = (repo / "reports" / "index.html").read_text()
    assert [f["title"].split(": ", 1)[1] for f in listed] == re.findall(r"<h3>(.*?) <a", report)
    assert all(f["id"] in page for f in listed) and all(f["caption"] or "curves" in f["title"].lower() for f in listed)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium); the page was checked as text only")
    command = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", "--dump-dom", (out / "index.html").as_uri(),
    ]  # fmt: skip
    dom = subprocess.run(command, capture_output=True, text=True, timeout=180).stdout
    assert 'class="marks"' in dom  # Vega drew the interactive plot
    shown = re.findall(r"<h2>(.*?)</h2>", dom[dom.index('id="netgeom-plots"') :])  # the body, not the bundled library
    assert [html_unescape(t) for t in shown] == [f["title"] for f in listed]


def html_unescape(text: str) -> str:
    import html

    return html.unescape(text)


def test_headline_and_caption_numbers_match_the_artifacts(repo):
    """Every number the report states, recomputed here from the files it came from (metrics.json
    of each run, the studies' parquet tables), by plain pandas rather than the report's code."""
    import re

    import pandas as pd

    summary = json.loads((repo / "reports" / "summary.json").read_text())
    runs = pd.DataFrame(
        [{**json.loads((f / "run.json").read_text())["cell"], **json.loads((f / "metrics.json").read_text())} for f in (repo / "artifacts" / "runs").iterdir()]
    )
    runs["test_error"], runs["train_error"] = 1 - runs["test_acc"], 1 - runs["train_acc"]
    noisy = runs[runs["noise"] == 0.2].groupby("width")[["test_error", "train_error"]].mean()
    fitted = noisy[noisy["train_error"] <= 0.01]
    pool = fitted if len(fitted) else noisy
    headline = summary["noise_20pct"]
    assert headline["peak_test_error"] == pytest.approx(pool["test_error"].max())
    assert headline["peak_width"] == pool["test_error"].idxmax()
    assert headline["test_error_widest"] == pytest.approx(noisy["test_error"].iloc[-1])
    final = [pd.read_parquet(f / "network.parquet") for f in (repo / "artifacts" / "studies" / "hyperplanes").iterdir()]
    assert headline["hyperplane_mass"] == pytest.approx(sum(t.loc[t["epoch"].idxmax(), "mass"] for t in final) / len(final))
    star = repo / "artifacts" / "studies" / "star"
    barriers, tests = pd.read_parquet(star / "barriers.parquet"), pd.read_parquet(star / "tests.parquet")
    chosen = barriers[(barriers["split"] == "train") & (barriers["matching"] == "weights")]
    stars = chosen[(chosen["kind"] == "star") & (chosen["anchors"] == chosen["anchors"].max())]
    assert summary["star"]["star_barrier"] == pytest.approx(stars["loss_barrier"].mean())
    assert summary["star"]["regular_barrier"] == pytest.approx(chosen.loc[chosen["kind"] == "regular", "loss_barrier"].mean())
    row = tests[(tests["split"] == "train") & (tests["matching"] == "weights")].iloc[0]
    assert summary["star"]["p_value"] == pytest.approx(row["p_value"])
    page = (repo / "reports" / "index.html").read_text()
    errors = ", ".join(f"{v:.2f}" for v in noisy["test_error"])
    assert f"Label noise 0.2: test error {errors} over widths {', '.join(map(str, noisy.index))}" in page
    star_line = re.search(r"Width \d+, train loss, matching weights: star ↔ held-out ([\d.e+-]+)", page)
    assert star_line and float(star_line.group(1)) == pytest.approx(stars["loss_barrier"].mean(), rel=1e-2)
    by_anchors = chosen[chosen["kind"] == "star"].groupby("anchors")["loss_barrier"].mean()
    said = dict(re.findall(r"k=(\d+) ([\d.e+-]+)(?=[,( ])", page.split("barrier by anchors")[1].split("Mean test accuracy")[0]))
    assert {int(k): float(v) for k, v in said.items()} == pytest.approx(by_anchors.to_dict(), rel=1e-2)


def test_stages_depend_on_the_data_folder_params_name(tmp_path):
    """`data.root` elsewhere than data/: an edit of the files there makes DVC re-run the split."""
    import shutil

    import numpy as np

    root = copy_pipeline(tmp_path / "repo")
    shutil.copytree(root / "data", root / "elsewhere")
    write_params(root, data={"name": "digits", "val_size": 0.1, "root": "elsewhere"})
    commit_dvc_repo(root, sh)
    sh(sys.executable, "-m", "dvc", "repro", "-q", "split", cwd=root)
    assert "up to date" in sh(sys.executable, "-m", "dvc", "status", "split", cwd=root)
    x = np.load(root / "elsewhere" / "digits" / "train_x.npy")
    np.save(root / "elsewhere" / "digits" / "train_x.npy", x[::-1].copy())
    assert "elsewhere" in sh(sys.executable, "-m", "dvc", "status", "split", cwd=root)
    sh(sys.executable, "-m", "dvc", "repro", "-q", "split", cwd=root)
    np.save(root / "data" / "digits" / "train_x.npy", x[::-1].copy())  # the files data.root does not name
    assert "up to date" in sh(sys.executable, "-m", "dvc", "status", "split", cwd=root)
