"""Steering with clicks in napari: the 'constraints' Points layer and its bookkeeping.

After a result, the sampling dock's *Steer* row (`SteerBar`) adds a Points layer named
'constraints' on the source image's grid (its geometry, `layers.geometry`): include points
green discs, exclude points red crosses (their kind in the feature column 'kind'). *Include* /
*Exclude* put that layer in napari's own add mode with the chosen kind, so a click adds a point
at the clicked pixel (on the viewer's current slice of a volume); napari's select mode moves
and deletes them (Delete). Every change of the points (add, move, delete, undo) is committed
and announced by `SteerBar.changed` once napari has finished it (a move once the point rests
for `DEBOUNCE_MS`); the dock then
draws its last request again given the clicks (`constraints_of`: pixel indices of the source,
`constraints.Constraints`). The *Steer* row and Ctrl+Z / Ctrl+Shift+Z on the layer undo and
redo its changes (napari's Points layer keeps no history of its own; the shortcuts are the
Labels layer's, unused by Points).

`Drawn` keeps the results already drawn for the dock's request by their clicks, so undoing a
click (or deleting every point: the result without clicks) shows that result again at once;
the core is deterministic (same seed, same masks), so this is what drawing again would give.

Only the 'constraints' layer and the sampler's own output layers change: Labels layers
(adopted, painted) are never read or written here.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import QHBoxLayout, QLabel, QPushButton, QWidget

from ..constraints import Constraints
from ..layer_contract import METADATA_KEY, OUTPUT_KEY, layer_record, spatial_shape
from . import layers as L
from .prompts import world_to_source
from .recovery import _key

LAYER_NAME = "constraints"
OUTPUT_KIND = "constraints"  # the layer's output record's kind (found by it, not its name)
KIND = "kind"  # the feature column
INCLUDE, EXCLUDE = "include", "exclude"
KINDS = (INCLUDE, EXCLUDE)
COLORS = {INCLUDE: "#2ee82e", EXCLUDE: "#ff3030"}
SYMBOLS = {INCLUDE: "disc", EXCLUDE: "x"}  # told apart without colour too
POINT_SIZE = 3.0  # data pixels
WAITING = "Sample first: then include / exclude clicks steer the samples."
DEBOUNCE_MS = 120  # a moved point is committed when it rests this long (a drag moves often)

State = tuple[tuple[tuple[float, ...], ...], tuple[str, ...]]  # (points, kinds)
Key = tuple[tuple[tuple[int, ...], ...], tuple[tuple[int, ...], ...]]


# ------------------------------------------------------------------------------ the layer
def is_constraints(layer) -> bool:
    return (layer_record(layer, OUTPUT_KEY) or {}).get("kind") == OUTPUT_KIND


def constraints_layer(viewer, source):
    """The 'constraints' Points layer of `source` in the viewer, or None."""
    sid = L.source_id(source)
    for layer in viewer.layers:
        if is_constraints(layer) and layer_record(layer, OUTPUT_KEY).get("source") == sid:
            return layer
    return None


def add_constraints_layer(viewer, source):
    """A new, empty 'constraints' Points layer on `source`'s grid, on top of the layer list."""
    import pandas as pd
    from napari.layers import Points

    nd = len(spatial_shape(source))
    layer = Points(
        np.zeros((0, nd)), name=LAYER_NAME, size=POINT_SIZE,
        features=pd.DataFrame({KIND: pd.Categorical([], categories=KINDS)}),
        feature_defaults={KIND: INCLUDE}, face_color=KIND, face_color_cycle=COLORS,
        border_color="white", border_width=0.08, symbol=SYMBOLS[INCLUDE],
        metadata={OUTPUT_KEY: {"kind": OUTPUT_KIND, "source": L.source_id(source),
                               "source_name": source.name},
                  METADATA_KEY: L.reference_of(source)},
        **L.geometry(source))
    viewer.add_layer(layer)
    return layer


def kinds_of(layer) -> list[str]:
    """Each point's kind ('include' unless the feature says 'exclude')."""
    if KIND not in layer.features:
        return [INCLUDE] * len(layer.data)
    return [EXCLUDE if str(k) == EXCLUDE else INCLUDE for k in layer.features[KIND]]


def set_kind(layer, kind: str) -> None:
    """The kind (and symbol) of the next points added; the selected points keep theirs."""
    layer.selected_data = set()  # napari applies "current" values to the selected points
    layer.feature_defaults = {KIND: kind}
    layer.current_symbol = SYMBOLS[kind]


def state_of(layer) -> State:
    """The layer's points (data coordinates) and kinds, comparable and immutable."""
    data = np.asarray(layer.data, dtype=float).tolist()  # (N, ndim)
    return tuple(tuple(row) for row in data), tuple(kinds_of(layer))


def restore(layer, state: State, kind: str) -> None:
    """Put `state` back into the layer (as napari data events, which steer again)."""
    import pandas as pd

    points, kinds = state
    layer.selected_data = set()
    layer.data = np.asarray(points, dtype=float).reshape(len(points), layer.ndim)
    layer.features = pd.DataFrame({KIND: pd.Categorical(list(kinds), categories=KINDS)})
    if kinds:
        layer.symbol = [SYMBOLS[k] for k in kinds]
    set_kind(layer, kind)  # setting features resets the defaults


def constraints_of(viewer, layer, source) -> Constraints:
    """The layer's points as `Constraints` in `source`'s pixel indices (through the world, so
    any transform of the layer works); raises `InputError` for points the core refuses to
    read (the core's message)."""
    if layer is None or len(layer.data) == 0:
        return Constraints()
    pixels = [world_to_source(viewer, source, layer.data_to_world(p)) for p in layer.data]
    return Constraints.from_points(pixels, [k == INCLUDE for k in kinds_of(layer)])


def clicks_of(viewer, source) -> Constraints:
    """The clicks of `source`'s constraints layer, checked against its pixel grid; a bad one
    (outside the image, include and exclude on one pixel) raises the core's `InputError`."""
    c = constraints_of(viewer, constraints_layer(viewer, source), source)
    if c:
        c.check(spatial_shape(source))
    return c


def key_of(c: Constraints | None) -> Key:
    """What a result drawn given `c` depends on: its distinct include and exclude pixels."""
    if not c:
        return (), ()
    return tuple(sorted(set(c.include))), tuple(sorted(set(c.exclude)))


def satisfied_text(out) -> str:
    """"14 of 16 samples satisfy the 2 clicks (1 include, 1 exclude)." ('' unsteered; with
    "; 32 drawn" when the core drew more rounds of samples to keep these)."""
    c, ok = getattr(out, "constraints", None), getattr(out, "satisfies", None)
    if not c or ok is None:
        return ""
    clicks = len(c.include) + len(c.exclude)
    parts = ", ".join(f"{len(p)} {name}" for name, p in (("include", c.include),
                                                         ("exclude", c.exclude)) if p)
    drawn = getattr(out, "drawn", None)
    if drawn and drawn > len(ok):
        parts += f"; {drawn} drawn"
    what = "the click" if clicks == 1 else f"the {clicks} clicks"
    return f"{int(np.sum(ok))} of {len(ok)} samples satisfy {what} ({parts})."


class History:
    """Undo / redo of a constraints layer's committed states."""

    def __init__(self, layer):
        self.current: State = state_of(layer)
        self.done: list[State] = []
        self.undone: list[State] = []

    def commit(self, layer) -> bool:
        """Record the layer's state if it changed; whether it did."""
        now = state_of(layer)
        if now == self.current:
            return False
        self.done.append(self.current)
        self.undone.clear()
        self.current = now
        return True

    def step(self, layer, kind: str, back: bool = True) -> bool:
        """Undo (`back`) or redo one change; whether there was one."""
        take, keep = (self.done, self.undone) if back else (self.undone, self.done)
        self.commit(layer)  # a change not committed yet is undone first
        if not take:
            return False
        keep.append(self.current)
        self.current = take.pop()
        restore(layer, self.current, kind)
        return True


class Drawn:
    """Results already drawn for one request, by `key_of` their clicks: the latest few (at
    most `limit` of them and `max_bytes` of masks and maps), and always the unsteered one."""

    def __init__(self, limit: int = 8, max_bytes: int = 512 * 2**20):
        self.limit, self.max_bytes = limit, max_bytes
        self._items: OrderedDict[Key, Any] = OrderedDict()

    def clear(self) -> None:
        self._items.clear()

    def get(self, key: Key):
        out = self._items.get(key)
        if out is not None:
            self._items.move_to_end(key)
        return out

    def put(self, key: Key, out) -> None:
        self._items[key] = out
        self._items.move_to_end(key)
        while len(self._items) > 1 and (len(self._items) > self.limit
                                        or self._bytes() > self.max_bytes):
            old = next((k for k in self._items if k != ((), ()) and k != key), None)
            if old is None:
                break
            del self._items[old]

    def _bytes(self) -> int:
        return sum(sum(np.asarray(getattr(o, a)).nbytes for a in ("masks", "agreement", "entropy"))
                   for o in self._items.values())


# ------------------------------------------------------------------------------ the row
class SteerBar(QWidget):
    """The dock's *Steer* row: Include / Exclude (napari's add mode on the 'constraints'
    layer with that kind; click the checked one again to stop), Undo, Clear. `changed` fires
    once a change of the points is complete (`_on_data`)."""

    changed = Signal()

    def __init__(self, viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = viewer
        self.source = None
        self.layer = None
        self.history: History | None = None
        self.kind = INCLUDE
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.timeout.connect(self._commit)
        self.buttons = {INCLUDE: QPushButton("Include"), EXCLUDE: QPushButton("Exclude")}
        for kind, b in self.buttons.items():
            b.setCheckable(True)
            b.setStyleSheet(f"QPushButton:checked {{ background-color: {COLORS[kind]}; "
                            "color: black; font-weight: bold; }")
            b.clicked.connect(lambda on, k=kind: self.choose(k if on else None))
        self.buttons[INCLUDE].setToolTip(
            "Click on the image where the finding must be (green): the samples are drawn "
            "again given it. Click again to stop adding.")
        self.buttons[EXCLUDE].setToolTip(
            "Click on the image where the finding must not be (red): the samples are drawn "
            "again given it. Click again to stop adding.")
        self.undo_button, self.clear_button = QPushButton("Undo"), QPushButton("Clear")
        self.undo_button.setToolTip("Undo the last change of the clicks (Ctrl+Z on the "
                                    "'constraints' layer; Ctrl+Shift+Z redoes)")
        self.clear_button.setToolTip("Remove every click: the samples without clicks come back")
        self.undo_button.clicked.connect(self.undo)
        self.clear_button.clicked.connect(self.clear)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(QLabel("Steer"))
        for b in (*self.buttons.values(), self.undo_button, self.clear_button):
            row.addWidget(b)
        viewer.layers.events.removed.connect(self._on_removed)
        viewer.layers.selection.events.active.connect(self._sync)
        self.setEnabled(False)
        self.setToolTip(WAITING)

    # -------------------------------------------------------------- which layer
    def attach(self, source) -> None:
        """Steer the results of `source` (after a result): watch its constraints layer."""
        self.source = source
        self.setEnabled(True)
        self.setToolTip("")
        self._watch(constraints_layer(self.viewer, source))

    def _watch(self, layer) -> None:
        if same(layer, self.layer):
            return
        if self.layer is not None:
            self.layer.events.data.disconnect(self._on_data)
            self.layer.events.mode.disconnect(self._sync)
        self.layer, self.history = layer, None if layer is None else History(layer)
        if layer is not None:
            layer.events.data.connect(self._on_data)
            layer.events.mode.connect(self._sync)
            _bind_undo(layer, self.undo, self.redo)
        self._sync()

    def ensure_layer(self):
        """The source's constraints layer, added if there is none."""
        if self.layer is None or not any(same(self.layer, la) for la in self.viewer.layers):
            self.layer = None
            self._watch(constraints_layer(self.viewer, self.source)
                        or add_constraints_layer(self.viewer, self.source))
        return self.layer

    def detach(self) -> None:
        """Stop following the viewer (the dock closes)."""
        self._watch(None)
        self.viewer.layers.events.removed.disconnect(self._on_removed)
        self.viewer.layers.selection.events.active.disconnect(self._sync)

    # -------------------------------------------------------------- the user's acts
    def choose(self, kind: str | None) -> None:
        """Add points of `kind` with each click (napari's add mode); None: stop adding."""
        if self.source is None:
            return
        if kind is None:
            if self.layer is not None and self.layer.mode == "add":
                self.layer.mode = "pan_zoom"
            self._sync()
            return
        self.kind = kind
        layer = self.ensure_layer()
        set_kind(layer, kind)
        self.viewer.layers.selection.active = layer
        layer.mode = "add"
        self._sync()

    def undo(self, *_) -> bool:
        return self._step(True)

    def redo(self, *_) -> bool:
        return self._step(False)

    def _step(self, back: bool) -> bool:
        if self.layer is None or self.history is None:
            return False
        self.timer.stop()
        moved = self.history.step(self.layer, self.kind, back)
        self.timer.stop()  # restored and committed: announce it now
        if moved:
            self.changed.emit()
        return moved

    def clear(self) -> None:
        """Remove every point (one undoable change)."""
        if self.layer is not None and len(self.layer.data):
            restore(self.layer, ((), ()), self.kind)

    def pending(self) -> bool:
        """A change of the points not announced yet (the debounce is running)."""
        return self.timer.isActive()

    # -------------------------------------------------------------- events
    def _on_data(self, event) -> None:
        action = str(getattr(event, "action", ""))
        if action in ("added", "removed"):  # committed once napari has finished the change
            self.timer.start(0)
        elif action == "changed":  # a drag moves the point often: committed once it rests
            self.timer.start(DEBOUNCE_MS)

    def _commit(self) -> None:
        if self.history is not None and self.layer is not None:
            self.history.commit(self.layer)
        self.changed.emit()

    def _on_removed(self, event) -> None:
        if self.layer is not None and same(event.value, self.layer):
            self._watch(None)  # the clicks are gone: as if every one was deleted
            self.changed.emit()
        elif self.source is not None and same(event.value, self.source):
            self.source = None  # nothing to steer until the next result
            self.setEnabled(False)
            self.setToolTip(WAITING)

    def _sync(self, *_) -> None:
        """The buttons show whether a click adds a point now, and of which kind."""
        layer = self.layer
        adding = (layer is not None and same(self.viewer.layers.selection.active, layer)
                  and str(layer.mode) == "add")
        kind = str(layer.feature_defaults[KIND][0]) if adding else None
        for k, b in self.buttons.items():
            b.setChecked(adding and k == kind)
        self.undo_button.setEnabled(layer is not None)
        self.clear_button.setEnabled(layer is not None)


def same(a, b) -> bool:
    """The same napari object, seen directly or through napari's PublicOnlyProxy (docks
    opened from the Plugins menu get proxies; events carry the objects themselves)."""
    return _key(a) == _key(b)


def _bind_undo(layer, undo: Callable, redo: Callable) -> None:
    """Ctrl+Z / Ctrl+Shift+Z on this layer (as on a Labels layer; napari binds neither for
    Points): undo / redo a change of the clicks."""
    from app_model.types import KeyCode, KeyMod

    layer.bind_key(KeyMod.CtrlCmd | KeyCode.KeyZ, lambda _layer: undo(), overwrite=True)
    layer.bind_key(KeyMod.CtrlCmd | KeyMod.Shift | KeyCode.KeyZ, lambda _layer: redo(),
                   overwrite=True)
