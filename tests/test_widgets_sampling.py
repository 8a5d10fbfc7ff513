"""Sampling dock end to end in a real viewer (pytest-qt, under Xvfb)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from dock_helpers import Evident

from napari_ambiseg.errors import Cancelled, WeightsError
from napari_ambiseg.testing import ScriptedSegmenter, tiny_config, tiny_segmenter
from napari_ambiseg.widgets import layers as L
from napari_ambiseg.widgets.prompts import current_slice
from napari_ambiseg.widgets.sampling import SamplingWidget, go_to_slice

pytestmark = pytest.mark.gui

SCALE, TRANSLATE = (0.7, 0.5), (12.0, -30.0)


def ct_like(shape=(64, 64)) -> np.ndarray:
    """A CT-like slice in HU: air around a soft-tissue disk with a small dense nodule."""
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    img = np.full(shape, -1000.0, np.float32)
    img[(yy - shape[0] / 2) ** 2 + (xx - shape[1] / 2) ** 2 < (shape[0] / 2.5) ** 2] = -700
    img[(yy - 30) ** 2 + (xx - 34) ** 2 < 16] = 40
    return img


def dock(viewer, segmenter=None, n=16, steps=3) -> SamplingWidget:
    w = SamplingWidget(viewer)
    viewer.window.add_dock_widget(w, name="AmbiSeg sampling")
    if segmenter is not None:
        w.set_segmenter(segmenter, "test model")
    w.n.setValue(n)
    w.steps.setValue(steps)
    return w


def run(qtbot, w: SamplingWidget, timeout=60_000):
    with qtbot.waitSignal(w.done, timeout=timeout):
        assert w.run() is not None
    return w.last_outputs


def outputs(viewer, source):
    return L.outputs_of(viewer.layers, source)


def test_plugin_manifest_opens_the_docks(make_napari_viewer):
    viewer = make_napari_viewer()
    for name, cls in (("Sample segmentations", "SamplingWidget"), ("Gallery", "GalleryWidget"),
                      ("Training", "TrainingWidget")):
        _, widget = viewer.window.add_plugin_dock_widget("napari-ambiseg", name)
        assert type(widget).__name__ == cls


def test_end_to_end_tiny_model_outputs_aligned_with_scaled_source(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    src = viewer.add_image(ct_like(), scale=SCALE, translate=TRANSLATE, name="ct")
    w = dock(viewer, tiny_segmenter(), n=4, steps=2)
    out = run(qtbot, w)
    assert w.last_error is None and out is not None
    got = outputs(viewer, src)
    assert set(got) == {"samples", "agreement", "uncertainty"}
    samples, agreement, unc = got["samples"], got["agreement"], got["uncertainty"]
    # (sample, slice, y, x): a 2D result's samples get a one-slice axis, so the sample axis
    # is never a volume's slice axis (tests/test_widgets_mixed.py)
    assert samples.data.shape == (4, 1, 64, 64) and L.is_flat(samples)
    np.testing.assert_allclose(samples.scale, (1, L.FLAT_SCALE, *SCALE))
    np.testing.assert_allclose(samples.translate, (0, 0, *TRANSLATE))
    for layer in (agreement, unc):
        assert layer.data.shape == (64, 64)
        np.testing.assert_allclose(layer.scale, SCALE)
        np.testing.assert_allclose(layer.translate, TRANSLATE)
    assert samples.contour == 1 and samples.axis_labels == ("sample", "z", "y", "x")
    assert tuple(agreement.contrast_limits) == (0.0, 1.0) and agreement.data.max() <= 1.0
    assert not unc.visible
    np.testing.assert_allclose(agreement.data, L.sample_masks(samples).mean(0), atol=1e-6)
    # stacking: source, uncertainty, agreement, samples (contours on top)
    names = [la.name for la in viewer.layers]
    assert names == ["ct", "ct uncertainty", "ct agreement", "ct samples"]


def test_click_prompt_is_mapped_through_the_source_geometry(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    src = viewer.add_image(ct_like(), scale=(2.0, 0.5), translate=(10.0, -4.0), name="ct")
    seg = ScriptedSegmenter()
    w = dock(viewer, seg)
    world = (10.0 + 2.0 * 20, -4.0 + 0.5 * 41)  # pixel (20, 41)
    with qtbot.waitSignal(w.done, timeout=30_000):
        w.sample_at(world)
    assert seg.calls[-1]["center"] == (20.0, 41.0)
    assert seg.calls[-1]["spacing"] == (2.0, 0.5)  # non-unit scale = pixel spacing
    # the representative of the largest mode is a disk centred on the click, in world space
    samples = outputs(viewer, src)["samples"]
    k = w.last_outputs.modes[0].representative
    centre = np.argwhere(L.sample_masks(samples)[k]).mean(0)
    np.testing.assert_allclose(samples.data_to_world((k, 0, *centre))[2:], world, atol=1e-6)


class FakeMouse:
    def __init__(self, position):
        self.button, self.modifiers, self.position, self.type = 1, (), position, "mouse_press"


def test_click_samples_but_drag_pans(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(ct_like(), name="ct")
    seg = ScriptedSegmenter()
    w = dock(viewer, seg)
    w.click_to_sample.setChecked(True)
    assert w._on_mouse in viewer.mouse_drag_callbacks

    drag = FakeMouse((10.0, 12.0))
    gen = w._on_mouse(viewer, drag)
    next(gen)
    drag.type = "mouse_move"
    next(gen)
    drag.type = "mouse_release"
    with pytest.raises(StopIteration):
        next(gen)
    assert w.worker is None and seg.calls == []  # a drag pans, it does not sample

    click = FakeMouse((10.0, 12.0))
    gen = w._on_mouse(viewer, click)
    next(gen)
    click.type = "mouse_release"
    with qtbot.waitSignal(w.done, timeout=30_000), pytest.raises(StopIteration):
        next(gen)
    assert seg.calls[-1]["center"] == (10.0, 12.0)
    w.click_to_sample.setChecked(False)
    assert w._on_mouse not in viewer.mouse_drag_callbacks


def test_points_and_shapes_prompts(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(ct_like(), scale=(2.0, 2.0), name="ct")
    pts = viewer.add_points([[10.0, 20.0], [40.0, 60.0]], name="pts")  # world coords
    shapes = viewer.add_shapes([np.array([[20.0, 30.0], [40.0, 70.0]])],
                               shape_type="rectangle", name="box")
    seg = ScriptedSegmenter()
    w = dock(viewer, seg)
    w.where.set_value(pts)
    run(qtbot, w)
    assert seg.calls[-1]["center"] == (20.0, 30.0)  # last point, in pixels
    w.where.set_value(shapes)
    run(qtbot, w)
    assert seg.calls[-1]["box"] == (10.5, 15.5, 20.5, 35.5)  # pixel edges
    # the reader's metadata wins over the layer scale for spacing and modality
    viewer.layers["ct"].metadata["ambiseg"] = {"spacing": [0.6, 0.6], "modality": "CT"}
    run(qtbot, w)
    assert seg.calls[-1]["spacing"] == (0.6, 0.6) and seg.calls[-1]["modality"] == "CT"


def test_rerun_replaces_outputs(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    src = viewer.add_image(ct_like(), name="ct")
    other = viewer.add_image(ct_like(), name="other")
    w = dock(viewer, ScriptedSegmenter())
    w.image.set_value(src)
    run(qtbot, w)
    first = outputs(viewer, src)
    first["agreement"].opacity = 0.3
    w.n.setValue(8)
    run(qtbot, w)
    second = outputs(viewer, src)
    assert len(viewer.layers) == 5  # 2 images + 3 outputs, not 8
    assert all(second[k] is first[k] for k in first)  # updated in place: no layer churn
    assert second["samples"].data.shape[0] == 8
    assert L.output_info(second["samples"])["n"] == 8
    assert second["agreement"].opacity == 0.3  # display choices survive a re-run
    w.image.set_value(other)
    run(qtbot, w)
    assert len(viewer.layers) == 8 and set(outputs(viewer, other)) == set(first)
    # an output the user deleted comes back on the next run
    viewer.layers.remove(second["uncertainty"])
    w.image.set_value(src)
    run(qtbot, w)
    assert set(outputs(viewer, src)) == set(first) and len(viewer.layers) == 8
    # renaming the source does not orphan its outputs
    src.name = "renamed"
    w.image.set_value(src)
    run(qtbot, w)
    assert len(viewer.layers) == 8 and "renamed samples" in viewer.layers


class CountingSegmenter(ScriptedSegmenter):
    """A scripted segmenter that counts the denoising steps it has taken (`steps_done`)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.steps_done = 0

    def sample(self, *args, progress=None, **kw):
        def count(i, n):
            self.steps_done += 1
            if progress is not None:
                progress(i, n)

        return super().sample(*args, progress=count, **kw)


def assert_model_stopped(qtbot, seg: CountingSegmenter, steps: int) -> None:
    """The helper thread running the model ends (engine.stream's "ambiseg-work"), part-way:
    it took fewer steps than asked."""
    def helper_ended() -> bool:
        return not any(t.name == "ambiseg-work" and t.is_alive() for t in threading.enumerate())

    qtbot.waitUntil(helper_ended, timeout=5_000)  # the uncancelled run would take 5 s more
    assert 0 < seg.steps_done < steps


def test_cancel_stops_the_model(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    src = viewer.add_image(ct_like(), name="ct")
    seg = CountingSegmenter(step_s=0.05)
    w = dock(viewer, seg, steps=100)  # ~5 s if not cancelled
    with qtbot.waitSignal(w.done, timeout=10_000):
        w.run()
        qtbot.waitUntil(lambda: seg.steps_done > 0, timeout=5_000)
        assert w.worker is not None
        w.cancel_button.click()
    assert isinstance(w.last_error, Cancelled)
    assert_model_stopped(qtbot, seg, 100)
    assert outputs(viewer, src) == {}
    assert w.run_button.isEnabled() and not w.cancel_button.isEnabled()


def test_napari_task_cancel_stops_the_helper_thread(make_napari_viewer, qtbot):
    """The activity panel's cancel calls worker.quit(): the model must stop too."""
    viewer = make_napari_viewer()
    viewer.add_image(ct_like(), name="ct")
    seg = CountingSegmenter(step_s=0.05)
    w = dock(viewer, seg, steps=100)
    with qtbot.waitSignal(w.done, timeout=10_000):
        w.run()
        qtbot.waitUntil(lambda: seg.steps_done > 0, timeout=5_000)
        w.worker.quit()
    assert isinstance(w.last_error, Cancelled) and w._stop.is_set()
    assert_model_stopped(qtbot, seg, 100)
    assert len(viewer.layers) == 1


def test_volume_slices_range_and_follow(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    vol = np.stack([ct_like((48, 48))] * 6)
    src = viewer.add_image(vol, scale=(3.0, 1.0, 1.0), translate=(-6.0, 0, 0), name="vol")
    seg = ScriptedSegmenter()
    w = dock(viewer, seg)
    viewer.dims.set_point(0, -6.0 + 3.0 * 2)  # slice 2
    out = run(qtbot, w)
    samples = outputs(viewer, src)["samples"]
    assert samples.data.shape == (16, 1, 48, 48) and out.z0 == 2
    np.testing.assert_allclose(samples.translate, (0, -6.0 + 3.0 * 2, 0, 0))
    np.testing.assert_allclose(outputs(viewer, src)["agreement"].translate, (0.0, 0, 0))

    w.slices.setCurrentIndex(1)  # slice range
    w.z_from.setValue(1)
    w.z_to.setValue(3)
    out = run(qtbot, w)
    assert outputs(viewer, src)["samples"].data.shape == (16, 3, 48, 48) and out.z0 == 1
    assert out.key == 1  # the current slice (2) is the gallery's slice

    w.slices.setCurrentIndex(2)  # follow the finding up and down
    out = run(qtbot, w)
    assert out.masks.shape == (16, 6, 48, 48) and out.z0 == 0  # the disk is on every slice
    assert len(viewer.layers) == 4


def test_missing_weights_is_a_message_not_a_crash(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    viewer.add_image(ct_like(), name="ct")
    w = dock(viewer)
    w.set_weights(str(tmp_path / "nothing.safetensors"))
    assert "not found" in w.model_status.text()
    run(qtbot, w)
    assert isinstance(w.last_error, WeightsError)
    assert "not found" in w.status.text()
    assert len(viewer.layers) == 1


def test_no_image_is_a_message(make_napari_viewer):
    viewer = make_napari_viewer()
    w = dock(viewer, ScriptedSegmenter())
    assert w.run() is None and "Open an image" in str(w.last_error)


def test_plugin_settings_are_the_defaults(make_napari_viewer, plugin_settings, npe2pm):
    """napari's `plugin_settings` fixture keeps this off the real config folder."""
    from napari.settings import get_plugin_settings
    from npe2 import PluginManifest

    from napari_ambiseg.weights_io import bundled_weights_path, load_config

    npe2pm.register(PluginManifest.from_distribution("napari-ambiseg"))
    section = get_plugin_settings("napari-ambiseg").ambiseg
    assert (section.n_samples, section.steps) == (0, 0)  # no override: the model's
    bundled = load_config(bundled_weights_path())[0]
    w = SamplingWidget(make_napari_viewer())
    assert (w.n.value(), w.steps.value()) == (bundled.n_samples, bundled.steps)
    section.n_samples, section.steps, section.device = 12, 25, "cpu"
    w = SamplingWidget(make_napari_viewer())
    w.set_segmenter(counted(8, 20), "steps-20 model")  # the user's settings win over the model
    assert (w.n.value(), w.steps.value(), w.device.currentText()) == (12, 25, "cpu")


def counted(n_samples: int, steps: int) -> ScriptedSegmenter:
    """A scripted segmenter whose model config has these sampling defaults."""
    seg = ScriptedSegmenter()
    seg.cfg = tiny_config(n_samples=n_samples, steps=steps)
    return seg


def test_n_and_steps_are_the_models_unless_the_user_gave_them(make_napari_viewer, qtbot,
                                                               plugin_settings, npe2pm):
    """A model shipped with steps=20, n_samples=8 is sampled with 20 steps and 8 samples;
    another model re-seeds the spin boxes; a value typed in the dock wins and is kept."""
    from npe2 import PluginManifest

    npe2pm.register(PluginManifest.from_distribution("napari-ambiseg"))  # no overrides set
    viewer = make_napari_viewer()
    viewer.add_image(ct_like(), name="ct")
    w = SamplingWidget(viewer)
    first, second = counted(8, 20), counted(4, 5)
    w.set_segmenter(first, "steps-20 model")
    assert (w.n.value(), w.steps.value()) == (8, 20)
    run(qtbot, w)
    assert (first.calls[-1]["n"], first.calls[-1]["steps"]) == (8, 20)
    assert w.last_outputs.n == 8 and "model's default: 20" in w.steps.toolTip()
    w.set_segmenter(second, "steps-5 model")
    assert (w.n.value(), w.steps.value()) == (4, 5)
    w.steps.setValue(7)  # the user's choice
    w.set_segmenter(first, "steps-20 model")
    assert (w.n.value(), w.steps.value()) == (8, 7)
    run(qtbot, w)
    assert (first.calls[-1]["n"], first.calls[-1]["steps"]) == (8, 7)


def test_ct_window_presets_are_one_click(make_napari_viewer):
    viewer = make_napari_viewer()
    src = viewer.add_image(ct_like(), name="ct")
    w = dock(viewer)
    w.window.textActivated.emit("lung")
    assert tuple(src.contrast_limits) == (-1350.0, 150.0)
    w.window.textActivated.emit("bone")
    assert tuple(src.contrast_limits) == (-500.0, 1300.0)
    assert "bone" in w.status.text()


def test_a_refused_request_replaces_the_last_runs_status(make_napari_viewer, qtbot):
    """Issue 12 item 5: the status shows why a request was refused, not the last result."""
    viewer = make_napari_viewer()
    src = viewer.add_image(ct_like(), name="ct")
    w = dock(viewer, ScriptedSegmenter())
    run(qtbot, w)
    assert "16 samples" in w.status.text()

    empty = viewer.add_points(name="no points")
    w.where.set_value(empty)
    assert w.run() is None
    assert w.status.text() == "Not started: Points layer 'no points' has no points: add one " \
                              "on the image."
    w.where.set_value("centre")
    run(qtbot, w)
    assert "16 samples" in w.status.text()

    movie = viewer.add_image(np.zeros((2, 3, 32, 32), np.float32), name="4d")
    w.image.set_value(movie)
    assert w.run() is None
    assert w.status.text().startswith("Not started: '4d' has 4 spatial axes")
    assert "16 samples" not in w.status.text()

    viewer.layers.remove(movie)
    viewer.layers.remove(src)
    viewer.layers.remove(empty)
    assert w.run() is None and w.status.text().startswith("Not started: Open an image first")


def test_two_answers_given_a_finding_unless_the_benchmark_distribution_is_asked(
        make_napari_viewer, qtbot):
    """Issue 23: by default the samples are drawn given a finding and the status gives the
    finding probability; the tick box asks for the benchmark distribution instead."""
    viewer = make_napari_viewer()
    viewer.add_image(ct_like(), name="ct")
    seg = Evident([0.78])
    w = dock(viewer, seg)
    assert not w.include_empty.isChecked() and w.request()[1].given_finding
    out = run(qtbot, w)
    assert seg.given[-1] is True and out.conditional
    assert "Experts would outline a finding here: 78%." in w.status.text()
    assert "2 outline modes, the largest 9 of 16; no finding: 2 of 16." in w.status.text()
    w.include_empty.setChecked(True)
    out = run(qtbot, w)
    assert seg.given[-1] is False and not out.conditional
    assert "78% (benchmark distribution" in w.status.text()


def test_a_slab_starts_where_the_finding_is_most_evident(make_napari_viewer, qtbot):
    """Issue 23: a slice range is not forced to start on the current slice; the dock says
    where it started and shows that slice."""
    viewer = make_napari_viewer()
    src = viewer.add_image(np.stack([ct_like((48, 48))] * 8), scale=(2.0, 1, 1), name="vol")
    seg = Evident([0.1, 0.2, 0.3, 0.5, 0.9, 0.6, 0.2, 0.1])
    w = dock(viewer, seg)
    go_to_slice(viewer, src, 2)
    w.slices.setCurrentIndex(1)  # slice range
    w.z_from.setValue(1)
    w.z_to.setValue(6)
    assert w.request()[1].start is None  # the core chooses
    out = run(qtbot, w)
    assert (out.z0, out.start, out.finding_probability) == (1, 4, pytest.approx(0.9))
    assert current_slice(viewer, src) == 4  # the viewer shows the slice it started from
    text = w.status.text()
    assert "on slices 1-6 in " in text
    assert " s, started on slice 4, where the finding is most evident. " in text
    assert "here: 90%" in text


def test_an_image_off_the_slider_is_shown_at_its_middle_slice(make_napari_viewer, qtbot):
    """Issue 27.7: a second image that the z slider is not on (slider at 12.5 mm, the image
    spans 0-8.75 mm) is shown at its middle slice when chosen; moved off again, Sample says
    why it refuses and offers the move in one click."""
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((20, 48, 48), np.float32), scale=(2.5, 1, 1), name="first")
    w = dock(viewer, ScriptedSegmenter())
    viewer.dims.set_point(0, 12.5)
    second = viewer.add_image(np.stack([ct_like((48, 48))] * 8), scale=(1.25, 1, 1),
                              name="second")
    w.image.set_value(second)
    assert current_slice(viewer, second) == 4
    assert "'second' at its middle slice (4)" in w.status.text()
    assert run(qtbot, w).z0 == 4
    viewer.dims.set_point(viewer.dims.ndim - 3, 30.0)  # z (the samples added an axis)
    assert w.run() is None and "outside 'second'" in w.status.text()
    assert w.go_button.isVisibleTo(w) and w.go_button.text() == "Go to slice 4 of 'second'"
    w.go_button.click()
    assert current_slice(viewer, second) == 4 and not w.go_button.isVisibleTo(w)
    assert run(qtbot, w).z0 == 4
