"""Crash safety in napari: adopted labels are snapshotted; a killed viewer's work comes back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from napari_ambiseg import recovery as R
from napari_ambiseg.io import write_labels
from napari_ambiseg.widgets import recovery as W
from napari_ambiseg.widgets.gallery import GalleryWidget
from napari_ambiseg.widgets.sampling import SamplingWidget

pytestmark = pytest.mark.gui


def _root() -> Path:
    return R.recovery_root()  # a temporary folder per test (conftest)


def _snapshot_of(layer, viewer) -> np.ndarray:
    c = W.controller(viewer)
    c.flush()
    key = next(t.key for t in c._tracked.values() if t.layer is layer)
    return R.read_snapshot(c.session.path(key)).data


def _banner(dock) -> W.RecoveryBanner:
    return dock.findChild(W.RecoveryBanner)


def test_protect_snapshots_at_once_then_edits_on_the_timer(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    layer = viewer.add_labels(np.zeros((4, 20, 30), np.uint8), scale=(3.0, 0.8, 0.9),
                              translate=(7.0, -20.0, 5.5), name="tumour",
                              metadata={"ambiseg_adopted": {"what": "mode 1"}})
    layer.data_setitem((np.array([1]), np.array([2]), np.array([3])), 2)
    assert W.protect(viewer, layer)
    c = W.controller(viewer)
    assert c.timer.isActive() and c.timer.interval() == W.INTERVAL_MS
    # synchronous: the file is there when protect returns
    [key] = c.session.keys()
    state = R.read_snapshot(c.session.path(key))
    np.testing.assert_array_equal(state.data, layer.data)
    assert state.transform["scale"] == [3.0, 0.8, 0.9] and state.metadata == layer.metadata

    writes = []
    c.session.write = lambda p, write=c.session.write: writes.append(p.key) or write(p)
    c.tick()
    c.flush()
    assert writes == []  # nothing changed: nothing written
    layer.refresh()  # redrawn (as on a slice change) but unchanged: still nothing written
    c.tick()
    c.flush()
    assert writes == []
    layer.paint((2, 10, 10), 5)  # a brush stroke
    c.tick()
    np.testing.assert_array_equal(_snapshot_of(layer, viewer), layer.data)
    assert (_snapshot_of(layer, viewer) == 5).any() and len(writes) == 1
    layer.undo()  # napari undoes without a paint event
    c.tick()
    assert not (_snapshot_of(layer, viewer) == 5).any() and len(writes) == 2
    layer.translate = (7.0, -20.0, 6.0)
    c.tick()
    c.flush()
    assert R.read_snapshot(c.session.path(key)).transform["translate"] == [7.0, -20.0, 6.0]

    # closing a layer on purpose forgets it; closing the viewer ends the session
    other = viewer.add_labels(np.ones((5, 5), np.uint8), name="other")
    W.protect(viewer, other)
    assert len(c.session.keys()) == 2
    viewer.layers.remove(other)
    c.flush()
    assert c.session.keys() == [key]
    folder = c.session.folder
    viewer.close()
    qtbot.waitUntil(lambda: c.ended, timeout=5000)
    assert not folder.exists() and R.orphaned_sessions() == []


def test_protect_failure_warns_and_keeps_the_adopt(make_napari_viewer, monkeypatch):
    viewer = make_napari_viewer()
    layer = viewer.add_labels(np.ones((5, 5), np.uint8))
    messages = []
    monkeypatch.setattr("napari.utils.notifications.show_warning", messages.append)
    monkeypatch.setenv(R.ENV, "/proc/not-writable")
    assert not W.protect(viewer, layer)
    assert "No recovery snapshot of 'Labels'" in messages[0] and layer in viewer.layers


def test_gallery_adopt_is_snapshotted(make_napari_viewer, qtbot):
    from test_widgets_gallery import setup

    viewer, src, _, gallery = setup(make_napari_viewer, qtbot)
    labels = gallery.adopt_mode(2)
    assert labels is not None
    assert W.controller(viewer).protected() == [labels]
    np.testing.assert_array_equal(_snapshot_of(labels, viewer), labels.data)


def _leave_orphan(root: Path, name="left behind") -> np.ndarray:
    """A process snapshots labels and dies without ending its session."""
    script = textwrap.dedent(f"""
        import numpy as np
        from napari_ambiseg import recovery as R
        data = np.zeros((6, 7), np.uint16); data[2:4, 3:6] = 4
        R.start_session({str(root)!r}).snapshot("k", R.LayerState(
            {name!r}, data, {{"scale": [0.5, 2.0], "translate": [1.0, -3.0]}},
            {{"ambiseg_adopted": {{"what": "consensus"}}}}))
        """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    data = np.zeros((6, 7), np.uint16)
    data[2:4, 3:6] = 4
    return data


def test_banner_offers_restore_and_discard(make_napari_viewer, qtbot, monkeypatch):
    expected = _leave_orphan(_root())
    viewer = make_napari_viewer()
    sampler, gallery = SamplingWidget(viewer), GalleryWidget(viewer)
    viewer.window.add_dock_widget(sampler, name="sampling")
    viewer.window.add_dock_widget(gallery, name="gallery")
    for dock in (sampler, gallery):
        banner = _banner(dock)
        assert not banner.isHidden() and len(banner.rows) == 1
        assert "ended unexpectedly" in banner.rows[0][0].text()
        assert "1 layer: 'left behind'" in banner.rows[0][0].text()
    _banner(gallery).rows[0][1].click()  # Restore
    layer = viewer.layers["left behind"]
    np.testing.assert_array_equal(layer.data, expected)
    assert layer.data.dtype == np.uint16
    np.testing.assert_allclose(layer.scale, (0.5, 2.0))
    np.testing.assert_allclose(layer.translate, (1.0, -3.0))
    assert layer.metadata == {"ambiseg_adopted": {"what": "consensus"}}
    assert W.controller(viewer).protected() == [layer]  # safe in this session now
    assert R.orphaned_sessions() == []
    assert _banner(sampler).isHidden() and _banner(gallery).isHidden()

    _leave_orphan(_root(), "unwanted")
    W.offers().rescan()
    banner = _banner(sampler)
    assert "'unwanted'" in banner.rows[0][0].text()
    monkeypatch.setattr(W.RecoveryBanner, "confirm_discard", lambda self, o: False)
    banner.rows[0][2].click()  # Discard, then "No"
    assert len(R.orphaned_sessions()) == 1
    monkeypatch.setattr(W.RecoveryBanner, "confirm_discard", lambda self, o: True)
    banner.rows[0][2].click()
    assert R.orphaned_sessions() == [] and banner.isHidden()
    assert "unwanted" not in [la.name for la in viewer.layers]


# ------------------------------------------------------------------ the crash (issue 12)
CHILD = """
import json, sys
import numpy as np
import SimpleITK as sitk
import napari
from qtpy.QtCore import QEventLoop, QTimer
from napari_ambiseg.recovery import _plain
from napari_ambiseg.widgets.gallery import GalleryWidget
from napari_ambiseg.widgets.sampling import SamplingWidget
from napari_ambiseg.testing import ScriptedSegmenter

out = sys.argv[1]
img = sitk.GetImageFromArray(np.random.default_rng(0).normal(size=(5, 64, 64)).astype(np.float32))
img.SetSpacing((0.9, 0.8, 3.0))
img.SetOrigin((-12.0, 30.0, 7.5))
sitk.WriteImage(img, out + "/ct.nii.gz")
viewer = napari.Viewer(show=False)
[src] = viewer.open(out + "/ct.nii.gz", plugin="napari-ambiseg")
viewer.dims.set_point(0, src.data_to_world((2, 0, 0))[0])
pts = viewer.add_points([src.data_to_world((2, 30, 34))], name="p")
sampler, gallery = SamplingWidget(viewer), GalleryWidget(viewer)
sampler.set_segmenter(ScriptedSegmenter(), "scripted")
sampler.where.set_value(pts)
sampler.n.setValue(16)
sampler.steps.setValue(2)
loop = QEventLoop()
sampler.done.connect(loop.quit)
QTimer.singleShot(0, sampler.run)
loop.exec()
assert sampler.last_error is None, sampler.last_error
labels = gallery.adopt_mode(1)
np.save(out + "/expected.npy", np.asarray(labels.data))
with open(out + "/expected.json", "w") as f:
    json.dump({"name": labels.name, "scale": list(labels.scale), "translate":
               list(labels.translate), "metadata": _plain(labels.metadata)}, f)
print("ADOPTED", flush=True)
napari.run()
"""


def test_killed_viewer_after_adopt_leaves_a_restorable_snapshot(make_napari_viewer, qtbot,
                                                                tmp_path):
    """Issue 12, done when: kill the viewer process after an adopt; the snapshot restores."""
    env = {**os.environ, R.ENV: str(_root())}
    env.pop("QT_QPA_PLATFORM", None)
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        line = ""
        while "ADOPTED" not in line:
            line = child.stdout.readline()
            if not line and child.poll() is not None:
                pytest.fail(f"the viewer process ended early:\n{child.stderr.read()[-3000:]}")
            assert time.monotonic() < deadline, "the viewer process did not adopt in time"
        [live] = [p for p in _root().iterdir() if p.is_dir()]
        assert R.orphaned_sessions() == []  # its owner is running: hands off
    finally:
        child.send_signal(signal.SIGKILL)  # the crash: no cleanup of any kind runs
        child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL

    expected = np.load(tmp_path / "expected.npy")
    meta = json.loads((tmp_path / "expected.json").read_text())
    assert expected.any() and "ambiseg" in meta["metadata"]
    [orphan] = R.orphaned_sessions()
    assert orphan.folder == live and orphan.names == [meta["name"]]

    viewer = make_napari_viewer()
    gallery = GalleryWidget(viewer)
    viewer.window.add_dock_widget(gallery, name="gallery")
    banner = _banner(gallery)
    assert not banner.isHidden() and f"'{meta['name']}'" in banner.rows[0][0].text()
    [layer] = banner.restore(orphan)
    np.testing.assert_array_equal(layer.data, expected)
    np.testing.assert_allclose(layer.scale, meta["scale"])
    np.testing.assert_allclose(layer.translate, meta["translate"])
    assert layer.metadata == meta["metadata"]
    assert R.orphaned_sessions() == []
    # saved with no source image open, the restored labels land on the source's grid
    [path] = write_labels(layer.data, tmp_path / "restored.nii.gz", layer.metadata)
    written, source = sitk.ReadImage(path), sitk.ReadImage(str(tmp_path / "ct.nii.gz"))
    np.testing.assert_allclose(written.GetOrigin(), source.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(written.GetSpacing(), source.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(written.GetDirection(), source.GetDirection(), atol=1e-6)
    assert (sitk.GetArrayFromImage(written) > 0).sum() == (expected > 0).sum()
