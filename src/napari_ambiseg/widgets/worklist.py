"""The Worklist dock: walk a triage run's cases, most expert disagreement first.

Open a run folder made by `ambiseg triage` (docs/triage.md): its cases are listed by rank
with their score, finding probability, size and status (todo / done / skipped, from the
run's ``worklist_state.json``). **Next** / **Previous** (Ctrl+Shift+Right / Ctrl+Shift+Left,
which napari does not use) open a case from disk, never sampling again: the image read from
its source, the samples and agreement of ``cases/<key>/samples.npz`` shown as the sampling
dock shows a result (`layers.replace_outputs`, so the Gallery dock shows its modes and the
finding probability and adopts them as it does for a fresh result), and the annotator's own
labels saved before. With the sampling dock open, its Steer row steers the case (its clicks
draw the case's prompt again given them, `SamplingWidget.take_result`). **Save** writes the
Labels layer drawn on the case image to ``labels/<key>/<annotator>.nii.gz`` on the source
grid (and, for a DICOM series, a DICOM-SEG beside it) and marks the case done; **Skip** marks
it skipped. Reopening the folder puts the cursor on the first case still to do. Reading and
writing run off the GUI thread (napari workers); a case that cannot be read says why and the
dock goes on.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QBrush, QColor, QFont, QKeySequence, QShortcut
from qtpy.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .. import worklist as wl
from ..errors import InputError
from ..layer_contract import ADOPTED_KEY, METADATA_KEY, layer_record, on_grid, spatial_shape
from ..modes import Mode
from ..result import SampleResult, binary_entropy
from . import layers as L
from ._qt import error_text

if TYPE_CHECKING:
    import napari

SHORTCUTS = {"next": "Ctrl+Shift+Right", "previous": "Ctrl+Shift+Left"}
COLUMNS = ("#", "case", "score", "finding", "size", "status")
WIDTH = 440  # the dock's preferred width: the table's columns, the Gallery's thumbnails
STATUS_COLORS = {"done": "#4caf50", "skipped": "#9e9e9e", "error": "#e57373"}


# ------------------------------------------------------------------------------ Qt-free parts
def result_from_disk(case: wl.Case) -> SampleResult:
    """The `SampleResult` of a triage prompt, rebuilt from its files (no sampling): masks and
    agreement of samples.npz, modes, bounds and answers of result.json; sizes measured here
    (call it off the GUI thread). `InputError` when the files do not fit each other or the
    image."""
    res = case.result.get("result") or {}
    masks = np.asarray(case.samples).astype(bool)
    agreement = np.asarray(case.agreement, dtype=np.float32)
    grid = tuple(case.image.spatial_shape)
    z0 = res.get("z0", case.result.get("z0"))
    key = str(case.result.get("key", ""))
    if z0 is None:  # a 2D image: (N, H, W) on its grid
        fits = masks.ndim == 3 and masks.shape[1:] == grid
    else:  # a volume: (N, Z, H, W), slices z0.. of it
        fits = (masks.ndim == 4 and len(grid) == 3 and masks.shape[2:] == grid[1:]
                and 0 <= int(z0) <= grid[0] - masks.shape[1])
    if not fits or agreement.shape != masks.shape[1:]:
        where = "" if z0 is None else f" from slice {z0}"
        raise InputError(f"{key}: samples.npz {masks.shape}{where} does not fit the image "
                         f"{grid}")
    n = masks.shape[0]
    try:
        modes = [Mode([int(k) for k in m["members"]], float(m["frequency"]),
                      int(m["representative"])) for m in res["modes"]]
        bounds = tuple(int(v) for v in res["bounds"])
        steps, seed = int(res["steps"]), int(res["seed"])
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{key}: result.json lacks the result's {e}") from None
    if sorted(k for m in modes for k in m.members) != list(range(n)):
        raise InputError(f"{key}: result.json's modes do not cover the {n} samples of "
                         "samples.npz")
    spacing = res.get("spacing")
    out = SampleResult(
        masks, agreement, binary_entropy(agreement), modes, bounds, steps, seed,
        timings={k: float(v) for k, v in (res.get("timings_s") or {}).items()},
        z0=None if z0 is None else int(z0), key=int(res.get("key") or 0),
        spacing=None if spacing is None else tuple(float(s) for s in spacing),
        method=str(res.get("method") or "per-slice"),
        finding_probability=res.get("finding_probability"),
        conditional=bool(res.get("conditional")),
        slice_probabilities=res.get("slice_probabilities"))
    _ = out.sizes  # measured here, in the worker
    return out


def request_of(run: wl.Run, case: wl.Case):
    """The `Request` triage sampled a case's prompt with (`triage.inputs.request_for` on
    result.json's prompt, seed, spacing and modality and the run's N, steps and finding
    setting), so that the sampling dock can draw it again given clicks; None when
    result.json does not say."""
    from ..triage.inputs import PromptSpec, request_for

    r = case.result
    if not isinstance(r.get("prompt"), dict):
        return None
    spacing = r.get("spacing")
    return request_for(PromptSpec.from_dict(r["prompt"]), case.image, n=run.info.get("n"),
                       steps=run.info.get("steps"), seed=int(r.get("seed", 0)),
                       given_finding=bool(run.info.get("given_finding", True)),
                       spacing=None if spacing is None else tuple(float(v) for v in spacing),
                       modality=str(r.get("modality") or "auto"))


@dataclass
class Loaded:
    """A case read from the run folder, ready to show."""

    key: str
    image: Any                    # MedicalImage
    out: SampleResult
    result: dict[str, Any]
    labels: np.ndarray | None     # the annotator's saved labels, on the image's grid
    request: Any = None           # the `Request` it was sampled with (steering), or None


def load_job(run: wl.Run, key: str, annotator: str) -> Loaded:
    """Read one case (image, samples, the annotator's saved labels) for the dock; runs in a
    worker thread."""
    from ..training.from_worklist import labels_on_image

    case = wl.load_case(run, key)
    out = result_from_disk(case)
    path = wl.labels_path(run, key, annotator)
    labels = labels_on_image(case.image.spatial_shape, path) if path.is_file() else None
    return Loaded(key, case.image, out, case.result, labels, request_of(run, case))


def is_dicom(reference: dict[str, Any]) -> bool:
    """Whether a geometry record comes from DICOM images (a DICOM-SEG can reference them)."""
    return bool(reference.get("source_files") and reference.get("sop_instance_uids"))


def save_job(run: wl.Run, key: str, labels: np.ndarray, reference: dict[str, Any],
             annotator: str, metadata: dict[str, Any]) -> tuple[Path, Path | None, str]:
    """Write the labels (labels/<key>/<annotator>.nii.gz, and a DICOM-SEG beside it for a
    DICOM source) and mark the case done; runs in a worker thread. Returns (path, DICOM-SEG
    path or None, why no DICOM-SEG could be written or "")."""
    from ..io import write_labels

    path = wl.save_labels(run, key, labels, reference, annotator, provenance=metadata)
    seg, problem = None, ""
    if is_dicom(reference):
        seg = path.with_name(path.name[:-len(".nii.gz")] + ".dcm")
        try:
            write_labels(labels, seg, reference, from_model=ADOPTED_KEY in metadata,
                         provenance=metadata)
        except Exception as e:  # noqa: BLE001 - the NIfTI is the run's file; say, go on
            seg, problem = None, error_text(e)
    wl.set_status(run, key, "done", who=annotator)
    return path, seg, problem


def fingerprint(data: Any) -> str:
    """A digest of an array's voxels and shape (were the labels saved as they are?)."""
    a = np.ascontiguousarray(np.asarray(data))
    return hashlib.blake2b(a.view(np.uint8).ravel(), digest_size=16).hexdigest() + str(a.shape)


def layer_name(key: str) -> str:
    """The case image's layer name: its key ("case 17" for a .npz index)."""
    return f"case {key}" if key.isdigit() else key


def row_texts(row: wl.Row, status: str) -> list[str]:
    """The table's cells of a worklist row: rank, case (and prompt k of a case prompted
    several times), score, finding probability, size, status."""
    size = ""
    if row.size is not None:
        size = f"{row.size:.0f}" if row.size >= 100 else f"{row.size:.3g}"
        size = f"{size} {row.size_unit}".strip()
    case = row.case if row.key == row.case else f"{row.case} ({row.key.split('~')[-1]})"
    if not row.ok:
        status = "error" if row.status == wl.ERROR else "not sampled"
    return ["" if row.rank is None else str(row.rank), case,
            "" if row.score is None else f"{row.score:.2f}",
            "" if row.finding_probability is None else f"{100 * row.finding_probability:.0f}%",
            size, status]


# ------------------------------------------------------------------------------ the dock
class WorklistWidget(QWidget):
    """Dock: a triage run's ranked cases; open, adopt, save, next."""

    opened = Signal(str)  # a case's key, once its layers are in the viewer
    saved = Signal(str)   # a case's key, once its labels are written and it is marked done

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.run: wl.Run | None = None
        self.state: dict[str, wl.CaseState] = {}
        self.current: Loaded | None = None   # the case shown
        self.image_layer = None              # its image layer
        self.worker = None                   # the read or write under way
        self.last_error: str = ""
        self._saved: dict[int, str] = {}     # labels layer id -> fingerprint last saved/read
        self._cursor: int | None = None      # the row opened last (or tried): Next goes on
        self._labels_by: dict[str, list[str]] = {}
        self._make_fields()
        self._lay_out()
        self._connect()
        self._enable()

    # ------------------------------------------------------------------ layout
    def _make_fields(self) -> None:
        self.folder = QLineEdit()
        self.folder.setReadOnly(True)
        self.folder.setPlaceholderText("a triage run folder (ambiseg triage ... --out RUN)")
        self.open_button = QPushButton("Open run...")
        self.open_button.setToolTip("Choose the run folder that `ambiseg triage` wrote")
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.annotator = QLineEdit(wl.default_annotator())
        self.annotator.setToolTip("Your name: labels are saved as labels/<case>/<name>.nii.gz; "
                                  "several annotators of one case are its raters in training")
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        for i in range(len(COLUMNS)):
            header.setSectionResizeMode(i, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        rows = self.table.verticalHeader().defaultSectionSize()  # six rows always show
        self.table.setMinimumHeight(header.sizeHint().height() + 6 * rows
                                    + 2 * self.table.frameWidth())
        for name, tip in zip(COLUMNS, (
                "rank: 1 = most expert disagreement", "the case (and prompt)",
                "disagreement score: 1 - expected IoU of two readers drawn from the model",
                "share of experts who would outline a finding at the prompt",
                "median size of the commonest outline mode", "todo / done / skipped")):
            self.table.horizontalHeaderItem(COLUMNS.index(name)).setToolTip(tip)
        self.prev_button = QPushButton("< Previous")
        self.next_button = QPushButton("Next >")
        self.skip_button = QPushButton("Skip")
        self.save_button = QPushButton("Save")
        self.prev_button.setToolTip(f"Open the case above ({SHORTCUTS['previous']})")
        self.next_button.setToolTip(f"Open the next case ({SHORTCUTS['next']}); with no case "
                                    "open, the selected one")
        self.skip_button.setToolTip("Mark the case skipped (it stays in the list)")
        self.save_button.setToolTip("Save the Labels layer of this case to the run folder "
                                    "(labels/<case>/<annotator>.nii.gz) and mark it done")
        self.status = QLabel("Open a triage run folder.")
        self.status.setWordWrap(True)
        self.next_shortcut = QShortcut(QKeySequence(SHORTCUTS["next"]), self)
        self.prev_shortcut = QShortcut(QKeySequence(SHORTCUTS["previous"]), self)
        for s in (self.next_shortcut, self.prev_shortcut):
            s.setContext(Qt.ShortcutContext.WindowShortcut)

    def _lay_out(self) -> None:
        for label in (self.summary, self.status):
            label.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self._fit_text()
        top = QHBoxLayout()
        top.addWidget(self.folder, 1)
        top.addWidget(self.open_button)
        who = QHBoxLayout()
        who.addWidget(QLabel("Annotator"))
        who.addWidget(self.annotator, 1)
        buttons = QHBoxLayout()
        for b in (self.prev_button, self.next_button, self.skip_button, self.save_button):
            buttons.addWidget(b)
        box = QVBoxLayout(self)
        box.addLayout(top)
        box.addWidget(self.summary)
        box.addLayout(who)
        box.addWidget(self.table, 1)
        box.addLayout(buttons)
        box.addWidget(self.status)

    def _fit_text(self) -> None:
        """The wrapped lines get a fixed height (the whole text is in the tooltip), so that a
        longer text never pushes the dock's minimum above what the window gave it (Qt would
        draw the rows over each other); set again whenever the text changes, as napari's
        style sets the font after the dock is made."""
        for label, lines in ((self.summary, 2), (self.status, 3)):
            label.setFixedHeight(lines * (label.fontMetrics().lineSpacing() + 1) + 12)

    def showEvent(self, event) -> None:  # noqa: N802 - Qt naming
        self._fit_text()
        super().showEvent(event)

    def sizeHint(self):  # noqa: D102 - Qt: wide enough for the table and the Gallery below
        hint = super().sizeHint()
        hint.setWidth(max(hint.width(), WIDTH))
        return hint

    def _connect(self) -> None:
        self.open_button.clicked.connect(self.choose_run)
        self.next_button.clicked.connect(lambda: self.next())
        self.prev_button.clicked.connect(lambda: self.previous())
        self.skip_button.clicked.connect(lambda: self.skip())
        self.save_button.clicked.connect(lambda: self.save())
        self.next_shortcut.activated.connect(lambda: self.next())
        self.prev_shortcut.activated.connect(lambda: self.previous())
        self.table.cellDoubleClicked.connect(lambda row, _: self.open_row(row))

    def _enable(self) -> None:
        have, idle = self.run is not None, self.worker is None
        for b in (self.prev_button, self.next_button, self.skip_button):
            b.setEnabled(have and idle)
        self.save_button.setEnabled(have and idle and self.current is not None)
        self.open_button.setEnabled(idle)

    def say(self, text: str, error: bool = False) -> None:
        self.status.setText(text)
        self.status.setToolTip(text)
        self._fit_text()
        if error:
            self.last_error = text
            from napari.utils.notifications import show_error

            show_error(text)

    # ------------------------------------------------------------------ the run
    def choose_run(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a triage run folder",
                                                self.folder.text())
        if path:
            self.open_run(path)

    def open_run(self, path: str | Path) -> bool:
        """Read a run folder and list its cases; the cursor goes to the first case still to
        do. Returns False (with the reason in the status line) when it is not a run."""
        if self.worker is not None:
            return False
        if not self._leave():
            return False
        try:
            run = wl.read_run(path)
        except Exception as e:  # noqa: BLE001 - say why, keep the dock as it was
            self.say(f"Cannot open {path}: {error_text(e)}", error=True)
            return False
        self._close_case()
        self.run, self.current, self._cursor = run, None, None
        self.folder.setText(str(run.root))
        self._read_state()
        self._fill()
        first = self.first_todo()
        if first is not None:
            self.table.selectRow(first)
            self.table.scrollToItem(self.table.item(first, 0))
            row = run.rows[first]
            self.say(f"Resuming at case {row.case} (rank {row.rank}), the first still to do: "
                     f"Next ({SHORTCUTS['next']}) opens it.")
        else:
            self.say("Every case of this run is done or skipped; double-click one to open it.")
        self._enable()
        return True

    def _read_state(self) -> None:
        try:
            self.state = wl.read_state(self.run)
        except InputError as e:
            self.state = {}
            self.say(f"{e}: every case is shown as todo.", error=True)
        self._labels_by = {}
        folder = self.run.root / wl.LABELS
        if folder.is_dir():
            for d in folder.iterdir():
                if d.is_dir():
                    self._labels_by[d.name] = sorted(wl.saved_labels(self.run, d.name))

    def status_of(self, key: str) -> str:
        s = self.state.get(key)
        return s.status if s is not None and s.status in wl.STATUSES else "todo"

    def _fill(self) -> None:
        rows = self.run.rows
        self.table.setRowCount(len(rows))
        for i in range(len(rows)):
            self._fill_row(i)
        self._summarise()

    def _fill_row(self, i: int) -> None:
        row = self.run.rows[i]
        status = self.status_of(row.key)
        shown = self.current is not None and self.current.key == row.key
        for j, text in enumerate(row_texts(row, status)):
            item = self.table.item(i, j)
            if item is None:
                item = QTableWidgetItem()
                self.table.setItem(i, j, item)
            item.setText(text)
            if j in (0, 2, 3, 4):
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            font = QFont(item.font())
            font.setBold(shown)
            item.setFont(font)
            tip = self._tooltip(row, status)
            item.setToolTip(tip)
            if j == 5:
                color = STATUS_COLORS.get(text if not row.ok else status)
                item.setForeground(QBrush(QColor(color)) if color else QBrush())

    def _tooltip(self, row: wl.Row, status: str) -> str:
        if not row.ok:
            return f"{row.case}: {row.error or row.status}"
        parts = [f"{row.case}, prompt {row.prompt}"]
        s = self.state.get(row.key)
        if s is not None and s.status != "todo":
            parts.append(f"{status} by {s.who or '?'} at {s.when or '?'}")
        if self._labels_by.get(row.key):
            parts.append("labels saved by " + ", ".join(self._labels_by[row.key]))
        return "\n".join(parts)

    def _summarise(self) -> None:
        rows = self.run.rows
        ok = [r for r in rows if r.ok]
        count = {s: sum(self.status_of(r.key) == s for r in ok) for s in wl.STATUSES}
        bad = len(rows) - len(ok)
        self.summary.setText(
            f"{len(ok)} cases, most expert disagreement first: {count['todo']} to do, "
            f"{count['done']} done, {count['skipped']} skipped"
            + (f"; {bad} could not be sampled" if bad else "") + ".")
        self._fit_text()
        self.summary.setToolTip(f"Sampled by {self.run.model.get('name', '?')}, "
                                f"{self.run.n} samples per case, {self.run.steps} steps")

    def first_todo(self) -> int | None:
        """The row of the first case (by rank) still to do."""
        return next((i for i, r in enumerate(self.run.rows)
                     if r.ok and self.status_of(r.key) == "todo"), None)

    def row_of(self, key: str) -> int:
        return self.run.keys.index(key)

    def selected_row(self) -> int | None:
        rows = self.table.selectionModel().selectedRows()
        return rows[0].row() if rows else None

    # ------------------------------------------------------------------ moving
    def next(self):
        """Open the case after the one opened last (rows that could not be sampled are
        passed over); right after opening the run, the selected one (the first to do).
        Returns the worker (or None)."""
        return self._step(+1)

    def previous(self):
        """Open the case before the one opened last (right after opening the run: before
        the selected one)."""
        return self._step(-1)

    def _step(self, direction: int):
        if self.run is None or self.worker is not None:
            return None
        if self._cursor is not None:
            i = self._cursor + direction
        else:
            sel = self.selected_row()
            if sel is None:
                sel = self.first_todo() or 0
            i = sel if direction > 0 else sel - 1
        while 0 <= i < len(self.run.rows) and not self.run.rows[i].ok:
            i += direction
        if not 0 <= i < len(self.run.rows):
            todo = sum(r.ok and self.status_of(r.key) == "todo" for r in self.run.rows)
            edge = "last" if direction > 0 else "first"
            self.say(f"This is the {edge} case of the worklist; {todo} still to do.")
            return None
        return self.open_row(i)

    def open_row(self, i: int):
        """Open the case of table row `i` (off the GUI thread); returns the worker."""
        if self.run is None or self.worker is not None or not 0 <= i < len(self.run.rows):
            return None
        row = self.run.rows[i]
        if not row.ok:
            self.say(f"Case {row.case} cannot be opened: {row.error or row.status}.", error=True)
            return None
        if not self._leave():
            return None
        self._cursor = i  # Next / Previous go on from here, also when it cannot be read
        self.table.selectRow(i)
        return self._start(f"Opening case {row.case} (rank {row.rank})...", load_job, self.run,
                           row.key, self.annotator_name(),
                           done=self._on_loaded, failed=lambda e, r=row: self._on_load_failed(r, e))

    def annotator_name(self) -> str:
        return wl.safe_name(self.annotator.text().strip() or wl.default_annotator())

    def _start(self, text: str, fn, *args, done, failed):
        from napari.qt.threading import create_worker
        from napari.utils import progress

        self.say(text)
        pbar = progress(total=0, desc=f"AmbiSeg: {text.rstrip('.')}")
        worker = create_worker(fn, *args, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(done)
        worker.errored.connect(failed)

        def finished() -> None:
            pbar.close()
            self.worker = None
            self._enable()

        worker.finished.connect(finished)
        self.worker = worker
        self._enable()
        worker.start()
        return worker

    def _on_load_failed(self, row: wl.Row, exc: BaseException) -> None:
        self.say(f"Cannot open case {row.case}: {error_text(exc)}. The other cases can be "
                 "opened (Next, Previous, or double-click).", error=True)

    def _on_loaded(self, loaded: Loaded) -> None:
        if self.run is None:
            return
        self._close_case()
        self.current = loaded
        image = self._show(loaded)
        i = self.row_of(loaded.key)
        self._fill_row(i)
        self.table.selectRow(i)
        self.table.scrollToItem(self.table.item(i, 0))
        row = self.run.rows[i]
        status = self.status_of(loaded.key)
        text = (f"Case {row.case} (rank {row.rank} of {sum(r.ok for r in self.run.rows)}, "
                f"{status}): {loaded.out.finding_text()}.")
        if loaded.labels is not None:
            text += f" Your saved labels are loaded as '{self._labels_layer_name(image)}'."
        else:
            text += " Adopt a mode in the Gallery, edit it, then Save."
        self.say(text)
        self.opened.emit(loaded.key)

    def _labels_layer_name(self, image) -> str:
        return f"{image.name} labels"

    def _show(self, loaded: Loaded):
        """The case's layers: image, the sampler's outputs, the saved labels; the viewer on
        the slice sampling started from."""
        from napari.layers import Labels, Layer

        from .._reader import layer_data
        from .recovery import protect
        from .sampling import go_to_slice

        loaded.image.name = layer_name(loaded.key)
        added = [Layer.create(*data) for data in layer_data([loaded.image])]  # + "(gray)"
        for layer in added:
            self.viewer.layers.append(layer)
        image = added[0]
        self.image_layer = image
        self._open_gallery()
        L.replace_outputs(self.viewer, image, loaded.out)
        if loaded.labels is not None:
            labels = Labels(np.asarray(loaded.labels).astype(np.uint16),
                            name=self._labels_layer_name(image),
                            metadata={METADATA_KEY: copy.deepcopy(layer_record(image, METADATA_KEY))},
                            **L.geometry(image))
            self.viewer.layers.insert(self.viewer.layers.index(image) + 1, labels)
            self._saved[id(labels)] = fingerprint(labels.data)
            protect(self.viewer, labels, adopted=False)
            self.viewer.layers.selection.active = labels
        else:
            self.viewer.layers.selection.active = image
        self.viewer.reset_view()
        if loaded.out.start is not None:
            go_to_slice(self.viewer, image, loaded.out.start)
        self._hand_to_sampler(image, loaded)
        return image

    def _hand_to_sampler(self, image, loaded: Loaded) -> None:
        """An open sampling dock takes the case's result as its own, so its Steer row's
        include / exclude clicks draw the case again given them."""
        from .sampling import SamplingWidget

        try:
            docks = list(self.viewer.window.dock_widgets.values())
        except Exception:  # noqa: BLE001 - a viewer without a window (headless use)
            return
        for widget in docks:
            if isinstance(widget, SamplingWidget) and loaded.request is not None:
                widget.take_result(image, loaded.request, loaded.out,
                                   f"case {loaded.key} of the worklist")

    def _open_gallery(self) -> None:
        """Open the Gallery dock (it shows the case's modes) unless one is open."""
        from .gallery import GalleryWidget

        window = self.viewer.window
        try:
            docks = list(window.dock_widgets.values())
        except Exception:  # noqa: BLE001 - a viewer without a window (headless use)
            return
        if any(isinstance(w, GalleryWidget) for w in docks):
            return
        try:
            dock, _ = window.add_plugin_dock_widget("napari-ambiseg", "Gallery")
        except Exception:  # noqa: BLE001 - the plugin is not registered (e.g. tests)
            dock = window.add_dock_widget(GalleryWidget(self.viewer), name="Gallery",
                                          area="right")
        from qtpy.QtCore import QTimer

        QTimer.singleShot(0, lambda: self._make_room(dock))

    def _make_room(self, gallery) -> None:
        """Once, when it opens the Gallery below itself: this dock keeps its minimum (six
        rows of the list), the Gallery gets the rest for its thumbnails."""
        from qtpy.QtWidgets import QDockWidget, QMainWindow

        mine, window = self.parentWidget(), self.window()
        while mine is not None and not isinstance(mine, QDockWidget):
            mine = mine.parentWidget()
        if mine is None or not isinstance(window, QMainWindow) or mine.isFloating() or \
                window.dockWidgetArea(mine) != window.dockWidgetArea(gallery):
            return
        window.resizeDocks([mine, gallery], [mine.minimumSizeHint().height(), window.height()],
                           Qt.Orientation.Vertical)

    # ------------------------------------------------------------------ the case's layers
    def case_labels(self) -> list:
        """The Labels layers drawn on the open case's image (not the sampler's outputs)."""
        from napari.layers import Labels

        image = self.image_layer
        if image is None or image not in self.viewer.layers:
            return []
        grid = spatial_shape(image)
        return [la for la in self.viewer.layers if isinstance(la, Labels) and not L.is_output(la)
                and spatial_shape(la) == grid and on_grid(la, image)]

    def unsaved(self) -> list:
        """The case's Labels layers holding labels that were not saved as they are."""
        return [la for la in self.case_labels() if np.any(la.data)
                and self._saved.get(id(la)) != fingerprint(la.data)]

    def confirm_leave(self, names: list[str]) -> bool:
        """Ask before closing a case whose labels were not saved."""
        answer = QMessageBox.question(
            self, "Unsaved labels",
            f"{', '.join(repr(n) for n in names)} of case {self.current.key} "
            "not saved. Close the case without saving?")
        return answer == QMessageBox.StandardButton.Yes

    def _leave(self) -> bool:
        """Whether the open case may be closed (unsaved labels: ask)."""
        if self.current is None:
            return True
        unsaved = self.unsaved()
        return not unsaved or self.confirm_leave([la.name for la in unsaved])

    def _close_case(self) -> None:
        """Remove the open case's layers (image, outputs, labels on it)."""
        image = self.image_layer
        if image is not None:
            sid = L.source_id(image)
            gone = [la for la in self.viewer.layers
                    if la is image or (L.output_info(la) or {}).get("source") == sid
                    or (layer_record(la, METADATA_KEY) or {}).get("gray_of") == image.name]
            gone += [la for la in self.case_labels() if la not in gone]
            for la in gone:
                if la in self.viewer.layers:
                    self.viewer.layers.remove(la)
        previous = self.current
        self.image_layer, self.current = None, None
        self._saved = {}
        if previous is not None and self.run is not None:
            self._fill_row(self.row_of(previous.key))

    # ------------------------------------------------------------------ marking
    def skip(self) -> bool:
        """Mark the open case (else the selected one) skipped."""
        key = self._target_key()
        if key is None:
            return False
        return self._mark(key, "skipped")

    def _target_key(self) -> str | None:
        if self.run is None:
            return None
        if self.current is not None:
            return self.current.key
        i = self.selected_row()
        if i is None or not self.run.rows[i].ok:
            self.say("Select a case first.")
            return None
        return self.run.rows[i].key

    def _mark(self, key: str, status: str) -> bool:
        try:
            self.state[key] = wl.set_status(self.run, key, status, who=self.annotator_name())
        except Exception as e:  # noqa: BLE001 - say why; the case keeps its status
            self.say(f"Cannot mark {key} {status}: {error_text(e)}", error=True)
            return False
        self._fill_row(self.row_of(key))
        self._summarise()
        self.say(f"Case {self.run.row(key).case} marked {status}. Next: "
                 f"{SHORTCUTS['next']}.")
        return True

    def save(self):
        """Save the open case's Labels layer to the run folder and mark the case done (off the
        GUI thread); returns the worker (None, with the reason, when there is nothing to
        save)."""
        if self.run is None or self.worker is not None:
            return None
        if self.current is None:
            self.say("Open a case first (Next).")
            return None
        layer = self._labels_to_save()
        if layer is None:
            return None
        data = np.array(layer.data, copy=True)
        reference = copy.deepcopy(layer_record(self.image_layer, METADATA_KEY))
        metadata = copy.deepcopy(dict(layer.metadata))
        key, who = self.current.key, self.annotator_name()
        fp = fingerprint(data)
        return self._start(f"Saving the labels of {key}...", save_job, self.run, key, data,
                           reference, who, metadata,
                           done=lambda r, la=layer, k=key, f=fp: self._on_saved(la, k, f, r),
                           failed=lambda e, k=key: self.say(
                               f"Cannot save the labels of {k}: {error_text(e)}", error=True))

    def _labels_to_save(self):
        candidates = self.case_labels()
        if not candidates:
            self.say("No labels on this case yet: adopt a mode in the Gallery (or add a Labels "
                     "layer on the image and paint), then Save.", error=True)
            return None
        active = self.viewer.layers.selection.active
        if active in candidates:
            return active
        if len(candidates) == 1:
            return candidates[0]
        self.say(f"{len(candidates)} Labels layers lie on this case's image: select the one to "
                 "save in the layer list, then Save.", error=True)
        return None

    def _on_saved(self, layer, key: str, fp: str, result) -> None:
        path, seg, problem = result
        self._saved[id(layer)] = fp
        self._read_state()  # the file save_job marked, and who has labels now
        self._fill_row(self.row_of(key))
        self._summarise()
        where = path.relative_to(self.run.root)
        text = f"Saved {where}"
        if seg is not None:
            text += f" and the DICOM-SEG {seg.name}"
        text += f"; case {self.run.row(key).case} done. Next: {SHORTCUTS['next']}."
        if problem:
            text += f" (No DICOM-SEG: {problem}.)"
        self.say(text)
        self.saved.emit(key)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt naming
        if self.worker is not None:
            self.worker.quit()
        super().closeEvent(event)
