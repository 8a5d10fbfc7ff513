"""The gallery fits: both docks added from the Plugins menu in a 1600x1000 window show at
least two rows of thumbnails without resizing anything."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import QPoint
from qtpy.QtWidgets import QApplication

from napari_ambiseg.testing import ScriptedSegmenter
from napari_ambiseg.widgets.gallery import rows_height

pytestmark = pytest.mark.gui


def sampled_in_default_layout(viewer, qtbot, layer_data):
    """A 1600x1000 window, `layer_data` opened, both docks from the Plugins menu, 16 samples
    of the scripted model (modes of 9, 5, 2): (sampler, gallery) once laid out."""
    from napari.layers import Layer

    viewer.window._qt_window.resize(1600, 1000)
    for data in layer_data:
        viewer.add_layer(Layer.create(*data))
    _, sampler = viewer.window.add_plugin_dock_widget("napari-ambiseg", "Sample segmentations")
    _, gallery = viewer.window.add_plugin_dock_widget("napari-ambiseg", "Gallery")
    sampler.set_segmenter(ScriptedSegmenter(), "scripted")
    sampler.n.setValue(16)
    sampler.steps.setValue(2)
    with qtbot.waitSignal(sampler.done, timeout=30_000):
        sampler.run()
    for _ in range(10):
        QApplication.processEvents()
    return sampler, gallery


def test_gallery_shows_two_rows_beside_the_sampling_dock(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    img = np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)
    sampler, gallery = sampled_in_default_layout(viewer, qtbot, [(img, {"name": "ct"}, "image")])
    assert viewer.window._qt_window.height() == 1000
    view = gallery.scroll.viewport()
    assert view.height() >= rows_height(2)
    # the first thumbnail of the second row is entirely in view
    columns = gallery.thumbs[0].columns  # mode 1: 9, in rows as wide as the dock
    assert columns >= 4
    second_row = gallery.buttons[gallery.current()[1]["modes"][0][columns]]
    bottom = second_row.mapTo(view, QPoint(0, second_row.height())).y()
    assert 0 < bottom <= view.height()


def test_readers_row_and_a_row_of_mode_1_fit_on_the_lidc_sample(make_napari_viewer, qtbot):
    from napari_ambiseg._sample_data import lidc_contested

    viewer = make_napari_viewer(show=True)
    sampler, gallery = sampled_in_default_layout(viewer, qtbot, lidc_contested())
    view = gallery.scroll.viewport()
    assert len(gallery.reader_buttons) == 4
    first_row = gallery.buttons[gallery.current()[1]["modes"][0][0]]
    bottom = first_row.mapTo(view, QPoint(0, first_row.height())).y()
    assert 0 < bottom <= view.height()  # readers' row and mode 1's first row in view
    # the sampling dock keeps all its controls: its Sample button is on screen
    button = sampler.run_button
    assert button.visibleRegion().boundingRect().height() == button.height()


@pytest.mark.parametrize("size", [(1280, 800), (1500, 1000), (1920, 1080)])
def test_no_thumbnail_is_squashed_in_the_demo_layout(make_napari_viewer, qtbot, size):
    """Issue 23.4: the demo's docks on the LIDC nodule, mode 1 of twelve samples: every
    thumbnail keeps its full size (>= 64 px, its icon and caption) at common window sizes;
    rows wrap or scroll instead of shrinking."""
    from napari_ambiseg.widgets import demo

    viewer = make_napari_viewer(show=True)
    viewer.window.resize(*size)
    image, _ = demo.add_demo_layers(viewer)
    _, gallery = demo.sample_demo_point(viewer, image, ScriptedSegmenter(groups=(12, 3, 1)),
                                        "scripted", n=16, steps=1)
    for _ in range(10):
        QApplication.processEvents()
    window = viewer.window._qt_window
    assert (window.width(), window.height()) == size  # the docks' minimum heights fit it
    buttons = gallery.reader_buttons + list(gallery.buttons.values())
    assert len(gallery.buttons) == 16 and len(gallery.reader_buttons) == 4
    for b in buttons:
        assert min(b.width(), b.height()) >= 64, (b.text(), b.size())
        hint = b.sizeHint()
        assert b.width() >= hint.width() and b.height() >= hint.height(), (b.text(), b.size())
    view = gallery.scroll.viewport()
    for b in buttons:  # no row runs off the side: a thumbnail's right edge is in view
        assert b.mapTo(view, QPoint(b.width(), 0)).x() <= view.width(), b.text()


def test_a_rebuilt_gallery_is_sized_for_its_thumbnails_at_once(make_napari_viewer, qtbot):
    """Issue 23.4: Qt shows widgets added to a shown layout only later; until then the scroll
    area shrank the content to its view and the thumbnails were laid out squashed (what a
    screenshot taken then showed). A rebuilt gallery is sized for its rows at once."""
    viewer = make_napari_viewer(show=True)
    img = np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)
    _, gallery = sampled_in_default_layout(viewer, qtbot, [(img, {"name": "ct"}, "image")])
    gallery.refresh()  # no events processed after it
    content = gallery._content
    need = sum(t.sizeHint().height() for t in gallery.thumbs)  # 16 thumbnails in rows
    assert need >= 4 * 64 and content.height() >= content.minimumSizeHint().height() >= need
    assert all(b.isVisibleTo(gallery) for b in gallery.buttons.values())
