"""The gallery dock: samples grouped into modes by frequency; show one; adopt one as labels.

It reads what the sampler left in the viewer (the samples layer and its metadata), so it
follows re-runs, works for any image with results, and needs no link to the sampling dock.
Thumbnails keep their size: their rows wrap to the dock's width and scroll, never shrink.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QEvent, QSize, Qt
from qtpy.QtWidgets import (
    QButtonGroup,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..compare import compare_readers, report_text
from ..layer_contract import READERS_KEY, base_data, layer_record, on_grid
from ..modes import SPECK_PX, empty_or_speck, mode_names, no_finding
from ..result import FINDING_TOOLTIP, consensus, finding_text
from . import layers as L
from ._qt import LayerChoice, notify_error
from .recovery import RecoveryBanner, protect
from .thumbnails import crop_box, thumbnail, to_pixmap

if TYPE_CHECKING:
    import napari

THUMB = 80
READER_THUMB = 64  # the readers' row: smaller, with two-line captions
SPACING = 6  # between thumbnails
GROWN_HEIGHT = 620  # height asked for (readers' row + two rows of a mode)


def _thumb_button(size: int = THUMB) -> QToolButton:
    b = QToolButton()
    b.setIconSize(QSize(size, size))
    b.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextUnderIcon)
    b.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)  # never squashed
    return b


class Thumbs(QWidget):
    """Thumbnail buttons in rows of as many as fit the width `flow` is given, left-aligned;
    the rows wrap (the gallery scrolls) instead of the thumbnails shrinking."""

    def __init__(self, buttons: list[QToolButton]):
        super().__init__()
        self.buttons, self.columns = buttons, 0
        self.grid = QGridLayout(self)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setSpacing(SPACING)
        self.grid.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)

    def flow(self, width: int) -> bool:
        """Lay the buttons out in rows that fit `width` pixels (at least one a row); whether
        the rows changed."""
        cell = max((b.sizeHint().width() for b in self.buttons), default=1)
        columns = max(1, (width + SPACING) // (cell + SPACING))
        if columns == self.columns:
            return False
        for b in self.buttons:
            self.grid.removeWidget(b)
        for i, b in enumerate(self.buttons):
            self.grid.addWidget(b, i // columns, i % columns)
        self.columns = columns
        return True


def rows_height(rows: int) -> int:
    """Pixels that show a mode header and `rows` rows of thumbnails (with their captions)."""
    from qtpy.QtGui import QIcon, QPixmap

    b = _thumb_button()
    b.setText("#15 (rep.)")
    b.setIcon(QIcon(QPixmap(THUMB, THUMB)))
    header = max(QLabel("<b>mode 1</b>").sizeHint().height(),
                 QPushButton("Adopt").sizeHint().height()) + 6  # its top margin
    margins = 12  # the content's margin (Qt styles: 9-11)
    return margins + header + SPACING + rows * (b.sizeHint().height() + SPACING)


def _is_samples(layer) -> bool:
    return (L.output_info(layer) or {}).get("kind") == "samples"


AUTO = "auto"


def readers_layer_of(layers, source):
    """The readers' outlines layer (C5) opened with `source`, or None."""
    for layer in layers:
        meta = layer_record(layer, READERS_KEY)
        if meta is not None and meta.get("image_name") == source.name:
            return layer
    return None


class GalleryWidget(QWidget):
    """Dock: modes of the sampled masks ("mode 1 - 9 of 16"), most frequent first."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        from napari.layers import Labels

        self.viewer = napari_viewer
        self.selected: int | None = None
        self.buttons: dict[int, QToolButton] = {}
        self.headers: list[QLabel] = []
        self.names: list[str] = []  # by rank: "mode 1", "no finding", ... (`modes.mode_names`)
        self.thumbs: list[Thumbs] = []  # the readers' row and each mode's thumbnails
        self._grown = False  # the dock asked once for room (`_grow_once`)
        self.adopt_buttons: dict[int, QPushButton] = {}  # by mode rank; none for no finding
        self.answer = QLabel("")  # the first answer: would experts mark a finding here?
        self.answer.setWordWrap(True)
        self.answer.setToolTip(FINDING_TOOLTIP)
        self.notes = QLabel("")  # what the mode list merged (specks)
        self.notes.setWordWrap(True)
        self._watched = None  # the samples layer whose data changes trigger a refresh
        self._group = QButtonGroup(self)
        self._group.setExclusive(True)

        self.result = LayerChoice(self.viewer, (Labels,), keep=_is_samples)
        self.target = LayerChoice(self.viewer, (Labels,), fixed=[("new Labels layer", "new")],
                                  keep=lambda la: not L.is_output(la))
        self.readers = LayerChoice(self.viewer, (Labels,),
                                   fixed=[("the image's readers", AUTO), ("none", "none")],
                                   keep=lambda la: not L.is_output(la))
        self.readers.setToolTip("Readers' outlines to compare with: the readers layer opened "
                                "with the image, or a Labels layer on its grid (a leading "
                                "axis = one reader each)")
        self.reader_buttons: list[QToolButton] = []
        self.comparison: dict | None = None
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0.05, 1.0)
        self.threshold.setSingleStep(0.05)
        self.threshold.setValue(0.5)
        self.threshold.setToolTip("Consensus: pixels marked by at least this fraction of samples")
        self.adopt_sample_button = QPushButton("Adopt selected sample")
        self.adopt_consensus_button = QPushButton("Adopt consensus")
        self.status = QLabel("")
        self.status.setWordWrap(True)

        self._content = QWidget()
        self._content_layout = QVBoxLayout(self._content)
        self.scroll = scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self._content)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)  # rows wrap
        scroll.viewport().installEventFilter(self)  # re-flow the rows to its width
        # a row seen beside the sampling dock on a 1280 x 800 screen; more asked (_grow_once)
        scroll.setMinimumHeight(rows_height(1) + 2 * scroll.frameWidth())

        top = QFormLayout()
        top.addRow("Result", self.result)
        top.addRow("Readers", self.readers)
        adopt = QFormLayout()
        into = QWidget()
        row = QHBoxLayout(into)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.target, 1)
        row.addWidget(self.adopt_sample_button)
        consensus = QWidget()
        row = QHBoxLayout(consensus)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(QLabel("agreement >="))
        row.addWidget(self.threshold)
        row.addWidget(self.adopt_consensus_button)
        adopt.addRow("Adopt into", into)
        adopt.addRow("", consensus)
        box = QVBoxLayout(self)
        box.addWidget(RecoveryBanner(self.viewer))  # restore offer after a crash
        box.addLayout(top)
        box.addWidget(self.answer)
        box.addWidget(self.notes)
        box.addWidget(scroll, 1)
        box.addLayout(adopt)
        box.addWidget(self.status)

        self.result.currentIndexChanged.connect(self.refresh)
        self.readers.currentIndexChanged.connect(self.refresh)
        self.viewer.layers.events.inserted.connect(self._on_inserted)
        self.adopt_sample_button.clicked.connect(lambda: self.adopt_sample())
        self.adopt_consensus_button.clicked.connect(lambda: self.adopt_consensus())
        self.refresh()

    def showEvent(self, event) -> None:  # noqa: N802 - Qt
        super().showEvent(event)
        self._grow_once(later=True)  # a dock just added has no height yet

    def _grow_once(self, later: bool = False) -> None:
        """Once docked with a result to show, take room from the docks stacked with it (down to
        their minimum) so that the readers' row and two rows of a mode show without resizing
        by hand; `later`: once the window has laid the dock out."""
        if self._grown or self.current() is None or not self.isVisible():
            return
        self._grown = True
        if later:
            from qtpy.QtCore import QTimer

            QTimer.singleShot(0, self._grow_dock)
        else:
            self._grow_dock()

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 - Qt
        if event.type() == QEvent.Type.Resize and watched is self.scroll.viewport():
            self._flow()
        return super().eventFilter(watched, event)

    def _flow(self, rebuilt: bool = False) -> None:
        """Rows of thumbnails as wide as the gallery; the content sized for them at once. (Qt
        shows widgets added to a shown layout later, counting them as empty till then: the
        scroll area would shrink the content to its view and lay the thumbnails out squashed
        until the next layout pass, a visible flash or a screenshot of squashed thumbnails.)"""
        view = self.scroll.viewport()
        margins = self._content_layout.contentsMargins()
        width = view.width() - margins.left() - margins.right()
        changed = [thumbs.flow(width) for thumbs in self.thumbs]
        if rebuilt:
            for i in range(self._content_layout.count()):
                widget = self._content_layout.itemAt(i).widget()
                if widget is not None:
                    widget.show()
        if rebuilt or any(changed):
            self._content_layout.activate()
            self._content.resize(view.width(), max(view.height(),
                                                   self._content.minimumSizeHint().height()))

    def _add_thumbs(self, buttons: list[QToolButton]) -> None:
        thumbs = Thumbs(buttons)
        self.thumbs.append(thumbs)
        self._content_layout.addWidget(thumbs)

    def _grow_dock(self) -> None:
        from qtpy.QtWidgets import QDockWidget, QMainWindow

        dock, window = self.parentWidget(), None
        while dock is not None and not isinstance(dock, QDockWidget):
            dock = dock.parentWidget()
        if dock is None or dock.isFloating():
            return
        window = dock.parentWidget()
        while window is not None and not isinstance(window, QMainWindow):
            window = window.parentWidget()
        if window is None or dock.height() >= GROWN_HEIGHT:
            return
        area = window.dockWidgetArea(dock)  # its neighbours down to their minimum, if need be
        docks = [d for d in window.findChildren(QDockWidget) if d.isVisible()
                 and not d.isFloating() and window.dockWidgetArea(d) == area]
        window.resizeDocks(docks, [GROWN_HEIGHT if d is dock else d.minimumSizeHint().height()
                                   for d in docks], Qt.Orientation.Vertical)

    # ------------------------------------------------------------------ content
    def _on_inserted(self, event) -> None:
        if _is_samples(event.value):  # a new result: show it
            self.result.refresh()
            self.result.blockSignals(True)
            self.result.set_value(event.value)
            self.result.blockSignals(False)
            self.refresh()

    def current(self) -> tuple[Any, dict, Any] | None:
        """(samples layer, its record, source layer) of the chosen result, or None."""
        samples = self.result.value()
        if samples is None:
            return None
        info = L.output_info(samples)
        return samples, info, L.find_source(self.viewer.layers, info)

    def _watch(self, samples) -> None:
        """Follow in-place updates (a re-run) of the chosen samples layer."""
        if samples is self._watched:
            return
        if self._watched is not None:
            self._watched.events.data.disconnect(self.refresh)
        if samples is not None:
            samples.events.data.connect(self.refresh)
        self._watched = samples

    def refresh(self, *_) -> None:
        """Rebuild the thumbnails for the chosen result."""
        while (item := self._content_layout.takeAt(0)) is not None:
            if item.widget() is not None:
                item.widget().deleteLater()
        for b in list(self._group.buttons()):
            self._group.removeButton(b)
        self.buttons, self.headers, self.names, self.thumbs = {}, [], [], []
        self.selected, self.adopt_buttons, self.reader_buttons, self.comparison = None, {}, [], None
        self.notes.setText("")
        self.notes.setVisible(False)
        self.answer.setVisible(False)
        self.status.setText("")  # the last action's line belonged to the previous result
        cur = self.current()
        self._watch(None if cur is None else cur[0])
        enabled = cur is not None and cur[2] is not None
        self.adopt_sample_button.setEnabled(enabled)
        self.adopt_consensus_button.setEnabled(enabled)
        if cur is None:
            self._content_layout.addWidget(QLabel("No samples yet: run the sampler."))
            return
        samples, info, source = cur
        if source is None:
            self._content_layout.addWidget(QLabel(f"The image '{info.get('source_name')}' of "
                                                  "these samples is no longer open."))
            return
        n, modes = int(info["n"]), info["modes"]
        self._show_answer(info)
        plane, masks, clim = self._planes(samples, info, source)
        box = crop_box(info["bounds"], plane.shape[:2])
        all_masks = L.sample_masks(samples)
        speck = empty_or_speck(all_masks)[1]
        nothing = no_finding(modes, all_masks)
        self.names = mode_names(nothing)
        sizes = info.get("mode_sizes") or [{}] * len(modes)
        notes = []
        try:
            self._add_readers(samples, info, source, plane, clim, box, notes)
        except Exception as e:  # noqa: BLE001 - the readers are an extra: say, keep the modes
            notes.append(f"Readers not shown: {e}")
        for rank, (members, size) in enumerate(zip(modes, sizes), start=1):
            self._add_mode(samples, rank, members, n, plane, masks, clim, box,
                           None if nothing[rank - 1] else size.get("text", ""))
            k = int(speck[members].sum())
            if k:
                where = ("counted as no finding" if nothing[rank - 1]
                         else f"joined {self.names[rank - 1]}")
                notes.append(f"{k} speck{'s' * (k > 1)} (<= {SPECK_PX} px) {where}")
        self.notes.setText("; ".join(notes))
        self.notes.setVisible(bool(notes))
        self._content_layout.addStretch(1)
        self._flow(rebuilt=True)
        self._grow_once()
        self.select(modes[0][0], show=False)
        self.status.setText(f"{n} samples of '{source.name}': click a thumbnail to show it.")

    def _show_answer(self, info: dict) -> None:
        """The header's first answer: the finding probability (for a slab, on the slice the
        thumbnails show, where sampling started); the modes below are the second."""
        p, start = info["finding_probability"], info["start"]
        text = finding_text(p, info["conditional"])
        if p is not None and start is not None:
            text = f"on slice {start}, {text}"
        self.answer.setText(f"<b>{text[:1].upper()}{text[1:]}</b>")
        self.answer.setVisible(True)

    def readers_stack(self, source, info):
        """(readers layer, (R, ...) masks on the result's grid: the plane, or the sampled
        slab), or (None, None) when no readers are chosen or found."""
        from .add_case import reader_stack

        choice = self.readers.value()
        layer = (readers_layer_of(self.viewer.layers, source) if choice == AUTO
                 else None if choice in ("none", None) else choice)
        if layer is None:
            return None, None
        stack = reader_stack(layer, source)
        if info.get("z0") is not None:
            depth = L.sample_masks(self.current()[0]).shape[1]
            stack = stack[:, info["z0"]:info["z0"] + depth]
        return layer, stack != 0

    def _add_readers(self, samples, info, source, plane, clim, box, notes) -> None:
        """The readers' row (outline on the prompt slice, "reader 2: no finding" for one who
        outlined nothing) and the case's figures against the samples."""
        layer, readers = self.readers_stack(source, info)
        if layer is None:
            return
        masks = L.sample_masks(samples)
        self.comparison = c = compare_readers(masks, readers, info["modes"])
        n, r, names = c["n"], c["readers"], self.names
        head = QLabel(f"<b>readers - {r}: GED{n} {c['ged']:.2f}, HM-IoU{n} {c['hm_iou']:.2f}"
                      f"</b><br>left empty by {c['readers_empty']} of {r} readers, "
                      f"{c['samples_empty']} of {n} samples")
        head.setWordWrap(True)
        head.setToolTip(f"'{layer.name}' against the samples. " + report_text(c, names)
                        + ". GED: generalized energy distance (d = 1 - IoU, self-pairs "
                        "included); HM-IoU: Hungarian-matched IoU; a reader falls into the "
                        "mode whose representative it overlaps with IoU >= 0.5.")
        self.headers.append(head)
        self._content_layout.addWidget(head)
        on_plane = readers[:, info["key"]] if info.get("z0") is not None else readers
        color = np.asarray((1.0, 1.0, 1.0))
        for i in range(r):
            b = _thumb_button(READER_THUMB)
            b.setIcon(_icon(thumbnail(plane, on_plane[i], box, clim, color, READER_THUMB)))
            where = c["reader_modes"][i]
            if not readers[i].any():
                text = "no finding"
            else:
                text = (names[where - 1] if where else "no mode") + (
                    "" if on_plane[i].any() else " (off slice)")
            b.setText(f"reader {i + 1}\n{text}")
            b.setToolTip(f"Reader {i + 1} falls into " + (
                names[where - 1] if where else "no mode (best IoU with a mode < 0.5)"))
            self.reader_buttons.append(b)
        self._add_thumbs(self.reader_buttons)
        was_new = all((L.output_info(la) or {}).get("kind") != "readers"
                      for la in self.viewer.layers)
        view = L.show_readers_per_pixel(self.viewer, layer, source)
        if view is not None and was_new:
            from napari.utils.notifications import show_info

            show_info(f"'{layer.name}' is hidden: its reader axis would follow the sample "
                      f"slider. '{view.name}' shows how many readers outlined each pixel.")

    def _planes(self, samples, info, source):
        """The source plane the sampler was prompted on, the samples' masks there, window."""
        data = base_data(source)
        masks = L.sample_masks(samples)
        if info.get("z0") is not None:
            data = data[info["z0"] + info["key"]]
            masks = masks[:, info["key"]]
        rgb = getattr(source, "rgb", False)
        clim = (0, 255) if rgb else source.contrast_limits
        return np.asarray(data), masks, clim

    def _add_mode(self, samples, rank, members, n, plane, masks, clim, box, size) -> None:
        """One mode: header "mode 2 - 5 of 16: 410 mm^3 (310-520), 9.8 mm" with an Adopt
        button, or "no finding - 7 of 16" (`size` None) without; then its thumbnails."""
        header = QWidget()
        row = QHBoxLayout(header)
        row.setContentsMargins(0, 6, 0, 0)
        title = f"{self.names[rank - 1]} - {len(members)} of {n}" + (f": {size}" if size else "")
        label = QLabel(f"<b>{title}</b>")
        label.setWordWrap(True)
        self.headers.append(label)
        row.addWidget(label, 1)
        if size is not None:
            adopt = QPushButton("Adopt")
            adopt.setToolTip(f"Adopt sample {members[0]}, the most typical member of this "
                             "mode, as labels")
            adopt.clicked.connect(lambda _=False, r=rank: self.adopt_mode(r))
            row.addWidget(adopt)
            self.adopt_buttons[rank] = adopt
        self._content_layout.addWidget(header)
        color = samples.get_color(rank)  # the labels carry the rank (`SampleResult.labelled`)
        color = np.asarray((1.0, 0.3, 0.2) if color is None else color, dtype=float)
        for i, k in enumerate(members):
            b = _thumb_button()
            b.setCheckable(True)
            b.setIcon(_icon(thumbnail(plane, masks[k], box, clim, color, THUMB)))
            b.setText(f"#{k}" + (" (rep.)" if i == 0 else ""))
            b.clicked.connect(lambda _=False, k=k: self.select(k))
            self._group.addButton(b)
            self.buttons[k] = b
        self._add_thumbs([self.buttons[k] for k in members])

    # ------------------------------------------------------------------ show
    def select(self, k: int, show: bool = True) -> None:
        """Select sample `k`; with `show`, move the viewer's sample slider to it (and, for a
        slab of a volume shown off its slices, the slice slider to the prompt's slice)."""
        self.selected = int(k)
        if k in self.buttons:
            self.buttons[k].setChecked(True)
        cur = self.current()
        if show and cur is not None:
            samples, info = cur[0], cur[1]
            samples.visible = True
            dims = self.viewer.dims
            axis = dims.ndim - samples.ndim  # the samples layer's own sample axis
            dims.set_point(axis, float(k))
            if info.get("z0") is not None:
                here = samples.world_to_data(np.asarray(dims.point)[axis:])[1]
                if not 0 <= round(here) < samples.data.shape[1]:
                    dims.set_point(axis + 1, samples.data_to_world(
                        (k, info["key"]) + (0,) * (samples.ndim - 2))[1])
            self.status.setText(f"Showing sample {k} ({self._name_of(k)}).")

    def _name_of(self, k: int) -> str:
        """The name of the mode sample `k` belongs to ("mode 1", "no finding")."""
        cur = self.current()
        modes = cur[1]["modes"] if cur is not None else []
        return next((name for name, m in zip(self.names, modes) if k in m), "no mode")

    # ------------------------------------------------------------------ adopt
    def adopt_sample(self, k: int | None = None):
        """Adopt sample `k` (default: the selected one) as labels."""
        cur = self.current()
        if cur is None:
            return None
        k = self.selected if k is None else int(k)
        return self._adopt(L.sample_masks(cur[0])[k], f"sample {k}")

    def adopt_mode(self, rank: int):
        """Adopt the representative of mode `rank` (1 = most frequent)."""
        cur = self.current()
        if cur is None:
            return None
        k = cur[1]["modes"][rank - 1][0]
        self.select(k)
        return self._adopt(L.sample_masks(cur[0])[k], f"{self.names[rank - 1]} (sample {k})")

    def adopt_consensus(self, threshold: float | None = None):
        """Adopt the pixels marked by at least `threshold` of the samples."""
        cur = self.current()
        if cur is None:
            return None
        t = self.threshold.value() if threshold is None else float(threshold)
        agreement = L.sample_masks(cur[0]).mean(0)
        return self._adopt(consensus(agreement, t), f"consensus >= {t:.2f}")

    def confirm(self, target) -> bool:
        """Ask before writing into an existing Labels layer."""
        answer = QMessageBox.question(
            self, "Adopt into existing labels",
            f"Write into '{target.name}'? Only empty pixels are written: painted labels are "
            "kept, and Ctrl+Z on that layer takes it back.")
        return answer == QMessageBox.StandardButton.Yes

    def _adopt(self, mask: np.ndarray, what: str):
        from napari.utils.notifications import show_info

        samples, info, source = self.current()
        if not np.any(mask):
            self.status.setText(f"{what} is empty: nothing to adopt.")
            return None
        try:
            full = L.embed(mask, L.spatial_shape(source), info.get("z0"))
            target = self.target.value()
            if target == "new":
                layer = L.adopt_new(self.viewer, source, full, what=what)
                text = f"Adopted {what} as '{layer.name}' ({int(full.sum())} pixels)."
            else:
                if not on_grid(target, source):
                    raise ValueError(f"'{target.name}' is not on the pixel grid of "
                                     f"'{source.name}' (shape or transform differ).")
                if not self.confirm(target):
                    self.status.setText("Adoption cancelled.")
                    return None
                label = L.next_label(target)
                written, kept = L.write_where_empty(target, full, label)
                L.mark_adopted(target, source, what)
                layer = target
                text = (f"Adopted {what} into '{target.name}' as label {label}: {written} "
                        f"pixels written, {kept} painted pixels kept.")
        except Exception as e:  # noqa: BLE001 - report, never crash the viewer
            notify_error(e)
            return None
        self.viewer.layers.selection.active = layer
        protect(self.viewer, layer)  # crash safety: snapshot it now and while edited
        self.status.setText(text)
        if layer is target:
            show_info(text)  # writing into existing labels deserves a notification
        return layer


def _icon(rgb: np.ndarray):
    from qtpy.QtGui import QIcon

    return QIcon(to_pixmap(rgb))
