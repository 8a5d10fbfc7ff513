"""`ambiseg demo`: napari on a real lung nodule, the sampler run on it, heatmap, gallery, readers.

The image is the "clear" LIDC-IDRI nodule shipped as sample data (File > Open Sample >
AmbiSeg): 11 consecutive 128 x 128 CT crops, 8-bit lung-windowed as the model was trained on,
with the outlines of the 4 LIDC readers (a Labels layer with a reader axis). The demo samples
the slice where the readers agree most, at the centre of their majority outline. With
`screenshot`, the demo runs headless (Xvfb; started with pyvirtualdisplay when no display is
set), saves the whole window and exits.
"""

from __future__ import annotations

import os
import sys
from itertools import combinations
from typing import Any

import numpy as np

from .._reader_npz import READERS_KEY

DEMO_SAMPLE = "clear"          # napari_ambiseg._sample_data.LIDC_ROLES
WINDOW_SIZE = (1500, 1000)


def _say(text: str) -> None:
    print(f"ambiseg demo: {text}", file=sys.stderr, flush=True)


def demo_layers(role: str = DEMO_SAMPLE) -> list[tuple[Any, dict, str]]:
    """A shipped LIDC nodule (the demo's by default) as napari LayerData: the image stack,
    then the readers' outlines (C5)."""
    from .. import _sample_data

    return _sample_data.read_npz(_sample_data.lidc_path(role))


def agreement_slice(readers: np.ndarray) -> int:
    """The slice (axis 1 of (R, Z, H, W)) with the most readers outlining, ties broken by the
    highest mean pairwise Dice between their outlines."""
    def score(z: int) -> tuple[int, float]:
        masks = [m for m in readers[:, z] if m.any()]
        dice = [2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())
                for a, b in combinations(masks, 2)]
        return len(masks), float(np.mean(dice)) if dice else 0.0

    return max(range(readers.shape[1]), key=score)


def demo_target(readers: np.ndarray) -> tuple[int, float, float]:
    """(z, row, col): the agreement slice and the centre of the readers' majority outline."""
    z = agreement_slice(readers)
    votes = (readers[:, z] > 0).sum(0)
    majority = votes >= max(1, (votes.max() + 1) // 2)
    rows, cols = np.nonzero(majority)
    return z, float(round(rows.mean())), float(round(cols.mean()))


def readers_of(viewer, image):
    """The readers' Labels layer (C5) that belongs to `image`, or None."""
    for layer in viewer.layers:
        info = layer.metadata.get(READERS_KEY) if isinstance(layer.metadata, dict) else None
        if info and info.get("image_name") == image.name:
            return layer
    return None


def add_demo_layers(viewer, role: str = DEMO_SAMPLE):
    """Add a shipped nodule (the demo's by default) and its readers' outlines; show the slice
    the demo samples. Returns (image, readers)."""
    from napari.layers import Layer

    from .sampling import go_to_slice

    image, readers = (viewer.add_layer(Layer.create(*data)) for data in demo_layers(role))
    readers.contour = 1  # outlines: the nodule and the heatmap stay visible underneath
    readers.visible = False  # one reader per slider step: the outlines layer shows all four
    add_reader_outlines(viewer, readers)
    go_to_slice(viewer, image, demo_target(np.asarray(readers.data))[0])
    return image, readers


READER_COLORS = {"cyan": "#00e5ff", "green": "#76ff03", "pink": "#ff4081", "white": "#ffffff"}


def add_reader_outlines(viewer, readers):
    """All readers' outlines at once, one colour per reader: a Shapes layer of the contours of
    a readers' Labels layer (R, Z, H, W) on its (Z, H, W) grid."""
    from skimage.measure import find_contours

    data = np.asarray(readers.data)
    polygons, colors = [], []
    for r in range(data.shape[0]):
        for z in range(data.shape[1]):
            padded = np.pad(data[r, z] > 0, 1).astype(float)  # closed contours at the edges
            for c in find_contours(padded, 0.5):
                polygons.append(np.column_stack([np.full(len(c), z), c - 1]))
                colors.append(list(READER_COLORS.values())[r % len(READER_COLORS)])
    return viewer.add_shapes(
        polygons, shape_type="polygon", edge_color=colors, face_color="transparent",
        edge_width=0.35, name=f"{readers.name} (all)",
        scale=readers.scale[1:], translate=readers.translate[1:], opacity=0.9)


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
                      steps: int | None = None, slices: str = "current"):
    """Add the prompt and the docks, sample the agreement slice at the readers' centre (the
    image centre on the current slice when `image` has no readers) and wait;
    (sampler, gallery). `slices`: the dock's choice for a volume ("current", "range" or
    "follow": the whole finding from that slice). Raises RuntimeError if sampling cannot
    start or fails."""
    from .layers import geometry
    from .sampling import SLICE_MODES, go_to_slice

    readers = readers_of(viewer, image)
    if readers is not None:
        z, row, col = demo_target(np.asarray(readers.data))
        go_to_slice(viewer, image, z)
        where = (z, row, col)
    else:  # any other image: its centre, on the current slice of a volume
        from .prompts import current_slice

        h, w = image.data.shape[-2:]
        where = ((current_slice(viewer, image),) if image.ndim == 3 else ()) + (h // 2, w // 2)
    # on the image's grid: the slice slider keeps the image's steps (slice numbers)
    point = viewer.add_points([where], name="prompt", size=2, face_color="cyan",
                              symbol="cross", **geometry(image))
    sampler, gallery = add_docks(viewer)
    sampler.set_segmenter(segmenter, name)
    if n is not None:
        sampler.n.setValue(n)
    if steps is not None:
        sampler.steps.setValue(steps)
    sampler.image.set_value(image)
    sampler.where.set_value(point)
    sampler.slices.setCurrentIndex([key for _, key in SLICE_MODES].index(slices))
    if sampler.run() is None:
        raise RuntimeError(f"could not start: {sampler.last_error}")
    wait_for(sampler.done, timeout_s=600)
    if sampler.last_error is not None or sampler.last_outputs is None:
        raise RuntimeError(f"sampling failed: {sampler.last_error}")
    return sampler, gallery


def focus(viewer, image, zoom: float = 1.6) -> None:
    """The view a reader wants first: the heatmap and the readers' outlines around the prompt,
    zoomed in; the samples stay one click away in the gallery."""
    from . import layers as L

    samples = L.outputs_of(viewer.layers, image).get("samples")
    if samples is not None:
        samples.visible = False
    viewer.reset_view()
    if "prompt" in viewer.layers and len(viewer.layers["prompt"].data):
        prompt = viewer.layers["prompt"]
        viewer.scene.camera.center = tuple(prompt.data_to_world(prompt.data[-1])[-2:])
        viewer.scene.camera.zoom *= zoom
    viewer.layers.selection.active = image
    readers = readers_of(viewer, image)
    if readers is not None:
        data = np.asarray(readers.data)
        seen = data.reshape(len(data), -1).any(1)
        names = ", ".join(c for c, s in zip(READER_COLORS, seen) if s)
        unseen = f"; {len(seen) - seen.sum()} saw nothing" if not seen.all() else ""
        text = viewer.canvas.overlays.text if hasattr(viewer, "canvas") else viewer.text_overlay
        text.text = (f"outlines: {seen.sum()} of {len(seen)} LIDC readers ({names}){unseen}\n"
                     "heatmap: share of the samples")
        # bottom left: the agreement layer's colour bar takes the top
        text.visible, text.color, text.font_size, text.position = True, "white", 9, "bottom_left"


def run_demo(screenshot: str | None = None, weights: str | None = None, n: int | None = None,
             steps: int | None = None, segmenter: Any = None) -> int:
    """Open napari on the demo nodule, sample N masks, show the heatmap, the gallery and
    the readers' outlines. With `screenshot`, save the whole window there and exit. Returns an exit
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


def _show(segmenter, name: str, screenshot: str | None, n: int | None, steps: int | None) -> int:
    import napari

    viewer = napari.Viewer(title="AmbiSeg demo", show=True)
    viewer.window.resize(*WINDOW_SIZE)
    image, _ = add_demo_layers(viewer)
    try:
        sample_demo_point(viewer, image, segmenter, name, n, steps)
    except RuntimeError as e:
        _say(str(e))
        viewer.close()
        return 2
    focus(viewer, image)
    if not screenshot:
        napari.run()
        return 0
    settle()
    viewer.screenshot(screenshot, canvas_only=False)
    viewer.close()
    print(f"ambiseg demo: saved {screenshot}", flush=True)
    return 0
