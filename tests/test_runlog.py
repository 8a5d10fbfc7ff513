"""The run log: robust smoothing (single spikes do not move the curve), robust axis limits,
reading old and new logs, trimming on resume."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from napari_ambiseg.training.runlog import LOG_FIELDS, append_log, read_log, robust_limits, robust_smooth, truncate_log

OLD_LOG = Path(__file__).parents[1] / "docs" / "results" / "lidc_v4_log.csv"


def test_a_spike_does_not_move_the_smoothed_curve_but_a_trend_does():
    loss = np.full(60, 0.36)
    loss[30] = 12_213.0                                  # the spike seen in the dock
    smooth = robust_smooth(loss)
    assert np.allclose(smooth, 0.36)
    lo, hi = robust_limits(loss, smooth)
    assert hi < 5 and lo < 0.36 < hi                     # the axis stays readable
    falling = robust_smooth(np.r_[np.full(30, 1.0), np.full(30, 0.1)])
    assert falling[0] == pytest.approx(1.0, rel=0.02) and falling[-1] == pytest.approx(0.1, rel=0.02)
    # centred, not late: the drop is drawn where it happens (between points 29 and 30)
    assert np.sqrt(falling[29] * falling[30]) == pytest.approx(np.sqrt(0.1), rel=0.02)
    assert 0.1 < falling[30] < falling[29] < 1.0


def test_the_smoothed_curve_runs_through_noisy_points():
    """Right-skewed window means, level or falling: about as many points above the curve as
    below (a smoothing of the points, not of their medians, and not late on a trend)."""
    rng = np.random.default_rng(1)
    steps = np.arange(200)
    for level, part in ((np.full(200, 0.05), slice(None)),
                        (0.05 + 0.5 * np.exp(-steps / 30), slice(0, 60))):  # where it falls
        raw = level * rng.lognormal(0.0, 0.3, 200)
        above = np.mean(raw[part] > robust_smooth(raw)[part])
        assert 0.35 < above < 0.65, above


def test_read_log_of_an_old_log_uses_the_mean_as_median():
    log = read_log(OLD_LOG)
    assert log["step"].size == 800 and np.array_equal(log["loss_median"], log["loss"])
    assert log["val_step"].size == 8 and np.isfinite(log["val_ged"]).all()
    assert read_log(OLD_LOG.with_name("missing.csv"))["step"].size == 0


def test_truncate_and_append_keep_the_logs_columns(tmp_path):
    path = tmp_path / "log.csv"
    for step in (5, 10, 15):
        append_log(path, {"step": step, "loss": 0.5, "loss_median": 0.4})
    truncate_log(path, 10)
    append_log(path, {"step": 15, "loss": 0.3, "loss_median": 0.2, "val_ged": 0.7})
    rows = list(csv.DictReader(open(path)))
    assert [r["step"] for r in rows] == ["5", "10", "15"] and list(rows[0]) == LOG_FIELDS
    assert rows[-1]["val_ged"] == "0.7"
    old = tmp_path / "old.csv"
    old.write_text("".join(open(OLD_LOG).readlines()[:3]))
    append_log(old, {"step": 60, "loss": 0.1, "loss_median": 0.09})
    rows = list(csv.DictReader(open(old)))
    assert len(rows) == 3 and None not in rows[-1] and rows[-1]["loss"] == "0.1"
