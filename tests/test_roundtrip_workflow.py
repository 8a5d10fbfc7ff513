"""The annotator's round trip as a user walks it (issue 12): File > Open with napari-ambiseg ->
sample -> adopt the consensus in the gallery -> edit -> close the source -> File > Save ->
close everything -> File > Open the saved file. The reopened Labels layer must hold the same
voxels at the same world positions, and the file must carry the source's exact geometry."""

from __future__ import annotations

import os

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from napari_ambiseg.io.synthetic import write_ct_series
from napari_ambiseg.testing import ScriptedSegmenter
from napari_ambiseg.widgets import layers as L
from napari_ambiseg.widgets.gallery import GalleryWidget
from napari_ambiseg.widgets.sampling import SamplingWidget

pytestmark = pytest.mark.gui

PLUGIN = "napari-ambiseg"
TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
         "StudyID", "AccessionNumber", "ReferringPhysicianName")


def _ct(shape=(6, 48, 40)) -> np.ndarray:
    zz, yy, xx = np.mgrid[:shape[0], :shape[1], :shape[2]]
    img = np.full(shape, -800, np.int16)
    img[(yy - 24) ** 2 + (xx - 20) ** 2 < 49] = 40
    return img


def _volume_file(path, direction) -> str:
    img = sitk.GetImageFromArray(_ct())
    img.SetSpacing((0.8, 0.9, 3.0))
    img.SetOrigin((-120.5, 80.25, -33.0))
    img.SetDirection(tuple(np.asarray(direction, float).ravel()))
    sitk.WriteImage(img, str(path))
    return str(path)


def _oblique():
    c, s = np.cos(0.3), np.sin(0.3)
    return [[c, -s, 0], [s, c, 0], [0, 0, 1]]


def _anonymised_series(folder, orientation=(1, 0, 0, 0, 1, 0)) -> str:
    write_ct_series(folder, shape=(6, 32, 32), orientation=orientation)
    for name in sorted(os.listdir(folder)):
        ds = pydicom.dcmread(os.path.join(folder, name))
        for key in TYPE2:
            if key in ds:
                delattr(ds, key)
        ds.save_as(os.path.join(folder, name))
    return str(folder)


SOURCES = {
    "nifti-diagonal-ras": (lambda p: _volume_file(p / "ct.nii.gz", np.diag([-1, -1, 1])), "labels.nii.gz"),
    "nifti-flipped": (lambda p: _volume_file(p / "ct.nii.gz", np.diag([1, -1, -1])), "labels.nii.gz"),
    "nifti-oblique": (lambda p: _volume_file(p / "ct.nii.gz", _oblique()), "labels.nii.gz"),
    "nrrd": (lambda p: _volume_file(p / "ct.nrrd", np.diag([-1, -1, 1])), "labels.nrrd"),
    "mha-oblique": (lambda p: _volume_file(p / "ct.mha", _oblique()), "labels.mha"),
    "dicom-seg-anonymised": (lambda p: _anonymised_series(p / "series"), "labels_seg.dcm"),
    # a coronal series is shown as stored; its NIfTI labels must reopen shown the same way
    "dicom-coronal-to-nifti": (lambda p: _anonymised_series(p / "series", (1, 0, 0, 0, 0, -1)),
                               "labels.nii.gz"),
}


def _read_sitk(path: str):
    if os.path.isdir(path):
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(path))
        return reader.Execute()
    return sitk.ReadImage(path)


@pytest.mark.parametrize("kind", list(SOURCES))
def test_open_sample_adopt_edit_close_save_reopen(kind, make_napari_viewer, qtbot, tmp_path):
    from napari.layers import Image, Labels

    make_source, out_name = SOURCES[kind]
    src_path = make_source(tmp_path)
    viewer = make_napari_viewer()
    src = [la for la in viewer.open(src_path, plugin=PLUGIN) if isinstance(la, Image)][0]
    sampler, gallery = SamplingWidget(viewer), GalleryWidget(viewer)
    sampler.set_segmenter(ScriptedSegmenter(), "scripted")
    sampler.steps.setValue(2)
    sampler.image.set_value(src)
    viewer.dims.set_point(0, src.data_to_world((2, 0, 0))[0])  # look at slice 2
    with qtbot.waitSignal(sampler.done, timeout=30_000):
        sampler.run()
    assert sampler.last_error is None, sampler.last_error

    adopted = gallery.adopt_consensus(0.5)
    assert isinstance(adopted, Labels) and adopted.data[2].any()
    adopted.data_setitem((np.array([2]), np.array([1]), np.array([1])), 2)  # an edit by hand
    expected = np.asarray(adopted.data).copy()
    scale, translate = np.array(adopted.scale), np.array(adopted.translate)

    for layer in [src, *L.outputs_of(viewer.layers, src).values()]:
        viewer.layers.remove(layer)  # close the source and its results
    out = tmp_path / out_name
    viewer.layers.selection.active = adopted
    saved = viewer.layers.save(str(out), selected=True, plugin=PLUGIN)
    assert saved and os.path.isfile(out)
    assert not os.path.exists(f"{out}.geometry.txt"), "the source geometry was known"

    viewer.layers.clear()
    reopened = viewer.open(str(out), plugin=PLUGIN)
    labels = [la for la in reopened if isinstance(la, Labels)]
    assert len(labels) == 1, [type(la).__name__ for la in reopened]
    np.testing.assert_array_equal(np.asarray(labels[0].data), expected)
    np.testing.assert_allclose(labels[0].scale, scale, atol=1e-4)
    np.testing.assert_allclose(labels[0].translate, translate, atol=1e-4)
    again = [la for la in viewer.open(src_path, plugin=PLUGIN) if isinstance(la, Image)][0]
    np.testing.assert_allclose(again.scale, labels[0].scale, atol=1e-4)  # overlays the source
    np.testing.assert_allclose(again.translate, labels[0].translate, atol=1e-4)

    if out_name.endswith(".dcm"):
        seg = pydicom.dcmread(out)
        first = pydicom.dcmread(os.path.join(src_path, sorted(os.listdir(src_path))[0]))
        assert seg.FrameOfReferenceUID == first.FrameOfReferenceUID
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == first.SeriesInstanceUID
        assert seg.SegmentSequence[0].SegmentAlgorithmType == "SEMIAUTOMATIC"
    else:  # the file is on the source's grid, not the displayed one
        a, b = _read_sitk(src_path), sitk.ReadImage(str(out))
        for get in ("GetOrigin", "GetSpacing", "GetDirection"):
            np.testing.assert_allclose(getattr(b, get)(), getattr(a, get)(), atol=1e-4)
        assert b.GetSize() == a.GetSize()
