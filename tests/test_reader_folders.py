"""File > Open on a folder, as napari 0.9.2 does it (QtViewer._qt_open with plugin=None).

npe2 matches folders by `accepts_directories` alone (filename patterns apply to files only,
npe2 issue #155), and napari's builtins accept every folder: so napari asks which reader to
use for any folder, ours included. Chosen, our reader gives its own single message for a
folder without DICOM series, not a wrapped "Tried opening with ..." error; the plugin's
File > IO Utilities command opens a folder with our reader without asking.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gui

OURS = "AmbiSeg - ambiguous segmentation"


@pytest.fixture
def reader_dialog(monkeypatch):
    """napari's reader-choice dialog, answered "AmbiSeg"; records the choices it offered."""
    from napari._qt.dialogs.qt_reader_dialog import QtReaderDialog

    offered: list[list[str]] = []

    def choose(self):
        offered.append([b.text() for b in self.reader_btn_group.buttons()])
        return OURS, False

    monkeypatch.setattr(QtReaderDialog, "get_user_choices", choose)
    return offered


def test_file_open_on_an_empty_folder_says_no_dicom(make_napari_viewer, tmp_path, reader_dialog):
    from napari.errors import MultipleReaderError

    viewer = make_napari_viewer()
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".DS_Store").write_bytes(b"\x00")  # hidden files do not count

    # napari's own rule, not ours: two readers accept folders, so it asks
    with pytest.raises(MultipleReaderError):
        viewer.open(str(empty), plugin=None)

    from napari_ambiseg.errors import ReadError

    with pytest.raises(ReadError) as info:
        viewer.window._qt_viewer._qt_open([str(empty)], stack=False)
    assert str(info.value) == "Cannot open folder empty: it contains no DICOM image series."
    assert len(reader_dialog) == 1 and OURS in reader_dialog[0]
    assert len(viewer.layers) == 0


@pytest.fixture
def no_dialog(monkeypatch):
    from napari._qt.dialogs.qt_reader_dialog import QtReaderDialog

    def fail(self):
        raise AssertionError("napari's reader dialog was shown")

    monkeypatch.setattr(QtReaderDialog, "get_user_choices", fail)


def test_open_dicom_folder_command_skips_the_question(make_napari_viewer, tmp_path, monkeypatch,
                                                      no_dialog):
    """File > IO Utilities > "Open DICOM folder...": one message for an empty
    folder, the series for a DICOM folder, no reader dialog."""
    from napari._app_model import get_app_model
    from npe2 import PluginManifest
    from qtpy.QtWidgets import QFileDialog

    from napari_ambiseg.testing import write_ct_series
    from napari_ambiseg.widgets import open_folder as module

    menus = PluginManifest.from_distribution("napari-ambiseg").contributions.menus
    assert [m.command for m in menus["napari/file/io_utilities"]] == [
        "napari-ambiseg.open_dicom_folder"]

    viewer = make_napari_viewer()
    shown: list[str] = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    empty, series = tmp_path / "empty", tmp_path / "series"
    empty.mkdir()
    write_ct_series(series, shape=(4, 16, 16))
    chosen = [str(empty), str(series)]
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a: chosen.pop(0))

    app = get_app_model()  # as the menu runs it: napari injects the viewer
    app.commands.execute_command("napari-ambiseg.open_dicom_folder").result()
    assert shown == ["Cannot open folder empty: it contains no DICOM image series."]
    assert len(viewer.layers) == 0
    added = app.commands.execute_command("napari-ambiseg.open_dicom_folder").result()
    assert len(added) == 1 and viewer.layers[0].data.shape == (4, 16, 16)
    assert module.open_folder(viewer, tmp_path / "missing") == [] and len(shown) == 2
