"""Geometry travels with every layer the plugin makes (issue 12; contracts C1 and C4)."""

from __future__ import annotations

import copy
from datetime import datetime

import numpy as np
import pytest

from napari_ambiseg._reader import read_layers
from napari_ambiseg.io import METADATA_KEY, reference_from_layer
from napari_ambiseg.testing import ScriptedSegmenter
from napari_ambiseg.widgets import layers as L
from napari_ambiseg.widgets.gallery import GalleryWidget
from napari_ambiseg.widgets.sampling import SamplingWidget

pytestmark = pytest.mark.gui


def oblique_nifti(path) -> str:
    """A (6, 40, 40) NIfTI with an oblique direction, spacing 0.8/0.9/3.0 and an origin."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.full((6, 40, 40), -800, np.int16))
    img.SetSpacing((0.8, 0.9, 3.0))
    img.SetOrigin((-120.5, 80.25, -33.0))
    c, s = np.cos(0.3), np.sin(0.3)
    img.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(img, str(path))
    return str(path)


def setup(make_napari_viewer, qtbot, source_data):
    from napari.layers import Layer

    viewer = make_napari_viewer()
    src = viewer.add_layer(Layer.create(*source_data))
    sampler, gallery = SamplingWidget(viewer), GalleryWidget(viewer)
    sampler.set_segmenter(ScriptedSegmenter(), "scripted")
    sampler.steps.setValue(2)
    sampler.image.set_value(src)
    return viewer, src, sampler, gallery


def run(qtbot, sampler):
    with qtbot.waitSignal(sampler.done, timeout=30_000):
        sampler.run()
    assert sampler.last_error is None, sampler.last_error
    return L.outputs_of(sampler.viewer.layers, sampler.image.value())


def test_adopted_consensus_describes_the_source_after_it_is_closed(make_napari_viewer, qtbot,
                                                                   tmp_path):
    data = read_layers(oblique_nifti(tmp_path / "oblique.nii.gz"))[0]
    viewer, src, sampler, gallery = setup(make_napari_viewer, qtbot, data)
    reference = copy.deepcopy(src.metadata[METADATA_KEY])
    assert not np.allclose(np.reshape(reference["direction"], (3, 3)), np.eye(3))
    viewer.dims.set_point(0, src.data_to_world((3, 0, 0))[0])
    sampler.slices.setCurrentIndex(1)  # slices 2..4
    sampler.z_from.setValue(2)
    sampler.z_to.setValue(4)
    outputs = run(qtbot, sampler)

    # every output carries the source's reference, with the slab's first slice
    for kind in L.KINDS:
        meta = outputs[kind].metadata
        assert meta[METADATA_KEY] == {**reference, "z0": 2}, kind
        assert meta[L.KEY]["kind"] == kind and meta[L.KEY]["source_name"] == src.name

    labels = gallery.adopt_consensus(0.5)
    assert labels.data.shape == (6, 40, 40)
    assert [int(labels.data[z].any()) for z in range(6)] == [0, 0, 1, 1, 1, 0]
    name = src.name
    viewer.layers.remove(src)
    src.metadata[METADATA_KEY]["origin"][0] = 999.0  # the copy is the adopted layer's own
    assert labels.metadata[METADATA_KEY] == reference  # full grid: no z0
    adopted = labels.metadata[L.ADOPTED]
    assert adopted["source_name"] == name and adopted["what"] == "consensus >= 0.50"
    assert datetime.fromisoformat(adopted["time"]).tzinfo is not None


def test_plain_array_outputs_and_existing_labels_get_a_layer_reference(make_napari_viewer,
                                                                        qtbot, monkeypatch):
    scale, translate = (0.7, 0.6), (12.0, -30.0)
    img = np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)
    data = (img, {"name": "plain", "scale": scale, "translate": translate}, "image")
    viewer, src, sampler, gallery = setup(make_napari_viewer, qtbot, data)
    outputs = run(qtbot, sampler)
    expected = reference_from_layer((64, 64), scale, translate)
    for kind in L.KINDS:  # a 2D result: no z0
        assert outputs[kind].metadata[METADATA_KEY] == expected, kind

    bare = viewer.add_labels(np.zeros((64, 64), np.uint8), name="mine", scale=scale,
                             translate=translate)
    gallery.target.set_value(bare)
    monkeypatch.setattr(GalleryWidget, "confirm", lambda self, t: True)
    assert gallery.adopt_mode(1) is bare
    assert bare.metadata[METADATA_KEY] == expected
    assert bare.metadata[L.ADOPTED]["what"].startswith("mode 1")

    # a Labels layer with geometry of its own (e.g. reopened from a file) keeps it
    own = {"shape": [64, 64], "geometry": {"origin": [1.0, 2.0, 3.0]}, "source": "file"}
    read = viewer.add_labels(np.zeros((64, 64), np.uint8), name="read", scale=scale,
                             translate=translate, metadata={METADATA_KEY: own})
    gallery.target.set_value(read)
    assert gallery.adopt_sample(0) is read
    assert read.metadata[METADATA_KEY] == own and read.metadata[L.ADOPTED]["what"] == "sample 0"
