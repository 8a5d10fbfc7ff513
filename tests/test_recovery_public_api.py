"""Issue 27.5: crash recovery works through napari's public API only, so it survives napari 0.10.

Docks opened from the Plugins menu get the viewer wrapped in napari's ``PublicOnlyProxy``,
which warns (FutureWarning: "unavailable no earlier than 0.10.0") on every private attribute
a plugin reads, and will refuse them in 0.10. Here the docks are opened that way and adopt,
paint, undo, save and close run with every warning attributed to the plugin's own modules
turned into an error.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_ambiseg import recovery as R
from napari_ambiseg.io.synthetic import write_ct_series
from napari_ambiseg.testing import ScriptedSegmenter
from napari_ambiseg.widgets import recovery as W

pytestmark = [pytest.mark.gui,
              # any warning raised from napari_ambiseg.* code (e.g. napari's private-attribute
              # FutureWarning, attributed to the plugin line that read the attribute) fails
              pytest.mark.filterwarnings("error:::napari_ambiseg")]

PLUGIN = "napari-ambiseg"


def _docks(viewer):
    """The sampling and gallery docks as the Plugins menu opens them (proxied viewer)."""
    _, sampler = viewer.window.add_plugin_dock_widget(PLUGIN, "Sample segmentations")
    _, gallery = viewer.window.add_plugin_dock_widget(PLUGIN, "Gallery")
    assert type(sampler.viewer).__name__ == "PublicOnlyProxy"  # what napari hands a plugin
    return sampler, gallery


def open_and_sample(make_viewer, qtbot, folder, docks):
    """A synthetic CT series opened with napari-ambiseg in a new viewer, sampled once (16
    scripted samples) on slice 2 by the sampling dock of ``docks(viewer)``; returns the
    viewer, the image layer, the sampling and the gallery dock."""
    from napari.layers import Image

    write_ct_series(folder, shape=(5, 40, 40))
    viewer = make_viewer()
    [src] = [la for la in viewer.open(str(folder), plugin=PLUGIN) if isinstance(la, Image)]
    sampler, gallery = docks(viewer)
    sampler.set_segmenter(ScriptedSegmenter(), "scripted")
    sampler.steps.setValue(2)
    sampler.n.setValue(16)
    sampler.image.set_value(src)
    viewer.dims.set_point(0, src.data_to_world((2, 0, 0))[0])
    with qtbot.waitSignal(sampler.done, timeout=30_000):
        sampler.run()
    assert sampler.last_error is None, sampler.last_error
    return viewer, src, sampler, gallery


def _snapshot(viewer, layer) -> np.ndarray:
    c = W.controller(viewer)
    c.flush()
    [key] = [t.key for t in c._tracked.values() if t.layer is layer]
    return R.read_snapshot(c.session.path(key)).data


def test_adopt_paint_undo_save_close_through_the_plugin_menu(make_napari_viewer, qtbot, tmp_path):
    from napari.layers import Labels

    viewer, _, sampler, gallery = open_and_sample(make_napari_viewer, qtbot,
                                                  tmp_path / "series", _docks)
    adopted = gallery.adopt_mode(1)
    assert isinstance(adopted, Labels)
    c = W.controller(viewer)  # one recovery session per viewer, whichever dock asks
    assert W.controller(gallery.viewer) is c and W.controller(sampler.viewer) is c
    assert c.protected() == [adopted] and len(c.session.keys()) == 1
    np.testing.assert_array_equal(_snapshot(viewer, adopted), adopted.data)

    adopted.paint((2, 3, 3), 7)  # a brush stroke
    c.tick()
    assert (_snapshot(viewer, adopted) == 7).any()
    adopted.undo()  # no paint event: seen through the layer's public events and data
    c.tick()
    np.testing.assert_array_equal(_snapshot(viewer, adopted), adopted.data)
    assert not (_snapshot(viewer, adopted) == 7).any()

    viewer.layers.selection.active = adopted
    out = tmp_path / "labels.nii.gz"
    assert viewer.layers.save(str(out), selected=True, plugin=PLUGIN)

    # a layer the user closes is forgotten, whichever proxy the dock holds
    viewer.layers.remove(adopted)
    c.flush()
    assert c.protected() == [] and c.session.keys() == []
    again = gallery.adopt_mode(1)
    folder = c.session.folder
    assert c.protected() == [again] and folder.is_dir()
    viewer.close()  # closing the window ends the session (public signal of the window)
    qtbot.waitUntil(lambda: c.ended, timeout=5000)
    assert not folder.exists() and R.orphaned_sessions() == []


def test_restore_from_a_plugin_menu_dock(make_napari_viewer, qtbot):
    from test_recovery_gui import _leave_orphan

    expected = _leave_orphan(R.recovery_root())
    viewer = make_napari_viewer()
    sampler, gallery = _docks(viewer)
    banner = sampler.findChild(W.RecoveryBanner)
    assert not banner.isHidden()
    banner.rows[0][1].click()  # Restore, in the sampling dock
    layer = viewer.layers["left behind"]
    np.testing.assert_array_equal(layer.data, expected)
    c = W.controller(viewer)
    assert W.controller(gallery.viewer) is c and c.protected() == [layer]
    layer.paint((3, 4), 9)
    c.tick()
    c.flush()
    [key] = c.session.keys()
    assert (R.read_snapshot(c.session.path(key)).data == 9).any()
    assert R.orphaned_sessions() == [] and banner.isHidden()
