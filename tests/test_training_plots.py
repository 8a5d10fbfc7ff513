"""The loss plot's layout: what is drawn must not push the axes off their figure."""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from napari_ambiseg.training.plots import draw_loss, set_loss


def _axes_after(steps, raw) -> tuple[float, float]:
    fig = Figure(figsize=(4.6, 4.3), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(111)
    artists = draw_loss(ax, np.zeros(0), np.zeros(0))
    set_loss(ax, artists, steps, raw)
    fig.draw_without_rendering()
    box = ax.get_position()
    return box.x0, box.y0


def test_no_spike_marker_squeezes_the_axes():
    # the spike marker is unclipped; empty, it sits at the figure's corner and must not count
    x0, y0 = _axes_after([5, 10, 15, 20, 25, 30], [1.05, 1.3, 1.1, 4.5, 1.0, 1.2])
    assert x0 < 0.15 and y0 < 0.15  # only the tick labels and axis labels beside the axes


def test_a_single_log_row_gives_a_valid_x_range():
    fig = Figure()
    ax = fig.add_subplot(111)
    artists = draw_loss(ax, np.zeros(0), np.zeros(0))
    set_loss(ax, artists, [20], [0.5])
    left, right = ax.get_xlim()
    assert left == 0.0 and right > 20
