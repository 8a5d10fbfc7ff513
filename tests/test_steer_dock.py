"""Steering with clicks in the sampling dock (#25): the 'constraints' Points layer, redraws of
the samples, agreement and gallery, undo, bad clicks, painted labels left alone (pytest-qt)."""

from __future__ import annotations

import numpy as np
import pytest
from dock_helpers import sampled

from napari_ambiseg.errors import Cancelled
from napari_ambiseg.testing import ScriptedSegmenter, _result, disk, tiny_segmenter
from napari_ambiseg.widgets import layers as L
from napari_ambiseg.widgets import steer as S
from napari_ambiseg.widgets.sampling import SLICE_MODES, go_to_slice

pytestmark = pytest.mark.gui

SCALE, TRANSLATE = (0.7, 0.5), (12.0, -30.0)
CENTRE = (32, 32)
RIM = (32, 39)  # inside the large disk (radius 9) only
OUTSIDE = (32, 60)  # in no sample


def image(shape=(64, 64)) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return np.where((yy - 32) ** 2 + (xx - 32) ** 2 < 81, 40.0, -800.0).astype(np.float32)


class Steerable(ScriptedSegmenter):
    """The scripted disks (small 9, large 5, empty 2 of 16), steered as a model would be: a
    sample missing an include takes the large disk, a sample over an exclude the small one
    (or nothing); the last sample ignores the clicks. Records each call's constraints."""

    def sample(self, image, *args, constraints=None, **kwargs):
        r = super().sample(image, *args, **kwargs)
        self.calls[-1]["constraints"] = constraints
        if not constraints:
            return r
        shape, centre = r.masks.shape[1:], self.calls[-1]["center"]
        masks = r.masks.copy()
        for k in range(len(masks) - 1):
            for p in constraints.include:
                if not masks[k][p]:
                    masks[k] = disk(shape, 9, centre)
            for p in constraints.exclude:
                if masks[k][p]:
                    small = disk(shape, 5, centre)
                    masks[k] = small if not small[p] else np.zeros(shape, bool)
        out = _result(masks, r.bounds, r.steps, r.seed)
        out.steered(constraints, constraints.satisfied(masks))
        return out


def settle(qtbot, sampler, timeout=30_000) -> None:
    """Wait until the clicks' last change is committed and drawn (or refused)."""
    qtbot.waitUntil(lambda: not sampler.steer.pending() and sampler.worker is None,
                    timeout=timeout)


def world_of(source, pixel) -> np.ndarray:
    return np.asarray(source.data_to_world(np.asarray(pixel, float)))


def click(sampler, layer, source, pixel) -> None:
    """What a click in napari's add mode does: a point at the clicked world position."""
    layer.add(layer.world_to_data(world_of(source, pixel)))


def masks_of(viewer, source) -> np.ndarray:
    return L.sample_masks(L.outputs_of(viewer.layers, source)["samples"]).copy()


def headers(gallery) -> list[str]:
    return [h.text() for h in gallery.headers]


@pytest.fixture
def steered(make_napari_viewer, qtbot):
    """A sampled 2D image on a scaled, shifted grid with both docks: (viewer, source,
    sampling dock, gallery, segmenter)."""
    viewer = make_napari_viewer()
    source = viewer.add_image(image(), scale=SCALE, translate=TRANSLATE, name="ct")
    seg = Steerable()
    sampler, gallery = sampled(viewer, qtbot, seg)
    return viewer, source, sampler, gallery, seg


def test_the_steer_row_waits_for_a_result(make_napari_viewer):
    from napari_ambiseg.widgets.sampling import SamplingWidget

    viewer = make_napari_viewer()
    viewer.add_image(image(), name="ct")
    assert not SamplingWidget(viewer).steer.isEnabled()


def test_include_exclude_redraw_and_undo_restores(steered, qtbot):
    viewer, source, sampler, gallery, seg = steered
    bar = sampler.steer
    assert bar.isEnabled() and S.constraints_layer(viewer, source) is None
    before, before_headers = masks_of(viewer, source), headers(gallery)
    before_agreement = L.outputs_of(viewer.layers, source)["agreement"].data.copy()

    bar.buttons[S.INCLUDE].click()  # the Include toggle: napari's add mode on 'constraints'
    layer = S.constraints_layer(viewer, source)
    assert layer.name == "constraints" and viewer.layers.selection.active is layer
    assert layer.mode == "add" and bar.buttons[S.INCLUDE].isChecked()
    np.testing.assert_allclose(layer.scale, SCALE)  # on the image's grid
    np.testing.assert_allclose(layer.translate, TRANSLATE)
    assert layer not in sampler.where.candidates()  # not offered as a prompt

    click(sampler, layer, source, RIM)
    settle(qtbot, sampler)
    assert seg.calls[-1]["constraints"].include == (RIM,)  # the request carries the click
    steered_masks = masks_of(viewer, source)
    assert not np.array_equal(steered_masks, before)
    assert steered_masks[:15, RIM[0], RIM[1]].all()
    assert not np.array_equal(L.outputs_of(viewer.layers, source)["agreement"].data,
                              before_agreement)
    assert headers(gallery) != before_headers  # the gallery follows
    assert "15 of 16 samples satisfy the click (1 include)" in sampler.status.text()
    assert viewer.layers.selection.active is layer and layer.mode == "add"  # keep clicking

    bar.buttons[S.EXCLUDE].click()
    assert bar.buttons[S.EXCLUDE].isChecked() and not bar.buttons[S.INCLUDE].isChecked()
    click(sampler, layer, source, OUTSIDE)
    settle(qtbot, sampler)
    assert S.kinds_of(layer) == [S.INCLUDE, S.EXCLUDE]
    np.testing.assert_allclose(layer.face_color[:, :3], [[0.18, 0.91, 0.18], [1, 0.19, 0.19]],
                               atol=0.01)  # green include, red exclude
    assert seg.calls[-1]["constraints"].exclude == (OUTSIDE,)
    assert sampler.status.text().startswith(
        "15 of 16 samples satisfy the 2 clicks (1 include, 1 exclude).")
    assert sampler.last_outputs.constraints_satisfied == pytest.approx(15 / 16)

    calls = len(seg.calls)
    assert bar.undo_button.isEnabled()
    bar.undo_button.click()  # back to the include alone: drawn before, shown at once
    settle(qtbot, sampler)
    assert len(layer.data) == 1 and len(seg.calls) == calls
    np.testing.assert_array_equal(masks_of(viewer, source), steered_masks)
    assert "As drawn before" in sampler.status.text()
    bar.undo()  # no clicks: the samples of before
    settle(qtbot, sampler)
    assert len(layer.data) == 0
    np.testing.assert_array_equal(masks_of(viewer, source), before)
    np.testing.assert_array_equal(L.outputs_of(viewer.layers, source)["agreement"].data,
                                  before_agreement)
    assert headers(gallery) == before_headers and "satisfy" not in sampler.status.text()

    keys = viewer.window._qt_viewer.canvas._key_map_handler  # Ctrl+Shift+Z on the layer
    keys.press_key("Control-Shift-Z")
    keys.release_key("Control-Shift-Z")
    settle(qtbot, sampler)
    assert len(layer.data) == 1
    np.testing.assert_array_equal(masks_of(viewer, source), steered_masks)
    keys.press_key("Control-Z")
    keys.release_key("Control-Z")
    settle(qtbot, sampler)
    np.testing.assert_array_equal(masks_of(viewer, source), before)

    bar.buttons[S.EXCLUDE].click()  # clicked again: stop adding
    assert layer.mode == "pan_zoom" and not any(b.isChecked() for b in bar.buttons.values())


def test_moving_or_deleting_points_steers_and_a_click_in_add_mode_lands_on_its_pixel(
        steered, qtbot):
    from napari.utils.interactions import mouse_press_callbacks, mouse_release_callbacks

    viewer, source, sampler, gallery, seg = steered
    before = masks_of(viewer, source)
    sampler.steer.choose(S.INCLUDE)
    layer = S.constraints_layer(viewer, source)
    world = np.array(viewer.dims.point, dtype=float)
    world[-2:] = world_of(source, (RIM[0] + 0.3, RIM[1] - 0.4))  # inside the pixel RIM
    for callbacks, kind in ((mouse_press_callbacks, "mouse_press"),
                            (mouse_release_callbacks, "mouse_release")):
        callbacks(layer, _Mouse(kind, world))
    settle(qtbot, sampler)
    assert seg.calls[-1]["constraints"].include == (RIM,)

    layer.data = np.array([layer.world_to_data(world_of(source, (32, 36)))])  # moved
    settle(qtbot, sampler)
    assert seg.calls[-1]["constraints"].include == ((32, 36),)
    layer.selected_data = {0}
    layer.remove_selected()  # deleted: the result without clicks, drawn before
    settle(qtbot, sampler)
    np.testing.assert_array_equal(masks_of(viewer, source), before)


class _Mouse:
    """A mouse event as napari's layer callbacks read it."""

    def __init__(self, kind, position):
        self.type, self.position, self.pos = kind, tuple(position), np.zeros(2)
        self.modifiers, self.button, self.handled, self.is_dragging = (), 1, False, False
        self.view_direction, self.dims_displayed = None, [len(position) - 2,
                                                          len(position) - 1]


def test_the_real_core_same_seed_brings_back_the_same_masks(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    source = viewer.add_image(image(), name="ct")
    sampler, _ = sampled(viewer, qtbot, tiny_segmenter(), n=4, steps=2)
    before = masks_of(viewer, source)
    sampler.steer.choose(S.INCLUDE)
    layer = S.constraints_layer(viewer, source)
    click(sampler, layer, source, CENTRE)
    settle(qtbot, sampler)
    out = sampler.last_outputs
    assert out.constraints.include == (CENTRE,) and out.satisfies.shape == (4,)
    assert L.outputs_of(viewer.layers, source)["samples"].metadata[
        "ambiseg_output"]["constraints"]["include"] == [list(CENTRE)]
    sampler._drawn.clear()  # no result kept: removing the clicks draws again, same seed
    viewer.layers.remove(layer)  # the clicks' layer closed: as if every point was deleted
    settle(qtbot, sampler)
    assert sampler.last_outputs is not out and sampler.last_outputs.constraints is None
    np.testing.assert_array_equal(masks_of(viewer, source), before)


def test_steering_never_touches_painted_labels(steered, qtbot):
    viewer, source, sampler, gallery, seg = steered
    labels = gallery.adopt_mode(1)
    labels.data_setitem((np.array([5, 6]), np.array([7, 7])), 3)  # painted by hand
    data, meta = labels.data.copy(), dict(labels.metadata)
    layers = list(viewer.layers)
    sampler.steer.choose(S.INCLUDE)
    layer = S.constraints_layer(viewer, source)
    click(sampler, layer, source, RIM)
    sampler.steer.choose(S.EXCLUDE)
    click(sampler, layer, source, (5, 7))  # on a painted pixel
    settle(qtbot, sampler)
    assert len(seg.calls[-1]["constraints"].exclude) == 1
    sampler.steer.clear()
    settle(qtbot, sampler)
    np.testing.assert_array_equal(labels.data, data)
    assert labels.metadata == meta and labels in viewer.layers
    assert [la for la in viewer.layers if la not in layers] == [layer]  # only the clicks' layer


def test_a_bad_click_is_the_cores_message_and_the_viewer_keeps_working(steered, qtbot):
    viewer, source, sampler, gallery, seg = steered
    sampler.steer.choose(S.INCLUDE)
    layer = S.constraints_layer(viewer, source)
    click(sampler, layer, source, RIM)
    settle(qtbot, sampler)
    shown, calls = masks_of(viewer, source), len(seg.calls)

    sampler.steer.choose(S.EXCLUDE)
    click(sampler, layer, source, (RIM[0] + 0.2, RIM[1]))  # the include's pixel
    settle(qtbot, sampler)
    assert sampler.status.text() == f"Not steered: include and exclude on the same pixel {RIM}"
    assert len(seg.calls) == calls  # nothing drawn; the samples stay
    np.testing.assert_array_equal(masks_of(viewer, source), shown)
    assert sampler.run() is None and sampler.status.text().startswith("Not started: include")

    sampler.steer.undo()
    click(sampler, layer, source, (70, 3))  # off the image
    settle(qtbot, sampler)
    assert "exclude point (70, 3) is outside the image (rows 0..63, columns 0..63)" in \
        sampler.status.text()
    sampler.steer.undo()  # the viewer and the dock keep working
    settle(qtbot, sampler)
    assert "satisfy the click" in sampler.status.text()
    np.testing.assert_array_equal(masks_of(viewer, source), shown)


def test_a_new_change_stops_the_run_in_flight(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    source = viewer.add_image(image(), name="ct")
    seg = Steerable(step_s=0.02)
    sampler, _ = sampled(viewer, qtbot, seg, steps=50)
    sampler.steer.choose(S.INCLUDE)
    layer = S.constraints_layer(viewer, source)
    errors = []
    click(sampler, layer, source, RIM)
    qtbot.waitUntil(lambda: sampler.worker is not None, timeout=10_000)
    sampler.worker.errored.connect(errors.append)
    click(sampler, layer, source, (32, 38))
    settle(qtbot, sampler)
    assert sampler.last_outputs.constraints.include == (RIM, (32, 38))
    assert all(isinstance(e, Cancelled) for e in errors)
    assert "Cancelled" not in sampler.status.text() and sampler.last_error is None


def test_a_volume_click_lands_on_the_current_slice(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    volume = np.stack([image()] * 6)
    source = viewer.add_image(volume, scale=(2.5, *SCALE), name="vol")
    go_to_slice(viewer, source, 3)
    seg = Steerable()
    from napari_ambiseg.widgets.gallery import GalleryWidget
    from napari_ambiseg.widgets.sampling import SamplingWidget

    sampler, _ = SamplingWidget(viewer), GalleryWidget(viewer)
    sampler.set_segmenter(seg, "stand-in")
    sampler.slices.setCurrentIndex([k for _, k in SLICE_MODES].index("range"))
    sampler.z_from.setValue(2)
    sampler.z_to.setValue(4)
    with qtbot.waitSignal(sampler.done, timeout=30_000):
        sampler.run()
    go_to_slice(viewer, source, 3)
    sampler.steer.choose(S.INCLUDE)
    layer = S.constraints_layer(viewer, source)
    assert layer.ndim == 3
    world = np.array(viewer.dims.point, dtype=float)
    world[-2:] = world_of(source, (3, *RIM))[-2:]
    layer.add(layer.world_to_data(world[-3:]))
    settle(qtbot, sampler)
    assert sampler.last_outputs.constraints.include == ((3, *RIM),)
    assert any(c.get("constraints") and c["constraints"].include == (RIM,)
               for c in seg.calls)  # slice 3's draw was given its click
    assert "satisfy the click" in sampler.status.text()
    assert round(viewer.dims.point[-3] / 2.5) == 3  # the viewer stays where it was clicked

    go_to_slice(viewer, source, 0)  # a click on a slice that was not sampled
    world = np.array(viewer.dims.point, dtype=float)
    world[-2:] = world_of(source, (0, *RIM))[-2:]
    sampler.steer.choose(S.EXCLUDE)
    layer.add(layer.world_to_data(world[-3:]))
    settle(qtbot, sampler)
    assert "outside the sampled slices 2..4" in sampler.status.text()
    assert sampler.status.text().startswith("Not steered:")


def test_the_dock_from_the_plugins_menu_steers(make_napari_viewer, qtbot):
    """Docks opened from the Plugins menu see the viewer through napari's PublicOnlyProxy."""
    viewer = make_napari_viewer()
    source = viewer.add_image(image(), name="ct")
    _, sampler = viewer.window.add_plugin_dock_widget("napari-ambiseg", "Sample segmentations")
    seg = Steerable()
    sampler.set_segmenter(seg, "stand-in")
    with qtbot.waitSignal(sampler.done, timeout=30_000):
        sampler.run()
    before = masks_of(viewer, source)
    sampler.steer.buttons[S.INCLUDE].click()
    assert sampler.steer.buttons[S.INCLUDE].isChecked()
    layer = S.constraints_layer(viewer, source)
    click(sampler, layer, source, RIM)
    settle(qtbot, sampler)
    assert seg.calls[-1]["constraints"].include == (RIM,)
    viewer.layers.selection.active = source
    assert not sampler.steer.buttons[S.INCLUDE].isChecked()  # clicks go elsewhere now
    viewer.layers.remove(layer)
    settle(qtbot, sampler)
    np.testing.assert_array_equal(masks_of(viewer, source), before)
    viewer.layers.remove(source)  # the image closed: nothing to steer till the next result
    assert not sampler.steer.isEnabled()


def test_the_status_line_of_a_steered_result():
    from types import SimpleNamespace

    from napari_ambiseg.constraints import Constraints

    c = Constraints(include=[(3, 4), (5, 6)], exclude=[(9, 9)])
    ok = np.array([True] * 14 + [False] * 2)
    assert S.satisfied_text(SimpleNamespace(constraints=c, satisfies=ok, drawn=16)) == (
        "14 of 16 samples satisfy the 3 clicks (2 include, 1 exclude).")
    assert S.satisfied_text(SimpleNamespace(constraints=c, satisfies=ok, drawn=32)) == (
        "14 of 16 samples satisfy the 3 clicks (2 include, 1 exclude; 32 drawn).")
    assert S.satisfied_text(SimpleNamespace(constraints=None, satisfies=None)) == ""
    assert S.key_of(Constraints(include=[(5, 6), (3, 4.2)])) == S.key_of(
        Constraints(include=[(3, 4), (5, 6)]))  # the same pixels, in any order
