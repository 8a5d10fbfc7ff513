"""Train from what is open: an image layer and its readers' Labels layers -> a training case.

Readers are Labels layers on the image's pixel grid: one layer per reader, or one layer with
a leading reader axis (contract C5: the sample data and multi-rater .npz files open so; also
any Labels layer with one axis more than the image). A volume gives the slice the viewer
shows. "Add case" cuts the patch the model would see (`training.cases.make_case`) and adds
it to a case folder (`training.data.write_case`, atomic); the training dock then trains or
fine-tunes on that folder.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QFormLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..errors import InputError
from ..layer_contract import base_data, reader_count, spatial_shape
from . import layers as L
from ._qt import LayerChoice, PathField, notify_error


def reader_stack(layer, image) -> np.ndarray:
    """A readers' Labels layer as (R, *grid) on `image`'s pixel grid (one reader, or a
    leading reader axis); InputError when it is not on that grid."""
    if reader_count(layer, image) is None:
        raise InputError(f"Labels '{layer.name}' {spatial_shape(layer)} is not on the "
                         f"pixel grid of '{image.name}' {spatial_shape(image)} (shape, "
                         "scale, translate or orientation differ).")
    arr = np.asarray(base_data(layer))
    return arr[None] if arr.ndim == len(spatial_shape(image)) else arr


class ReaderList(QListWidget):
    """The viewer's Labels layers as check boxes, kept in sync with the layer list and the
    chosen image: layers on its grid come ticked (unless the user unticked them), layers off
    its grid are shown unticked and disabled, with the reason on a line of its own."""

    def __init__(self, viewer, image: Callable[[], Any], parent: QWidget | None = None):
        super().__init__(parent)
        self._viewer, self._image = viewer, image
        self._checked: dict[str, bool] = {}  # layer unique id -> the user's choice
        self.setSelectionMode(QAbstractItemView.NoSelection)
        self.setWordWrap(True)  # long names and the off-grid note wrap: no sideways scrolling
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.setMaximumHeight(110)
        events = viewer.layers.events
        for name in ("inserted", "removed", "moved", "reordered"):
            getattr(events, name).connect(self.refresh)
        events.inserted.connect(lambda e: e.value.events.name.connect(self.refresh))
        for layer in viewer.layers:
            layer.events.name.connect(self.refresh)
        self.itemChanged.connect(self._remember)
        self.refresh()

    def _labels(self) -> list[Any]:
        from napari.layers import Labels

        return [la for la in self._viewer.layers
                if isinstance(la, Labels) and not L.is_output(la)]

    def _counts(self) -> list[tuple[Any, int | None]]:
        """(Labels layer, readers it holds for the chosen image or None off its grid)."""
        try:
            image = self._image()
        except RuntimeError:  # the Qt object is gone (viewer closing)
            return []
        return [(la, reader_count(la, image) if image is not None else None)
                for la in self._labels()]

    def refresh(self, *_) -> None:
        try:
            image = self._image()
        except RuntimeError:  # the Qt object is gone (viewer closing)
            return
        self.blockSignals(True)
        try:
            self.clear()
            for layer, n in self._counts():
                uid = L.source_id(layer)
                text = layer.name if n in (None, 1) else f"{layer.name} ({n} readers)"
                item = QListWidgetItem()
                item.setData(Qt.UserRole, uid)
                if n is None:  # off the grid: unticked, and cannot be ticked
                    if image is not None:
                        text += "\nnot on the image's grid"
                        item.setToolTip(f"'{layer.name}' {spatial_shape(layer)} is not on the "
                                        f"pixel grid of '{image.name}' {spatial_shape(image)}"
                                        " (shape, scale, translate or orientation differ).")
                    item.setFlags(item.flags() & ~Qt.ItemIsEnabled & ~Qt.ItemIsUserCheckable)
                    item.setCheckState(Qt.Unchecked)
                else:
                    item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
                    item.setCheckState(Qt.Checked if self._checked.get(uid, True)
                                       else Qt.Unchecked)
                item.setText(text)
                self.addItem(item)
        finally:
            self.blockSignals(False)

    def _remember(self, item: QListWidgetItem) -> None:
        self._checked[item.data(Qt.UserRole)] = item.checkState() == Qt.Checked

    def value(self) -> list[Any]:
        """The ticked layers on the chosen image's grid, in the layer list's order."""
        return [la for la, n in self._counts()
                if n is not None and self._checked.get(L.source_id(la), True)]


def readers_on_plane(viewer, image, layers) -> tuple[np.ndarray, np.ndarray, list[str], int | None]:
    """(image plane (H, W[, 3]), readers (R, H, W), reader names, slice or None)."""
    from .prompts import current_slice

    if not layers:
        raise InputError("Check at least one Labels layer of readers' outlines.")
    data = base_data(image)
    grid = spatial_shape(image)
    if len(grid) not in (2, 3):
        raise InputError(f"'{image.name}' has {len(grid)} spatial axes; cases are cut from 2D "
                         "images and from a slice of 3D volumes.")
    z = current_slice(viewer, image) if len(grid) == 3 else None
    plane = np.asarray(data[z] if z is not None else data)
    planes, names = [], []
    for layer in layers:
        stack = reader_stack(layer, image)
        for r in range(stack.shape[0]):
            planes.append(np.asarray(stack[r][z] if z is not None else stack[r]))
            names.append(layer.name if stack.shape[0] == 1 else f"{layer.name}-{r + 1}")
    return plane, np.stack(planes), names, z


class AddCasePanel(QWidget):
    """Image + readers + training folder -> "Add case"."""

    added = Signal(str)  # the training folder, after a case was written

    def __init__(self, viewer, model_config: Callable[[], Any], parent: QWidget | None = None):
        super().__init__(parent)
        from napari.layers import Image

        self.viewer, self._model_config = viewer, model_config
        self.image = LayerChoice(viewer, (Image,), keep=lambda la: not L.is_output(la))
        self.readers = ReaderList(viewer, self.image.value)
        self.image.currentIndexChanged.connect(self._on_image)
        self.folder = PathField("training folder: one case per sub-folder", file=False,
                                folder=True)
        self.folder.edit.textChanged.connect(self._show_count)
        self.add_button = QPushButton("Add case")
        self.add_button.setToolTip("Cut the patch the model sees around the readers' outlines "
                                   "on the shown slice and add it to the training folder.")
        self.info = QLabel("")
        self.info.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Image", self.image)
        form.addRow("Readers", self.readers)
        form.addRow("Training folder", self.folder)
        box = QVBoxLayout(self)
        box.addLayout(form)
        box.addWidget(self.add_button)
        box.addWidget(self.info)
        box.addStretch(1)
        self.add_button.clicked.connect(self.add_case)

    def _on_image(self, *_) -> None:
        """A new image: its readers' list, and the viewer on one of its slices."""
        self.readers.refresh()
        self._onto_image()

    def _onto_image(self) -> None:
        """Move the slice slider onto the chosen volume when the viewer's position lies
        outside it (the canvas does not show it then, and Add case would refuse): its middle
        slice. A position inside it is kept."""
        from .prompts import current_slice, world_to_source

        image = self.image.value()
        if image is None or len(spatial_shape(image)) != 3:
            return
        try:
            current_slice(self.viewer, image)
            return
        except InputError:
            pass
        data = world_to_source(self.viewer, image, self.viewer.dims.point)
        data[0] = spatial_shape(image)[0] // 2
        axis = self.viewer.dims.ndim - image.ndim
        self.viewer.dims.set_point(axis, float(image.data_to_world(data)[0]))

    def _show_count(self, *_) -> None:
        from ..training.data import count_cases

        folder = self.folder.text()
        n = count_cases(folder) if folder else 0
        self.info.setText(f"{n} case{'s' * (n != 1)} in this folder." if folder else "")

    def add_case(self) -> Path | None:
        """Write one case; returns its folder (None, with a message, when it could not)."""
        from napari.utils.notifications import show_warning

        from ..training.cases import make_case
        from ..training.data import count_cases, write_case
        from .prompts import modality_of, spacing_of, world_to_source

        try:
            image, folder = self.image.value(), self.folder.text()
            if image is None:
                raise InputError("Open an image first (and its readers' Labels layers).")
            if not folder:
                raise InputError("Choose a training folder for the cases.")
            plane, readers, names, z = readers_on_plane(self.viewer, image,
                                                        self.readers.value())
            cfg = self._model_config()
            centre = world_to_source(self.viewer, image, self.viewer.scene.camera.center)[-2:]
            case = make_case(plane, readers, context_size=cfg.context_size,
                             crop_size=cfg.crop_size, modality=modality_of(image),
                             spacing=spacing_of(image),
                             model_spacing=cfg.scope.pixel_spacing_mm, center=centre)
            case.info.update(image_layer=image.name, slice=z)
            path = write_case(folder, case.image, case.masks, names, case.info)
        except Exception as e:  # noqa: BLE001 - the user's input: say what is wrong
            notify_error(e)
            return None
        n = count_cases(folder)
        where = f" (slice {z})" if z is not None else ""
        outlined = case.info["outlined_by"]
        text = (f"Added {path.name}{where}: {len(names)} readers, {outlined} outlined; "
                f"{n} case{'s' * (n != 1)} in {Path(folder).name}.")
        for w in case.warnings:
            show_warning(f"{path.name}: {w}")
            text += f" Note: {w}."
        self.info.setText(text)
        self.added.emit(folder)
        return path
