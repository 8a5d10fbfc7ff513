"""Training curves: the loss (window means faint, `robust_smooth` of those same points, log
axis with `robust_limits`) and the validation metrics, for training.png and the dock's live
plot."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from .runlog import SMOOTHING, read_log, robust_limits, robust_smooth


def draw_loss(ax, steps: np.ndarray, raw: np.ndarray) -> dict[str, Any]:
    """Raw window means (faint), their robust smoothing (labelled with what it is), spikes
    beyond the top marked; log y axis with robust limits. Returns the artists (for live
    updates)."""
    smooth = robust_smooth(raw)
    (raw_line,) = ax.plot(steps, raw, lw=0.7, alpha=0.3, color="tab:blue",
                          label="loss (window means)")
    (smooth_line,) = ax.plot(steps, smooth, lw=1.8, color="tab:blue",
                             label=textwrap.fill(f"smoothed: {SMOOTHING}", 28))
    (spikes,) = ax.plot([], [], "^", ms=4, alpha=0.5, color="tab:blue", clip_on=False,
                        label="_spikes")
    spikes.set_in_layout(False)  # unclipped: its empty bbox at (0, 0) would squeeze the axes
    artists = {"raw": raw_line, "smooth": smooth_line, "spikes": spikes}
    from matplotlib.ticker import LogFormatter

    class Plain(LogFormatter):  # 0.02, not 2e-02; which ticks get a label stays matplotlib's
        def _num_to_string(self, x, vmin, vmax):
            return f"{x:g}"

    ax.set_yscale("log")  # resets the formatters: set them after
    ax.yaxis.set_major_formatter(Plain(labelOnlyBase=False))
    ax.yaxis.set_minor_formatter(Plain(labelOnlyBase=False, minor_thresholds=(1, 0.5)))
    set_loss(ax, artists, steps, raw)
    return artists


def set_loss(ax, artists: dict[str, Any], steps, raw) -> None:
    """Update what `draw_loss` drew with new data."""
    steps, raw = np.asarray(steps, float), np.asarray(raw, float)
    smooth = robust_smooth(raw)
    artists["raw"].set_data(steps, raw)
    artists["smooth"].set_data(steps, smooth)
    limits = robust_limits(raw, smooth)
    if limits is not None:
        ax.set_ylim(*limits)
        over = raw > limits[1]
        artists["spikes"].set_data(steps[over], np.full(int(over.sum()), limits[1]))
    else:
        artists["spikes"].set_data([], [])
    if steps.size:  # from 0, unless the log is a later stage alone
        first, last = float(steps.min()), max(float(steps.max()), 1.0)
        left = 0.0 if first < 0.25 * last or first == last else first
        ax.set_xlim(left, last + 0.02 * (last - left))


def plot_log(log_csv: Path, png: Path) -> None:
    """training.png: the loss (robust smoothing, see above) and the validation metrics."""
    # Figure without pyplot: no global backend switch, safe beside a GUI's own plots
    from matplotlib.figure import Figure

    from ..io.atomic import atomic_write_bytes

    log = read_log(log_csv)
    if log["step"].size == 0:
        return
    fig = Figure(figsize=(10, 3.6))
    ax = fig.subplots(1, 2)
    draw_loss(ax[0], log["step"], log["loss"])
    ax[0].set(xlabel="iteration", ylabel="loss", title="training loss")
    ax[0].legend()
    if log["val_step"].size:
        ax[1].plot(log["val_step"], log["val_ged"], "o-", label="GED16 (val)")
        ax[1].plot(log["val_step"], log["val_hm_iou"], "s-", label="HM-IoU16 (val)")
        ax[1].legend()
    else:
        ax[1].text(0.5, 0.5, "no validation in this run", ha="center", va="center",
                   transform=ax[1].transAxes, color="0.4")
        ax[1].set(xticks=[], yticks=[])
    ax[1].set(xlabel="iteration", title="validation")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    atomic_write_bytes(png, buf.getvalue())
