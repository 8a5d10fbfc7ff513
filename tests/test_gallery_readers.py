"""Readers beside the samples: the LIDC sample's readers row, the case's figures, and the
readers' layer no longer following the sample slider."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Layer

from napari_ambiseg._sample_data import lidc_unseen
from napari_ambiseg.compare import compare_readers
from napari_ambiseg.testing import ScriptedSegmenter
from napari_ambiseg.widgets import layers as L
from napari_ambiseg.widgets.gallery import GalleryWidget
from napari_ambiseg.widgets.sampling import SamplingWidget

pytestmark = pytest.mark.gui


def open_lidc(viewer):
    for data, kwargs, kind in lidc_unseen():
        viewer.add_layer(Layer.create(data, kwargs, kind))
    image = next(la for la in viewer.layers if la._type_string == "image")
    readers = next(la for la in viewer.layers if "ambiseg_readers" in la.metadata)
    return image, readers


def test_readers_row_figures_and_slider(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image, readers = open_lidc(viewer)
    depth = L.spatial_shape(image)[0]
    viewer.dims.set_point(0, image.data_to_world((depth // 2, 0, 0))[0])
    sampler, gallery = SamplingWidget(viewer), GalleryWidget(viewer)
    viewer.window.add_dock_widget(sampler, name="sampling")
    viewer.window.add_dock_widget(gallery, name="gallery")
    sampler.set_segmenter(ScriptedSegmenter(), "scripted")
    sampler.n.setValue(16)
    sampler.steps.setValue(2)
    with qtbot.waitSignal(sampler.done, timeout=60_000):
        sampler.run()
    assert sampler.last_error is None
    count = readers.metadata["ambiseg_readers"]["count"]
    assert len(gallery.reader_buttons) == count
    out = sampler.last_outputs
    slab = np.asarray(readers.data)[:, out.z0:out.z0 + out.masks.shape[1]] != 0
    expected = compare_readers(out.masks, slab, [m.members for m in out.modes])
    assert gallery.comparison["ged"] == pytest.approx(expected["ged"])
    assert gallery.comparison["readers_empty"] == expected["readers_empty"]
    for r, b in enumerate(gallery.reader_buttons):
        assert b.text().endswith("\nno finding") == (not slab[r].any())
        assert b.text().startswith(f"reader {r + 1}\n")
    # the readers' layer (R, Z, H, W) is hidden: its reader axis would follow the sample
    # slider; a (Z, H, W) count of readers per voxel shows them on the image's grid instead
    per_pixel = L.outputs_of(viewer.layers, image)["readers"]
    assert not readers.visible and per_pixel.visible and per_pixel.ndim == 3
    np.testing.assert_array_equal(per_pixel.data, (np.asarray(readers.data) != 0).sum(0))
    np.testing.assert_allclose(per_pixel.scale, image.scale)
    assert viewer.dims.axis_labels[0] == "sample"  # the shared slider is named for samples
    shown = per_pixel._slice.image.raw.copy() if hasattr(per_pixel, "_slice") else None
    gallery.buttons[gallery.current()[1]["modes"][-1][-1]].click()  # another sample
    if shown is not None:
        np.testing.assert_array_equal(per_pixel._slice.image.raw, shown)
    assert gallery.headers[0].text().startswith("<b>readers - ")
    # choosing "none" hides the row; a re-run updates the count layer in place
    gallery.readers.set_value("none")
    assert gallery.reader_buttons == [] and gallery.comparison is None
    gallery.readers.set_value("auto")
    with qtbot.waitSignal(sampler.done, timeout=60_000):
        sampler.run()
    assert len(gallery.reader_buttons) == count
    assert sum(1 for la in viewer.layers if (L.output_info(la) or {}).get("kind") == "readers") == 1


def test_readers_of_a_2d_image(make_napari_viewer, qtbot):
    from napari_ambiseg.testing import disk

    viewer = make_napari_viewer()
    img = np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)
    image = viewer.add_image(img, name="xr")
    readers = np.stack([disk((64, 64), 5, (32, 32)), np.zeros((64, 64), bool)]).astype(np.uint8)
    layer = viewer.add_labels(readers, name="xr readers",
                              metadata={"ambiseg_readers": {"count": 2, "image_name": "xr"}})
    sampler, gallery = SamplingWidget(viewer), GalleryWidget(viewer)
    sampler.set_segmenter(ScriptedSegmenter(), "scripted")  # 9 r=5, 5 r=9, 2 empty
    sampler.n.setValue(16)
    sampler.steps.setValue(2)
    with qtbot.waitSignal(sampler.done, timeout=30_000):
        sampler.run()
    c = gallery.comparison
    assert c["reader_modes"] == [1, 3] and c["readers_empty"] == 1 and c["samples_empty"] == 2
    assert [b.text() for b in gallery.reader_buttons] == ["reader 1\nmode 1",
                                                         "reader 2\nno finding"]
    per_pixel = L.outputs_of(viewer.layers, image)["readers"]
    assert not layer.visible and per_pixel.data.shape == (64, 64)


def test_readers_name_the_modes_the_headers_show(make_napari_viewer, qtbot):
    """Issue 27.2: with "no finding" the largest group the outline modes are still "mode 1",
    "mode 2", and the readers' row refers to them by those names."""
    from dock_helpers import sampled

    from napari_ambiseg.testing import disk

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64), np.float32), name="xr")
    readers = np.stack([disk((64, 64), 9, (32, 32)), disk((64, 64), 5, (32, 32))])
    viewer.add_labels(readers.astype(np.uint8), name="xr readers",
                      metadata={"ambiseg_readers": {"count": 2, "image_name": "xr"}})
    # 9 empty, 5 disks of radius 5, 2 of radius 9
    _, gallery = sampled(viewer, qtbot, ScriptedSegmenter(groups=(9, 5, 2), radii=(0, 5, 9)))
    texts = [h.text().replace("<b>", "").replace("</b>", "") for h in gallery.headers[1:]]
    assert texts[0] == "no finding - 9 of 16"
    assert texts[1].startswith("mode 1 - 5 of 16") and texts[2].startswith("mode 2 - 2 of 16")
    assert [b.text() for b in gallery.reader_buttons] == ["reader 1\nmode 2", "reader 2\nmode 1"]
    assert "reader 1 -> mode 2, reader 2 -> mode 1" in gallery.headers[0].toolTip()
    assert sorted(gallery.adopt_buttons) == [2, 3]  # by rank: the outline modes
    gallery.adopt_mode(3)
    assert gallery.status.text().startswith("Adopted mode 2 (sample ")


def test_an_already_hidden_readers_layer_leaves_the_slider_to_the_samples(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image, readers = open_lidc(viewer)
    readers.visible = False  # as the demo does: it draws the readers' outlines itself
    viewer.dims.set_point(0, image.data_to_world((L.spatial_shape(image)[0] // 2, 0, 0))[0])
    sampler, _gallery = SamplingWidget(viewer), GalleryWidget(viewer)  # the gallery reacts
    sampler.set_segmenter(ScriptedSegmenter(), "scripted")
    sampler.steps.setValue(2)
    with qtbot.waitSignal(sampler.done, timeout=60_000):
        sampler.run()
    assert "readers" not in L.outputs_of(viewer.layers, image)  # no count layer added
    assert viewer.layers.index(readers) == 0
    assert viewer.dims.axis_labels[0] == "sample"
