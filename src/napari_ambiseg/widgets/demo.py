"""`ambiseg demo`: napari on a real chest CT slice, the sampler run on it, heatmap and gallery.

The image is pydicom's own CT_small.dcm (128 x 128 chest CT through the spine and both lung
bases, in HU), opened through the plugin's reader, so no download is needed. With
`screenshot`, the demo runs headless (Xvfb; started with pyvirtualdisplay when no display is
set), saves the whole window and exits.
"""

from __future__ import annotations

import os
import sys
from typing import Any

DEMO_FILE = "CT_small.dcm"
DEMO_POINT = (18.0, 19.0)      # (row, col) pixel in CT_small: a vessel branch, left lung
LUNG_WINDOW = (-1350.0, 150.0)  # HU: centre -600, width 1500
WINDOW_SIZE = (1500, 1000)


def _say(text: str) -> None:
    print(f"ambiseg demo: {text}", file=sys.stderr, flush=True)


def demo_layers() -> list[tuple[Any, dict, str]]:
    """The demo CT as napari LayerData, through the plugin's reader (or pydicom directly)."""
    try:
        from .._sample_data import ct_small

        return ct_small()[:1]
    except ImportError:
        import numpy as np
        from pydicom import dcmread
        from pydicom.data import get_testdata_file
        from pydicom.pixels import apply_modality_lut

        ds = dcmread(get_testdata_file(DEMO_FILE))
        hu = apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
        spacing = tuple(float(s) for s in ds.PixelSpacing)
        meta = {"ambiseg": {"modality": "CT", "spacing": list(spacing)}}
        return [(hu, {"name": "CT_small", "scale": spacing, "metadata": meta}, "image")]


HEADLESS_SCREENSHOT = "ambiseg-demo.png"


def has_display() -> bool:
    """Whether Qt can open a window here (always assumed off Linux)."""
    if not sys.platform.startswith("linux"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def ensure_display() -> Any:
    """Make sure Qt can draw: returns a started pyvirtualdisplay Display, or None if a
    display exists. Raises RuntimeError with advice when neither works."""
    if os.environ.get("QT_QPA_PLATFORM") == "offscreen":
        os.environ.pop("QT_QPA_PLATFORM")  # napari draws no layers with Qt's offscreen platform
    if has_display():
        return None
    try:
        from pyvirtualdisplay import Display

        display = Display(visible=False, size=WINDOW_SIZE, color_depth=24)
        display.start()
        return display
    except Exception as e:  # noqa: BLE001 - missing Xvfb or pyvirtualdisplay
        raise RuntimeError("no display for the screenshot and no virtual one could start "
                           f"({type(e).__name__}: {e}); install Xvfb (apt install xvfb) or "
                           "run: xvfb-run -a ambiseg demo --screenshot FILE") from None


def add_docks(viewer):
    """The sampling and gallery docks, through the plugin manifest when installed."""
    from .gallery import GalleryWidget
    from .sampling import SamplingWidget

    try:
        _, sampler = viewer.window.add_plugin_dock_widget("napari-ambiseg",
                                                          "Sample segmentations")
        _, gallery = viewer.window.add_plugin_dock_widget("napari-ambiseg", "Gallery",
                                                          tabify=False)
    except Exception:  # noqa: BLE001 - running from a source tree without the manifest
        sampler, gallery = SamplingWidget(viewer), GalleryWidget(viewer)
        viewer.window.add_dock_widget(sampler, name="Sample segmentations")
        viewer.window.add_dock_widget(gallery, name="Gallery")
    return sampler, gallery


def wait_for(signal, timeout_s: float) -> None:
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    signal.connect(loop.quit)
    QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    loop.exec()


def settle(ms: int = 700) -> None:
    """Let Qt lay out and paint the window before a screenshot."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def sample_demo_point(viewer, image, segmenter, name: str, n: int | None = None,
                      steps: int | None = None):
    """Add the prompt and the docks, sample at DEMO_POINT and wait; (sampler, gallery).
    Raises RuntimeError if sampling cannot start or fails."""
    point = viewer.add_points([image.data_to_world(DEMO_POINT)], name="prompt", size=3,
                              face_color="cyan", symbol="cross")
    sampler, gallery = add_docks(viewer)
    gallery.setMinimumHeight(420)
    sampler.set_segmenter(segmenter, name)
    if n is not None:
        sampler.n.setValue(n)
    if steps is not None:
        sampler.steps.setValue(steps)
    sampler.image.set_value(image)
    sampler.where.set_value(point)
    if sampler.run() is None:
        raise RuntimeError(f"could not start: {sampler.last_error}")
    wait_for(sampler.done, timeout_s=600)
    if sampler.last_error is not None or sampler.last_outputs is None:
        raise RuntimeError(f"sampling failed: {sampler.last_error}")
    return sampler, gallery


def run_demo(screenshot: str | None = None, weights: str | None = None, n: int = 16,
             steps: int = 10, segmenter: Any = None) -> int:
    """Open napari on the demo CT, sample N masks around a lung vessel, show the heatmap and
    the gallery. With `screenshot`, save the whole window there and exit. Returns an exit
    code (0 = success). `segmenter` overrides `weights` (notebooks, docs)."""
    from ..errors import WeightsError

    try:
        if segmenter is None:
            from ..segmenter import Segmenter

            segmenter = Segmenter.load(weights, "auto")
            name = weights or "bundled LIDC model"
        else:
            name = "custom model"
    except WeightsError as e:
        _say(f"cannot run without model weights: {e}. Train a model (ambiseg train) and "
             "pass --weights FILE.safetensors.")
        return 2
    display = None
    if not screenshot and not has_display():
        screenshot = HEADLESS_SCREENSHOT
        _say(f"no display found: rendering headless and saving the window to {screenshot}")
    try:
        if screenshot:
            display = ensure_display()
        return _show(segmenter, name, screenshot, n, steps)
    except RuntimeError as e:
        _say(str(e))
        return 2
    finally:
        if display is not None:
            display.stop()


def _show(segmenter, name: str, screenshot: str | None, n: int, steps: int) -> int:
    import napari
    from napari.layers import Layer

    viewer = napari.Viewer(title="AmbiSeg demo", show=True)
    viewer.window.resize(*WINDOW_SIZE)
    image = viewer.add_layer(Layer.create(*demo_layers()[0]))
    image.contrast_limits = LUNG_WINDOW
    try:
        sample_demo_point(viewer, image, segmenter, name, n, steps)
    except RuntimeError as e:
        _say(str(e))
        viewer.close()
        return 2
    viewer.reset_view()
    viewer.layers.selection.active = image
    if not screenshot:
        napari.run()
        return 0
    settle()
    viewer.screenshot(screenshot, canvas_only=False)
    viewer.close()
    print(f"ambiseg demo: saved {screenshot}", flush=True)
    return 0
