"""File > IO Utilities > "Open DICOM folder...": a folder straight to our reader.

napari asks which reader to use for every folder, since its builtins accept all folders
(see `_reader.py`). This command skips the question: the chosen folder goes to this plugin's
reader, which opens its DICOM series or says in one sentence why it cannot (e.g. "Cannot
open folder x: it contains no DICOM image series.") as an error notification.
"""

from __future__ import annotations

import os

from napari.viewer import Viewer

PLUGIN = "napari-ambiseg"


def open_folder(viewer: Viewer, folder: str | os.PathLike) -> list:
    """Open `folder` with this plugin's reader; a failure is a notification. Returns the
    layers added."""
    from ._qt import notify_error

    try:
        return viewer.open(os.fspath(folder), plugin=PLUGIN)
    except Exception as e:  # noqa: BLE001 - any reading failure is shown; the viewer goes on
        notify_error(e)
        return []


def open_dicom_folder(viewer: Viewer) -> list:
    """The menu command: choose a folder, then `open_folder`."""
    from qtpy.QtWidgets import QApplication, QFileDialog

    folder = QFileDialog.getExistingDirectory(QApplication.activeWindow(),
                                              "Open a DICOM folder with AmbiSeg")
    return open_folder(viewer, folder) if folder else []
