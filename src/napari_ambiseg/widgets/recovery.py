"""Crash safety in napari: protect adopted labels, snapshot edits, offer to restore after a crash.

* :func:`protect` (called after every adopt) snapshots a Labels layer at once, synchronously,
  into this viewer's recovery session, and keeps it protected: a timer snapshots it again
  every :data:`INTERVAL_MS` when it was painted, undone, renamed or moved since. The copy is
  taken on the GUI thread, the compression and write happen on one background thread.
* A protected layer the user removes is forgotten (closing it was a choice). Closing the
  viewer normally ends the session and deletes its snapshots; a crash leaves them.
* Only napari's public API is used, so this keeps working when napari 0.10 closes private
  attributes to plugins (issue 27.5). Docks opened from the Plugins menu hold the viewer
  wrapped in napari's ``PublicOnlyProxy``; objects are matched by the object a proxy wraps
  (:func:`_key`), so every dock of a viewer shares one session. What tells a layer changed:
  its public events ``paint`` (a stroke), ``data`` (new array), ``set_data`` (its data were
  redrawn: an undo or redo, which napari applies without a paint event, but also a slice
  change) and the name and transform events. A snapshot whose content (voxels, name,
  transform, metadata) equals the last one written is not written again. The end of the
  viewer is the ``destroyed`` signal of ``viewer.window.main_menu`` (the window's menu bar,
  a public member, destroyed with the window) or the application quitting.
* :class:`RecoveryBanner`, shown at the top of the docks, offers the labels of sessions that
  ended unexpectedly: Restore (as Labels layers with their geometry and metadata, protected in
  this session) or Discard.

The files and their rules live in :mod:`napari_ambiseg.recovery`.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import QObject, QTimer, Signal
from qtpy.QtWidgets import QApplication, QFrame, QHBoxLayout, QLabel, QMessageBox, QPushButton, QVBoxLayout, QWidget

from .. import provenance as P
from .. import recovery as R

INTERVAL_MS = 30_000  # painting since the last snapshot is what a crash can lose
# public layer events after which a snapshot may differ ("set_data": undo/redo, see above)
EVENTS = ("paint", "data", "set_data", "name", *R.TRANSFORM)


def _key(obj) -> int:
    """Identity of a napari object, the same for the object and for napari's PublicOnlyProxy
    of it (docks opened from the Plugins menu get proxies; events carry the objects)."""
    return id(getattr(obj, "__wrapped__", obj))


def state_of(layer) -> R.LayerState:
    """The recovery state of a napari Labels layer (its data is not copied here)."""
    transform = {
        "scale": [float(s) for s in layer.scale],
        "translate": [float(t) for t in layer.translate],
        "rotate": np.asarray(layer.rotate, dtype=float).tolist(),
        "shear": np.asarray(layer.shear, dtype=float).tolist(),
        "affine": np.asarray(layer.affine.affine_matrix, dtype=float).tolist(),
        "axis_labels": [str(a) for a in layer.axis_labels],
        "units": [str(u) for u in layer.units],
    }
    metadata = layer.metadata if isinstance(layer.metadata, dict) else {}
    return R.LayerState(layer.name, layer.data, transform, metadata)


def _end_signal(viewer):
    """A public Qt signal emitted when the viewer's window is gone: the ``destroyed`` signal
    of its menu bar (``viewer.window.main_menu``, deleted with the window); None headless."""
    menu = getattr(getattr(viewer, "window", None), "main_menu", None)
    return getattr(menu, "destroyed", None)


@dataclass
class _Tracked:
    layer: Any
    key: str
    dirty: bool = False
    painted: set[int] = field(default_factory=set)  # brush values of its paint events


class RecoveryController(QObject):
    """The recovery session of one viewer: protected layers, timer, clean end."""

    def __init__(self, viewer, parent: QObject | None = None):
        super().__init__(parent)
        self.viewer = viewer
        self.session: R.Session | None = None
        self.ended = False
        self.last_error: BaseException | None = None
        self._tracked: dict[int, _Tracked] = {}  # by _key(layer)
        self._written: dict[str, bytes] = {}  # snapshot key -> fingerprint (writer thread)
        self._pending: list[Future] = []
        self._reported = False
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="ambiseg-recovery")
        self.timer = QTimer(self)
        self.timer.setInterval(INTERVAL_MS)
        self.timer.timeout.connect(self.tick)
        viewer.layers.events.removed.connect(self._on_removed)
        if (closed := _end_signal(viewer)) is not None:
            closed.connect(self.end)
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.end)

    # -------------------------------------------------------------- protect
    def protected(self) -> list[Any]:
        return [t.layer for t in self._tracked.values()]

    def protect(self, layer) -> None:
        """Snapshot `layer` now (returns when the file is written) and keep it protected."""
        from napari.layers import Labels

        if not isinstance(layer, Labels):
            raise TypeError(f"'{layer.name}' is not a Labels layer: only labels are protected.")
        if self.ended:
            raise RuntimeError("the viewer is closing")
        if self.session is None:
            self.session = R.start_session()
        tracked = self._tracked.get(_key(layer))
        if tracked is None:
            tracked = _Tracked(layer, uuid.uuid4().hex)
            for name in EVENTS:
                if (emitter := getattr(layer.events, name, None)) is not None:
                    emitter.connect(self._on_change)
            self._tracked[_key(layer)] = tracked
        self._write(tracked, force=True).result()  # after any queued write of the same layer
        self.timer.start()

    def _write(self, tracked: _Tracked, force: bool = False) -> Future:
        prepared = R.prepare(tracked.key, state_of(tracked.layer))
        tracked.dirty = False
        future = self._writer.submit(self._publish, prepared, force)
        self._pending.append(future)
        return future

    def _publish(self, prepared: R.Prepared, force: bool) -> None:
        """Writer thread: write the snapshot unless it holds what was last written."""
        fingerprint = prepared.fingerprint()
        if force or self._written.get(prepared.key) != fingerprint:
            self.session.write(prepared)
            self._written[prepared.key] = fingerprint

    def _forget(self, key: str) -> None:
        self._written.pop(key, None)
        self.session.forget(key)

    def _on_change(self, event) -> None:
        tracked = self._tracked.get(_key(event.source))
        if tracked is not None:
            tracked.dirty = True
            if event.type == "paint":  # a stroke (or an adoption's write) with the brush's label
                tracked.painted.add(int(tracked.layer.selected_label))

    def tick(self) -> None:
        """Timer: snapshot the protected layers changed since their last snapshot."""
        if self.session is None or self.ended:
            return
        self._check_writes()
        self.session.heartbeat()
        for tracked in list(self._tracked.values()):
            if tracked.dirty:
                try:
                    self._write(tracked)
                except Exception as e:  # noqa: BLE001 - reported, the viewer keeps working
                    self._report(e)

    def flush(self) -> None:
        """Wait for the queued snapshot writes (tests, clean end)."""
        for future in list(self._pending):
            future.exception()
        self._check_writes()

    def _check_writes(self) -> None:
        done = [f for f in self._pending if f.done()]
        self._pending = [f for f in self._pending if not f.done()]
        for future in done:
            if future.exception() is not None:
                self._report(future.exception())

    def _report(self, exc: BaseException) -> None:
        self.last_error = exc
        if not self._reported:  # once, not every 30 s
            self._reported = True
            from napari.utils.notifications import show_warning

            show_warning(f"Recovery snapshots are failing ({exc}): save your labels.")

    # -------------------------------------------------------------- forget / end
    def _on_removed(self, event) -> None:
        tracked = self._tracked.pop(_key(event.value), None)
        if tracked is None:
            return
        for name in EVENTS:
            if (emitter := getattr(tracked.layer.events, name, None)) is not None:
                emitter.disconnect(self._on_change)
        if self.session is not None and not self.ended:
            self._pending.append(self._writer.submit(self._forget, tracked.key))

    def end(self, *_) -> None:
        """The viewer closed normally: stop, finish the writes, delete the session."""
        if self.ended:
            return
        self.ended = True
        try:
            self.timer.stop()
        except RuntimeError:  # the Qt object is already gone
            pass
        try:
            self.viewer.layers.events.removed.disconnect(self._on_removed)
        except (RuntimeError, TypeError, ValueError):
            pass
        self._writer.shutdown(wait=True)
        if self.session is not None:
            self.session.end()
        _CONTROLLERS.pop(_key(self.viewer), None)


_CONTROLLERS: dict[int, RecoveryController] = {}


def controller(viewer) -> RecoveryController:
    """The recovery controller of `viewer` (made on first use)."""
    c = _CONTROLLERS.get(_key(viewer))
    if c is None or _key(c.viewer) != _key(viewer):
        c = _CONTROLLERS[_key(viewer)] = RecoveryController(viewer)
    return c


def note_adoption(layer, painted=()) -> None:
    """Record which label value an adoption just wrote and what it held
    (``metadata["ambiseg_segments"]``, :mod:`napari_ambiseg.provenance`), so a save can tell
    untouched model outlines from edited and hand-painted labels. `painted`: label values
    brushed on the layer by hand (the protected layers' paint events tell)."""
    if getattr(layer, "multiscale", False):
        return
    segments = P.record_adoption(layer.metadata, layer.data, painted)
    if segments is not None:
        layer.metadata = {**layer.metadata, P.KEY: segments}


def protect(viewer, layer, adopted: bool = True) -> bool:
    """Snapshot `layer` now and on a timer while it changes, after recording what an
    adoption wrote into it (:func:`note_adoption`; protect runs after every adopt; a layer
    restored after a crash passes ``adopted=False``: its voxels may be edits). Never raises:
    a failure is a warning notification (the labels stay in the viewer) and returns False."""
    try:
        if adopted:
            known = _CONTROLLERS.get(_key(viewer))
            tracked = known._tracked.get(_key(layer)) if known is not None else None
            note_adoption(layer, tracked.painted if tracked is not None else ())
    except Exception as e:  # noqa: BLE001 - an adopt must not fail over its bookkeeping
        from napari.utils.notifications import show_warning

        show_warning(f"What was adopted into '{layer.name}' could not be recorded ({e}); "
                     "a DICOM-SEG of it will mark every label as adopted.")
    try:
        controller(viewer).protect(layer)
        return True
    except Exception as e:  # noqa: BLE001 - crash safety must not break an adopt
        from napari.utils.notifications import show_warning

        show_warning(f"No recovery snapshot of '{layer.name}' could be written ({e}); "
                     "save it soon.")
        return False


# ------------------------------------------------------------------------------ restore offer
class Offers(QObject):
    """The orphaned sessions of one recovery folder, found once, shared by every banner."""

    changed = Signal()

    def __init__(self, root: Path):
        super().__init__()
        self.root = root
        self.sessions: list[R.OrphanedSession] = []
        self.rescan()

    def rescan(self) -> None:
        try:
            self.sessions = R.orphaned_sessions(self.root)
        except OSError:
            self.sessions = []
        self.changed.emit()

    def restore(self, orphan: R.OrphanedSession, viewer) -> list[Any]:
        """Add the orphan's labels to `viewer` and protect them in its session; only then
        delete their old snapshots (all of them kept if one layer could not be protected;
        unreadable ones stay on offer for Discard)."""
        from napari.layers import Layer
        from napari.utils.notifications import show_info, show_warning

        layer_data, problems = R.restore(orphan)
        layers = [viewer.add_layer(Layer.create(*d)) for d in layer_data]
        if all([protect(viewer, layer, adopted=False) for layer in layers]):
            R.discard(orphan, only_restored=True)
        self.sessions = R.orphaned_sessions(self.root)
        names = ", ".join(f"'{la.name}'" for la in layers)
        if layers:
            show_info(f"Restored {len(layers)} labels layer(s): {names}. Save them to keep them.")
        for p in problems:
            show_warning(p)
        self.changed.emit()
        return layers

    def discard(self, orphan: R.OrphanedSession) -> None:
        R.discard(orphan)
        self.sessions = R.orphaned_sessions(self.root)
        self.changed.emit()


_OFFERS: dict[Path, Offers] = {}


def offers() -> Offers:
    """The restore offers of the current recovery folder (scanned on first use)."""
    root = R.recovery_root()
    if root not in _OFFERS:
        _OFFERS[root] = Offers(root)
    return _OFFERS[root]


def describe(orphan: R.OrphanedSession) -> str:
    """One sentence for the banner."""
    when = time.strftime("%d %b %H:%M", time.localtime(orphan.last_saved))
    names = orphan.names
    shown = ", ".join(f"'{n}'" for n in names[:2]) + (f" and {len(names) - 2} more"
                                                      if len(names) > 2 else "")
    n = len(names)
    text = (f"Unsaved labels from a session that ended unexpectedly ({when}, "
            f"{n} layer{'s' if n != 1 else ''}: {shown}).")
    if orphan.problems:
        text += f" {len(orphan.problems)} snapshot(s) cannot be read."
    return text


class RecoveryBanner(QFrame):
    """Restore / Discard offer for each orphaned session; hidden when there is none."""

    def __init__(self, viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = viewer
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setStyleSheet("RecoveryBanner { border: 1px solid #d08c00; border-radius: 3px; }")
        self._box = QVBoxLayout(self)
        self._box.setContentsMargins(6, 4, 6, 4)
        self.rows: list[tuple[QLabel, QPushButton, QPushButton]] = []
        self.offers = offers()
        self.offers.changed.connect(self.refresh)  # dropped by Qt when the banner is deleted
        self.refresh()

    def refresh(self) -> None:
        while (item := self._box.takeAt(0)) is not None:
            if item.widget() is not None:
                item.widget().deleteLater()
        self.rows = []
        for orphan in self.offers.sessions:
            text = QLabel(describe(orphan))
            text.setWordWrap(True)
            restore, discard = QPushButton("Restore"), QPushButton("Discard")
            restore.setToolTip("Add these labels to this viewer as Labels layers, with their "
                               "geometry")
            discard.setToolTip("Delete these recovered labels for good")
            restore.clicked.connect(lambda _=False, o=orphan: self.restore(o))
            discard.clicked.connect(lambda _=False, o=orphan: self.discard(o))
            buttons = QWidget()
            row = QHBoxLayout(buttons)
            row.setContentsMargins(0, 0, 0, 0)
            row.addStretch(1)
            row.addWidget(restore)
            row.addWidget(discard)
            self._box.addWidget(text)
            self._box.addWidget(buttons)
            self.rows.append((text, restore, discard))
        self.setVisible(bool(self.rows))

    def restore(self, orphan: R.OrphanedSession) -> list[Any]:
        from ._qt import notify_error

        try:
            return self.offers.restore(orphan, self.viewer)
        except Exception as e:  # noqa: BLE001 - report, never crash the viewer
            notify_error(e)
            return []

    def confirm_discard(self, orphan: R.OrphanedSession) -> bool:
        answer = QMessageBox.question(
            self, "Discard recovered labels",
            f"Delete {len(orphan.snapshots)} recovered labels layer(s) for good?")
        return answer == QMessageBox.StandardButton.Yes

    def discard(self, orphan: R.OrphanedSession) -> None:
        from ._qt import notify_error

        if not self.confirm_discard(orphan):
            return
        try:
            self.offers.discard(orphan)
        except Exception as e:  # noqa: BLE001
            notify_error(e)

