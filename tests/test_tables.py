"""Headline numbers of the model-wise curve against hand-computed values."""

import pandas as pd

from netgeom.report import tables


def runs(errors: dict[int, float], train: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame({"width": list(errors), "test_error": list(errors.values()), "train_error": train})


def test_a_curve_that_only_falls_has_no_rise():
    assert tables.test_error_rise(runs({4: 0.3, 8: 0.2, 16: 0.2, 32: 0.1}))[1] == 0.0


def test_the_rise_is_the_bump_above_the_running_minimum():
    # 0.278 -> 0.33 (bump 0.052 at width 16) -> 0.24; a later, smaller rise (0.21 -> 0.23) loses
    width, rise = tables.test_error_rise(runs({8: 0.278, 16: 0.33, 32: 0.24, 64: 0.21, 128: 0.23}))
    assert width == 16 and abs(rise - 0.052) < 1e-12


def test_the_rise_averages_replicates_and_ignores_row_order():
    frame = pd.concat([runs({16: 0.4, 8: 0.3, 4: 0.5}), runs({16: 0.2, 8: 0.3, 4: 0.5})])
    assert abs(tables.test_error_rise(frame)[1]) < 1e-12  # the mean 0.3 at 16 equals the minimum so far
    width, rise = tables.test_error_rise(frame.replace({0.4: 0.6}))  # mean 0.4 at 16: 0.1 above 0.3
    assert width == 16 and abs(rise - 0.1) < 1e-12
    assert tables.double_descent_peak(frame)[0] == 4


def test_the_mli_headline_counts_only_converged_runs(tmp_path):
    """summary.json's mli_non_monotonic: the MLI paper's convergence filter first (final train
    loss <= interpolation.max_final_loss, the stage's loss at t = 1 of each init -> final curve), then the share
    with Delta > tol; a noise level without a converged run has a count and no share."""
    from netgeom.layout import Layout
    from netgeom.params import params_model
    from netgeom.report import interpolation as report
    from netgeom.report.context import ReportContext
    from netgeom.summary import Summary, write_summary

    layout = Layout(tmp_path)
    # run: (noise, Delta on the train split, final train loss)
    cases = {"a": (0.0, 0.0, 0.05), "b": (0.0, 0.02, 0.08), "c": (0.0, 0.5, 0.9), "d": (0.0, 0.0005, 0.01), "e": (0.2, 0.3, 0.7)}
    for run, (_, delta, final) in cases.items():
        folder = layout.study_dir("interpolation", run)
        write_summary(folder, Summary(epochs={10: {"delta.train": {"all": delta}, "monotone.train": {"all": float(delta == 0)},
                                                   "final_loss.train": {"all": final}, "final_loss.test": {"all": 0.01}}}))
    runs_table = pd.DataFrame({"run": list(cases), "width": [4, 8, 16, 32, 4], "noise": [c[0] for c in cases.values()], "replicate": 0,
                               "test_error": 0.1, "train_error": 0.0})
    params = params_model().model_validate({"interpolation": {"max_final_loss": 0.1, "tol": 1e-3}})
    context = ReportContext(params, layout, runs_table, pd.DataFrame(), tmp_path / "reports", None, None)
    # converged at noise 0: a, b, d (c's 0.9 is out); non-monotonic: b only (d's 5e-4 is within tol)
    assert report.metrics(context) == {"noise_0pct": {"mli_converged": 3, "mli_non_monotonic": 1 / 3}, "noise_20pct": {"mli_converged": 0}}
