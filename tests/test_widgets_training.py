"""Training dock: a short run with a live plot, cancel with a resumable checkpoint, hand-over."""

from __future__ import annotations

import numpy as np
import pytest

from napari_ambiseg.errors import Cancelled
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
    w.extra = {"val_size": 2, "val_n": 2, "log_every": 1, "checkpoint_every": 2, "warmup": 2,
               "threads": 1}
    return w


def test_short_run_plots_and_loads_into_sampler(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    w = dock(viewer, tmp_path, iterations=4)
    with qtbot.waitSignal(w.finished, timeout=120_000) as blocker:
        assert w.start() is not None
    summary = blocker.args[0]
    assert isinstance(summary, dict) and summary["step"] == 4, summary
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


def test_cancel_leaves_a_resumable_checkpoint(make_napari_viewer, qtbot, tmp_path):
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
    stopped_at = w.plot.loss[-1][0]

    w.iterations.setValue(stopped_at + 1)
    with qtbot.waitSignal(w.finished, timeout=120_000) as blocker:
        w.start()
    assert blocker.args[0]["step"] == stopped_at + 1
    assert w.plot.loss[0][0] == stopped_at + 1  # continued, not restarted


def test_form_errors_are_messages(make_napari_viewer):
    w = TrainingWidget(make_napari_viewer())
    assert w.start() is None and w.worker is None


def test_fine_tune_preset_starts_from_the_bundled_weights(make_napari_viewer, tmp_path):
    from napari_ambiseg.weights_io import load_config, resolve_weights
    from napari_ambiseg.widgets.training import FINE_TUNE

    w = dock(make_napari_viewer(), tmp_path, 2)
    w.preset.setCurrentText(FINE_TUNE)
    model_cfg, train_cfg, _, _ = w.configs()
    assert train_cfg.init == "bundled"
    assert model_cfg == load_config(resolve_weights("bundled"))[0]
    w.preset.setCurrentText("tiny (smoke tests)")
    assert w.configs()[1].init is None
