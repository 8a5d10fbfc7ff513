"""Training dock: a short run with a live plot, feedback before the first log row, cancel with a
resumable checkpoint and the whole history on resume, "Add case" into a training run,
hand-over to the sampler."""

from __future__ import annotations

import numpy as np
import pytest

from napari_ambiseg.errors import Cancelled
from napari_ambiseg.training import events as ev
from napari_ambiseg.training.rundir import TrainResult
from napari_ambiseg.widgets.sampling import SamplingWidget
from napari_ambiseg.widgets.training import TrainingWidget

pytestmark = pytest.mark.gui


def tiny_npz(path, k=8, size=32, raters=3):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (k, size, size), dtype=np.uint8)
    masks = np.zeros((k, raters, size, size), np.uint8)
    for i in range(k):
        for r in range(raters):
            c, rad = size // 2 + rng.integers(-3, 4), 3 + r
            yy, xx = np.ogrid[:size, :size]
            masks[i, r] = (yy - c) ** 2 + (xx - c) ** 2 <= rad ** 2
    np.savez(path, images=images, masks=masks)
    return path


def dock(viewer, tmp_path, iterations):
    w = TrainingWidget(viewer)
    viewer.window.add_dock_widget(w, name="AmbiSeg training")
    data = str(tiny_npz(tmp_path / "tiny.npz"))
    w.data.setText(data)
    w.val_data.setText(data)
    w.out_dir.setText(str(tmp_path / "run"))
    w.preset.setCurrentText("tiny (smoke tests)")
    w.iterations.setValue(iterations)
    w.batch_size.setValue(4)
    w.val_every.setValue(3)
    w.device.setCurrentText("cpu")
    w.log_every.setValue(1)
    w.extra = {"val_size": 2, "val_n": 2, "checkpoint_every": 2, "warmup": 2, "threads": 1}
    return w


def test_short_run_plots_and_loads_into_sampler(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    w = dock(viewer, tmp_path, iterations=4)
    with qtbot.waitSignal(w.finished, timeout=120_000) as blocker:
        assert w.start() is not None
    result = blocker.args[0]
    assert isinstance(result, TrainResult) and result.step == 4, result
    qtbot.waitUntil(lambda: w.worker is None, timeout=10_000)
    assert [s for s, _ in w.plot.loss] == [1, 2, 3, 4]
    assert [s for s, _ in w.plot.ged] == [3, 4]
    assert w.progress.value() == 4 and "Done" in w.status.text()
    assert w.weights_path == tmp_path / "run" / "best.safetensors"
    assert w.load_button.isEnabled()
    w.load_button.click()
    sampler = next(x for x in viewer.window.dock_widgets.values()
                   if isinstance(x, SamplingWidget))
    assert sampler.weights.text() == str(w.weights_path)
    assert sampler.segmenter().cfg.crop_size == 32  # the trained tiny model loads


def test_cancel_leaves_a_resumable_checkpoint_and_weights_to_try(make_napari_viewer, qtbot,
                                                                   tmp_path):
    """Cancel before any validation (#27.3): the checkpoint resumes, and its weights
    (last.safetensors, with their config) load into the sampler at once; the status line says
    which file it loads."""
    from napari_ambiseg.weights_io import load_weights

    viewer = make_napari_viewer()
    w = dock(viewer, tmp_path, iterations=100_000)
    w.val_data.setText("")
    with qtbot.waitSignal(w.finished, timeout=120_000) as blocker:
        w.start()
        qtbot.waitUntil(lambda: len(w.plot.loss) >= 2, timeout=60_000)
        w.cancel_button.click()
    assert isinstance(blocker.args[0], Cancelled)
    qtbot.waitUntil(lambda: w.worker is None, timeout=10_000)
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    assert "Resume" in w.status.text()
    last = tmp_path / "run" / "last.safetensors"
    assert w.weights_path == last and w.load_button.isEnabled()
    assert "Load into sampler loads last.safetensors (iteration" in w.status.text()
    _, cfg, info = load_weights(last)
    assert cfg.crop_size == 32 and info["step"] >= 2
    w.load_button.click()
    sampler = next(x for x in viewer.window.dock_widgets.values()
                   if isinstance(x, SamplingWidget))
    assert sampler.weights.text() == str(last)
    stopped_at = w.plot.loss[-1][0]

    w.iterations.setValue(stopped_at + 1)
    with qtbot.waitSignal(w.finished, timeout=120_000) as blocker:
        w.start()
    assert blocker.args[0].step == stopped_at + 1
    # continued, not restarted, and the plot keeps the whole run: one point per iteration
    assert [s for s, _ in w.plot.loss] == list(range(1, stopped_at + 2))


def test_feedback_before_the_first_log_row(make_napari_viewer, qtbot, tmp_path):
    """Log every 20: the status line reports iteration, s/it and ETA from iteration 1 on."""
    viewer = make_napari_viewer()
    w = dock(viewer, tmp_path, iterations=30)
    w.val_data.setText("")
    w.log_every.setValue(20)
    events, shown = [], []

    def seen(e):
        if e:
            events.append(e)
            shown.append((e.kind, len(w.plot.loss), w.status.text()))

    with qtbot.waitSignal(w.finished, timeout=120_000):
        w.start().yielded.connect(seen)
    kinds = [e.kind for e in events]
    assert kinds[0] == "phase" and "progress" in kinds
    first = kinds.index("progress")
    assert first < kinds.index("step")  # before the first log row
    progress = events[first]
    assert isinstance(progress, ev.Progress)
    assert progress.step < 20 and progress.s_per_it > 0 and progress.eta_s >= 0
    kind, rows, text = shown[first]
    assert rows == 0 and ("s/it" in text or "it/s" in text)
    assert f"iteration {progress.step} / 30" in text and "ETA" in text
    assert [s for s, _ in w.plot.loss] == [20, 30]


def test_add_case_round_trips_into_a_training_run(make_napari_viewer, qtbot, tmp_path):
    """An image volume + one Labels layer with a reader axis (contract C5) + a plain Labels
    layer as a fourth reader -> "Add case" on two slices -> the folder trains."""
    from napari_ambiseg.training.data import load_folder

    viewer = make_napari_viewer()
    rng = np.random.default_rng(1)
    volume = rng.normal(-700, 50, (3, 48, 48)).astype(np.float32)  # CT-like, HU
    volume[:, 20:28, 18:30] = 40
    readers = np.zeros((3, 3, 48, 48), np.uint8)
    readers[0, :, 20:28, 18:30] = 1
    readers[1, :, 21:27, 19:29] = 1                                 # reader 3 saw nothing
    image = viewer.add_image(volume, name="ct")
    viewer.add_labels(readers, name="readers",
                      metadata={"ambiseg_readers": {"count": 3, "image_name": "ct"}})
    extra = viewer.add_labels(np.zeros((3, 48, 48), np.uint8), name="me")
    extra.data[1, 22:26, 20:28] = 1
    w = dock(viewer, tmp_path, iterations=2)
    w.val_data.setText("")
    panel = w.cases
    panel.image.set_value(image)
    assert panel.readers.value() == [viewer.layers["readers"], extra]
    panel.folder.setText(str(tmp_path / "cases"))
    viewer.dims.set_point(1, 1)  # slice 1
    case1 = panel.add_case()
    viewer.dims.set_point(1, 2)
    case2 = panel.add_case()
    assert case1.name == "case_0001" and case2.name == "case_0002"
    assert w.data.text() == str(tmp_path / "cases")  # the dock now trains on the folder
    assert "2 cases" in panel.info.text()

    data = load_folder(tmp_path / "cases")
    # the tiny preset's context: 64 x 64 patches, centred on the outlines (rows 20..27,
    # cols 18..29: centre pixel (24, 24) -> patch pixel (32, 32), so +8 everywhere)
    assert data.images.shape == (2, 64, 64) and data.masks.shape == (2, 4, 64, 64)
    assert data.masks[0, 0].sum() == 8 * 12 and data.masks[0, 0, 28:36, 26:38].all()
    assert data.masks[0, 2].sum() == 0                       # the reader who saw nothing
    assert data.masks[0, 3].sum() == 4 * 8 and data.masks[1, 3].sum() == 0
    assert data.images[0].min() == 0 and data.images[0].max() == 255  # model scale
    assert data.images[0, 32, 32] > data.images[0, 10, 10]  # the finding is the bright part

    with qtbot.waitSignal(w.finished, timeout=120_000) as blocker:
        assert w.start() is not None
    assert blocker.args[0].step == 2
    assert w.weights_path is not None


def test_form_errors_are_messages(make_napari_viewer):
    w = TrainingWidget(make_napari_viewer())
    assert w.start() is None and w.worker is None


def test_fine_tune_preset_starts_from_the_bundled_weights(make_napari_viewer, tmp_path):
    from napari_ambiseg.weights_io import load_config, resolve_weights
    from napari_ambiseg.widgets.training import FINE_TUNE

    w = dock(make_napari_viewer(), tmp_path, 2)
    w.preset.setCurrentText(FINE_TUNE)
    plan = w.plan()
    assert plan.train.init == "bundled" and plan.mode == "fine-tune"
    assert plan.model == load_config(resolve_weights("bundled"))[0]
    w.preset.setCurrentText("tiny (smoke tests)")
    assert w.plan().train.init is None and w.plan().mode == "new"


def test_the_dock_keeps_a_warm_training_process_and_ends_it(make_napari_viewer, qtbot,
                                                              tmp_path):
    """Opening the dock starts the training process and loads the data named in the form;
    Start uses it; a fresh one waits after the run; closing the dock ends it."""
    from napari_ambiseg.training.train_process import IN_ADVANCE

    viewer = make_napari_viewer()
    w = dock(viewer, tmp_path, iterations=2)
    w.val_data.setText("")
    first = w.warm.process
    assert first.alive()
    qtbot.waitUntil(lambda: first.data_state.get("warm") == "prepared", timeout=300_000)
    qtbot.waitUntil(lambda: "tiny.npz in memory (8 cases)" in w.standby_status.text(),
                    timeout=10_000)
    phases = []
    with qtbot.waitSignal(w.finished, timeout=120_000) as blocker:
        w.start().yielded.connect(
            lambda e: isinstance(e, ev.Phase) and phases.append(e.text))
    assert isinstance(blocker.args[0], TrainResult)
    assert any(IN_ADVANCE in t for t in phases)  # the train set loaded before Start
    qtbot.waitUntil(lambda: w.worker is None, timeout=10_000)
    assert first.proc.poll() is not None  # one process, one run
    second = w.warm.process
    assert second is not first and second.alive()  # the next Start is warm too

    viewer.window.remove_dock_widget(w)  # what the dock's close button does
    qtbot.waitUntil(lambda: second.proc.poll() is not None, timeout=10_000)
    assert w.warm.process is None


def test_closing_the_viewer_ends_the_training_process(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    w = TrainingWidget(viewer)
    viewer.window.add_dock_widget(w, name="AmbiSeg training")
    process = w.warm.process
    assert process.alive()
    viewer.close()
    qtbot.waitUntil(lambda: process.proc.poll() is not None, timeout=10_000)


# ---------------------------------------------------------------------------- #27.3: what loads
def test_cancel_before_the_first_iteration_says_nothing_is_loadable(make_napari_viewer, qtbot,
                                                                     tmp_path):
    viewer = make_napari_viewer()
    w = dock(viewer, tmp_path, iterations=100_000)
    w.val_data.setText("")
    with qtbot.waitSignal(w.finished, timeout=120_000):
        w.start().yielded.connect(lambda e: e is not None and w.cancel())
    qtbot.waitUntil(lambda: w.worker is None, timeout=10_000)
    assert w.weights_path is None and not w.load_button.isEnabled()
    text = w.status.text()
    assert "no weights to load" in text and "before its first iteration" in text, text


# ---------------------------------------------------------------------------- #27.6: status
def test_a_failed_start_replaces_the_status_line(make_napari_viewer, qtbot, tmp_path):
    """Each Start that cannot begin says why in the status line, as its notification does,
    in place of what an earlier run or Start said."""
    viewer = make_napari_viewer()
    w = dock(viewer, tmp_path, iterations=2)
    w.val_data.setText("")
    w.data.setText(str(tmp_path / "missing.npz"))
    with qtbot.waitSignal(w.finished, timeout=120_000) as blocker:
        w.start()
    qtbot.waitUntil(lambda: w.worker is None, timeout=10_000)
    assert "missing.npz" in w.status.text() and "Failed" in w.status.text()
    assert not isinstance(blocker.args[0], Cancelled)
    w.out_dir.setText("")
    assert w.start() is None
    assert "Choose an output folder" in w.status.text()
    assert "missing.npz" not in w.status.text()
    w.data.setText("")
    assert w.start() is None
    assert "Choose the training data" in w.status.text()


# ---------------------------------------------------------------------------- #27.8: display
def test_the_smoothed_curve_smooths_the_plotted_points(make_napari_viewer, tmp_path):
    """The loss plot's points are window means; its smoothed curve runs through them (about
    as many above as below), not along the window medians below them, and says what it is."""
    from napari_ambiseg.training.runlog import SMOOTHING, append_log
    from napari_ambiseg.widgets.training import LossPlot

    rng = np.random.default_rng(0)
    log = tmp_path / "log.csv"
    for step in range(20, 2001, 20):  # right-skewed per-iteration losses, as in training
        losses = 0.05 * rng.lognormal(0.0, 1.0, 20)
        append_log(log, {"step": step, "loss": losses.mean(), "loss_median": np.median(losses)})
    plot = LossPlot()
    assert plot.load(log) == 100
    raw = np.asarray(plot.artists["raw"].get_ydata(), float)
    smooth = np.asarray(plot.artists["smooth"].get_ydata(), float)
    above = float(np.mean(raw[10:] > smooth[10:]))
    assert 0.3 < above < 0.7, above
    label = " ".join(plot.artists["smooth"].get_label().split())
    assert label == f"smoothed: {SMOOTHING}"  # says which
    assert plot.smoothed() == pytest.approx(smooth[-1])


def test_validation_shows_a_fraction_and_an_eta(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    w = dock(viewer, tmp_path, iterations=4)  # validations after iterations 3 and 4
    during = []

    def seen(e):
        if isinstance(e, ev.ValProgress):
            during.append(w.status.text())

    with qtbot.waitSignal(w.finished, timeout=120_000) as blocker:
        w.start().yielded.connect(seen)
    assert isinstance(blocker.args[0], TrainResult)
    assert during and all("% of 2 cases" in t and "ETA" in t for t in during), during
    assert any("ETA 0:" in t for t in during), during  # the second one: from the first's pace


def test_start_never_imports_pytorch_in_napari(tmp_path):
    """Start (also with the fine-tune choice) and the whole run leave PyTorch to the training
    process: napari's own process imports none of it from Start on, so Start never waits
    on that import (a fresh process: the test session has PyTorch loaded)."""
    import subprocess
    import sys

    script = tmp_path / "dock.py"
    script.write_text(START_SCRIPT)
    data = tiny_npz(tmp_path / "tiny.npz")
    out = subprocess.run([sys.executable, str(script), str(data), str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines()[-1] == "TrainResult []", out.stdout + out.stderr


START_SCRIPT = """
import importlib.abc
import sys
import threading
import time

from qtpy.QtWidgets import QApplication

app = QApplication([])
from napari.components import ViewerModel  # noqa: E402

from napari_ambiseg.widgets.training import FINE_TUNE, TrainingWidget  # noqa: E402

w = TrainingWidget(ViewerModel())
imported = []


class Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            imported.append((name, threading.current_thread().name))
        return None


sys.meta_path.insert(0, Watch())
w.data.setText(sys.argv[1])
w.out_dir.setText(sys.argv[2])
w.preset.setCurrentText(FINE_TUNE)
w.plan()
w.preset.setCurrentText("tiny (smoke tests)")
w.iterations.setValue(2)
w.batch_size.setValue(2)
w.device.setCurrentText("cpu")
w.extra = {"threads": 1, "warmup": 1}
ended = []
w.finished.connect(ended.append)
assert w.start() is not None
while not ended or w.worker is not None:
    app.processEvents()
    time.sleep(0.01)
w.warm.close()
print(type(ended[0]).__name__, sorted(set(imported))[:5])
"""
