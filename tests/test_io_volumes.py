"""NIfTI / MHA / MHD / NRRD / raster reading, labels writing with geometry, atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from nibabel.testing import data_path
from PIL import Image

from napari_ambiseg.errors import ReadError, WriteError
from napari_ambiseg.io import can_read, read_image, reference_from_layer, write_labels
from napari_ambiseg.io.atomic import atomic_output

ANATOMICAL = Path(data_path) / "anatomical.nii"  # LAS: the y axis is stored anterior->posterior
STANDARD = Path(data_path) / "standard.nii.gz"  # RAS uint8


def _one(path):
    images = read_image(path)
    assert len(images) == 1
    return images[0]


def _oblique_image(path: Path, pixel=sitk.sitkInt16) -> sitk.Image:
    """A 3D image with a rotated, flipped direction and anisotropic spacing."""
    arr = np.arange(5 * 6 * 7, dtype=np.int16).reshape(5, 6, 7)
    img = sitk.Cast(sitk.GetImageFromArray(arr), pixel)
    angle = np.deg2rad(20)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    img.SetDirection((rot @ np.diag([-1, 1, 1])).ravel().tolist())
    img.SetSpacing((0.8, 1.1, 3.0))
    img.SetOrigin((12.5, -40.0, 7.25))
    sitk.WriteImage(img, str(path))
    return img


def test_anatomical_nifti_orientation_and_values():
    im = _one(ANATOMICAL)
    ref = sitk.ReadImage(str(ANATOMICAL))
    src = sitk.GetArrayFromImage(ref)  # (z, y, x) in file order
    assert im.data.shape == (25, 41, 33) and im.axes == ("z", "y", "x")
    # stored A->P along y (direction[1,1] = -1): shown P->A flipped so that anterior is up
    assert im.geometry["flip"] == [1]
    np.testing.assert_array_equal(im.data, src[:, ::-1, :])
    np.testing.assert_allclose(im.direction, np.eye(3))
    assert im.spacing == pytest.approx((2.0, 2.0, 2.0))
    # the displayed first voxel is the file's last y voxel: origin.y = 40 - 2 * 40
    assert im.origin == pytest.approx((-16.0, 40.0 - 2.0 * 40, -32.0))
    # the displayed grid maps index -> LPS exactly like the file does for the same voxel
    idx_disp = np.array([3, 7, 11])  # x, y, z (ITK order) in the displayed grid
    lps_disp = np.array(im.origin[::-1]) + im.direction @ (idx_disp * np.array(im.spacing[::-1]))
    idx_file = idx_disp.copy()
    idx_file[1] = 41 - 1 - idx_disp[1]
    lps_file = ref.TransformIndexToPhysicalPoint([int(i) for i in idx_file])
    np.testing.assert_allclose(lps_disp, lps_file)
    assert im.data[11, 7, 3] == src[11, 41 - 1 - 7, 3]


def test_nifti_labels_round_trip_keeps_the_source_grid(tmp_path):
    im = _one(ANATOMICAL)
    labels = (im.data > np.percentile(im.data, 80)).astype(np.uint8)
    labels[im.data > np.percentile(im.data, 95)] = 2
    out = write_labels(labels, tmp_path / "anatomical_labels.nii.gz", im)
    assert out == [str(tmp_path / "anatomical_labels.nii.gz")]
    written, source = sitk.ReadImage(out[0]), sitk.ReadImage(str(ANATOMICAL))
    assert written.GetSize() == source.GetSize()
    np.testing.assert_allclose(written.GetSpacing(), source.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(written.GetOrigin(), source.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(written.GetDirection(), source.GetDirection(), atol=1e-6)
    # same voxel grid as the file: labels equal thresholding the file's own array
    src = sitk.GetArrayFromImage(source)
    expected = (src > np.percentile(src, 80)).astype(np.uint8)
    expected[src > np.percentile(src, 95)] = 2
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), expected)
    # nibabel agrees on the affine
    np.testing.assert_allclose(nib.load(out[0]).affine, nib.load(ANATOMICAL).affine, atol=1e-4)
    # read back: a labels layer shown exactly on top of the image
    back = _one(out[0])
    assert back.is_labels and back.to_layer_data()[2] == "labels"
    np.testing.assert_array_equal(back.data, labels)
    assert back.spacing == pytest.approx(im.spacing) and back.origin == pytest.approx(im.origin, abs=1e-4)


@pytest.mark.parametrize("suffix", [".mha", ".nrrd", ".mhd", ".nii"])
def test_oblique_volume_round_trip(tmp_path, suffix):
    source = _oblique_image(tmp_path / f"image{suffix}")
    im = _one(tmp_path / f"image{suffix}")
    assert im.geometry["flip"] == [0]  # x column points mostly to -L
    labels = (im.data % 3 == 0).astype(np.uint8)
    out = write_labels(labels, tmp_path / f"seg{suffix}", im)
    written = sitk.ReadImage(out[0])
    np.testing.assert_allclose(written.GetDirection(), source.GetDirection(), atol=1e-5)
    np.testing.assert_allclose(written.GetOrigin(), source.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(written.GetSpacing(), source.GetSpacing(), atol=1e-5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written),
                                  (sitk.GetArrayFromImage(source) % 3 == 0).astype(np.uint8))
    if suffix == ".mhd":
        assert any(p.endswith("raw") for p in out[1:])
        assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temp left


def test_ras_nifti_is_flipped_in_x_and_y():
    im = _one(STANDARD)
    assert im.geometry["flip"] == [0, 1]
    src = sitk.GetArrayFromImage(sitk.ReadImage(str(STANDARD)))
    np.testing.assert_array_equal(im.data, src[:, ::-1, ::-1])
    assert im.spacing == pytest.approx((2.0, 3.0, 1.0))


def test_4d_nifti_is_refused_with_advice():
    with pytest.raises(ReadError, match=r"example4d\.nii\.gz: it is a 4D image.*save one volume"):
        read_image(Path(data_path) / "example4d.nii.gz")


def test_nifti2_falls_back_to_nibabel(tmp_path):
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    affine = np.diag([-1.5, 2.0, 2.5, 1.0])
    affine[:3, 3] = [10, -20, 30]
    nib.save(nib.Nifti2Image(data, affine), tmp_path / "n2.nii")
    im = _one(tmp_path / "n2.nii")
    # RAS affine with -x is LPS +x: no flip; array (x,y,z) -> (z,y,x); y flipped (RAS +y = LPS -y)
    assert im.geometry["flip"] == [1]
    np.testing.assert_array_equal(im.data, data.transpose(2, 1, 0)[:, ::-1, :])
    assert im.spacing == pytest.approx((2.5, 2.0, 1.5))


def test_empty_garbage_and_misnamed_files(tmp_path):
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    with pytest.raises(ReadError, match="empty"):
        read_image(tmp_path / "empty.nii.gz")
    (tmp_path / "junk.nrrd").write_bytes(os.urandom(500))
    with pytest.raises(ReadError, match=r"junk\.nrrd"):
        read_image(tmp_path / "junk.nrrd")
    _oblique_image(tmp_path / "volume.nii")
    os.rename(tmp_path / "volume.nii", tmp_path / "volume.dcm")
    with pytest.raises(ReadError, match=r"volume\.dcm: it is a nifti file.*rename it to end in \.nii"):
        read_image(tmp_path / "volume.dcm")
    (tmp_path / "notes.txt").write_text("hello")
    assert not can_read(tmp_path / "notes.txt")
    with pytest.raises(ReadError, match="unsupported file type"):
        read_image(tmp_path / "notes.txt")


def test_png_ultrasound_export_rgb_and_gray(tmp_path):
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[..., 0] = 200
    rgb[5:10, 5:10] = 255
    Image.fromarray(rgb).save(tmp_path / "us.png")
    im = _one(tmp_path / "us.png")
    assert im.rgb and im.data.shape == (20, 30, 3) and im.axes == ("y", "x")
    assert im.gray[0, 0] == round(0.299 * 200) and im.gray[6, 6] == 255
    gray16 = (np.arange(20 * 30, dtype=np.uint16).reshape(20, 30) * 100)
    Image.fromarray(gray16).save(tmp_path / "g16.png")
    im16 = _one(tmp_path / "g16.png")
    assert not im16.rgb and im16.data.dtype == np.uint16
    np.testing.assert_array_equal(im16.data, gray16)


def test_multipage_tiff_is_frames(tmp_path):
    frames = [Image.fromarray(np.full((8, 9), 10 * k, np.uint8)) for k in range(4)]
    frames[0].save(tmp_path / "cine.tif", save_all=True, append_images=frames[1:])
    im = _one(tmp_path / "cine.tif")
    assert im.axes == ("t", "y", "x") and im.data.shape == (4, 8, 9)
    assert [int(im.data[k, 0, 0]) for k in range(4)] == [0, 10, 20, 30]
    (tmp_path / "cut.png").write_bytes((tmp_path / "cine.tif").read_bytes()[:40])
    with pytest.raises(ReadError, match=r"cut\.png"):
        read_image(tmp_path / "cut.png")


def test_write_without_reference_uses_layer_scale(tmp_path):
    labels = np.zeros((3, 4, 5), np.int32)
    labels[1, 2, 3] = 7
    ref = reference_from_layer(labels.shape, scale=(3.0, 0.5, 0.25), translate=(-1.0, 2.0, 4.0))
    out = write_labels(labels, tmp_path / "plain.nrrd", ref)
    img = sitk.ReadImage(out[0])
    assert img.GetSpacing() == pytest.approx((0.25, 0.5, 3.0))
    assert img.GetOrigin() == pytest.approx((4.0, 2.0, -1.0))
    assert img.GetPixelID() == sitk.sitkUInt8
    assert sitk.GetArrayFromImage(img)[1, 2, 3] == 7


def test_write_errors(tmp_path):
    im = _one(ANATOMICAL)
    with pytest.raises(WriteError, match="shape"):
        write_labels(np.zeros((2, 2, 2), np.uint8), tmp_path / "x.nii.gz", im)
    with pytest.raises(WriteError, match="use one of"):
        write_labels(np.zeros(im.data.shape, np.uint8), tmp_path / "x.png", im)
    with pytest.raises(WriteError, match="does not exist"):
        write_labels(np.zeros(im.data.shape, np.uint8), tmp_path / "nope" / "x.nii.gz", im)
    with pytest.raises(WriteError, match="not tied to a DICOM source"):
        write_labels(np.ones(im.data.shape, np.uint8), tmp_path / "x.dcm", im)


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "labels.nii.gz"
    target.write_bytes(b"good old file")

    def broken(image, path, *args, **kwargs):
        Path(path).write_bytes(b"half a NIfTI")
        raise RuntimeError("disk full")

    monkeypatch.setattr(sitk, "WriteImage", broken)
    with pytest.raises(WriteError, match=r"labels\.nii\.gz.*disk full"):
        write_labels(np.zeros((2, 3, 4), np.uint8), target)
    assert target.read_bytes() == b"good old file"
    assert os.listdir(tmp_path) == ["labels.nii.gz"]


def test_atomic_output_replaces_only_on_success(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with atomic_output(target) as tmp:
        assert tmp.name == "a.txt" and tmp.parent != tmp_path
        tmp.write_text("new")
        assert target.read_text() == "old"
    assert target.read_text() == "new"
    with pytest.raises(WriteError, match="produced no file"):
        with atomic_output(target):
            pass
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["a.txt"]
