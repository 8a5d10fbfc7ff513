"""DICOM-SEG writing: synthetic and anonymised series -> labels -> highdicom SEG, checked against the standard."""

from __future__ import annotations

import hashlib

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from napari_ambiseg import __version__
from napari_ambiseg.errors import WriteError
from napari_ambiseg.io import read_image, write_dicom_seg, write_fractional_seg, write_labels
from napari_ambiseg.io.dicom_seg import TYPE2_PATIENT_STUDY
from napari_ambiseg.io.synthetic import write_ct_series

from seg_checks import check_seg


@pytest.fixture()
def ct(tmp_path):
    files = write_ct_series(tmp_path / "ct", shape=(8, 32, 32), spacing=(2.5, 0.7, 0.8), origin=(-30, -20, -10))
    [image] = read_image(tmp_path / "ct")
    return image, files


def _frames_by_source(seg) -> dict[str, list[tuple[int, np.ndarray]]]:
    """ReferencedSOPInstanceUID -> [(segment number, frame mask)] for the frames with any pixel set."""
    out: dict[str, list] = {}
    pixels = seg.pixel_array
    pixels = pixels if pixels.ndim == 3 else pixels[np.newaxis]
    shared = seg.SharedFunctionalGroupsSequence[0]
    for k, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        def get(keyword, item=item):  # per-frame macro, else shared (one segment / one source)
            return (item.get(keyword) or shared.get(keyword))[0]

        if not pixels[k].any():
            continue
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

    seg = check_seg(path, files, segments=2)
    assert seg.SeriesDescription == "AmbiSeg labels" and seg.Modality == "SEG"
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["label 1", "label 7"]
    assert [s.TrackingID for s in seg.SegmentSequence] == ["label 1", "label 7"]
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


def test_slice_step_is_the_real_one_so_highdicom_can_stack_the_frames(ct, tmp_path):
    """The synthetic files carry a stale SpacingBetweenSlices (5 mm for a 2.5 mm step)."""
    image, files = ct
    assert float(pydicom.dcmread(files[0]).SpacingBetweenSlices) == 5.0
    labels = np.zeros(image.data.shape, np.uint8)
    labels[3, 2:5, 2:5] = 1
    seg = hd.seg.segread(write_labels(labels, tmp_path / "s.dcm", image)[0])
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(measures.SpacingBetweenSlices) == pytest.approx(2.5)
    volume = seg.get_volume(combine_segments=True)
    assert volume.spatial_shape == (8, 32, 32) and volume.array.sum() == 9


def test_dicom_seg_on_a_single_slice(tmp_path):
    [image] = read_image(get_testdata_file("CT_small.dcm"))
    labels = np.zeros(image.data.shape, np.uint8)
    labels[40:60, 50:70] = 3
    path = write_dicom_seg(labels, tmp_path / "one.dcm", image.reference())[0]
    seg = check_seg(path, [get_testdata_file("CT_small.dcm")], segments=1)
    [(number, mask)] = _frames_by_source(seg)[image.metadata["sop_instance_uids"][0]]
    assert number == 1
    np.testing.assert_array_equal(mask.astype(bool), labels == 3)


def _digest(files) -> list[str]:
    return [hashlib.sha256(open(f, "rb").read()).hexdigest() for f in files]


def test_anonymised_series_writes_a_valid_seg_and_leaves_the_sources_alone(tmp_path):
    """Type 2 patient/study attributes removed (as anonymisers do): the SEG has them present and empty."""
    files = write_ct_series(tmp_path / "anon", shape=(5, 16, 16))
    for f in files:
        ds = pydicom.dcmread(f)
        for keyword in (*TYPE2_PATIENT_STUDY, "PositionReferenceIndicator", "InstitutionName"):
            if keyword in ds:
                delattr(ds, keyword)
        ds.save_as(f)
    [image] = read_image(tmp_path / "anon")
    before = _digest(files)
    labels = np.zeros(image.data.shape, np.uint8)
    labels[1:3, 4:8, 4:8] = 1
    path = write_labels(labels, tmp_path / "anon.dcm", image)[0]

    seg = check_seg(path, files, segments=1)
    for keyword in TYPE2_PATIENT_STUDY:
        assert keyword in seg and seg[keyword].is_empty, keyword
    assert _digest(files) == before
    assert all("PatientBirthDate" not in pydicom.dcmread(f) for f in files)


def test_a_source_without_study_uid_is_refused_clearly(ct, tmp_path):
    image, files = ct
    ds = pydicom.dcmread(files[0])
    del ds.StudyInstanceUID
    ds.save_as(files[0])
    with pytest.raises(WriteError, match="has no StudyInstanceUID"):
        write_labels(np.ones(image.data.shape, np.uint8), tmp_path / "x.dcm", image)
    assert not (tmp_path / "x.dcm").exists()


def test_algorithm_identification_for_labels_from_the_model(ct, tmp_path):
    image, files = ct
    labels = np.zeros(image.data.shape, np.uint8)
    labels[4, 5:9, 5:9] = 1
    manual = hd.seg.segread(write_dicom_seg(labels, tmp_path / "m.dcm", image.reference())[0])
    [item] = manual.SegmentSequence
    assert item.SegmentAlgorithmType == "MANUAL" and "SegmentationAlgorithmIdentificationSequence" not in item

    model = hd.seg.segread(write_dicom_seg(labels, tmp_path / "a.dcm", image.reference(), from_model=True)[0])
    [item] = model.SegmentSequence
    assert item.SegmentAlgorithmType == "SEMIAUTOMATIC"
    [algo] = item.SegmentationAlgorithmIdentificationSequence
    assert algo.AlgorithmName == "napari-ambiseg" and algo.AlgorithmVersion == __version__
    [family] = algo.AlgorithmFamilyCodeSequence
    assert (family.CodeValue, family.CodingSchemeDesignator, family.CodeMeaning) == \
        ("123110", "DCM", "Artificial Intelligence")


def test_segment_names(ct, tmp_path):
    image, _ = ct
    labels = np.zeros(image.data.shape, np.uint8)
    labels[2, :4, :4], labels[3, :4, :4], labels[4, :4, :4] = 1, 3, 7
    ref = image.reference()
    seg = hd.seg.segread(write_dicom_seg(labels, tmp_path / "n.dcm", ref, segment_labels={3: "nodule"})[0])
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["label 1", "nodule", "label 7"]
    seg = hd.seg.segread(write_dicom_seg(labels, tmp_path / "p.dcm", ref, segment_label="lesion")[0])
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["lesion 1", "lesion 3", "lesion 7"]
    one = (labels == 3).astype(np.uint8)
    seg = hd.seg.segread(write_dicom_seg(one, tmp_path / "o.dcm", ref, segment_label="consensus")[0])
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["consensus"]


def test_empty_labels_write_a_valid_seg_with_one_empty_segment(ct, tmp_path):
    image, files = ct
    path = write_labels(np.zeros(image.data.shape, np.uint8), tmp_path / "e.dcm", image)[0]
    seg = check_seg(path, files, segments=1)
    assert seg.SegmentSequence[0].SegmentLabel == "no finding"
    assert not seg.pixel_array.any()


def test_missing_sources_and_positionless_frames_are_refused(ct, tmp_path):
    image, files = ct
    files[0].unlink()
    labels = np.ones(image.data.shape, np.uint8)
    with pytest.raises(WriteError, match="is gone"):
        write_labels(labels, tmp_path / "m.dcm", image)
    assert not (tmp_path / "m.dcm").exists()

    # emri_small.dcm (pydicom-data) is an enhanced MR stripped of its functional groups
    [mr] = read_image(get_testdata_file("emri_small.dcm"))
    with pytest.raises(WriteError, match="no position for its frames"):
        write_labels(np.ones(mr.data.shape, np.uint8), tmp_path / "mr.dcm", mr)
    assert not (tmp_path / "mr.dcm").exists()


def test_fractional_seg_is_a_valid_probability_map(ct, tmp_path):
    image, files = ct
    agreement = np.linspace(0, 1, image.data.size, dtype=np.float32).reshape(image.data.shape)
    path = write_fractional_seg(agreement, tmp_path / "agreement.dcm", image.reference())[0]
    seg = check_seg(path, files, segments=1)
    assert (seg.SegmentationType, seg.SegmentationFractionalType) == ("FRACTIONAL", "PROBABILITY")
    assert seg.MaximumFractionalValue == 255
    [item] = seg.SegmentSequence
    assert item.SegmentLabel == "agreement" and item.SegmentAlgorithmType == "AUTOMATIC"
    assert item.SegmentationAlgorithmIdentificationSequence[0].AlgorithmName == "napari-ambiseg"
    volume = seg.get_pixels_by_source_instance(image.metadata["sop_instance_uids"])[..., 0]
    np.testing.assert_allclose(volume, agreement, atol=0.5 / 255 + 1e-6)

    with pytest.raises(WriteError, match="0..1"):
        write_fractional_seg(agreement * 2, tmp_path / "bad.dcm", image.reference())
    with pytest.raises(WriteError, match="shape"):
        write_fractional_seg(agreement[:3], tmp_path / "bad.dcm", image.reference())
    assert not (tmp_path / "bad.dcm").exists()
