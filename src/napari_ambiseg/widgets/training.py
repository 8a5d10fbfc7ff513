"""The training dock: data, recipe, output folder; Start / Cancel; live loss and GED plot.

Training runs the core `napari_ambiseg.training.trainer.train` in a child process
(`train_process`) watched by a napari generator worker, so the viewer stays usable and
keeps its own matplotlib and GIL. Cancel makes the
trainer write a resumable checkpoint; Start with "Resume" continues from it. When a run ends,
"Load into sampler" hands its weights to the sampling dock.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QHBoxLayout,
                            QLabel, QProgressBar, QPushButton, QSpinBox, QVBoxLayout, QWidget)

from ..errors import Cancelled
from ._qt import PathField, notify_error
from .engine import stream
from .settings import DEVICES, load_defaults
from .tiny import TINY

if TYPE_CHECKING:
    import napari

PRESETS: dict[str, dict[str, Any]] = {
    "standard (LIDC recipe)": {},
    "small (CPU friendly)": {"image_widths": (16, 32, 64), "mask_widths": (16, 32, 64)},
    "tiny (smoke tests)": TINY,
}
FINE_TUNE = "fine-tune the bundled LIDC model"  # its architecture, starting from its weights


def training_job(model_cfg, train_cfg, out_dir: str, resume: bool, stop: threading.Event):
    """Generator for a napari worker: yields the trainer's event dicts (or None), returns its
    summary; raises `Cancelled` after the trainer saved a resumable checkpoint. The trainer
    runs in a child process (`train_process`)."""
    from .train_process import run_training

    def work(emit, should_stop):
        return run_training(model_cfg, train_cfg, out_dir, resume, emit, stop)

    return (yield from stream(work, stop))


def _eta(seconds: float) -> str:
    s = int(max(seconds, 0))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class LossPlot(QWidget):
    """Live plot: training loss (log scale, left) and validation GED (right)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(4, 3), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(fig)
        self.ax = fig.add_subplot(111)
        self.ax2 = self.ax.twinx()
        self.ax.set(xlabel="iteration", ylabel="loss", yscale="log")
        self.ax2.set_ylabel("val GED", color="tab:orange")
        (self.loss_line,) = self.ax.plot([], [], lw=1, color="tab:blue", label="loss")
        (self.ged_line,) = self.ax2.plot([], [], "o-", color="tab:orange", label="val GED")
        self.loss: list[tuple[int, float]] = []
        self.ged: list[tuple[int, float]] = []
        self.canvas.setMinimumHeight(220)
        QVBoxLayout(self).addWidget(self.canvas)

    def clear(self) -> None:
        self.loss, self.ged = [], []
        self._redraw()

    def add(self, event: dict) -> None:
        if event.get("kind") == "step" and event.get("loss") is not None:
            self.loss.append((event["step"], float(event["loss"])))
        elif event.get("kind") == "val":
            self.ged.append((event["step"], float(event["val"]["ged"])))
        else:
            return
        self._redraw()

    def _redraw(self) -> None:
        for line, points, ax in ((self.loss_line, self.loss, self.ax),
                                 (self.ged_line, self.ged, self.ax2)):
            line.set_data([p[0] for p in points], [p[1] for p in points])
            ax.relim()
            ax.autoscale_view()
        self.canvas.draw_idle()


class TrainingWidget(QWidget):
    """Dock: train or resume an AmbiSeg model without leaving napari."""

    finished = Signal(object)  # summary dict, or the exception that ended the run

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.worker = None
        self.weights_path: Path | None = None
        self.last_result: Any = None
        self.extra: dict[str, Any] = {}  # further TrainConfig fields (tests, power users)
        self._stop: threading.Event | None = None
        self._out: Path | None = None
        defaults = load_defaults()

        self.data = PathField("LIDC-style .npz or a case folder", "Data (*.npz)", folder=True)
        self.val_data = PathField("optional: validation .npz or folder", "Data (*.npz)",
                                  folder=True)
        self.out_dir = PathField("folder for weights, checkpoint and log", file=False,
                                 folder=True)
        self.preset = QComboBox()
        self.preset.addItems([*PRESETS, FINE_TUNE])
        self.iterations = _ispin(1, 10_000_000, 20_000)
        self.batch_size = _ispin(1, 1024, 32)
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(6)
        self.lr.setRange(1e-6, 1.0)
        self.lr.setSingleStep(1e-4)
        self.lr.setValue(1e-3)
        self.val_every = _ispin(1, 1_000_000, 1000)
        self.device = QComboBox()
        self.device.addItems(DEVICES)
        self.device.setCurrentText(defaults.device)
        self.resume = QCheckBox("Resume from the checkpoint in the output folder")
        self.resume.setChecked(True)
        self.start_button, self.cancel_button = QPushButton("Start"), QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.load_button = QPushButton("Load into sampler")
        self.load_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.plot = LossPlot()

        form = QFormLayout()
        for label, w in (("Data", self.data), ("Validation", self.val_data),
                         ("Output", self.out_dir), ("Model", self.preset),
                         ("Iterations", self.iterations), ("Batch size", self.batch_size),
                         ("Learning rate", self.lr), ("Validate every", self.val_every),
                         ("Device", self.device), ("", self.resume)):
            form.addRow(label, w)
        buttons = QHBoxLayout()
        for b in (self.start_button, self.cancel_button, self.load_button):
            buttons.addWidget(b)
        box = QVBoxLayout(self)
        box.addLayout(form)
        box.addLayout(buttons)
        box.addWidget(self.progress)
        box.addWidget(self.status)
        box.addWidget(self.plot, 1)

        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.load_button.clicked.connect(self.load_into_sampler)

    # ------------------------------------------------------------------ configs
    def configs(self):
        """(ModelConfig, TrainConfig, out_dir, resume) from the form."""
        from ..config import ModelConfig
        from ..errors import InputError
        from ..training.config import TrainConfig, load_run_config
        from ..weights_io import load_config, resolve_weights

        data, out = self.data.text(), self.out_dir.text()
        if not data:
            raise InputError("Choose the training data (.npz or a case folder).")
        if not out:
            raise InputError("Choose an output folder.")
        resume = self.resume.isChecked()
        run_json = Path(out) / "run.json"
        fine_tune = self.preset.currentText() == FINE_TUNE
        if resume and (Path(out) / "checkpoint.pt").is_file() and run_json.is_file():
            model_cfg = load_run_config(run_json)[0]  # resume with the run's own model
        elif fine_tune:
            model_cfg = load_config(resolve_weights("bundled"))[0]
        else:
            model_cfg = ModelConfig(**PRESETS[self.preset.currentText()])
        init = "bundled" if fine_tune else None
        fields = {"data": data, "init": init, "val_data": self.val_data.text() or None,
                  "iterations": self.iterations.value(), "batch_size": self.batch_size.value(),
                  "lr": self.lr.value(), "val_every": self.val_every.value(),
                  "device": self.device.currentText(), **self.extra}
        return model_cfg, TrainConfig(**fields), out, resume

    # ------------------------------------------------------------------ run
    def start(self):
        """Start (or resume) training; returns the napari worker (None if it could not)."""
        from napari.qt.threading import create_worker

        if self.worker is not None:
            return self.worker
        try:
            model_cfg, train_cfg, out, resume = self.configs()
        except Exception as e:  # noqa: BLE001 - the user's input: say what is wrong
            notify_error(e)
            return None
        self._stop = threading.Event()
        self.plot.clear()
        self.progress.setRange(0, train_cfg.iterations)
        self.progress.setValue(0)
        self.weights_path, self.last_result, self._out = None, None, Path(out)
        worker = create_worker(training_job, model_cfg, train_cfg, out, resume, self._stop,
                               _start_thread=False, _ignore_errors=True)
        worker.yielded.connect(self._on_event)
        worker.returned.connect(self._on_done)
        worker.errored.connect(self._on_error)
        worker.aborted.connect(self.cancel)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.load_button.setEnabled(False)
        self.status.setText("Starting: loading data and building the model...")
        worker.start()
        return worker

    def cancel(self) -> None:
        """Ask the trainer to stop: it writes a resumable checkpoint first."""
        if self._stop is not None:
            self._stop.set()
            self.status.setText("Stopping after this iteration (writing a checkpoint)...")

    def _on_event(self, e: dict | None) -> None:
        if not e:
            return
        kind = e.get("kind")
        if "step" in e and "total" in e:
            self.progress.setValue(min(int(e["step"]), self.progress.maximum()))
        if kind == "step":
            self.status.setText(f"iteration {e['step']} / {e['total']} - loss "
                                f"{e['loss']:.4g} - ETA {_eta(e.get('eta_s', 0))}")
        elif kind == "val":
            v = e["val"]
            self.status.setText(f"validation at {e['step']}: GED {v['ged']:.4f}, "
                                f"HM-IoU {v.get('hm_iou', float('nan')):.4f}")
        elif kind == "resume":
            self.status.setText(f"Resumed at iteration {e['step']}.")
        self.plot.add(e)

    def _weights_in(self, out: Path) -> Path | None:
        for stem in ("best", "last"):
            if (out / f"{stem}.safetensors").is_file():
                return out / f"{stem}.safetensors"
        return None

    def _on_done(self, summary: dict) -> None:
        self.last_result = summary
        self.weights_path = self._weights_in(self._out)
        self.status.setText(f"Done: {summary['step']} iterations in "
                            f"{_eta(summary.get('elapsed_s', 0))}; weights in {self._out}.")
        self.finished.emit(summary)

    def _on_error(self, exc: BaseException) -> None:
        self.last_result = exc
        self.weights_path = self._weights_in(self._out)
        if isinstance(exc, Cancelled):
            self.status.setText(f"Stopped: {exc}. The checkpoint in {self._out} is saved; "
                                "Start with Resume continues.")
        else:
            self.status.setText(f"Failed: {exc}")
            notify_error(exc)
        self.finished.emit(exc)

    def _on_finished(self) -> None:
        self.worker = None
        self.start_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.load_button.setEnabled(self.weights_path is not None)

    # ------------------------------------------------------------------ hand over
    def load_into_sampler(self):
        """Give the trained weights to the sampling dock (opening it if needed)."""
        from .sampling import SamplingWidget

        if self.weights_path is None:
            return None
        sampler = next((w for w in self.viewer.window.dock_widgets.values()
                        if isinstance(w, SamplingWidget)), None)
        if sampler is None:
            _, sampler = self.viewer.window.add_plugin_dock_widget(
                "napari-ambiseg", "Sample segmentations")
        sampler.set_weights(str(self.weights_path))
        self.status.setText(f"The sampler now uses {self.weights_path}.")
        return sampler


def _ispin(lo: int, hi: int, value: int) -> QSpinBox:
    s = QSpinBox()
    s.setRange(lo, hi)
    s.setValue(value)
    return s
