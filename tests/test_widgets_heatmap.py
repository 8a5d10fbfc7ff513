"""The agreement heatmap's low end is visible on a lung window (issue 13, item 1)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_ambiseg.modes import find_modes
from napari_ambiseg.result import binary_entropy
from napari_ambiseg.widgets import layers as L
from napari_ambiseg.widgets.engine import Outputs

LUNG = (-1350.0, 150.0)  # HU window: air is black, -600 HU is mid-gray


def luminance(rgb) -> np.ndarray:
    """Relative luminance (WCAG) of sRGB colours in 0..1."""
    rgb = np.asarray(rgb, dtype=float)[..., :3]
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    return linear @ np.array([0.2126, 0.7152, 0.0722])


def over(rgba, background: float) -> np.ndarray:
    """A colour drawn over a gray background (translucent blending)."""
    rgba = np.asarray(rgba, dtype=float)
    return rgba[..., :3] * rgba[..., 3:] + background * (1 - rgba[..., 3:])


def test_agreement_colormap_shows_one_sample_in_sixteen():
    cmap = L.agreement_colormap()
    assert cmap.map(np.array([0.0]))[0, 3] == 0  # no agreement: the image as it is
    values = np.linspace(1 / 64, 1, 200)  # any agreement with up to 64 samples
    colors = cmap.map(values)
    assert colors[:, 3].min() >= 0.5 and np.all(np.diff(colors[:, 3]) >= 0)
    on_black = luminance(over(colors, 0.0))
    assert on_black.min() > 0.1  # well above black (air: 0); contrast ratio > 3
    assert np.all(np.diff(on_black) >= 0)  # ordered low -> high
    assert on_black[-1] > 3 * on_black[0]
    on_gray = over(colors, 0.5)  # lung tissue on a lung window
    assert np.linalg.norm(on_gray - 0.5, axis=1).min() > 0.3
    sixteenth = cmap.map(np.array([1 / 16]))[0]
    assert sixteenth[3] >= 0.5 and luminance(over(sixteenth, 0.0)) > 0.1


def agreement_outputs(counts: np.ndarray, n: int = 16) -> Outputs:
    """Outputs whose agreement at each pixel is counts / n (the first `count` samples)."""
    masks = np.arange(n)[:, None, None] < counts[None]
    agreement = masks.mean(0, dtype=np.float32)
    return Outputs(masks, agreement, binary_entropy(agreement), find_modes(masks),
                   (0, 0, *counts.shape), 2, 0)


@pytest.mark.gui
def test_rendered_heatmap_low_end_over_air_and_tissue(make_napari_viewer):
    """What napari draws: the heatmap layer over a lung-windowed image, pixel by pixel."""
    viewer = make_napari_viewer(show=True)  # a hidden canvas draws nothing
    image = np.full((60, 160), LUNG[0], np.float32)   # top: black
    image[30:] = -600.0                               # bottom: lung tissue (mid-gray)
    src = viewer.add_image(image, contrast_limits=LUNG, name="ct")
    counts = np.zeros((60, 160), int)
    for i, c in enumerate((0, 1, 4, 16)):  # 40-pixel columns: 0, 1/16, 4/16, 16/16
        counts[:, 40 * i:40 * (i + 1)] = c
    shown = L.replace_outputs(viewer, src, agreement_outputs(counts))
    shown["samples"].visible = False
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3] / 255.0

    def pixel(row: float, col: float) -> np.ndarray:
        h, w = shot.shape[:2]
        cy, cx = viewer.scene.camera.center[-2:]
        zoom = viewer.scene.camera.zoom * w / viewer.window._qt_viewer.canvas.size[1]  # (h, w)
        return shot[int(h / 2 + (row - cy) * zoom), int(w / 2 + (col - cx) * zoom)]

    black = [pixel(15, 40 * i + 20) for i in range(4)]
    tissue = [pixel(45, 40 * i + 20) for i in range(4)]
    assert black[0].max() < 0.02 and abs(tissue[0] - 0.5).max() < 0.02  # 0: image unchanged
    assert luminance(black[1]) > 0.1  # 1 of 16 over black
    assert np.linalg.norm(tissue[1] - tissue[0]) > 0.3  # 1 of 16 over tissue
    assert luminance(black[1]) < luminance(black[2]) < luminance(black[3])
