"""Issue 13 item 4: the sampling dock says when the chosen image is outside the model's scope."""

from __future__ import annotations

import numpy as np
import pytest

from napari_ambiseg import _sample_data as sd
from napari_ambiseg.testing import tiny_segmenter
from napari_ambiseg.widgets.sampling import SamplingWidget

pytestmark = pytest.mark.gui


def add(viewer, layers):
    """Add reader LayerData the way napari does; returns the first image layer."""
    added = [viewer._add_layer_from_data(data, kw, kind)[0] for data, kw, kind in layers]
    return next(la for la in added if la.visible)


def shown(widget) -> bool:
    return widget.isVisibleTo(widget.parentWidget())


def test_warning_follows_the_chosen_image(make_napari_viewer):
    viewer = make_napari_viewer()
    ct = add(viewer, sd.ct_small())
    us = add(viewer, sd.us1())
    w = SamplingWidget(viewer)  # bundled model: its scope from its config
    viewer.window.add_dock_widget(w)
    w.image.set_value(us)
    assert shown(w.scope_warning)
    text = w.scope_warning.text()
    assert "Outside the model's scope" in text and "colour (RGB)" in text
    assert "ultrasound" in text and "CT lung nodules" in text
    assert not shown(w.window)  # HU window presets: CT only
    w.image.set_value(ct)  # CT_small: a spine at chest level, hardly any lung (issue 27.9)
    assert shown(w.scope_warning) and shown(w.window)
    assert "little lung" in w.scope_warning.text() and "CT lung nodules" in w.scope_warning.text()
    mr = add(viewer, sd.mr_small())
    w.image.set_value(mr)
    assert "an MR image" in w.scope_warning.text() and shown(w.scope_warning)
    viewer.layers.remove(mr)  # the choice moves on, and the warning with it
    assert w.image.value() is not mr and shown(w.scope_warning)  # CT_small, or US (gray)
    assert ("little lung" in w.scope_warning.text()) == (w.image.value() is ct)


def test_lidc_crops_hide_the_ct_window_and_are_in_scope(make_napari_viewer):
    viewer = make_napari_viewer()
    lidc = add(viewer, sd.lidc_clear())
    w = SamplingWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.image.set_value(lidc)
    assert not shown(w.scope_warning) and not shown(w.window)  # 8-bit crops are not HU
    assert w.slices.itemText(2).startswith("whole finding")


def test_cine_frames_are_time(make_napari_viewer):
    viewer = make_napari_viewer()
    frames = np.random.default_rng(0).integers(0, 255, (5, 64, 64)).astype(np.uint8)
    ref = {"modality": "US", "model_modality": "US", "axes": ["t", "y", "x"],
           "spacing": [1.0, 0.3, 0.3], "rgb": False}
    cine = viewer.add_image(frames, name="cine", metadata={"ambiseg": ref})
    w = SamplingWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.image.set_value(cine)
    assert [w.slices.itemText(i) for i in range(3)] == ["current frame", "frame range",
                                                       "follow over frames"]
    assert w._form.labelForField(w.slices).text() == "Frames"
    assert "cine" in w.scope_warning.text() and not shown(w.window)


def test_result_status_does_not_look_all_well(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    mr = add(viewer, sd.mr_small())
    w = SamplingWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.set_segmenter(tiny_segmenter(), "tiny CT model")  # scope: CT
    w.image.set_value(mr)
    w.n.setValue(2)
    w.steps.setValue(1)
    with qtbot.waitSignal(w.done, timeout=60_000):
        assert w.run() is not None
    assert w.last_error is None
    assert w.status.text().startswith("Outside the model's scope (see the warning above): 2 samples")
    assert shown(w.scope_warning)
