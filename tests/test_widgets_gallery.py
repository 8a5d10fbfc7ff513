"""Gallery dock: modes and frequencies, showing a sample, adopting as labels, undo."""

from __future__ import annotations

import numpy as np
import pytest

from napari_ambiseg.testing import ScriptedSegmenter, disk
from napari_ambiseg.widgets import layers as L
from napari_ambiseg.widgets.gallery import GalleryWidget
from napari_ambiseg.widgets.sampling import SamplingWidget

pytestmark = pytest.mark.gui

SCALE, TRANSLATE = (0.8, 0.6), (5.0, -7.0)
CENTER = (30, 34)


def setup(make_napari_viewer, qtbot, volume=False):
    """Viewer with a (scaled) image, the sampler run once at CENTER (modes 9/5/2 of 16)."""
    viewer = make_napari_viewer()
    img = np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)
    if volume:
        src = viewer.add_image(np.stack([img] * 5), scale=(2.0, *SCALE),
                               translate=(0.0, *TRANSLATE), name="ct")
        viewer.dims.set_point(0, 2.0 * 3)  # slice 3
    else:
        src = viewer.add_image(img, scale=SCALE, translate=TRANSLATE, name="ct")
    pts = viewer.add_points([src.data_to_world((3, *CENTER) if volume else CENTER)], name="p")
    sampler = SamplingWidget(viewer)
    gallery = GalleryWidget(viewer)
    viewer.window.add_dock_widget(sampler, name="sampling")
    viewer.window.add_dock_widget(gallery, name="gallery")
    sampler.set_segmenter(ScriptedSegmenter(), "scripted")
    sampler.where.set_value(pts)
    sampler.n.setValue(16)
    sampler.steps.setValue(2)
    with qtbot.waitSignal(sampler.done, timeout=30_000):
        sampler.run()
    assert sampler.last_error is None
    return viewer, src, sampler, gallery


def test_modes_sorted_by_frequency_and_click_shows_sample(make_napari_viewer, qtbot):
    viewer, src, sampler, gallery = setup(make_napari_viewer, qtbot)
    texts = [h.text().replace("<b>", "").replace("</b>", "") for h in gallery.headers]
    assert texts[0].startswith("mode 1 - 9 of 16: ") and "mm^2" in texts[0]
    assert texts[1].startswith("mode 2 - 5 of 16: ") and "mm^2" in texts[1]
    assert texts[2] == "no finding - 2 of 16"  # the empty mode: said so, and not adoptable
    assert sorted(gallery.adopt_buttons) == [1, 2]
    # disk of radius 5 px = 81 px at 0.8 x 0.6 mm
    assert texts[0].split(": ")[1].startswith(f"{81 * 0.8 * 0.6:.0f} mm^2")
    assert sorted(gallery.buttons) == list(range(16))
    assert not gallery.buttons[0].icon().isNull()
    samples = L.outputs_of(viewer.layers, src)["samples"]
    # the labels carry the mode rank: the viewer's colours match the gallery's groups
    assert {int(samples.data[k].max()) for k in sampler.last_outputs.modes[1].members} == {2}
    gallery.buttons[11].click()
    assert gallery.selected == 11 and gallery.buttons[11].isChecked()
    assert viewer.dims.current_step[0] == 11  # the sample slider
    # a re-run is picked up by the gallery automatically
    sampler.n.setValue(4)
    with qtbot.waitSignal(sampler.done, timeout=30_000):
        sampler.run()
    assert len(gallery.buttons) == 4


def test_the_status_line_follows_a_new_sampling_run(make_napari_viewer, qtbot):
    """Issue 27.6: after a new run the gallery no longer says "Showing sample 11." of the
    previous result: its status speaks of the new samples."""
    viewer, src, sampler, gallery = setup(make_napari_viewer, qtbot)
    gallery.buttons[11].click()
    assert gallery.status.text().startswith("Showing sample 11")
    sampler.n.setValue(8)
    with qtbot.waitSignal(sampler.done, timeout=30_000):
        sampler.run()
    assert "sample 11" not in gallery.status.text()
    assert gallery.status.text().startswith("8 samples of 'ct'")
    gallery.adopt_mode(1)
    assert gallery.status.text().startswith("Adopted mode 1 (sample ")
    with qtbot.waitSignal(sampler.done, timeout=30_000):
        sampler.run()
    assert not gallery.status.text().startswith("Adopted")


def test_the_header_gives_the_two_answers(make_napari_viewer, qtbot):
    """Issue 23: the finding probability heads the gallery (explained in its tooltip); given
    a finding, the modes are outlines only; the benchmark distribution is said to be one."""
    from dock_helpers import Evident, sampled

    from napari_ambiseg.result import FINDING_TOOLTIP

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64), np.float32), name="ct")
    sampler, gallery = sampled(viewer, qtbot, Evident([0.78], groups=(12, 4), radii=(5, 9)))
    assert gallery.answer.text() == "<b>Experts would outline a finding here: 78%</b>"
    assert gallery.answer.toolTip() == FINDING_TOOLTIP and not gallery.answer.isHidden()
    assert [h.text()[3:15] for h in gallery.headers] == ["mode 1 - 12 ", "mode 2 - 4 o"]
    sampler.include_empty.setChecked(True)
    with qtbot.waitSignal(sampler.done, timeout=30_000):
        sampler.run()
    assert "78% (benchmark distribution" in gallery.answer.text()


def test_adopt_mode_into_new_labels_with_source_geometry_and_undo(make_napari_viewer, qtbot):
    viewer, src, _, gallery = setup(make_napari_viewer, qtbot)
    labels = gallery.adopt_mode(2)  # the radius-9 disks
    assert labels is not None and labels.name == "ct labels"
    np.testing.assert_allclose(labels.scale, SCALE)
    np.testing.assert_allclose(labels.translate, TRANSLATE)
    assert labels.data.shape == (64, 64)
    np.testing.assert_array_equal(labels.data > 0, disk((64, 64), 9, CENTER))
    labels.undo()
    assert labels.data.max() == 0
    labels.redo()
    assert (labels.data > 0).sum() == disk((64, 64), 9, CENTER).sum()


def test_adopt_consensus_threshold(make_napari_viewer, qtbot):
    viewer, src, _, gallery = setup(make_napari_viewer, qtbot)
    small, big = disk((64, 64), 5, CENTER), disk((64, 64), 9, CENTER)
    gallery.threshold.setValue(0.5)  # the small disk is in 14 of 16 samples, the ring in 5
    labels = gallery.adopt_consensus()
    np.testing.assert_array_equal(labels.data > 0, small)
    gallery.target.set_value("new")
    np.testing.assert_array_equal(gallery.adopt_consensus(0.25).data > 0, big)
    n_layers = len(viewer.layers)
    assert gallery.adopt_consensus(0.95) is None  # nobody agrees that much: nothing adopted
    assert len(viewer.layers) == n_layers and "nothing" in gallery.status.text()


def test_adopt_into_painted_layer_keeps_paint_after_confirmation(make_napari_viewer, qtbot,
                                                                 monkeypatch):
    viewer, src, _, gallery = setup(make_napari_viewer, qtbot)
    painted = np.zeros((64, 64), np.uint16)
    painted[20:31, 20:60] = 3  # overlaps the top half of the disk
    target = viewer.add_labels(painted.copy(), name="annotations", scale=SCALE,
                               translate=TRANSLATE)
    gallery.target.set_value(target)
    mode = disk((64, 64), 9, CENTER)

    monkeypatch.setattr(GalleryWidget, "confirm", lambda self, t: False)
    assert gallery.adopt_mode(2) is None
    np.testing.assert_array_equal(target.data, painted)  # declined: untouched

    asked = []
    monkeypatch.setattr(GalleryWidget, "confirm", lambda self, t: asked.append(t) or True)
    assert gallery.adopt_mode(2) is target and asked == [target]
    np.testing.assert_array_equal(target.data[painted > 0], 3)  # paint kept
    np.testing.assert_array_equal(target.data[mode & (painted == 0)], 4)  # new label 4
    assert (target.data == 4).sum() == (mode & (painted == 0)).sum()
    assert "painted pixels kept" in gallery.status.text()
    target.undo()
    np.testing.assert_array_equal(target.data, painted)


def test_adopt_from_a_volume_lands_on_the_right_slice(make_napari_viewer, qtbot):
    viewer, src, sampler, gallery = setup(make_napari_viewer, qtbot, volume=True)
    assert sampler.last_outputs.z0 == 3
    header = gallery.headers[0].text()  # one slice of a volume is measured as a plane
    assert "mm^2" in header and "one slice" in header
    labels = gallery.adopt_sample(0)
    assert labels.data.shape == (5, 64, 64)
    np.testing.assert_allclose(labels.scale, (2.0, *SCALE))
    assert [int(labels.data[z].any()) for z in range(5)] == [0, 0, 0, 1, 0]
