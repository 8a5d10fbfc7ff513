"""The sampling dock: choose image, prompt, slices and settings; sample off the GUI thread.

Layout and wiring only: the request comes from `prompts`, the work from `engine`, the layers
from `layers`, the steering clicks from `steer`. Sampling runs in a napari worker with a napari
progress bar; Cancel (or the task's cancel button in napari's activity panel) stops it within
one network evaluation.

Steering (`steer`): after a result, every change of the image's 'constraints' points draws
the last request again given them (`Request.constraints`), in the same worker; a change while
a run is in flight stops it and starts the newest. Results already drawn for a set of clicks
(`steer.Drawn`) come back at once.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..config import MODALITIES, ModelConfig
from ..errors import Cancelled, InputError
from ..io.windows import CT_PRESETS, apply_window_preset
from ..layer_contract import METADATA_KEY, layer_record
from ..modes import NO_FINDING, no_finding
from ..scope import is_cine, layer_scope_warnings, scope_text
from . import layers as L
from ._qt import LayerChoice, PathField, error_text, notify_error
from .engine import Outputs, sampling_job
from .prompts import build_request, current_slice
from .recovery import RecoveryBanner
from .settings import DEVICES, load_defaults
from .steer import Drawn, SteerBar, clicks_of, key_of, satisfied_text

if TYPE_CHECKING:
    import napari

SLICE_MODES = (("current slice", "current"), ("slice range", "range"),
               ("whole finding (follow up and down)", "follow"))
FRAME_MODES = ("current frame", "frame range", "follow over frames")  # a cine: frames are time


class SamplingWidget(QWidget):
    """Dock: N plausible masks for the chosen image, with agreement and uncertainty layers."""

    sampled = Signal(object)  # Outputs, after the layers are in the viewer
    done = Signal()           # after every run (finished, failed or cancelled)

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.worker = None
        self.last_outputs: Outputs | None = None
        self.last_error: BaseException | None = None
        self.last_display_s = 0.0
        self._stop: threading.Event | None = None
        self._pbar = None
        self._click = None
        self._injected: tuple[Any, str] | None = None
        self._seg_cache: tuple[tuple, Any] | None = None
        self._config_cache: tuple[str, Any] | None = None
        # steering: the last request asked for (source, request without clicks, model), the
        # results drawn for it by clicks, the clicks of the one shown; a newer change stops a run
        self._base: tuple[Any, Any, tuple] | None = None
        self._drawn = Drawn()
        self._shown_key = self._running_key = None
        self._shown_text = ""
        self._superseded = self._restart = False
        defaults = load_defaults()
        # N and steps: the user's settings when given, else the chosen model's (`_seed_counts`)
        self._overrides = {"n_samples": defaults.n_samples, "steps": defaults.steps}
        self._seeded: dict[str, int] = {}
        self._make_fields(defaults)
        self._lay_out()
        self._connect()
        self._on_image()
        self._update_model_status()

    def _make_fields(self, defaults) -> None:
        """The dock's fields, at the plugin settings' defaults."""
        from napari.layers import Image, Points, Shapes

        self.image = LayerChoice(self.viewer, (Image,), keep=lambda la: not L.is_output(la))
        self.where = LayerChoice(self.viewer, (Points, Shapes),
                                 fixed=[("image centre", "centre"), ("last click", "click")],
                                 keep=lambda la: not L.is_output(la))  # not the clicks' layer
        self.scope_warning = QLabel()  # persistent while the chosen image is out of scope
        self.scope_warning.setWordWrap(True)
        self.scope_warning.setStyleSheet("QLabel { background: #5c3a00; color: #ffd27f; "
                                         "padding: 4px; border-radius: 3px; }")
        self.scope_warning.setVisible(False)
        self.window = QComboBox()
        self.window.addItems(["(as read)", *CT_PRESETS])
        self.window.setToolTip("CT window presets (HU): sets the image layer's contrast limits")
        self.click_to_sample = QCheckBox("Sample where I click")
        self.click_to_sample.setToolTip("Click (without dragging) on the image to sample there.")
        self.slices = QComboBox()
        self.slices.addItems([label for label, _ in SLICE_MODES])
        self.z_from, self.z_to = _spin(0, 0, 0), _spin(0, 0, 0)
        self.include_empty = QCheckBox("include 'no finding' samples (benchmark distribution)")
        self.include_empty.setToolTip(
            "Unticked: every sample is drawn given a finding at the prompt (what would experts "
            "outline?), and the chance of a finding is given as a percentage. Ticked: the "
            "model also draws empty samples as often as it expects readers to see nothing, "
            "the distribution the benchmarks score.")
        self.n = _spin(1, 64, ModelConfig.n_samples)
        self.steps = _spin(1, 100, ModelConfig.steps)
        self.seed = _spin(0, 2**31 - 1, 0)
        self.device = QComboBox()
        self.device.addItems(DEVICES)
        self.device.setCurrentText(defaults.device)
        self.modality = QComboBox()
        self.modality.addItems(MODALITIES)
        self.modality.setToolTip("auto: the modality the reader found, else guessed from values")
        self.weights = PathField("bundled LIDC model", "Weights (*.safetensors)")
        self.weights.setText(defaults.weights_path)
        self.model_status = QLabel()
        self.model_status.setWordWrap(True)
        self.run_button, self.cancel_button = QPushButton("Sample"), QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.steer = SteerBar(self.viewer)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.go_button = QPushButton()  # one click onto the chosen volume, offered when off it
        self.go_button.setVisible(False)

    def _lay_out(self) -> None:
        """One form, compact enough to leave the gallery room on a 1280 x 800 screen."""
        self._z_row = _row(QLabel("from"), self.z_from, QLabel("to"), self.z_to)
        form = self._form = QFormLayout()
        form.addRow("Image", self.image)
        form.addRow(self.scope_warning)
        form.addRow("CT window", self.window)
        form.addRow("Where", self.where)
        form.addRow("", self.click_to_sample)
        form.addRow("Slices", self.slices)
        form.addRow("", self._z_row)
        form.addRow("", self.include_empty)
        form.addRow("Samples (N)", _row(self.n, QLabel("Steps"), self.steps,
                                        QLabel("Seed"), self.seed))
        form.addRow("Device", _row(self.device, QLabel("Modality"), self.modality))
        form.addRow("Weights", self.weights)
        form.addRow("", self.model_status)
        box = QVBoxLayout(self)
        box.addWidget(RecoveryBanner(self.viewer))  # restore offer after a crash
        box.addLayout(form)
        box.addWidget(_row(self.run_button, self.cancel_button))
        box.addWidget(self.steer)
        box.addWidget(self.status)
        box.addWidget(self.go_button)
        box.addStretch(1)

    def _connect(self) -> None:
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.go_button.clicked.connect(self._go_to_middle)
        self.image.currentIndexChanged.connect(self._on_image)
        self.window.textActivated.connect(self.apply_window)
        self.slices.currentIndexChanged.connect(self._on_slices)
        self.click_to_sample.toggled.connect(self._on_click_mode)
        self.weights.edit.editingFinished.connect(self._update_model_status)
        self.device.currentTextChanged.connect(self._update_model_status)
        self.steer.changed.connect(self.steer_again)

    def apply_window(self, name: str) -> None:
        """One click to a CT preset (lung, mediastinum, bone, brain) on the chosen image."""
        layer = self.image.value()
        if layer is not None and name in CT_PRESETS:
            lo, hi = apply_window_preset(layer, name)
            self.status.setText(f"{layer.name}: {name} window ({lo:g} to {hi:g} HU)")

    # ------------------------------------------------------------------ model
    def set_segmenter(self, segmenter, name: str = "custom model") -> None:
        """Use this `Segmenter` (tests, demo, notebooks) instead of loading weights."""
        self._injected = (segmenter, name)
        self._update_model_status()

    def set_weights(self, path: str) -> None:
        """Use the weights file `path` from the next run (e.g. from the training widget)."""
        self._injected = None
        self._seg_cache = self._config_cache = None
        self.weights.setText(str(path))
        self._update_model_status()

    def _model_key(self) -> tuple:
        return self.weights.text(), self.device.currentText()

    def _update_model_status(self) -> None:
        from pathlib import Path

        from ..weights_io import bundled_weights_path, weights_problem

        if self._injected is not None:
            text = f"Model: {self._injected[1]}"
        elif self.weights.text():
            p = Path(self.weights.text()).expanduser()
            problem = weights_problem(p)
            text = f"Weights: {p.name}" if problem is None else problem[:1].upper() + problem[1:]
        elif bundled_weights_path().is_file():
            text = "Weights: bundled LIDC model"
        else:
            text = ("No bundled weights in this installation: choose a .safetensors file "
                    "above, or train a model in the Training widget.")
        self.model_status.setText(text)
        self._seed_counts()
        self._update_scope()

    def model_config(self) -> ModelConfig | None:
        """The chosen model's `ModelConfig`, read from its config alone (the network is not
        loaded); None when the weights cannot be read (the model status says why)."""
        from ..errors import WeightsError
        from ..weights_io import load_config, resolve_weights

        if self._injected is not None:
            return getattr(self._injected[0], "cfg", None)
        key = self.weights.text()
        if self._config_cache is None or self._config_cache[0] != key:
            try:
                cfg = load_config(resolve_weights(key or None).expanduser())[0]
            except (WeightsError, OSError):
                cfg = None
            self._config_cache = (key, cfg)
        return self._config_cache[1]

    def model_scope(self):
        """The chosen model's `Scope` (None when its weights cannot be read)."""
        return getattr(self.model_config(), "scope", None)

    def _seed_counts(self) -> None:
        """N and steps from the chosen model's config, unless the user gave them: a value from
        the plugin settings, or one typed in the dock (a spin box no longer at the value it
        was seeded with), is kept when another model is chosen."""
        cfg = self.model_config()
        for key, spin in (("n_samples", self.n), ("steps", self.steps)):
            value = self._overrides[key]
            if value is None and cfg is not None:
                value = getattr(cfg, key)
            if value is None or (key in self._seeded and spin.value() != self._seeded[key]):
                continue  # nothing known, or typed by the user
            spin.setValue(value)
            self._seeded[key] = spin.value()
            if cfg is not None:
                spin.setToolTip(f"The model's default: {getattr(cfg, key)}")

    def scope_warnings(self) -> list[str]:
        """Why the chosen image is outside the model's scope (empty: nothing against it)."""
        layer, scope = self.image.value(), self.model_scope()
        if layer is None or scope is None:
            return []
        return layer_scope_warnings(scope, layer.metadata.get(METADATA_KEY),
                                    rgb=bool(getattr(layer, "rgb", False)))

    def _update_scope(self) -> None:
        text = scope_text(self.scope_warnings())
        self.scope_warning.setText(text)
        self.scope_warning.setVisible(bool(text))

    def segmenter(self, key: tuple | None = None):
        """The `Segmenter` for `key` = (weights, device) (default: the fields' values),
        loaded once and cached. Called in the worker thread with a key read on the GUI
        thread (Qt widgets are not read from other threads)."""
        from ..segmenter import Segmenter

        if self._injected is not None:
            return self._injected[0]
        key = key or self._model_key()
        if self._seg_cache is None or self._seg_cache[0] != key:
            self._seg_cache = (key, Segmenter.load(key[0] or None, key[1]))
        return self._seg_cache[1]

    # ------------------------------------------------------------------ volume controls
    def _volume(self) -> Any:
        source = self.image.value()
        return source if source is not None and len(L.spatial_shape(source)) == 3 else None

    def _on_image(self, *_) -> None:
        """A new image: slice controls for volumes, range around the current slice; a volume
        the viewer is not on (another image's slices) is shown at its middle slice."""
        self.go_button.setVisible(False)
        source = self._volume()
        if source is not None:
            if _off(self.viewer, source):
                self._go_to_middle()
            depth = L.spatial_shape(source)[0]
            z = current_slice(self.viewer, source)
            for spin, value in ((self.z_from, z - 2), (self.z_to, z + 2)):
                spin.setMaximum(depth - 1)
                spin.setValue(max(0, min(value, depth - 1)))
        self._show_for_image()
        self._on_slices()

    def _go_to_middle(self) -> None:
        """Show the chosen volume at its middle slice (the viewer was outside it)."""
        self.go_button.setVisible(False)
        source = self._volume()
        if source is not None:
            z = L.spatial_shape(source)[0] // 2
            go_to_slice(self.viewer, source, z)
            self.status.setText(f"Showing '{source.name}' at its middle slice ({z}): the "
                                "viewer was outside it.")

    def _offer_middle(self) -> None:
        """After a refusal because the viewer is off the chosen volume: one click onto it."""
        source = self._volume()
        if source is not None and _off(self.viewer, source):
            z = L.spatial_shape(source)[0] // 2
            self.go_button.setText(f"Go to slice {z} of '{source.name}'")
            self.go_button.setVisible(True)

    def _show_for_image(self) -> None:
        """Controls that fit the chosen image: frames for a cine, the CT window for CT only,
        the scope warning."""
        layer = self.image.value()
        ref = layer_record(layer, METADATA_KEY) or {}
        cine = is_cine(ref.get("axes"))
        for i, (label, _) in enumerate(SLICE_MODES):
            self.slices.setItemText(i, FRAME_MODES[i] if cine else label)
        slices_label = self._form.labelForField(self.slices)
        if slices_label is not None:
            slices_label.setText("Frames" if cine else "Slices")
        # the CT window presets are HU: only for CT in HU (not 8-bit crops, MR, ultrasound)
        ct = not ref or (ref.get("modality") == "CT" and ref.get("model_modality") == "CT")
        self.window.setVisible(ct)
        window_label = self._form.labelForField(self.window)
        if window_label is not None:
            window_label.setVisible(ct)
        self._update_scope()

    def _on_slices(self, *_) -> None:
        volume = self._volume() is not None
        self.slices.setEnabled(volume)
        self._z_row.setVisible(volume and SLICE_MODES[self.slices.currentIndex()][1] == "range")

    # ------------------------------------------------------------------ click to sample
    def _on_click_mode(self, on: bool) -> None:
        callbacks = self.viewer.mouse_drag_callbacks
        if on and self._on_mouse not in callbacks:
            callbacks.append(self._on_mouse)
        elif not on and self._on_mouse in callbacks:
            callbacks.remove(self._on_mouse)

    def _on_mouse(self, viewer, event):
        """A click (press and release without a drag) samples there; drags pan as usual."""
        active = viewer.layers.selection.active
        mode = str(getattr(active, "mode", "pan_zoom"))
        if event.button != 1 or event.modifiers or mode not in ("pan_zoom", "transform"):
            return
        position, dragged = tuple(event.position), False
        yield
        while event.type == "mouse_move":
            dragged = True
            yield
        if not dragged and self.worker is None:
            self.sample_at(position)

    def sample_at(self, world_position) -> Any:
        """Sample around a world position (what a click does)."""
        self._click = tuple(float(v) for v in world_position)
        self.where.set_value("click")
        return self.run()

    # ------------------------------------------------------------------ run / cancel
    def request(self):
        """(source layer, engine `Request`) from the current choices, with the clicks of the
        image's 'constraints' layer (steering) when it has any."""
        source = self.image.value()
        if source is None:
            raise InputError("Open an image first (File > Open, or File > Open Sample > AmbiSeg).")
        req = build_request(self.viewer, source, self.where.value(), click=self._click,
                            slices=SLICE_MODES[self.slices.currentIndex()][1],
                            z_range=(self.z_from.value(), self.z_to.value()),
                            n=self.n.value(), steps=self.steps.value(), seed=self.seed.value(),
                            modality=self.modality.currentText())
        req.given_finding = not self.include_empty.isChecked()
        req.constraints = self._made_on(source, clicks_of(self.viewer, source)) or None
        return source, req

    def _made_on(self, source, clicks):
        """The clicks as made on mode 1 of the result shown on `source` (a click-conditioned
        model reads them as corrections of it; `Constraints.on`)."""
        out = self.last_outputs
        if not clicks or out is None or self._base is None or self._base[0] is not source:
            return clicks
        return clicks.on(out.mode_one(tuple(L.spatial_shape(source))))

    def run(self):
        """Start sampling; returns the napari worker (None if it could not start)."""
        if self.worker is not None:
            return self.worker
        self.go_button.setVisible(False)
        try:
            source, req = self.request()
        except Exception as e:  # noqa: BLE001 - the user's input: say what is wrong
            self.last_error = e
            self.status.setText(f"Not started: {error_text(e)}")  # not the last run's result
            self._offer_middle()
            notify_error(e)
            return None
        self._drawn.clear()  # a new request: the results by clicks were the last one's
        self._base = (source, replace(req, constraints=None), self._model_key())
        return self._start(source, req, self._base[2])

    def _start(self, source, req, model: tuple, steering: bool = False):
        """Run `req` with the `model` (weights, device) in a napari worker (`steering`: drawn
        again for changed clicks)."""
        from napari.qt.threading import create_worker
        from napari.utils import progress

        self.last_error = None
        self._stop = threading.Event()
        self._pbar = progress(total=0, desc=f"AmbiSeg: sampling {source.name}")
        worker = create_worker(sampling_job, lambda: self.segmenter(model), req, self._stop,
                               _start_thread=False, _ignore_errors=True)
        clicks = self._running_key = key_of(req.constraints)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(lambda out, s=source, k=clicks, st=steering:
                                self._on_result(s, out, k, st))
        worker.errored.connect(lambda e, st=steering: self._on_error(e, st))
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        count = len(clicks[0]) + len(clicks[1])
        given = f" given {count} click{'s' * (count != 1)}" if count else ""
        self.status.setText(f"Sampling {req.n} masks of {source.name}{given}...")
        worker.start()
        return worker

    # ------------------------------------------------------------------ steering
    def steer_again(self) -> None:
        """The clicks changed: draw the last request again given them (`steer`), show a
        result drawn for them before, or say why the clicks cannot be used."""
        if self._base is None:
            return
        source, base, model = self._base
        if source not in self.viewer.layers:
            self.status.setText(f"'{source.name}' was closed: sample an image to steer.")
            return
        try:
            clicks = clicks_of(self.viewer, source)
        except InputError as e:  # a bad click: the core's one line; the samples stay
            self.last_error = e
            self.status.setText(f"Not steered: {error_text(e)}")
            notify_error(e)
            return
        clicks = self._made_on(source, clicks)
        key = key_of(clicks)
        if self.worker is not None:
            if key != self._running_key:  # the newest clicks win: stop, then start them
                self._superseded = self._restart = True
                self._stop.set()
            return
        if key == self._shown_key:  # e.g. a bad click undone: the samples shown fit again
            self.last_error = None
            self.status.setText(self._shown_text)
            return
        out = self._drawn.get(key)
        if out is not None:
            self._show(source, out, key, steering=True, again=True)
            return
        self._start(source, replace(base, constraints=clicks or None), model, steering=True)

    def take_result(self, source, req, out: Outputs, what: str) -> None:
        """A result drawn elsewhere on `source` with `req` (`what` it is, e.g. a worklist
        case) becomes this dock's last one: the Steer row's clicks draw `req` again given
        them, with this dock's model."""
        if self.worker is not None:
            self.cancel()
        self._drawn.clear()
        self._base = (source, replace(req, constraints=None), self._model_key())
        self._drawn.put(((), ()), out)
        self.last_outputs, self._shown_key = out, ((), ())
        self._shown_text = f"From {what}: {result_text(out)} Include / exclude clicks draw " \
                           "it again given them."
        self.status.setText(self._shown_text)
        self.steer.attach(source)

    def cancel(self) -> None:
        """Stop the running job (the core stops within one network evaluation)."""
        if self._stop is not None:
            self._superseded = self._restart = False
            self._stop.set()
            self.status.setText("Cancelling...")

    def _on_progress(self, event: dict | None) -> None:
        if not event or self._pbar is None:
            return
        pbar = self._pbar
        if event["total"] and pbar.total != event["total"]:
            pbar.total = event["total"]
        if event["done"] > pbar.n:
            pbar.update(event["done"] - pbar.n)
        text = f"AmbiSeg: {event['text']}"
        if event["text"] and pbar.desc != text:
            pbar.set_description(text)

    def _on_result(self, source, out: Outputs, key=((), ()), steering: bool = False) -> None:
        if source not in self.viewer.layers:
            self.status.setText("The image was closed while sampling; results dropped.")
            return
        if self._base is not None and self._base[0] is source:
            self._drawn.put(key, out)
        self._show(source, out, key, steering)

    def _show(self, source, out: Outputs, key, steering: bool = False,
              again: bool = False) -> None:
        """Put `out` into the viewer and say what it is (`again`: drawn before, from
        `steer.Drawn`); a steered result leaves the viewer on the slice the user clicks on."""
        t0 = time.perf_counter()
        active = self.viewer.layers.selection.active
        L.replace_outputs(self.viewer, source, out)
        if active is not None and active in self.viewer.layers:
            self.viewer.layers.selection.active = active  # new layers do not steal the focus
        self.last_display_s = time.perf_counter() - t0  # GUI-thread time to show the results
        self.last_outputs, self._shown_key = out, key
        if not steering and out.start is not None and _off(self.viewer, source, out.start):
            go_to_slice(self.viewer, source, out.start)  # the slice the samples start from
        scope = self.model_scope()
        out_of_scope = scope is not None and layer_scope_warnings(
            scope, layer_record(source, METADATA_KEY), rgb=bool(getattr(source, "rgb", False)))
        caution = "Outside the model's scope (see the warning above): " if out_of_scope else ""
        steered = satisfied_text(out)
        if again:  # from `steer.Drawn`: what drawing again would give
            steered = f"As drawn before: {steered}" if steered else "As drawn before, no clicks:"
        self._shown_text = caution + (steered + " " if steered else "") + result_text(out)
        self.status.setText(self._shown_text)
        self.steer.attach(source)
        self.sampled.emit(out)

    def _on_error(self, exc: BaseException, steering: bool = False) -> None:
        from napari.utils.notifications import show_info

        self.last_error = exc
        if isinstance(exc, Cancelled):
            if self._superseded:
                return  # stopped for newer clicks: they start when this run has ended
            self.status.setText("Cancelled.")
            show_info("AmbiSeg: sampling cancelled")
        else:
            self.status.setText(f"{'Not steered' if steering else 'Failed'}: {error_text(exc)}")
            notify_error(exc)

    def _on_aborted(self) -> None:
        if self._stop is not None:
            self._stop.set()  # napari's task "cancel": stop the helper thread too
        self.last_error = Cancelled("sampling cancelled")
        if not self._superseded:
            self.status.setText("Cancelled.")

    def _on_finished(self) -> None:
        if self._pbar is not None:
            self._pbar.close()
        self._pbar, self.worker = None, None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        restart, self._superseded, self._restart = self._restart, False, False
        self.done.emit()
        if restart:
            self.steer_again()  # the clicks that stopped this run

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt naming
        self.cancel()
        self._on_click_mode(False)
        self.steer.detach()
        super().closeEvent(event)


def result_text(out: Outputs) -> str:
    """The dock's line after a run: where it sampled, the two answers (the finding
    probability, then the outline modes given a finding), e.g. "16 samples on slices 3-9 in
    2.1 s, started on slice 5, where the finding is most evident. Experts would outline a
    finding here: 78%. 2 outline modes, the largest 12 of 16; no finding: 1 of 16." """
    where, start = "", ""
    if out.z0 is not None and out.masks.shape[1] == 1:
        where = f" on slice {out.z0}"
    elif out.z0 is not None:
        p = out.slice_probabilities
        evident = p is not None and None not in p and p[out.key] >= max(p) - 1e-6
        where = f" on slices {out.z0}-{out.z0 + out.masks.shape[1] - 1}"
        start = f", started on slice {out.start}" + (
            ", where the finding is most evident" if evident else "")
    answer = out.finding_text()
    nothing = no_finding([m.members for m in out.modes], out.masks)
    outlines = [m for m, empty in zip(out.modes, nothing) if not empty]
    modes = f"{len(outlines)} outline mode{'s' * (len(outlines) != 1)}"
    if outlines:
        largest = "the largest " if len(outlines) > 1 else ""
        modes += f", {largest}{len(outlines[0].members)} of {out.n}"
    empty = sum(len(m.members) for m, e in zip(out.modes, nothing) if e)
    if empty:
        modes += f"; {NO_FINDING}: {empty} of {out.n}"
    return (f"{out.n} samples{where} in {out.seconds:.1f} s{start}. "
            f"{answer[:1].upper()}{answer[1:]}. {modes}.")


def _off(viewer, source, z: int | None = None) -> bool:
    """Whether the viewer shows another slice than `z` of the volume `source` (any of them:
    None), or none of its slices."""
    try:
        here = current_slice(viewer, source)
    except InputError:
        return True
    return z is not None and here != z


def go_to_slice(viewer, source, z: int) -> None:
    """Move the viewer to slice z of the volume layer `source` (Z, H, W)."""
    point = np.zeros(source.ndim)
    point[0] = z
    viewer.dims.set_point(viewer.dims.ndim - source.ndim, source.data_to_world(point)[0])


def _spin(lo: int, hi: int, value: int) -> QSpinBox:
    s = QSpinBox()
    s.setRange(lo, hi)
    s.setValue(value)
    return s


def _row(*widgets) -> QWidget:
    w = QWidget()
    row = QHBoxLayout(w)
    row.setContentsMargins(0, 0, 0, 0)
    for widget in widgets:
        row.addWidget(widget)
    return w
