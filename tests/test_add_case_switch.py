"""Add case with two images open: the readers' list follows the chosen image (issue #27.4).

Both LIDC samples open (File > Open Sample > AmbiSeg): each image with its readers' layer on
its own grid (11 and 8 slices). Switching the Image choice must untick and disable the other
image's readers (no longer on the grid), tick the new image's own, and Add case must work.
"""

from __future__ import annotations

import pytest
from qtpy.QtCore import QRect, Qt

from napari_ambiseg.layer_contract import READERS_KEY, layer_record
from napari_ambiseg.testing import tiny_config
from napari_ambiseg.widgets.add_case import AddCasePanel

pytestmark = pytest.mark.gui

OFF_GRID = "not on the image's grid"


def open_both(viewer):
    """{role: (image layer, readers layer)} of the clear and the contested sample."""
    out = {}
    for role in ("clear", "contested"):
        layers = viewer.open_sample("napari-ambiseg", f"lidc_{role}")
        image = next(la for la in layers if layer_record(la, READERS_KEY) is None)
        readers = next(la for la in layers if layer_record(la, READERS_KEY) is not None)
        out[role] = image, readers
    return out


def items(panel) -> dict[str, tuple[bool, bool, str]]:
    """{layer name: (ticked, enabled, text)} of the readers' list."""
    lst = panel.readers
    out = {}
    for i in range(lst.count()):
        item = lst.item(i)
        name = next(la.name for la in panel.viewer.layers
                    if str(la.unique_id) == item.data(Qt.UserRole))
        out[name] = (item.checkState() == Qt.Checked,
                     bool(item.flags() & Qt.ItemIsEnabled), item.text())
    return out


@pytest.fixture
def panel(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    samples = open_both(viewer)
    panel = AddCasePanel(viewer, tiny_config)
    viewer.window.add_dock_widget(panel, name="Add cases")
    return panel, samples


def test_switching_the_image_unticks_and_disables_off_grid_readers(panel, tmp_path, qtbot):
    """Clear -> contested -> clear: each time only the chosen image's readers are ticked and
    Add case works (the viewer, at slice 5 of the clear volume's 11 x 2.5 mm, is moved onto
    the 8 x 1.25 mm contested volume, which it would not show otherwise)."""
    panel, samples = panel
    (clear, clear_readers), (contested, contested_readers) = samples["clear"], samples["contested"]
    panel.folder.setText(str(tmp_path / "cases"))
    for image, own, other in ((clear, clear_readers, contested_readers),
                              (contested, contested_readers, clear_readers),
                              (clear, clear_readers, contested_readers)):
        before = panel.viewer.dims.point
        panel.image.set_value(image)
        if image is clear:  # z = 5 mm lies in both volumes: the viewer stays where it was
            assert panel.viewer.dims.point == before
        shown = items(panel)
        assert shown[own.name][:2] == (True, True)  # ticked, enabled
        assert shown[other.name][:2] == (False, False)  # unticked, disabled
        assert OFF_GRID in shown[other.name][2] and OFF_GRID not in shown[own.name][2]
        assert panel.readers.value() == [own]
        assert panel.add_case() is not None, panel.info.text()
    assert "3 cases" in panel.info.text()


def test_a_reader_the_user_unticked_stays_unticked_across_switches(panel):
    panel, samples = panel
    (clear, clear_readers), (contested, _) = samples["clear"], samples["contested"]
    panel.image.set_value(clear)
    lst = panel.readers
    row = next(i for i in range(lst.count())
               if lst.item(i).data(Qt.UserRole) == str(clear_readers.unique_id))
    lst.item(row).setCheckState(Qt.Unchecked)
    assert panel.readers.value() == []
    panel.image.set_value(contested)
    panel.image.set_value(clear)
    assert items(panel)[clear_readers.name][:2] == (False, True)  # the user's choice kept
    assert panel.readers.value() == []


def test_the_off_grid_note_is_readable_without_scrolling(panel, qtbot):
    """The note and long names wrap inside the list: nothing lies beyond its right edge, and
    each row is tall enough for its wrapped text."""
    panel, samples = panel
    panel.image.set_value(samples["contested"][0])
    lst = panel.readers
    qtbot.waitUntil(lambda: lst.viewport().width() > 0)
    qtbot.wait(50)  # the list lays its rows out
    style, fm, width = lst.style(), lst.fontMetrics(), lst.viewport().width()
    box = style.pixelMetric(style.PixelMetric.PM_IndicatorWidth) + 2 * style.pixelMetric(
        style.PixelMetric.PM_FocusFrameHMargin)  # the check box and its margins
    assert lst.horizontalScrollBar().maximum() == 0
    texts = []
    for i in range(lst.count()):
        item = lst.item(i)
        rect = lst.visualItemRect(item)
        assert rect.left() >= 0 and rect.right() < width, (item.text(), rect, width)
        wrapped = fm.boundingRect(QRect(0, 0, rect.width() - box, 10_000),
                                  int(Qt.TextFlag.TextWordWrap), item.text())
        assert wrapped.width() <= rect.width() - box and wrapped.height() <= rect.height(), (
            item.text(), wrapped, rect)
        texts.append(item.text())
    assert any(OFF_GRID in t for t in texts)
    assert any(fm.horizontalAdvance(t.splitlines()[0]) > width - box for t in texts), (
        "no name long enough to need wrapping: the test proves nothing at this width")
