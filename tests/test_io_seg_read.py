"""Reading DICOM-SEG back: labels (and agreement maps) on the same voxels, at the same displayed geometry."""

from __future__ import annotations

import shutil
import warnings

import highdicom as hd
import numpy as np
import pytest
from pydicom.data import get_testdata_file

from napari_ambiseg.errors import WriteError
from napari_ambiseg.io import read_image, write_dicom_seg, write_fractional_seg, write_labels
from napari_ambiseg.io.geometry import flip_array
from napari_ambiseg.io.synthetic import write_ct_series

ORIENTATIONS = {
    "axial": (1, 0, 0, 0, 1, 0),
    "flipped": (-1, 0, 0, 0, -1, 0),
    "feet-first": (1, 0, 0, 0, -1, 0),  # slice normal towards the feet
    "oblique": (1, 0, 0, 0, 0.8, -0.6),
}


def _labels(shape) -> np.ndarray:
    labels = np.zeros(shape, np.uint8)
    labels[..., 2:6, 3:9] = 1
    labels[..., 10:14, 4:20] = 3
    labels[..., 20:25, 20:30] = 7
    if labels.ndim == 3:
        labels[0] = 0  # an empty slice
        labels[-1, 10:14, 4:20] = 0
    return labels


def assert_same_grid(image, source) -> None:
    """What napari shows: same shape, scale, translate; same export geometry."""
    assert image.data.shape == source.data.shape[: len(image.data.shape)]
    assert image.axes == source.axes
    np.testing.assert_allclose(image.spacing, source.spacing, atol=1e-6)
    np.testing.assert_allclose(image.origin, source.origin, atol=1e-6)
    np.testing.assert_allclose(image.direction, source.direction, atol=1e-6)
    for key in ("size", "flip"):
        assert list(image.geometry[key]) == list(source.geometry[key])
    for key in ("spacing", "origin", "direction"):
        np.testing.assert_allclose(image.geometry[key], source.geometry[key], atol=1e-6)
    _, kwargs, _ = image.to_layer_data()
    _, src_kwargs, _ = source.to_layer_data()
    np.testing.assert_allclose(kwargs["scale"], src_kwargs["scale"], atol=1e-6)
    np.testing.assert_allclose(kwargs["translate"], src_kwargs["translate"], atol=1e-6)


def _alone(path, tmp_path):
    """Move the SEG where its source cannot be found; read it, returning the image and the warnings."""
    lonely = tmp_path / "elsewhere" / "deeper"
    lonely.mkdir(parents=True)
    moved = shutil.move(path, lonely / "seg.dcm")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        [image] = read_image(moved)
    return image, [str(w.message) for w in caught]


@pytest.mark.parametrize("orientation", list(ORIENTATIONS))
def test_seg_round_trip_on_a_series(tmp_path, orientation):
    write_ct_series(tmp_path / "ct", shape=(6, 32, 40), spacing=(2.5, 0.7, 0.8), origin=(-30, -20, -10),
                    orientation=ORIENTATIONS[orientation])
    [ct] = read_image(tmp_path / "ct")
    labels = _labels(ct.data.shape)
    path = write_labels(labels, tmp_path / "ct" / "labels.dcm", ct)[0]

    [back] = read_image(path)
    assert back.is_labels and back.name == "AmbiSeg labels"
    np.testing.assert_array_equal(back.data, labels)
    assert_same_grid(back, ct)
    ref = back.reference()
    assert ref["source_files"] == ct.metadata["source_files"]
    assert ref["sop_instance_uids"] == ct.metadata["sop_instance_uids"]
    assert ref["segment_labels"] == {"1": "label 1", "3": "label 3", "7": "label 7"}
    assert "warnings" not in ref
    _, kwargs, layer_type = back.to_layer_data()
    assert layer_type == "labels"

    # saved again as DICOM-SEG and as NIfTI from the reopened layer's reference
    [again] = read_image(write_labels(back.data, tmp_path / "again.dcm", ref)[0])
    np.testing.assert_array_equal(again.data, labels)
    [nifti] = read_image(write_labels(back.data, tmp_path / "again_seg.nii.gz", ref)[0])
    # the NIfTI reader flips axes that point to -L/-P/-S for display; on the file's grid it is equal
    np.testing.assert_array_equal(flip_array(nifti.data, nifti.geometry["flip"]), labels)

    # without its source series: the SEG's own positions give the same grid (it has every frame)
    alone, caught = _alone(path, tmp_path)
    np.testing.assert_array_equal(alone.data, labels)
    assert_same_grid(alone, ct)
    assert any("source series was not found" in w for w in caught)
    assert "source_files" not in alone.reference()
    with pytest.raises(WriteError, match="not tied to a DICOM source"):
        write_labels(alone.data, tmp_path / "no.dcm", alone.reference())


def test_folder_with_series_and_seg_opens_both(tmp_path):
    write_ct_series(tmp_path / "study", shape=(4, 16, 16))
    [ct] = read_image(tmp_path / "study")
    labels = _labels(ct.data.shape)
    write_labels(labels, tmp_path / "study" / "seg.dcm", ct)
    write_fractional_seg(np.full(ct.data.shape, 0.25, np.float32), tmp_path / "study" / "agreement.dcm",
                         ct.reference())
    images = read_image(tmp_path / "study")
    assert [(im.name, im.is_labels) for im in images][0] == ("Synthetic CT", False)  # the image is below
    by_name = {im.name: im for im in images}
    assert set(by_name) == {"Synthetic CT", "AmbiSeg labels", "AmbiSeg agreement"}
    np.testing.assert_array_equal(by_name["AmbiSeg labels"].data, labels)
    assert_same_grid(by_name["AmbiSeg agreement"], ct)


def test_2d_source_ct_small(tmp_path):
    source = shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "CT_small.dcm")
    [ct] = read_image(source)
    labels = _labels(ct.data.shape)
    path = write_dicom_seg(labels, tmp_path / "seg.dcm", ct.reference())[0]
    [back] = read_image(path)
    assert back.axes == ("y", "x") and back.is_labels
    np.testing.assert_array_equal(back.data, labels)
    assert_same_grid(back, ct)
    assert back.reference()["source_files"] == [str(source)]

    alone, _ = _alone(path, tmp_path)
    np.testing.assert_array_equal(alone.data, labels)
    assert alone.axes == ("y", "x")
    np.testing.assert_allclose(alone.spacing, ct.spacing)
    np.testing.assert_allclose(alone.origin, ct.origin)


def test_multiframe_source_in_its_frame_order(tmp_path):
    """eCT_Supplemental.dcm: enhanced CT, 2 frames stored against the slice normal (frame_order [1, 0])."""
    source = shutil.copy(get_testdata_file("eCT_Supplemental.dcm"), tmp_path / "ect.dcm")
    [ct] = read_image(source)
    assert ct.metadata["frame_order"] == [1, 0]
    labels = np.zeros(ct.data.shape, np.uint8)
    labels[1, 100:200, 50:60] = 2  # only the second displayed slice (file frame 1)
    path = write_labels(labels, tmp_path / "seg.dcm", ct)[0]

    seg = hd.seg.segread(path)
    masks = seg.get_pixels_by_source_frame(ct.metadata["sop_instance_uids"][0], [1, 2], combine_segments=True)
    assert masks[0].any() and not masks[1].any()  # file frame 1 holds the mask

    [back] = read_image(path)
    np.testing.assert_array_equal(back.data, labels)
    assert_same_grid(back, ct)
    assert back.reference()["frame_order"] == [1, 0]
    alone, _ = _alone(path, tmp_path)
    np.testing.assert_array_equal(alone.data, labels)
    assert_same_grid(alone, ct)


def test_multi_label_values_and_empty_labels_round_trip(tmp_path):
    write_ct_series(tmp_path / "ct", shape=(5, 16, 16))
    [ct] = read_image(tmp_path / "ct")
    labels = np.zeros(ct.data.shape, np.uint8)
    labels[1, 2:5, 2:5], labels[2, 2:5, 2:5], labels[2, 8:12, 8:12] = 1, 3, 7
    [back] = read_image(write_labels(labels, tmp_path / "ct" / "multi.dcm", ct)[0])
    np.testing.assert_array_equal(back.data, labels)
    assert back.data.dtype == np.uint8

    [empty] = read_image(write_labels(np.zeros_like(labels), tmp_path / "ct" / "empty.dcm", ct)[0])
    assert empty.is_labels and empty.data.shape == labels.shape and not empty.data.any()
    assert_same_grid(empty, ct)
    # saving the empty layer again works (the "no finding" name is not carried over)
    again = hd.seg.segread(write_labels(empty.data, tmp_path / "again.dcm", empty.reference())[0])
    assert [s.SegmentLabel for s in again.SegmentSequence] == ["no finding"]


def test_fractional_seg_reads_back_as_a_0_1_image(tmp_path):
    write_ct_series(tmp_path / "ct", shape=(4, 16, 24), orientation=ORIENTATIONS["oblique"])
    [ct] = read_image(tmp_path / "ct")
    agreement = np.random.default_rng(1).random(ct.data.shape).astype(np.float32)
    path = write_fractional_seg(agreement, tmp_path / "ct" / "map.dcm", ct.reference())[0]
    [back] = read_image(path)
    assert not back.is_labels and back.data.dtype == np.float32 and back.name.endswith("agreement")
    assert np.abs(back.data - agreement).max() <= 1 / 255
    assert_same_grid(back, ct)
    data, kwargs, layer_type = back.to_layer_data()
    assert layer_type == "image" and kwargs["contrast_limits"] == [0.0, 1.0]


def _foreign_seg(ct, labels, path, *, segmentation_type="BINARY") -> None:
    """A SEG as other tools write them: highdicom defaults (empty frames left out), segment numbers."""
    import pydicom
    from pydicom.sr.codedict import codes

    sources = [pydicom.dcmread(f) for f in ct.metadata["source_files"]]
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n, segment_label=f"organ {n}", segmented_property_category=codes.SCT.Organ,
            segmented_property_type=codes.SCT.Liver, algorithm_type="MANUAL")
        for n in range(1, int(labels.max()) + 1)
    ]
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=labels, segmentation_type=segmentation_type,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=5,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="Other tool",
        manufacturer_model_name="x", software_versions="1", device_serial_number="1",
    )
    seg.save_as(path)


@pytest.mark.parametrize(("kind", "orientation"), [("BINARY", "axial"), ("LABELMAP", "feet-first")])
def test_seg_of_another_tool_with_only_some_frames(tmp_path, kind, orientation):
    write_ct_series(tmp_path / "ct", shape=(10, 16, 16), spacing=(2.0, 0.5, 0.5),
                    orientation=ORIENTATIONS[orientation])
    [ct] = read_image(tmp_path / "ct")
    labels = np.zeros(ct.data.shape, np.uint8)
    labels[3, 2:6, 2:6], labels[4, 2:6, 2:6], labels[7, 8:12, 8:12] = 1, 2, 2  # slices 3..7 only
    path = tmp_path / "ct" / "other.dcm"
    _foreign_seg(ct, labels, path, segmentation_type=kind)
    assert int(hd.seg.segread(path).NumberOfFrames) < 2 * 10

    [back] = read_image(path)  # beside its source: exactly on the source grid
    np.testing.assert_array_equal(back.data, labels)  # segment numbers
    assert_same_grid(back, ct)
    assert back.reference()["segment_labels"] == {"1": "organ 1", "2": "organ 2"}

    alone, caught = _alone(path, tmp_path)  # alone: only the segmented slices, at their true positions
    assert alone.data.shape == (5, 16, 16)
    np.testing.assert_array_equal(alone.data, labels[3:8])
    np.testing.assert_allclose(alone.spacing, ct.spacing)
    d = np.asarray(ct.geometry["direction"]).reshape(3, 3)
    np.testing.assert_allclose(alone.geometry["origin"], np.add(ct.geometry["origin"], 3 * 2.0 * d[:, 2]))
    np.testing.assert_allclose(alone.geometry["direction"], ct.geometry["direction"])
    if orientation == "axial":  # napari shows it on the source's slices 3..7
        np.testing.assert_allclose(alone.origin, np.add(ct.origin, (3 * 2.0, 0, 0)))


def test_real_seg_from_another_tool():
    """liver.dcm (pydicom test data, written by dcmqi): 3 frames, its CT series is not available."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        [liver] = read_image(get_testdata_file("liver.dcm"))
    assert liver.is_labels and liver.data.shape == (3, 512, 512) and set(np.unique(liver.data)) == {0, 1}
    np.testing.assert_allclose(liver.spacing, (1.0, 0.810547, 0.810547))
    np.testing.assert_allclose(liver.origin, (-128.69, -226.8, -235.2))
    assert liver.reference()["segment_labels"] == {"1": "Liver"}
    assert any("not found beside it" in str(w.message) for w in caught)


@pytest.mark.parametrize("name", ["CT_small.dcm", "eCT_Supplemental.dcm"])
def test_fractional_seg_on_a_slice_and_a_multiframe_source(tmp_path, name):
    source = shutil.copy(get_testdata_file(name), tmp_path / name)
    [image] = read_image(source)
    agreement = np.random.default_rng(2).random(image.data.shape).astype(np.float32)
    [back] = read_image(write_fractional_seg(agreement, tmp_path / "map.dcm", image.reference())[0])
    assert np.abs(back.data - agreement).max() <= 1 / 255
    assert_same_grid(back, image)
