"""Small Qt helpers shared by the docks: a layer chooser kept in sync, a path field, messages."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from qtpy.QtWidgets import QComboBox, QFileDialog, QHBoxLayout, QLineEdit, QPushButton, QWidget


class LayerChoice(QComboBox):
    """The viewer's layers of some `types` (plus fixed (label, key) entries first), kept in
    sync with the layer list; `value()` is the chosen layer or fixed key.

    Not magicgui's ComboBox: that one matches its choices by text, so renaming the chosen
    layer drops the choice, and it does not follow the layer order. Here the choice is the
    layer object itself, listed top layer first.
    """

    def __init__(self, viewer, types: tuple[type, ...], fixed: Sequence[tuple[str, Any]] = (),
                 keep: Callable[[Any], bool] | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self._viewer, self._types, self._fixed, self._keep = viewer, types, list(fixed), keep
        self._values: list[Any] = []
        events = viewer.layers.events
        for name in ("inserted", "removed", "moved", "reordered"):
            getattr(events, name).connect(self.refresh)
        events.inserted.connect(self._watch_name)
        for layer in viewer.layers:
            layer.events.name.connect(self.refresh)
        self.refresh()

    def _watch_name(self, event) -> None:
        event.value.events.name.connect(self.refresh)

    def candidates(self) -> list[Any]:
        return [layer for layer in reversed(list(self._viewer.layers))
                if isinstance(layer, self._types) and (self._keep is None or self._keep(layer))]

    def refresh(self, *_) -> None:
        """Re-list the layers; `currentIndexChanged` fires only if the choice changed."""
        try:
            current = self.value()
        except RuntimeError:  # the Qt object is gone (viewer closing)
            return
        layers = self.candidates()
        self._values = [key for _, key in self._fixed] + layers
        self.blockSignals(True)
        try:
            self.clear()
            self.addItems([label for label, _ in self._fixed] + [la.name for la in layers])
            if current is not None and any(v is current for v in self._values):
                self.set_value(current)
        finally:
            self.blockSignals(False)
        if self.value() is not current:
            self.currentIndexChanged.emit(self.currentIndex())

    def value(self) -> Any:
        i = self.currentIndex()
        return self._values[i] if 0 <= i < len(self._values) else None

    def set_value(self, value: Any) -> None:
        for i, v in enumerate(self._values):
            if v is value or (isinstance(value, str) and v == value):
                self.setCurrentIndex(i)
                return
        raise ValueError(f"{value!r} is not a choice")


class PathField(QWidget):
    """A line edit with "File..." and/or "Folder..." browse buttons."""

    def __init__(self, placeholder: str = "", filter: str = "", file: bool = True,
                 folder: bool = False, parent: QWidget | None = None):
        super().__init__(parent)
        self.edit = QLineEdit()
        self.edit.setPlaceholderText(placeholder)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.edit, 1)
        if file:
            row.addWidget(_button("File..." if folder else "Browse...", self._browse_file))
        if folder:
            row.addWidget(_button("Folder...", self._browse_folder))
        self._filter = filter

    def _browse_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a file", self.text(), self._filter)
        if path:
            self.edit.setText(path)

    def _browse_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Choose a folder", self.text())
        if path:
            self.edit.setText(path)

    def text(self) -> str:
        return self.edit.text().strip()

    def setText(self, text: str) -> None:  # noqa: N802 - Qt naming
        self.edit.setText(text)


def _button(text: str, slot) -> QPushButton:
    b = QPushButton(text)
    b.clicked.connect(slot)
    return b


def error_text(exc: BaseException) -> str:
    """An error in one line for the user: our own errors by their message alone."""
    from ..errors import AmbisegError

    return str(exc) if isinstance(exc, AmbisegError) else f"{type(exc).__name__}: {exc}"


def notify_error(exc: BaseException) -> None:
    """Show an error as a napari notification (see `error_text`)."""
    from napari.utils.notifications import show_error

    show_error(error_text(exc))
