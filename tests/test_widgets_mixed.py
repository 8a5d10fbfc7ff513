"""Results of 2D and 3D sources in one viewer (issue 12, item 4): sliders, gallery, slices."""

from __future__ import annotations

import numpy as np
import pytest

from napari_ambiseg._reader import read_layers
from napari_ambiseg.testing import ScriptedSegmenter
from napari_ambiseg.widgets import layers as L
from napari_ambiseg.widgets.gallery import GalleryWidget
from napari_ambiseg.widgets.sampling import SamplingWidget

pytestmark = pytest.mark.gui

VOL_SCALE, VOL_ORIGIN, DEPTH = (2.5, 0.7, 0.7), (-60.0, 0.0, 0.0), 10


def ct_small(viewer):
    """pydicom's CT_small (2D, 128 x 128, scaled and translated) through our reader."""
    from napari.layers import Layer
    from pydicom.data import get_testdata_file

    return viewer.add_layer(Layer.create(*read_layers(get_testdata_file("CT_small.dcm"))[0]))


def volume(viewer, tmp_path, name="vol", origin=VOL_ORIGIN):
    """A synthetic CT series (10 slices, 2.5 mm, z from -60 mm) through our reader."""
    from napari.layers import Layer

    from napari_ambiseg.io.synthetic import write_ct_series

    folder = tmp_path / name
    write_ct_series(folder, shape=(DEPTH, 48, 48), spacing=VOL_SCALE, origin=origin,
                    description=name)
    layer = viewer.add_layer(Layer.create(*read_layers(folder)[0]))
    layer.name = name
    return layer


def docks(viewer):
    sampler, gallery = SamplingWidget(viewer), GalleryWidget(viewer)
    viewer.window.add_dock_widget(sampler, name="sampling")
    viewer.window.add_dock_widget(gallery, name="gallery")
    sampler.set_segmenter(ScriptedSegmenter(), "scripted")
    sampler.steps.setValue(2)
    return sampler, gallery


def run(qtbot, sampler, source):
    sampler.image.set_value(source)
    with qtbot.waitSignal(sampler.done, timeout=30_000):
        sampler.run()
    assert sampler.last_error is None, sampler.last_error
    return L.outputs_of(sampler.viewer.layers, source)


def to_slice(viewer, layer, z: int) -> None:
    viewer.dims.set_point(viewer.dims.ndim - layer.ndim, layer.data_to_world((z, 0, 0))[0])


def shown(layer) -> np.ndarray:
    """What napari currently draws of a layer (its 2D slice)."""
    return np.asarray(layer._slice.image.raw)


def test_2d_and_3d_results_keep_their_own_axes(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    ct2d = ct_small(viewer)
    sampler, gallery = docks(viewer)
    flat = run(qtbot, sampler, ct2d)["samples"]
    assert flat.data.shape == (16, 1, 128, 128)
    assert viewer.dims.axis_labels[0] == "sample"
    assert viewer.dims.nsteps[1] == 1  # the one-slice axis: no slider in a 2D world

    vol = volume(viewer, tmp_path)
    to_slice(viewer, vol, 4)
    sampler.image.set_value(vol)
    sampler.slices.setCurrentIndex(1)  # slice range
    sampler.z_from.setValue(3)
    sampler.z_to.setValue(5)
    slab = run(qtbot, sampler, vol)["samples"]
    assert slab.data.shape == (16, 3, 48, 48)

    # one sample axis in front of the volume's slice axis; the slider spans the volume only
    dims = viewer.dims
    assert dims.axis_labels == ("sample", "z", "y", "x")
    assert dims.ndim == 4 and dims.nsteps[0] == 16 and dims.nsteps[1] == DEPTH
    np.testing.assert_allclose(dims.range[1][:2], (-60.0, -60.0 + 2.5 * (DEPTH - 1)))
    assert flat.axis_labels == slab.axis_labels == ("sample", "z", "y", "x")

    # the gallery on the 2D result: a thumbnail moves the sample axis, never the volume's z
    gallery.result.set_value(flat)
    z_before = dims.point[1]
    gallery.buttons[11].click()
    assert dims.point[0] == 11 and dims.point[1] == z_before
    assert vol.world_to_data(dims.point[1:])[0] == pytest.approx(4)
    # ... and the canvas shows sample 11 of the 2D image (the disk of mode 2, radius 9)
    k_mode = 1 + [11 in m for m in gallery.current()[1]["modes"]].index(True)
    assert (shown(flat) > 0).sum() == (L.sample_masks(flat)[11]).sum() > 0
    assert set(np.unique(shown(flat))) == {0, k_mode}

    # the gallery on the volume's result: its sample, on the slice it was prompted on
    gallery.result.set_value(slab)
    gallery.buttons[3].click()
    assert dims.point[0] == 3 and vol.world_to_data(dims.point[1:])[0] == pytest.approx(4)
    np.testing.assert_array_equal(shown(slab) > 0, L.sample_masks(slab)[3, 1])
    # off the slab, a thumbnail brings the viewer back to the prompt's slice (its own axis)
    to_slice(viewer, vol, 8)
    gallery.buttons[5].click()
    assert vol.world_to_data(dims.point[1:])[0] == pytest.approx(4)

    # re-sampling the 2D image while the volume is open keeps the same axes and slider
    sampler.image.set_value(ct2d)
    assert run(qtbot, sampler, ct2d)["samples"] is flat
    assert dims.nsteps[1] == DEPTH and dims.axis_labels[:2] == ("sample", "z")


def test_a_volume_opened_after_a_2d_result_keeps_its_slider(make_napari_viewer, qtbot,
                                                           tmp_path):
    viewer = make_napari_viewer()
    ct2d = ct_small(viewer)
    sampler, _ = docks(viewer)
    flat = run(qtbot, sampler, ct2d)["samples"]
    vol = volume(viewer, tmp_path)  # z -60 .. -37.5; the 2D result sat at z = 0
    dims = viewer.dims
    assert dims.nsteps[1] == DEPTH
    np.testing.assert_allclose(dims.range[1][:2], vol.extent.world[:, 0])
    to_slice(viewer, vol, 7)
    assert flat.visible and (shown(flat) > 0).any()  # a 2D result shows on every slice
    viewer.layers.remove(vol)
    assert dims.nsteps[1] == 1


def test_a_slice_the_canvas_does_not_show_is_never_sampled(make_napari_viewer, qtbot,
                                                           tmp_path):
    viewer = make_napari_viewer()
    low = volume(viewer, tmp_path, "low")
    high = volume(viewer, tmp_path, "high", origin=(100.0, 0.0, 0.0))
    ct2d = ct_small(viewer)
    sampler, _ = docks(viewer)
    sampler.image.set_value(low)  # (choosing a volume the viewer is off shows its middle)
    to_slice(viewer, high, 2)  # z = 105: inside 'high', between the two volumes for 'low'
    assert sampler.run() is None
    assert "outside 'low'" in str(sampler.last_error) and "z = 105" in str(sampler.last_error)
    assert "outside 'low'" in sampler.status.text()
    assert L.outputs_of(viewer.layers, low) == {}
    assert run(qtbot, sampler, high)["samples"].data.shape[1] == 1  # the slice shown: 2
    assert sampler.last_outputs.z0 == 2
    assert run(qtbot, sampler, ct2d)  # a 2D image is sampled at any z
