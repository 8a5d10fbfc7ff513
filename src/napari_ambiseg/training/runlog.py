"""A training run's log (log.csv): one row per log interval, read back for plots and resume.

The loss of the LIDC recipe (x-prediction, SNR+1 weighting) has rare huge spikes (a batch
with a near-clean time step and a wrong pixel): a window mean can jump from 0.03 to 10^4.
Curves (training/plots.py) plot the window means faint and, over them, `robust_smooth` of
those same points (a centred running median of SMOOTH_WINDOW points, then a local linear fit
in log space: `SMOOTHING` says so in the legend), on a log axis whose limits ignore the top
and bottom 1% (`robust_limits`; spikes above are marked). Each row also keeps the window's
median (the loss is right-skewed, so the median lies below the mean: not what is plotted).
"""

from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

LOG_FIELDS = ["step", "time_s", "loss", "kl", "lr", "val_ged", "val_hm_iou", "loss_median", "bce"]


def append_log(path: Path, row: dict[str, Any]) -> None:
    """Append a row; a log begun by an older version keeps its own columns."""
    fields = LOG_FIELDS
    if path.is_file():
        with open(path, newline="") as f:
            fields = next(csv.reader(f), None) or LOG_FIELDS
    new = not path.is_file() or path.stat().st_size == 0
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fields, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow({k: row.get(k, "") for k in fields})


def _float(value: str | None) -> float:
    try:
        return float(value) if value not in (None, "") else float("nan")
    except ValueError:
        return float("nan")


def read_log(path: str | Path) -> dict[str, np.ndarray]:
    """{"step", "loss", "loss_median", "val_step", "val_ged", "val_hm_iou"} arrays (empty if
    the file does not exist). Rows without a loss (none today) are skipped for the loss;
    logs from before "loss_median" existed use the window mean as the median."""
    out = {k: np.zeros(0) for k in ("step", "loss", "loss_median", "val_step", "val_ged",
                                    "val_hm_iou")}
    p = Path(path)
    if not p.is_file():
        return out
    with open(p, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("step")]
    loss = [(int(r["step"]), _float(r.get("loss")), _float(r.get("loss_median")))
            for r in rows if r.get("loss")]
    val = [(int(r["step"]), _float(r.get("val_ged")), _float(r.get("val_hm_iou")))
           for r in rows if r.get("val_ged")]
    if loss:
        a = np.array(loss, dtype=float)
        out["step"], out["loss"] = a[:, 0], a[:, 1]
        out["loss_median"] = np.where(np.isnan(a[:, 2]), a[:, 1], a[:, 2])
    if val:
        v = np.array(val, dtype=float)
        out["val_step"], out["val_ged"], out["val_hm_iou"] = v[:, 0], v[:, 1], v[:, 2]
    return out


def truncate_log(path: Path, step: int) -> None:
    """Drop the rows after `step` (written after the checkpoint a run resumes from), so the
    resumed run's rows follow on without repeats. Atomic: the log is replaced whole."""
    from ..io.atomic import atomic_write_bytes

    if not path.is_file():
        return
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or LOG_FIELDS
        rows = list(reader)
    keep = [r for r in rows if r.get("step") and int(r["step"]) <= step]
    if len(keep) == len(rows):
        return
    buf = io.StringIO()
    w = csv.DictWriter(buf, header, lineterminator="\r\n")  # csv's default, as appended
    w.writeheader()
    w.writerows(keep)
    atomic_write_bytes(path, buf.getvalue().encode())


SMOOTH_WINDOW, SMOOTH_SPAN = 7, 10
# what the smoothed curve is, for a legend
SMOOTHING = f"median of {SMOOTH_WINDOW}, local linear fit over {2 * SMOOTH_SPAN + 1}"


def robust_smooth(values: np.ndarray, window: int = SMOOTH_WINDOW,
                  span: int = SMOOTH_SPAN) -> np.ndarray:
    """A smoothing of `values` themselves, centred on each: the running median of the
    `window` values around it (fewer at the ends), then, in log space, a local linear fit
    over the 2 * `span` + 1 medians around it (tricube weights; one-sided at the ends, where
    the line carries the trend: a falling loss is not drawn late, hence above its points, nor
    a short run's first points flattened). One spike, however large, moves the curve not at
    all, also at the ends."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return v
    h = window // 2
    with warnings.catch_warnings():  # a window of NaN only: its median is NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(sliding_window_view(np.pad(v, h, constant_values=np.nan), 2 * h + 1),
                           axis=1)
    y = sliding_window_view(np.pad(np.log(np.maximum(med, 1e-12)), span,
                                   constant_values=np.nan), 2 * span + 1)
    d = np.arange(-span, span + 1, dtype=float)
    ok = np.isfinite(y)
    w = np.where(ok, (1 - (np.abs(d) / (span + 1)) ** 3) ** 3, 0.0)
    y = np.where(ok, y, 0.0)
    s0, s1, s2 = w.sum(1), (w * d).sum(1), (w * d * d).sum(1)
    t0, t1 = (w * y).sum(1), (w * d * y).sum(1)
    det = s0 * s2 - s1 ** 2
    line = det > 1e-9 * s0 * s2  # two points or more: the line's value here, else the mean
    with np.errstate(divide="ignore", invalid="ignore"):
        fit = np.where(line, (s2 * t0 - s1 * t1) / np.where(line, det, 1.0), t0 / s0)
    return np.exp(fit)


def robust_limits(raw: np.ndarray, smooth: np.ndarray) -> tuple[float, float] | None:
    """Log-axis limits that show the whole smoothed curve and the raw values but their top
    and bottom 1%, and at most 10x above the smoothed curve (short runs have too few values
    for a percentile to ignore one spike)."""
    vals = np.asarray(raw, dtype=float)
    vals = vals[np.isfinite(vals) & (vals > 0)]
    if vals.size == 0:
        return None
    lo, hi = np.percentile(vals, [1, 99])
    s = np.asarray(smooth, dtype=float)
    s = s[np.isfinite(s) & (s > 0)]
    if s.size:
        lo, hi = min(lo, s.min()), max(min(hi, 10 * s.max()), s.max())
    return lo / 1.3, hi * 1.3
