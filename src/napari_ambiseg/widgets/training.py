"""The training dock: data, recipe, output folder; Start / Cancel; live loss and GED plot.

Training runs the core `napari_ambiseg.training.trainer.train` in a child process
(`training.train_process`) watched by a napari generator worker, so the viewer stays usable and
keeps its own matplotlib and GIL. The dock starts that process when it opens (and again after
each run): it imports PyTorch and loads the train data named in the form while the user fills
in the rest, so Start waits only for the first iteration. That standby process holds PyTorch
(~300 MB) and the train set (~0.8 GB for the LIDC train.npz); it ends with the dock, the
viewer or napari. The dock talks from the first second: what the run is doing
(starting, loading, iteration k running for n s), then iteration, s/it and ETA after every
iteration (at most twice a second), the log rows (every "Log every" iterations) on the plot,
a validation's cases done and its ETA. Start never imports PyTorch in napari's process (the
plan is plain data). Cancel stops within a second, inside an iteration: the checkpoint of the
last completed iteration and its weights are saved; Start with "Resume" continues from it,
bit for bit, and the plot shows the run's whole history (read back from its log.csv). The
"Add cases" tab builds a training folder from the open image and its readers' Labels layers
(`add_case`). However a run ends (done, cancelled, failed), the status line says which weights
"Load into sampler" hands to the sampling dock (best, else last), or why there are none yet.
"""

from __future__ import annotations

import threading
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QEvent, QTimer, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ..errors import Cancelled
from ..training import events as ev
from ..training.plots import draw_loss, set_loss
from ..training.presets import PRESETS
from ..training.rundir import RunDir, TrainResult
from ..training.runlog import read_log, robust_smooth
from ._qt import PathField, error_text, notify_error
from .add_case import AddCasePanel
from .engine import stream
from .settings import DEVICES, load_defaults

if TYPE_CHECKING:
    import napari

FINE_TUNE = "fine-tune the bundled LIDC model"  # its architecture, starting from its weights


def training_job(plan, stop: threading.Event, process=None):
    """Generator for a napari worker: yields the trainer's events (`training.events`, or
    None), returns its `TrainResult`; raises `Cancelled` after the trainer saved a resumable
    checkpoint. The trainer runs in a child process (`training.train_process`): `process`, the
    dock's standby one, if it still lives, else a new one."""
    from ..training.train_process import run_training

    def work(emit, should_stop):
        return run_training(plan.model, plan.train, plan.out.root, plan.resume, emit, stop,
                            process)

    return (yield from stream(work, stop))


def _eta(seconds: float) -> str:
    s = int(max(seconds, 0))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _rate(s_per_it: float | None) -> str:
    if not s_per_it:
        return "? s/it"
    return f"{s_per_it:.2f} s/it" if s_per_it >= 0.1 else f"{1 / s_per_it:.0f} it/s"


class LossPlot(QWidget):
    """The run's loss (window means faint, their robust smoothing, log axis with robust
    limits: see `training.runlog`) and validation GED (right axis), over its whole history."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(4, 3), layout="constrained")
        self.canvas = FigureCanvasQTAgg(fig)
        self.ax = fig.add_subplot(111)
        self.ax2 = self.ax.twinx()
        self.ax.set(xlabel="iteration", ylabel="loss")
        self.ax2.set_ylabel("val GED", color="tab:orange")
        self.artists = draw_loss(self.ax, np.zeros(0), np.zeros(0))
        (self.ged_line,) = self.ax2.plot([], [], "o-", color="tab:orange", label="val GED")
        self.ax.legend(handles=[self.artists["raw"], self.artists["smooth"], self.ged_line],
                       loc="upper right", fontsize="small")
        self.placeholder = self.ax.text(0.5, 0.5, "The loss and validation GED\nappear here.",
                                        transform=self.ax.transAxes, ha="center",
                                        va="center", color="0.5")
        self.steps: list[int] = []
        self.raw: list[float] = []  # window means (faint; what the smoothed curve smooths)
        self.ged: list[tuple[int, float]] = []
        self.canvas.setMinimumHeight(220)
        QVBoxLayout(self).addWidget(self.canvas)
        self._redraw()

    @property
    def loss(self) -> list[tuple[int, float]]:
        return list(zip(self.steps, self.raw))

    def smoothed(self) -> float | None:
        """The smoothed curve's last value (None before the first log row)."""
        return float(robust_smooth(self.raw)[-1]) if self.raw else None

    def clear(self) -> None:
        self.steps, self.raw, self.ged = [], [], []
        self._redraw()

    def load(self, log_csv: str | Path) -> int:
        """Replace the plot by a run's log (its whole history); returns the rows read."""
        log = read_log(log_csv)
        self.steps = [int(s) for s in log["step"]]
        self.raw = list(log["loss"])
        self.ged = list(zip((int(s) for s in log["val_step"]), log["val_ged"]))
        self._redraw()
        return len(self.steps)

    def add(self, event: ev.Event) -> None:
        """A log row (`Step`) or a validation (`Val`); other events change nothing."""
        if isinstance(event, ev.Step) and event.loss is not None:
            self.steps.append(int(event.step))
            self.raw.append(float(event.loss))
        elif isinstance(event, ev.Val):
            self.ged.append((event.step, float(event.val["ged"])))
        else:
            return
        self._redraw()

    def _redraw(self) -> None:
        set_loss(self.ax, self.artists, self.steps, self.raw)
        self.ged_line.set_data([p[0] for p in self.ged], [p[1] for p in self.ged])
        self.ax2.relim()
        self.ax2.autoscale_view()
        empty = not self.steps and not self.ged
        self.placeholder.set_visible(empty)  # and no made-up axes
        self.ax.tick_params(which="both", labelleft=not empty, labelbottom=not empty)
        self.ax2.tick_params(which="both", labelright=bool(self.ged))
        self.canvas.draw_idle()


class TrainingWidget(QWidget):
    """Dock: train or resume an AmbiSeg model without leaving napari."""

    finished = Signal(object)  # the run's TrainResult, or the exception that ended it
    _standby_changed = Signal()  # from the standby process's reader thread

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.worker = None
        self.weights_path: Path | None = None
        self.last_result: Any = None
        self.extra: dict[str, Any] = {}  # further TrainConfig fields (tests, power users)
        self._stop: threading.Event | None = None
        self._run: RunDir | None = None
        self._plan: Any = None  # the run under way (or the last one)
        self._weights_before: dict[Path, int | None] = {}  # the folder's weights at Start
        self._completed = 0  # the last iteration the run reported completed
        self._said, self._said_at, self._last_event = "", 0.0, 0.0
        self._running_step: int | None = None  # the iteration under way (for the ticker)
        self._cancelled: ev.Cancelled | None = None  # the trainer's Cancelled event
        self._closed = False  # removed from the viewer: no new standby process
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
        self.log_every = _ispin(1, 1_000_000, 20)
        self.log_every.setToolTip("A point on the plot (the interval's mean loss) and a row in "
                                  "log.csv (its mean and median) every this many iterations. "
                                  "The status line reports every iteration regardless.")
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
        self.standby_status = QLabel("")  # what the standby training process is doing
        self.standby_status.setWordWrap(True)
        self.standby_status.setStyleSheet("color: gray")
        self.plot = LossPlot()
        self.cases = AddCasePanel(self.viewer, self.model_config)
        self.cases.added.connect(self._use_cases)
        self._ticker = QTimer(self)
        self._ticker.setInterval(500)
        self._ticker.timeout.connect(self._tick)

        run = QWidget()
        form = QFormLayout(run)
        for label, w in (("Data", self.data), ("Validation", self.val_data),
                         ("Output", self.out_dir), ("Model", self.preset),
                         ("Iterations", self.iterations), ("Batch size", self.batch_size),
                         ("Learning rate", self.lr), ("Validate every", self.val_every),
                         ("Log every", self.log_every), ("Device", self.device),
                         ("", self.resume)):
            form.addRow(label, w)
        self.tabs = QTabWidget()
        self.tabs.addTab(run, "Run")
        self.tabs.addTab(self.cases, "Add cases from the viewer")
        buttons = QHBoxLayout()
        for b in (self.start_button, self.cancel_button, self.load_button):
            buttons.addWidget(b)
        box = QVBoxLayout(self)
        box.addWidget(self.tabs)
        box.addLayout(buttons)
        box.addWidget(self.progress)
        box.addWidget(self.status)
        box.addWidget(self.standby_status)
        box.addWidget(self.plot, 1)

        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.load_button.clicked.connect(self.load_into_sampler)
        self._start_standby()

    # ------------------------------------------------------------------ standby process
    def _start_standby(self) -> None:
        """Start the training process now (PyTorch imports, the train data loads), so that
        Start only waits for the first iteration; ended with the dock (`_shut_down`)."""
        from ..training.train_process import WarmTrainer

        me = weakref.ref(self)  # the child's reader thread must not keep the dock alive
        self.warm = WarmTrainer(on_status=lambda _: (w := me()) and w._standby_changed.emit())
        self._standby_changed.connect(self._show_standby)
        self._prepare_timer = QTimer(self)
        self._prepare_timer.setSingleShot(True)
        self._prepare_timer.setInterval(600)  # typing a path: prepare once it rests
        self._prepare_timer.timeout.connect(self.prepare_data)
        self.data.edit.textChanged.connect(self._prepare_timer.start)
        self.destroyed.connect(lambda *_, warm=self.warm: warm.close())  # self is gone then
        self.warm.spawn()
        self.prepare_data()

    def prepare_data(self) -> None:
        """Have the standby process load the data the form names (if it is a new set)."""
        self.warm.prepare(self.data.text(), bool(self.extra.get("allow_pickle", False)))
        self._show_standby()

    def _show_standby(self) -> None:
        self.standby_status.setText("" if self.worker is not None else self.warm.describe())

    def _shut_down(self) -> None:
        """The dock left the viewer: stop a run (its checkpoint kept), end the standby."""
        self._closed = True
        self._prepare_timer.stop()
        self.cancel()
        self.warm.close()

    def event(self, e: QEvent) -> bool:  # noqa: N802 - Qt naming
        # napari's close button takes the widget out of its dock (parent None), the viewer
        # closing destroys it (`destroyed`, above); atexit and stdin's end cover the rest
        if e.type() == QEvent.Type.ParentChange and getattr(self, "warm", None) and \
                self.parent() is None and not self._closed:
            self._shut_down()
        return super().event(e)

    # ------------------------------------------------------------------ configs
    def plan(self, *, require: bool = True):
        """The run the form describes (`training.plan.plan_run`: a resume continues the run's
        own model and recipe with the form's settings on top; the fine-tune choice takes the
        bundled model's architecture and weights; else the preset's model). `require`: the
        data and the output folder must be chosen."""
        from ..config import ModelConfig
        from ..errors import InputError
        from ..training.plan import plan_run

        data, out = self.data.text(), self.out_dir.text()
        if require and not data:
            raise InputError("Choose the training data (.npz or a case folder).")
        if require and not out:
            raise InputError("Choose an output folder.")
        fine_tune = self.preset.currentText() == FINE_TUNE
        fields = {"data": data, "init": "bundled" if fine_tune else None,
                  "val_data": self.val_data.text() or None,
                  "iterations": self.iterations.value(), "batch_size": self.batch_size.value(),
                  "lr": self.lr.value(), "val_every": self.val_every.value(),
                  "log_every": self.log_every.value(),
                  "device": self.device.currentText(), **self.extra}
        preset = None if fine_tune else ModelConfig(**PRESETS[self.preset.currentText()])
        return plan_run(out, resume=self.resume.isChecked() and bool(out), new_model=preset,
                        **fields)

    def model_config(self):
        """The model this dock would train (see `plan`)."""
        return self.plan(require=False).model

    def _use_cases(self, folder: str) -> None:
        self.data.setText(folder)
        self.prepare_data()  # the same folder with a new case: a new set
        self.status.setText(f"Data: the case folder {folder}. Choose an output folder and a "
                            "model (fine-tune the bundled one, or a preset), then Start.")

    # ------------------------------------------------------------------ run
    def start(self):
        """Start (or resume) training; returns the napari worker (None if it could not)."""
        from napari.qt.threading import create_worker

        if self.worker is not None:
            return self.worker
        try:
            plan = self.plan()
        except Exception as e:  # noqa: BLE001 - the user's input: say what is wrong
            self._say(f"Not started: {error_text(e)}")  # not what an earlier run said
            notify_error(e)
            return None
        self._stop = threading.Event()
        if plan.resume:
            self.plot.load(plan.out.log)  # at once; again after the trainer's trim
        else:
            self.plot.clear()
        self.progress.setRange(0, plan.train.iterations)
        self.progress.setValue(0)
        self.weights_path, self.last_result, self._run, self._plan = None, None, plan.out, plan
        self._weights_before = {p: _mtime(p) for p in (plan.out.best, plan.out.last)}
        self._completed = 0
        self._prepare_timer.stop()
        worker = create_worker(training_job, plan, self._stop, self.warm.take(),
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
        self._running_step, self._cancelled = None, None
        self._say(f"Starting the training process: {plan.describe()}")
        self.standby_status.setText("")
        self._ticker.start()
        worker.start()
        return worker

    def cancel(self) -> None:
        """Stop the run within a second; the last completed iteration's checkpoint is kept."""
        if self._stop is not None and not self._stop.is_set():
            self._stop.set()
            self._running_step = None
            self._say("Stopping (saving the last completed iteration)")

    def _say(self, text: str) -> None:
        self._said, self._said_at = text, time.monotonic()
        self.status.setText(text)

    def _tick(self) -> None:
        """Twice a second while a run lives: how long the current phase or iteration has
        been going, so a slow first iteration or a validation never looks frozen."""
        if self.worker is None:
            return
        since = time.monotonic() - self._said_at
        if since < 1.5:
            return
        extra = f" ({since:.0f} s)"
        if self._running_step is not None and self._said.startswith("iteration "):
            extra = f"; iteration {self._running_step} running ({since:.0f} s)"
        self.status.setText(self._said + extra)

    def _on_event(self, e: ev.Event | None) -> None:
        if e is None:
            return
        step, total = getattr(e, "step", None), getattr(e, "total", None)
        if step is not None and total is not None:
            self.progress.setValue(min(int(step), self.progress.maximum()))
        if isinstance(e, ev.Phase):
            self._running_step = None
            if e.phase == "training":
                self._say(f"iteration {int(e.step) + 1:,} / {e.total:,} running")
            else:
                self._say((e.text or e.phase).capitalize())
        elif isinstance(e, (ev.Progress, ev.Step)) and e.s_per_it is not None:
            self._completed = max(self._completed, int(e.step))
            self.plot.add(e)
            smooth = self.plot.smoothed()
            loss = (f"loss {smooth:.4g} (smoothed)" if smooth is not None
                    else f"loss {e.loss:.4g}")
            self._running_step = e.step + 1 if e.step < e.total else None
            self._say(f"iteration {e.step:,} / {e.total:,} - {_rate(e.s_per_it)} - "
                      f"ETA {_eta(e.eta_s)} - {loss}")
        elif isinstance(e, ev.ValProgress):
            self._running_step = None
            eta = ("ETA after the first cases" if e.eta_s is None else f"ETA {_eta(e.eta_s)}")
            self._say(f"Validating at iteration {e.step:,}: {100 * e.done / max(e.count, 1):.0f}% "
                      f"of {e.count:,} cases - {eta}")
        elif isinstance(e, ev.Val):
            self._say(f"validation at {e.step:,}: GED {e.val['ged']:.4f}, "
                      f"HM-IoU {e.val.get('hm_iou', float('nan')):.4f}")
            self.plot.add(e)
        elif isinstance(e, ev.Resume):
            self._completed = e.step
            rows = self.plot.load(self._run.log)
            self._say(f"Resumed at iteration {e.step:,} ({rows} log rows of history)")
        elif isinstance(e, ev.Cancelled):
            self._cancelled = e
            self._say(f"Stopped {e.where}: iteration {e.step:,} is saved")
        else:
            self.plot.add(e)

    def _on_done(self, result: TrainResult) -> None:
        self.last_result = result
        self.weights_path = result.weights
        self._say(f"Done: {result.step:,} iterations in {_eta(result.elapsed_s)}; weights in "
                  f"{result.out}. {self._loadable()}")
        self.finished.emit(result)

    def _on_error(self, exc: BaseException) -> None:
        self.last_result = exc
        self.weights_path = self._run_weights()
        if isinstance(exc, Cancelled) and self._cancelled is not None and \
                self._cancelled.step == 0:
            text = f"Stopped {self._cancelled.where}, before any iteration was completed."
        elif isinstance(exc, Cancelled) and self._cancelled is not None:
            e = self._cancelled
            text = (f"Stopped {e.where}: the checkpoint of iteration {e.step:,} is saved in "
                    f"{self._run.root}; Start with Resume continues.")
        elif isinstance(exc, Cancelled):
            text = f"Stopped: {exc}"
        else:
            text = f"Failed: {error_text(exc)}"
            notify_error(exc)
        self._say(f"{text.rstrip('.')}. {self._loadable()}")
        self.finished.emit(exc)

    def _run_weights(self) -> Path | None:
        """The run's weights (best, else last) once it ended early: written since Start, or
        the resumed run's own; an earlier run's files in the folder are not this run's."""
        for p in (self._run.best, self._run.last):
            if p.is_file() and (self._plan.resume or _mtime(p) != self._weights_before.get(p)):
                return p
        return None

    def _loadable(self) -> str:
        """What Load into sampler would load, or why there is nothing to load."""
        from ..errors import AmbisegError
        from ..weights_io import load_config  # JSON only: no PyTorch here

        p = self.weights_path
        if p is None:
            if not self._completed:
                return "There are no weights to load: no iteration was completed."
            every = self._plan.train.checkpoint_every
            return ("There are no weights to load: none were saved before the run ended "
                    f"(weights are saved with each checkpoint, every {every:,} iterations).")
        try:
            info = load_config(p)[1]
        except AmbisegError:
            info = {}
        about = [f"iteration {int(info['step']):,}"] if "step" in info else []
        if isinstance(info.get("val"), dict) and "ged" in info["val"]:
            about.append(f"validation GED {float(info['val']['ged']):.3f}")
        return f"Load into sampler loads {p.name}" + (f" ({', '.join(about)})." if about else ".")

    def _on_finished(self) -> None:
        self.worker = None
        self._ticker.stop()
        self._running_step = None
        self.start_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.load_button.setEnabled(self.weights_path is not None)
        if not self._closed:
            self.warm.spawn()  # the next Start is quick too
            self._show_standby()

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


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def _ispin(lo: int, hi: int, value: int) -> QSpinBox:
    s = QSpinBox()
    s.setRange(lo, hi)
    s.setValue(value)
    return s
