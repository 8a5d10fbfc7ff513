"""The Worklist dock (#24.5): a triage run's cases by rank; Next opens a case from disk with
the sampler's layers (the Gallery shows and adopts them); Save writes labels aligned with the
source into the run and marks the case done; reopening resumes at the first case to do;
Skip; unreadable cases are said and passed over; the shortcuts are not napari's."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QApplication

from napari_ambiseg import worklist as wl
from napari_ambiseg.io import read_image
from napari_ambiseg.widgets import layers as L
from napari_ambiseg.widgets.gallery import GalleryWidget
from napari_ambiseg.widgets.worklist import SHORTCUTS, WorklistWidget

sys.path.insert(0, str(Path(__file__).parent))
from test_worklist_training import make_run  # noqa: E402

pytestmark = pytest.mark.gui
USER = "dr_a"


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("worklist"))


@pytest.fixture
def run_dir(made, tmp_path, monkeypatch) -> Path:
    """A fresh copy of the run (the tests write labels and state into it)."""
    monkeypatch.setenv("AMBISEG_ANNOTATOR", USER)
    out = tmp_path / "run"
    shutil.copytree(made, out)
    info = json.loads((out / "run.json").read_text())
    info["inputs"]["path"] = str(made.parent / "cases")  # the cases stay where they were
    (out / "run.json").write_text(json.dumps(info))
    return out


def dock(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    widget = WorklistWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Worklist", area="right")
    return viewer, widget


def wait(qtbot, widget) -> None:
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)


def gallery_of(viewer) -> GalleryWidget:
    [g] = [w for w in viewer.window.dock_widgets.values() if isinstance(w, GalleryWidget)]
    return g


def table(widget) -> list[list[str]]:
    t = widget.table
    return [[t.item(i, j).text() for j in range(t.columnCount())] for i in range(t.rowCount())]


def test_the_list_is_ranked_and_next_opens_case_1_from_disk(make_napari_viewer, qtbot, run_dir):
    viewer, w = dock(make_napari_viewer, qtbot)
    assert w.open_run(run_dir)
    rows = table(w)
    run = wl.read_run(run_dir)
    assert [r[0] for r in rows] == ["1", "2", "3", ""]  # ranked; the failed prompt last
    assert [r[1] for r in rows] == [r.case for r in run.rows]
    scores = [float(r[2]) for r in rows[:3]]
    assert scores == sorted(scores, reverse=True)
    assert [r[3] for r in rows[:3]] == ["90%"] * 3 and "mm^3" in rows[[r.key for r in run.rows]
                                                                     .index("ct_a")][4]
    assert [r[5] for r in rows] == ["todo", "todo", "todo", "error"]
    assert "3 cases" in w.summary.text() and "1 could not be sampled" in w.summary.text()
    assert w.selected_row() == 0 and "Resuming at case" in w.status.text()

    w.next()
    wait(qtbot, w)
    first = run.rows[0]
    assert w.current.key == first.key and not w.last_error
    image = w.image_layer
    outs = L.outputs_of(viewer.layers, image)
    assert sorted(outs) == ["agreement", "samples", "uncertainty"]
    # the samples are those of samples.npz, not drawn again
    masks, agreement = wl.load_samples(run, first.key)
    shown = L.sample_masks(outs["samples"])
    np.testing.assert_array_equal(shown, masks.astype(bool))
    np.testing.assert_allclose(outs["agreement"].data, agreement)
    # the Gallery (opened for the case) shows its modes and the finding probability
    g = gallery_of(viewer)
    assert g.current()[2] is image
    heads = [h.text() for h in g.headers]
    assert heads[0].startswith("<b>mode 1 - 2 of 4") and "no finding - 1 of 4" in heads[-1]
    assert "90%" in g.answer.text()
    assert table(w)[0][5] == "todo" and w.table.item(0, 1).font().bold()

    w.next()  # the next case replaces this one's layers
    wait(qtbot, w)
    assert w.current.key == run.rows[1].key
    assert image not in viewer.layers and not any(
        (L.output_info(la) or {}).get("source") == L.source_id(image) for la in viewer.layers)
    assert not w.table.item(0, 1).font().bold() and w.table.item(1, 1).font().bold()


def _open(w, qtbot, key: str) -> None:
    w.open_row(w.run.keys.index(key))
    wait(qtbot, w)
    assert w.current is not None and w.current.key == key, w.last_error


def test_adopt_paint_save_writes_aligned_labels_and_reopening_resumes(
        make_napari_viewer, qtbot, run_dir):
    viewer, w = dock(make_napari_viewer, qtbot)
    w.open_run(run_dir)
    key = "ct_a"  # a volume stored flipped: the labels must land on its source grid
    _open(w, qtbot, key)
    g = gallery_of(viewer)
    labels = g.adopt_mode(1)
    assert labels is not None and w.unsaved() == [labels]
    z = w.current.out.start
    labels.data_setitem((np.array([z]), np.array([2]), np.array([3])), 5)  # a brush stroke
    with qtbot.waitSignal(w.saved, timeout=60_000):
        w.save()
    assert not w.last_error and "done" in w.status.text()
    path = run_dir / "labels" / key / f"{USER}.nii.gz"
    assert path.is_file() and w.unsaved() == []
    [back] = read_image(path)
    [source] = read_image(made_cases(run_dir) / "ct_a.nii.gz")
    assert back.spatial_shape == source.spatial_shape
    np.testing.assert_allclose(back.spacing, source.spacing, atol=1e-5)
    np.testing.assert_allclose(back.origin, source.origin, atol=1e-4)
    np.testing.assert_allclose(back.direction, source.direction, atol=1e-6)
    np.testing.assert_array_equal(back.data, labels.data)
    assert back.data[z, 2, 3] == 5 and (back.data == 1).sum() == (labels.data == 1).sum() > 0
    # ... and in the source file's own voxel order (it is stored flipped in x and y)
    stored = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    assert stored[z, -3, -4] == 5
    assert wl.read_state(run_dir)[key].status == "done"
    assert wl.read_state(run_dir)[key].who == USER
    assert table(w)[w.run.keys.index(key)][5] == "done"

    # close the dock; a new one on the same folder resumes at the first case still to do
    viewer.window.remove_dock_widget(w)
    w2 = WorklistWidget(viewer)
    viewer.window.add_dock_widget(w2, name="Worklist 2")
    w2.open_run(run_dir)
    first_todo = next(r.key for r in w2.run.rows if r.ok and r.key != key)
    assert w2.run.keys[w2.selected_row()] == first_todo
    assert table(w2)[w2.run.keys.index(key)][5] == "done"
    assert f"Resuming at case {w2.run.row(first_todo).case}" in w2.status.text()
    # the done case reopens with the annotator's saved labels, editable
    viewer.layers.clear()
    _open(w2, qtbot, key)
    [mine] = w2.case_labels()
    np.testing.assert_array_equal(mine.data, back.data)
    assert w2.unsaved() == []


def made_cases(run_dir: Path) -> Path:
    return Path(json.loads((run_dir / "run.json").read_text())["inputs"]["path"])


def test_a_dicom_case_is_read_off_the_gui_thread_and_saved_with_a_seg(
        make_napari_viewer, qtbot, run_dir):
    viewer, w = dock(make_napari_viewer, qtbot)
    w.open_run(run_dir)
    worker = w.open_row(w.run.keys.index("series_c"))
    assert worker is not None and w.worker is worker  # reading in a napari worker
    assert not w.next_button.isEnabled()  # no second read meanwhile
    assert w.next() is None
    wait(qtbot, w)
    assert w.current.key == "series_c" and w.next_button.isEnabled()
    labels = gallery_of(viewer).adopt_mode(1)
    with qtbot.waitSignal(w.saved, timeout=120_000):
        w.save()
    folder = run_dir / "labels" / "series_c"
    assert (folder / f"{USER}.nii.gz").is_file() and (folder / f"{USER}.dcm").is_file()
    assert "DICOM-SEG" in w.status.text()
    [seg] = [im for im in read_image(folder / f"{USER}.dcm") if im.is_labels]
    np.testing.assert_array_equal(seg.data != 0, labels.data != 0)
    # training reads the NIfTI only
    assert list(wl.saved_labels(run_dir, "series_c")) == [USER]


def test_skip_and_saving_needs_labels(make_napari_viewer, qtbot, run_dir):
    viewer, w = dock(make_napari_viewer, qtbot)
    w.open_run(run_dir)
    key = w.run.rows[0].key
    assert w.skip()  # no case open: the selected one
    assert wl.read_state(run_dir)[key].status == "skipped"
    assert table(w)[0][5] == "skipped" and "1 skipped" in w.summary.text()
    w.next()  # opens the selected (skipped) case
    wait(qtbot, w)
    assert w.save() is None and "No labels on this case" in w.status.text()
    assert not (run_dir / "labels").exists()
    w.previous()
    assert "first case" in w.status.text()
    viewer.window.remove_dock_widget(w)
    w2 = WorklistWidget(viewer)
    w2.open_run(run_dir)
    assert w2.selected_row() == 1  # skipped is not "to do"


def test_unsaved_labels_are_asked_about_before_leaving(make_napari_viewer, qtbot, run_dir,
                                                        monkeypatch):
    viewer, w = dock(make_napari_viewer, qtbot)
    w.open_run(run_dir)
    w.next()
    wait(qtbot, w)
    key = w.current.key
    gallery_of(viewer).adopt_mode(1)
    asked = []
    monkeypatch.setattr(w, "confirm_leave", lambda names: asked.append(names) or False)
    assert w.next() is None and w.current.key == key  # kept
    assert asked == [[f"{w.image_layer.name} labels"]]
    monkeypatch.setattr(w, "confirm_leave", lambda names: True)
    w.next()
    wait(qtbot, w)
    assert w.current.key != key


def test_a_missing_or_corrupt_case_file_is_said_and_the_dock_goes_on(
        make_napari_viewer, qtbot, run_dir):
    run = wl.read_run(run_dir)
    first, second, third = (r.key for r in run.rows[:3])
    (run_dir / "cases" / first / "samples.npz").write_bytes(b"not a zip")
    (run_dir / "cases" / second / "result.json").unlink()
    viewer, w = dock(make_napari_viewer, qtbot)
    w.open_run(run_dir)
    w.next()
    wait(qtbot, w)
    assert w.current is None and "Cannot open case" in w.last_error
    assert "samples.npz" in w.last_error and w.next_button.isEnabled()
    w.open_row(1)
    wait(qtbot, w)
    assert w.current is None and "not sampled yet" in w.last_error
    w.next()  # from the selected row (no case open): the third one
    wait(qtbot, w)
    assert w.current is not None and w.current.key == third
    w.open_row(3)  # the failed prompt
    assert "cannot be opened" in w.last_error and w.current.key == third
    # not a run folder: said, the open run stays
    assert not w.open_run(run_dir / "cases")
    assert "not a triage run folder" in w.last_error and w.run.root == run_dir


def test_a_corrupt_source_image_is_said(make_napari_viewer, qtbot, run_dir, tmp_path):
    info = json.loads((run_dir / "run.json").read_text())
    cases = tmp_path / "moved"
    shutil.copytree(info["inputs"]["path"], cases)
    info["inputs"]["path"] = str(cases)
    (run_dir / "run.json").write_text(json.dumps(info))
    (cases / "slice_b.png").write_bytes(b"\x89PNG broken")
    viewer, w = dock(make_napari_viewer, qtbot)
    w.open_run(run_dir)
    w.open_row(w.run.keys.index("slice_b"))
    wait(qtbot, w)
    assert w.current is None and "Cannot open case slice_b" in w.last_error
    assert "slice_b.png" in w.last_error


def test_the_shortcuts_are_not_napari_s_and_move_through_the_list(make_napari_viewer, qtbot,
                                                                   run_dir):
    from napari._app_model import get_app_model
    from napari.utils.shortcuts import default_shortcuts
    from qtpy.QtGui import QKeySequence

    viewer, w = dock(make_napari_viewer, qtbot)
    taken = {str(kb) for kbs in default_shortcuts.values() for kb in kbs}
    taken |= {str(kb.keybinding) for kb in get_app_model().keybindings}
    for seq in SHORTCUTS.values():
        assert seq not in taken
        assert QKeySequence(seq).toString() == seq
    w.open_run(run_dir)
    window = w.window()  # the main window: the shortcuts work wherever its focus is
    window.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window)
    qtbot.keyClick(window.centralWidget(), Qt.Key.Key_Right,
                   Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    wait(qtbot, w)
    assert w.current is not None and w.current.key == w.run.rows[0].key
    qtbot.keyClick(window.centralWidget(), Qt.Key.Key_Right,
                   Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    wait(qtbot, w)
    assert w.current.key == w.run.rows[1].key
    qtbot.keyClick(w.table, Qt.Key.Key_Left,
                   Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    wait(qtbot, w)
    assert w.current.key == w.run.rows[0].key


def test_the_manifest_offers_the_dock():
    import npe2

    pm = npe2.PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("napari-ambiseg")
    names = {w.display_name: w.command for w in manifest.contributions.widgets}
    assert "Worklist" in names
    [cmd] = [c for c in manifest.contributions.commands if c.id == names["Worklist"]]
    assert cmd.python_name == "napari_ambiseg.widgets.worklist:WorklistWidget"


def test_the_training_dock_trains_on_the_annotated_run(make_napari_viewer, qtbot, run_dir,
                                                        tmp_path):
    """Annotate in the Worklist dock, then the Training dock takes the run folder as Data."""
    from napari_ambiseg.training.rundir import TrainResult
    from napari_ambiseg.widgets.training import TrainingWidget

    viewer, w = dock(make_napari_viewer, qtbot)
    w.open_run(run_dir)
    for _ in range(2):
        w.next()
        wait(qtbot, w)
        gallery_of(viewer).adopt_mode(1)
        with qtbot.waitSignal(w.saved, timeout=60_000):
            w.save()
    t = TrainingWidget(viewer)
    viewer.window.add_dock_widget(t, name="AmbiSeg training")
    t.data.setText(str(run_dir))
    t.out_dir.setText(str(tmp_path / "retrained"))
    t.preset.setCurrentText("tiny (smoke tests)")
    t.iterations.setValue(2)
    t.batch_size.setValue(2)
    t.device.setCurrentText("cpu")
    t.log_every.setValue(1)
    t.extra = {"checkpoint_every": 1, "warmup": 1, "threads": 1}
    with qtbot.waitSignal(t.finished, timeout=300_000) as blocker:
        assert t.start() is not None
    result = blocker.args[0]
    assert isinstance(result, TrainResult) and result.step == 2, result
    assert (tmp_path / "retrained" / "last.safetensors").is_file()


def test_samples_that_do_not_fit_the_image_are_refused(run_dir):
    """What is read from disk is checked against the image before any layer is made."""
    from napari_ambiseg.errors import InputError
    from napari_ambiseg.widgets.worklist import load_job

    run = wl.read_run(run_dir)
    loaded = load_job(run, "ct_a", USER)  # a slab of the volume: fits
    assert loaded.out.z0 is not None and loaded.out.masks.shape[2:] == (40, 40)
    assert loaded.out.finding_probability == pytest.approx(0.9) and loaded.labels is None
    np.savez(run_dir / "cases" / "ct_a" / "samples.npz", masks=np.zeros((4, 4, 9, 9), np.uint8),
             agreement=np.zeros((4, 9, 9), np.float32))
    with pytest.raises(InputError, match=r"ct_a: samples.npz \(4, 4, 9, 9\) from slice 1 "
                                         r"does not fit the image \(6, 40, 40\)"):
        load_job(run, "ct_a", USER)
