"""The agreement layer shows its colour bar, 0 to 1, titled "share of samples" (issue #27.9)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_ambiseg.modes import find_modes
from napari_ambiseg.widgets import layers as L
from napari_ambiseg.widgets.engine import Outputs

pytestmark = pytest.mark.gui


def disk_outputs(n: int = 16, size: int = 64) -> Outputs:
    """Samples nested around the centre: agreement 1 there, falling to 0 at the edge."""
    yy, xx = np.mgrid[:size, :size]
    counts = np.clip(n - np.hypot(yy - size / 2, xx - size / 2).astype(int), 0, n)
    masks = np.arange(n)[:, None, None] < counts[None]
    agreement = masks.mean(0, dtype=np.float32)
    return Outputs(masks, agreement, np.zeros_like(agreement), find_modes(masks),
                   (0, 0, size, size), 2, 0)


def test_agreement_layer_shows_a_titled_colour_bar(make_napari_viewer):
    viewer = make_napari_viewer()
    src = viewer.add_image(np.zeros((64, 64), np.float32), name="ct")
    agreement = L.replace_outputs(viewer, src, disk_outputs())["agreement"]
    title = L.scale_title(viewer)
    assert agreement.colorbar.visible and tuple(agreement.contrast_limits) == (0.0, 1.0)
    assert title.text == "share of samples" and title.visible
    assert title.position == agreement.colorbar.position  # beside the bar

    agreement.visible = False  # the layer hidden: its bar and the title go
    assert not title.visible
    agreement.visible = True
    assert title.visible
    agreement.colorbar.visible = False  # the user hides the bar: the title goes too ...
    assert not title.visible
    again = L.replace_outputs(viewer, src, disk_outputs(n=8))["agreement"]
    assert again is agreement and not agreement.colorbar.visible  # ... and a re-run keeps that
    agreement.colorbar.visible = True
    assert title.visible
    viewer.layers.remove(agreement)
    assert not title.visible


def test_the_colour_bar_is_drawn_in_the_canvas_corner(make_napari_viewer):
    """What napari draws: the bar's top colour (agreement 1, yellow) in the top-right corner,
    where the heatmap itself has no agreement; gone when the user hides the bar."""
    viewer = make_napari_viewer(show=True)  # a hidden canvas draws nothing
    src = viewer.add_image(np.zeros((64, 64), np.float32), name="ct")
    L.replace_outputs(viewer, src, disk_outputs())
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(float)
    h, w = shot.shape[:2]
    corner = shot[: h // 3, 2 * w // 3:]
    *rgb, alpha = L.AGREEMENT_COLORS[-1][1]
    top = np.asarray(rgb) * alpha * 255  # over the canvas' black
    assert (np.abs(corner - top).max(-1) < 40).sum() > 20
    viewer.layers["ct agreement"].colorbar.visible = False
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(float)
    assert (np.abs(shot[: h // 3, 2 * w // 3:] - top).max(-1) < 40).sum() == 0
