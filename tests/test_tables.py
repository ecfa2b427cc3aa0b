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
