"""DICOM-SEG round trip: synthetic series -> labels -> highdicom SEG -> frames on the right slices."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

import highdicom as hd
from napari_ambiseg.errors import WriteError
from napari_ambiseg.io import read_image, write_dicom_seg, write_labels
from napari_ambiseg.io.synthetic import write_ct_series


@pytest.fixture()
def ct(tmp_path):
    files = write_ct_series(tmp_path / "ct", shape=(8, 32, 32), spacing=(2.5, 0.7, 0.8), origin=(-30, -20, -10))
    [image] = read_image(tmp_path / "ct")
    return image, files


def _frames_by_source(seg) -> dict[str, list[tuple[int, np.ndarray]]]:
    """ReferencedSOPInstanceUID -> [(segment number, frame mask)]."""
    out: dict[str, list] = {}
    pixels = seg.pixel_array
    pixels = pixels if pixels.ndim == 3 else pixels[np.newaxis]
    shared = seg.SharedFunctionalGroupsSequence[0]
    for k, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        def get(keyword):  # per-frame macro, else shared (one segment / one source)
            return (item.get(keyword) or shared.get(keyword))[0]

        uid = get("DerivationImageSequence").SourceImageSequence[0].ReferencedSOPInstanceUID
        number = get("SegmentIdentificationSequence").ReferencedSegmentNumber
        out.setdefault(uid, []).append((number, pixels[k]))
    return out


def test_dicom_seg_round_trip_lands_on_the_right_slices(ct, tmp_path):
    image, files = ct
    labels = np.zeros(image.data.shape, np.uint16)
    labels[2, 4:10, 5:12] = 1  # slice z = -25 mm
    labels[5, 10:20, 10:20] = 7  # slice z = -17.5 mm, label value 7 -> segment 2
    path = write_labels(labels, tmp_path / "labels.dcm", image)[0]

    seg = hd.seg.segread(path)
    assert seg.SeriesDescription == "AmbiSeg labels" and seg.Modality == "SEG"
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["label 1", "label 7"]
    assert seg.StudyInstanceUID == image.metadata["tags"]["StudyInstanceUID"]
    assert seg.FrameOfReferenceUID == image.metadata["tags"]["FrameOfReferenceUID"]
    frames = _frames_by_source(seg)
    uid_of = {pydicom.dcmread(f).SOPInstanceUID: pydicom.dcmread(f) for f in files}
    assert set(frames) == {image.metadata["sop_instance_uids"][2], image.metadata["sop_instance_uids"][5]}
    for uid, items in frames.items():
        z = float(uid_of[uid].ImagePositionPatient[2])
        [(number, mask)] = items
        k = image.metadata["sop_instance_uids"].index(uid)
        assert z == pytest.approx(-30 + 2.5 * k)
        expected = labels[k] == (1 if number == 1 else 7)
        np.testing.assert_array_equal(mask.astype(bool), expected)

    # highdicom can rebuild the label volume on the source instances, in our slice order
    volume = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=image.metadata["sop_instance_uids"], combine_segments=True,
        relabel=False, skip_overlap_checks=True,
    )
    back = np.where(volume == 2, 7, volume)
    np.testing.assert_array_equal(back, labels)


def test_dicom_seg_on_a_single_slice(tmp_path):
    [image] = read_image(get_testdata_file("CT_small.dcm"))
    labels = np.zeros(image.data.shape, np.uint8)
    labels[40:60, 50:70] = 3
    path = write_dicom_seg(labels, tmp_path / "one.dcm", image.reference())[0]
    seg = hd.seg.segread(path)
    [(number, mask)] = _frames_by_source(seg)[image.metadata["sop_instance_uids"][0]]
    assert number == 1
    np.testing.assert_array_equal(mask.astype(bool), labels == 3)


def test_dicom_seg_refuses_empty_labels_and_missing_sources(ct, tmp_path):
    image, files = ct
    with pytest.raises(WriteError, match="empty"):
        write_labels(np.zeros(image.data.shape, np.uint8), tmp_path / "e.dcm", image)
    files[0].unlink()
    labels = np.ones(image.data.shape, np.uint8)
    with pytest.raises(WriteError, match="is gone"):
        write_labels(labels, tmp_path / "m.dcm", image)
    assert not (tmp_path / "m.dcm").exists()
