"""What a written file is, and how it reopens: labels marking (NIfTI intent, ambiseg_kind),
segmentation-like files, the agreement map, plain images and the DICOM paths of the napari
writers. Qt-free."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from napari_ambiseg import _writer
from napari_ambiseg._reader import read_layers
from napari_ambiseg.errors import WriteError
from napari_ambiseg.io import read_image, write_agreement, write_image, write_labels
from napari_ambiseg.io.sitk_io import few_values, named_like_labels
from napari_ambiseg.io.synthetic import write_ct_series

pytestmark = pytest.mark.usefixtures("no_viewer")  # tests/conftest.py


@pytest.fixture()
def ct(tmp_path):
    """A CT volume in NIfTI (oblique-free, RAS) and its MedicalImage."""
    data = (np.random.default_rng(0).normal(0, 300, (9, 8, 6))).astype(np.int16)
    affine = np.diag([0.7, 0.8, 2.5, 1.0])
    affine[:3, 3] = [10.0, -5.0, 40.0]
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "ct.nii.gz")
    [image] = read_image(tmp_path / "ct.nii.gz")
    return image


def _meta(image, **metadata):
    return {"name": image.name, "scale": list(image.spacing), "translate": list(image.origin),
            "metadata": {"ambiseg": image.reference(), **metadata}}


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_written_labels_are_marked_and_reopen_as_labels(ct, tmp_path, suffix):
    assert not ct.is_labels and read_layers(ct.metadata["source"])[0][2] == "image"
    labels = (ct.data > 200).astype(np.uint8)
    out = tmp_path / f"lesion{suffix}"  # a name that does not say "seg"
    write_labels(labels, out, ct)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(out))
    reader.ReadImageInformation()
    if suffix.startswith(".nii"):
        header = nib.load(out).header
        assert int(header["intent_code"]) == 1002 and header["intent_name"].tobytes().rstrip(b"\0") == b"labels"
        assert header.get_intent()[0] == "label"
    else:
        assert reader.GetMetaData("ambiseg_kind") == "labels"
    [back] = read_image(out)
    assert back.is_labels and back.metadata["ambiseg_kind"] == "labels"
    np.testing.assert_array_equal(back.data, labels)
    assert back.spacing == pytest.approx(ct.spacing) and back.origin == pytest.approx(ct.origin, abs=1e-4)


def test_segmentation_names_and_few_values(tmp_path, ct):
    assert all(named_like_labels(n) for n in ("liver_seg.nii.gz", "aseg.nii", "sub-01_dseg.nii.gz",
                                              "Labels.nrrd", "brainmask.mha", "lung-labelmap.nrrd"))
    assert not any(named_like_labels(n) for n in ("ct.nii.gz", "segment07.nii", "t1w.nrrd"))
    assert few_values(np.arange(64).reshape(4, 16)) and not few_values(np.arange(65))
    assert few_values(np.array([0, 1000, 14175] * 10_000, np.int32))  # FreeSurfer-like ids
    assert not few_values(np.array([0, 2**20], np.int32))

    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    seg = np.zeros((6, 7, 8), np.int16)
    seg[2:4, 2:5, 3:6] = 3
    seg[0, 0, 0] = 1
    nib.save(nib.Nifti1Image(seg, affine), tmp_path / "liver_seg.nii.gz")  # unmarked
    [(data, kwargs, kind)] = read_layers(str(tmp_path / "liver_seg.nii.gz"))
    assert kind == "labels" and set(np.unique(data)) == {0, 1, 3}
    assert kwargs["scale"] == pytest.approx((2.0, 1.0, 1.0))
    many = np.arange(6 * 7 * 8, dtype=np.int16).reshape(6, 7, 8)  # 336 values: an image, not labels
    nib.save(nib.Nifti1Image(many, affine), tmp_path / "thing_mask.nii.gz")
    assert read_layers(str(tmp_path / "thing_mask.nii.gz"))[0][2] == "image"
    nib.save(nib.Nifti1Image(seg.astype(np.float32), affine), tmp_path / "float_seg.nii.gz")
    assert read_layers(str(tmp_path / "float_seg.nii.gz"))[0][2] == "image"  # unmarked float
    marked = nib.Nifti1Image(seg.astype(np.float32), affine)
    marked.header.set_intent("label")
    nib.save(marked, tmp_path / "organs.nii.gz")  # another tool's label file, stored as float
    [back] = read_image(tmp_path / "organs.nii.gz")
    assert back.is_labels and np.issubdtype(back.data.dtype, np.integer)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_agreement_round_trip(ct, tmp_path, suffix):
    agreement = np.random.default_rng(1).integers(0, 17, ct.data.shape).astype(np.float32) / 16
    out = tmp_path / f"agreement{suffix}"
    meta = _meta(ct, ambiseg_output={"kind": "agreement", "source": "x"})
    assert _writer.write_image_volume(str(out), agreement, meta) == [str(out)]
    saved = sitk.ReadImage(str(out))
    assert saved.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_allclose(saved.GetOrigin(), sitk.ReadImage(ct.metadata["source"]).GetOrigin(), atol=1e-4)
    if suffix == ".nii.gz":
        assert nib.load(out).header.get_intent() == ("estimate", (), "agreement")
    [(data, kwargs, kind)] = read_layers(str(out))
    assert kind == "image" and kwargs["contrast_limits"] == [0.0, 1.0]
    assert kwargs["metadata"]["ambiseg"]["ambiseg_kind"] == "agreement"
    np.testing.assert_array_equal(data, agreement)
    np.testing.assert_allclose(kwargs["translate"], ct.origin, atol=1e-4)
    # saved again from the reopened layer: still an agreement map
    again = tmp_path / f"again{suffix}"
    _writer.write_image_volume(str(again), data, {"name": "a", **kwargs})
    assert read_image(again)[0].metadata["ambiseg_kind"] == "agreement"


def test_agreement_checks_its_values(ct, tmp_path):
    with pytest.raises(WriteError, match="0..1"):
        write_agreement(np.full(ct.data.shape, 1.5, np.float32), tmp_path / "a.nii.gz", ct)
    # an "agreement" layer whose values are not fractions is saved as a plain image
    out = tmp_path / "edited.nrrd"
    _writer.write_image_volume(str(out), np.full(ct.data.shape, 3.0, np.float32),
                               _meta(ct, ambiseg_output={"kind": "agreement"}))
    assert "ambiseg_kind" not in read_image(out)[0].metadata


def test_plain_image_keeps_its_dtype_and_geometry(ct, tmp_path):
    out = tmp_path / "ct_copy.nrrd"
    assert _writer.write_image_volume(str(out), ct.data, _meta(ct)) == [str(out)]
    [back] = read_image(out)
    assert not back.is_labels and back.data.dtype == np.int16 and "ambiseg_kind" not in back.metadata
    np.testing.assert_array_equal(back.data, ct.data)
    assert back.origin == pytest.approx(ct.origin, abs=1e-4)
    rgb = np.zeros((*ct.data.shape, 3), np.uint8)
    rgb[..., 0] = 200
    write_image(rgb, tmp_path / "rgb.mha", ct, rgb=True)
    [col] = read_image(tmp_path / "rgb.mha")
    assert col.rgb and (col.data[..., 0] == 200).all()


def test_dicom_paths(tmp_path, ct):
    write_ct_series(tmp_path / "series", shape=(4, 12, 10))
    [series] = read_image(tmp_path / "series")
    meta = _meta(series, ambiseg_output={"kind": "agreement"})
    agreement = np.zeros(series.data.shape, np.float32)
    agreement[1, 3:6, 2:5] = 0.75
    [path] = _writer.write_image_dicom_seg(str(tmp_path / "agreement.dcm"), agreement, meta)
    seg = pydicom.dcmread(path)
    assert seg.SegmentationType == "FRACTIONAL" and seg.SegmentSequence[0].SegmentLabel == "agreement"
    with pytest.raises(WriteError, match="only as a FRACTIONAL DICOM-SEG"):
        _writer.write_image_dicom_seg(str(tmp_path / "ct.dcm"), series.data, _meta(series))
    with pytest.raises(WriteError, match="not tied to a DICOM source"):  # a NIfTI source
        _writer.write_image_dicom_seg(str(tmp_path / "a.dcm"), np.zeros(ct.data.shape, np.float32),
                                      _meta(ct, ambiseg_output={"kind": "agreement"}))
    with pytest.raises(WriteError, match="no DICOM image read by napari-ambiseg"):
        _writer.write_labels_dicom_seg(str(tmp_path / "l.dcm"), np.zeros((4, 12, 10), np.uint8),
                                       {"name": "Labels", "metadata": {}})
    labels = (agreement > 0).astype(np.uint8)
    adopted = {"source_name": "Synthetic CT", "what": "consensus", "time": "now"}
    [path] = _writer.write_labels_dicom_seg(str(tmp_path / "adopted.dcm"), labels,
                                            _meta(series, ambiseg_adopted=adopted))
    assert pydicom.dcmread(path).SegmentSequence[0].SegmentAlgorithmType == "SEMIAUTOMATIC"
    [path] = _writer.write_labels_dicom_seg(str(tmp_path / "drawn.dcm"), labels, _meta(series))
    assert pydicom.dcmread(path).SegmentSequence[0].SegmentAlgorithmType == "MANUAL"


# ------------------------------------------------------------------ who made each segment (27.9)
def _seg_items(path) -> dict[int, tuple[str, str]]:
    seg = pydicom.dcmread(path)
    return {int(str(s.TrackingID).split()[-1]): (str(s.SegmentAlgorithmType), str(s.SegmentLabel))
            for s in seg.SegmentSequence}


def test_dicom_seg_marks_adopted_edited_and_hand_painted_values(tmp_path):
    from napari_ambiseg import provenance as P

    write_ct_series(tmp_path / "series", shape=(4, 12, 10))
    [series] = read_image(tmp_path / "series")
    labels = np.zeros(series.data.shape, np.uint8)
    labels[1, 3:6, 2:5] = 1  # adopted: mode 1 of the gallery
    adopted = {"source_name": "ct", "what": "mode 1 (sample 3)", "time": "t1"}
    meta = _meta(series, ambiseg_adopted=adopted)
    meta["metadata"][P.KEY] = P.record_adoption(meta["metadata"], labels)
    assert P.record_adoption(meta["metadata"], labels) is None  # recorded once

    labels[2, 0:2, 0:2] = 2  # painted by hand
    [path] = _writer.write_labels_dicom_seg(str(tmp_path / "a.dcm"), labels, meta)
    assert _seg_items(path) == {1: ("SEMIAUTOMATIC", "nodule, mode 1 (sample 3)"),
                                2: ("MANUAL", "label 2")}
    edited = labels.copy()
    edited[1, 3, 2] = 0  # one voxel of the adopted outline erased
    [path] = _writer.write_labels_dicom_seg(str(tmp_path / "b.dcm"), edited, meta)
    assert _seg_items(path)[1] == ("SEMIAUTOMATIC", "nodule, mode 1 (sample 3), edited")

    # a second adoption that wrote nothing (all its pixels labelled already): the highest
    # value is the hand-painted 2, which stays MANUAL
    meta["metadata"]["ambiseg_adopted"] = {**adopted, "what": "consensus >= 0.50", "time": "t2"}
    meta["metadata"][P.KEY] = P.record_adoption(meta["metadata"], labels, painted={2})
    [path] = _writer.write_labels_dicom_seg(str(tmp_path / "c.dcm"), labels, meta)
    assert _seg_items(path)[2] == ("MANUAL", "label 2")
    # one that wrote a new value 3 is recorded as such
    labels[3, 5:8, 5:8] = 3
    meta["metadata"]["ambiseg_adopted"] = {**adopted, "what": "consensus >= 0.50", "time": "t3"}
    meta["metadata"][P.KEY] = P.record_adoption(meta["metadata"], labels, painted={2})
    [path] = _writer.write_labels_dicom_seg(str(tmp_path / "d.dcm"), labels, meta)
    assert _seg_items(path) == {1: ("SEMIAUTOMATIC", "nodule, mode 1 (sample 3)"),
                                2: ("MANUAL", "label 2"),
                                3: ("SEMIAUTOMATIC", "nodule, consensus >= 0.50")}

    # labels drawn by hand only: MANUAL, as before
    [path] = _writer.write_labels_dicom_seg(str(tmp_path / "e.dcm"), labels, _meta(series))
    assert {t for t, _ in _seg_items(path).values()} == {"MANUAL"}

    # the SEG read back and saved again keeps who made what, and sees later edits
    [back] = read_image(tmp_path / "d.dcm")
    np.testing.assert_array_equal(back.data, labels)
    again = {"name": "x", "metadata": {"ambiseg": back.reference()}}
    [path] = _writer.write_labels_dicom_seg(str(tmp_path / "f.dcm"), back.data, again)
    assert _seg_items(path) == _seg_items(tmp_path / "d.dcm")
    touched = back.data.copy()
    touched[3, 5, 5] = 0
    [path] = _writer.write_labels_dicom_seg(str(tmp_path / "g.dcm"), touched, again)
    assert _seg_items(path)[3] == ("SEMIAUTOMATIC", "nodule, consensus >= 0.50, edited")
    assert _seg_items(path)[2] == ("MANUAL", "label 2")
