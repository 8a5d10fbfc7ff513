"""DICOM reading: real files from pydicom / pydicom-data, and synthetic series made here."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from napari_ambiseg.errors import AmbisegError, ReadError
from napari_ambiseg.io import read_image
from napari_ambiseg.io.synthetic import ramp_volume, write_ct_series

DICOMDIR_TESTS = Path(get_testdata_file("CT_small.dcm")).parent / "dicomdirtests"


def _data_file(name: str) -> str:
    """A pydicom-data file, skipping the test when pydicom-data is not installed."""
    pytest.importorskip("data_store", reason="pydicom-data is not installed")
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} not available offline")
    return path


def _one(path) -> object:
    images = read_image(path)
    assert len(images) == 1
    return images[0]


# --- single files ------------------------------------------------------------------------

def test_ct_small_is_in_hounsfield_units_with_geometry():
    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    im = _one(path)
    assert im.data.shape == (128, 128) and im.axes == ("y", "x")
    assert im.data.dtype == np.int16  # integer rescale keeps a compact dtype
    np.testing.assert_array_equal(im.data, ds.pixel_array.astype(int) - 1024)
    assert im.data.min() == -896  # air-ish HU, not the stored 128
    assert im.spacing == pytest.approx((0.661468, 0.661468))
    assert im.origin == pytest.approx((-179.035797, -158.135803))  # (y, x) from ImagePositionPatient
    assert im.modality == "CT" and im.model_modality == "CT"
    assert im.window is None
    tags = im.metadata["tags"]
    assert tags["StudyInstanceUID"] == ds.StudyInstanceUID and tags["Modality"] == "CT"
    assert im.metadata["sop_instance_uids"] == [ds.SOPInstanceUID]
    assert im.geometry["size"] == [128, 128, 1]
    assert im.geometry["spacing"][2] == pytest.approx(5.0)


def test_mr_small_window_becomes_contrast_limits():
    im = _one(get_testdata_file("MR_small.dcm"))
    assert im.window == (600.0, 1600.0)
    data, kwargs, kind = im.to_layer_data()
    assert kind == "image" and kwargs["contrast_limits"] == [-200.0, 1400.0]
    assert kwargs["scale"] == pytest.approx((0.3125, 0.3125))
    assert kwargs["colormap"] == "gray" and kwargs["rgb"] is False
    meta = kwargs["metadata"]["ambiseg"]
    assert meta["window"] == [600.0, 1600.0] and meta["modality"] == "MR"
    assert meta["source"].endswith("MR_small.dcm")


def test_ct_693_512_with_window():
    im = _one(_data_file("693_UNCR.dcm"))
    assert im.data.shape == (512, 512)
    assert im.window == (40.0, 100.0)
    assert im.data.min() == -3024  # padding -2000 stored, intercept -1024
    assert im.spacing == pytest.approx((0.478516, 0.478516))


def test_us_rgb_still_has_rgb_layer_and_grayscale_for_the_model():
    im = _one(_data_file("US1_UNCR.dcm"))
    ds = pydicom.dcmread(_data_file("US1_UNCR.dcm"))
    assert im.rgb and im.data.shape == (480, 640, 3) and im.data.dtype == np.uint8
    np.testing.assert_array_equal(im.data, ds.pixel_array)
    assert im.gray.shape == (480, 640) and im.gray.dtype == np.uint8
    r, g, b = (im.data[..., c].astype(float) for c in range(3))
    np.testing.assert_allclose(im.gray, 0.299 * r + 0.587 * g + 0.114 * b, atol=0.51)
    assert im.model_image is im.gray and im.model_modality == "US"
    _, kwargs, _ = im.to_layer_data()
    assert kwargs["rgb"] is True and "contrast_limits" not in kwargs
    gdata, gkw, gkind = im.gray_layer_data()
    assert gkind == "image" and gkw["name"] == f"{im.name} (gray)" and gkw["visible"] is False
    assert gdata is im.gray


def test_palette_color_ultrasound_is_expanded_to_rgb():
    path = _data_file("OBXXXX1A.dcm")
    im = _one(path)
    ds = pydicom.dcmread(path)
    assert im.rgb and im.data.shape == (600, 800, 3) and im.data.dtype == np.uint8
    # the palette maps index -> 16-bit colour; we keep its high byte
    idx = ds.pixel_array
    lut_red = np.frombuffer(ds.RedPaletteColorLookupTableData, dtype="<u2")
    first = ds.RedPaletteColorLookupTableDescriptor[1]
    k = np.argwhere(idx > first)[0]
    assert im.data[k[0], k[1], 0] == lut_red[idx[k[0], k[1]] - first] >> 8
    # ultrasound region calibration (cm) becomes the spacing in mm
    assert im.spacing == pytest.approx((0.2622878766, 0.2622878766))


@pytest.fixture(scope="module")
def us_cine():
    return _one(_data_file("color3d_jpeg_baseline.dcm"))


def test_ultrasound_cine_frames_are_a_time_axis(us_cine):
    im = us_cine
    assert im.axes == ("t", "y", "x") and im.rgb
    assert im.data.shape == (120, 480, 640, 3)
    assert im.gray.shape == (120, 480, 640)
    assert im.spacing == pytest.approx((1.0, 0.5104970559, 0.5104970559))
    assert im.metadata["frame_time_ms"] == pytest.approx(33.333)
    # YBR_FULL_422 JPEG is converted to RGB: the frames are not constant and not all gray
    assert im.data[60].std() > 10
    # frames differ (it is a cine), so the time axis is real
    assert not np.array_equal(im.data[0], im.data[60])


def test_enhanced_mr_frames_are_z():
    im = _one(_data_file("emri_small.dcm"))
    assert im.axes == ("z", "y", "x") and im.data.shape == (10, 64, 64)
    assert im.spacing[0] == pytest.approx(1.2)  # SpacingBetweenSlices
    assert im.modality == "MR" and not im.rgb


def test_truncated_file_gives_one_clear_error():
    with pytest.raises(ReadError, match=r"MR_truncated\.dcm.*truncated or corrupt.*copy the file again"):
        read_image(get_testdata_file("MR_truncated.dcm"))


@pytest.mark.parametrize("name, words", [("rtstruct.dcm", "RT Structure Set")])  # SEG: test_io_seg_read.py
def test_non_image_dicom_is_refused(tmp_path, name, words):
    path = get_testdata_file(name)
    with pytest.raises(ReadError, match=words) as e:
        read_image(path)
    assert os.path.basename(path) in str(e.value)


def test_missing_decoder_names_the_package(monkeypatch):
    path = _data_file("color3d_jpeg_baseline.dcm")
    from pydicom.pixels.decoders.base import get_decoder

    decoder = get_decoder(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    # what pydicom sees when no JPEG plugin is installed
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", {"pylibjpeg": ("pylibjpeg>=2.0", "pylibjpeg-libjpeg>=2.1")})
    with pytest.raises(ReadError, match=r"JPEG Baseline.*pip install pylibjpeg pylibjpeg-libjpeg"):
        read_image(path)


def test_decoder_failure_during_decoding_is_translated(monkeypatch):
    """pydicom's own RuntimeError (raised inside pixel_array) also becomes the install hint."""
    path = get_testdata_file("CT_small.dcm")

    def fail(self):
        raise RuntimeError("Unable to decompress 'JPEG 2000' pixel data because all plugins are "
                           "missing dependencies:\n\tpylibjpeg - requires pylibjpeg-openjpeg>=2.0")

    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(fail))
    with pytest.raises(ReadError, match="pip install"):
        read_image(path)


# --- series --------------------------------------------------------------------------------

def test_series_sorted_by_position_not_name_or_instance_number(tmp_path):
    files = write_ct_series(tmp_path, shape=(8, 32, 32), spacing=(2.5, 0.7, 0.8), origin=(-30, -20, -10))
    # file names are shuffled and InstanceNumbers reversed: only positions give this order
    assert sorted(files) != files
    assert [pydicom.dcmread(f).InstanceNumber for f in files] == list(range(8, 0, -1))
    im = _one(tmp_path)
    assert im.axes == ("z", "y", "x") and im.data.shape == (8, 32, 32) and im.data.dtype == np.int16
    np.testing.assert_array_equal(im.data, ramp_volume((8, 32, 32)).astype(int) - 1024)
    assert im.spacing == pytest.approx((2.5, 0.7, 0.8))
    assert im.origin == pytest.approx((-30, -20, -10))
    np.testing.assert_allclose(im.direction, np.eye(3))
    assert im.metadata["sop_instance_uids"] == [pydicom.dcmread(f).SOPInstanceUID for f in files]
    assert [Path(f) for f in im.metadata["source_files"]] == files
    assert im.window == (40.0, 400.0) and im.name == "Synthetic CT"


def test_real_series_with_descending_positions():
    """dicomdirtests CT5N: InstanceNumber 6..10 run from z=8.76 down to z=-1.24."""
    im = _one(DICOMDIR_TESTS / "98892001" / "CT5N")
    assert im.data.shape == (5, 16, 16)
    assert im.spacing == pytest.approx((2.5, 0.488281, 0.488281))
    assert im.origin == pytest.approx((-1.2375, -143.0, -72.199997))  # lowest slice first
    instance = [pydicom.dcmread(f).InstanceNumber for f in im.metadata["source_files"]]
    assert instance == [10, 9, 8, 7, 6]
    first = pydicom.dcmread(im.metadata["source_files"][0])
    np.testing.assert_array_equal(im.data[0], first.pixel_array.astype(int) * first.RescaleSlope
                                  + first.RescaleIntercept)


def test_uneven_series_warns_and_keeps_mean_spacing():
    with pytest.warns(UserWarning, match="uneven slice spacing"):
        im = _one(DICOMDIR_TESTS / "77654033" / "CT2")
    assert im.spacing[0] == pytest.approx((105.519997 + 99.480003) / 3)
    assert "uneven" in im.metadata["warnings"][0]


def test_folder_with_several_series_and_stray_files(tmp_path):
    write_ct_series(tmp_path / "a", shape=(4, 16, 16), description="Lung 1mm", seed=1)
    write_ct_series(tmp_path / "a", shape=(6, 16, 24), description="Soft tissue", seed=2)
    (tmp_path / "a" / "notes.txt").write_text("not DICOM")
    (tmp_path / "a" / "thumbs.db").write_bytes(os.urandom(300))
    shutil.copy(get_testdata_file("MR_small.dcm"), tmp_path / "b.dcm")  # a second folder level
    images = read_image(tmp_path)
    by_name = {im.name: im for im in images}
    assert len(images) == 3 and set(by_name) == {"Lung 1mm", "Soft tissue", "MR 1"}  # MR: no description
    assert by_name["Lung 1mm"].data.shape == (4, 16, 16)
    assert by_name["Soft tissue"].data.shape == (6, 16, 24)


def test_series_with_mixed_sizes_is_a_clear_error(tmp_path):
    files = write_ct_series(tmp_path, shape=(4, 16, 16))
    odd = pydicom.dcmread(files[2])
    odd.Rows, odd.Columns = 8, 8
    odd.PixelData = np.zeros((8, 8), np.int16).tobytes()
    odd.save_as(files[2])
    with pytest.raises(ReadError, match=r"different sizes"):
        read_image(tmp_path)


def test_series_with_two_images_per_position_is_refused(tmp_path):
    files = write_ct_series(tmp_path, shape=(4, 16, 16))
    twin = pydicom.dcmread(files[1])
    twin.ImagePositionPatient = pydicom.dcmread(files[2]).ImagePositionPatient
    twin.save_as(files[1])
    with pytest.raises(ReadError, match="share one position.*4D series"):
        read_image(tmp_path)


def test_localizer_series_is_skipped_with_a_warning():
    with pytest.warns(UserWarning, match="mixes 3 slice orientations"):
        images = read_image(DICOMDIR_TESTS / "98892003")
    assert images and all("PILOT" not in im.name for im in images)


def test_folder_without_dicom_and_files_that_are_not_images(tmp_path):
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(ReadError, match="no DICOM image series"):
        read_image(tmp_path)
    garbage = tmp_path / "x.dcm"
    garbage.write_bytes(b"\x00" * 64 + os.urandom(400))
    with pytest.raises(ReadError, match=r"x\.dcm"):
        read_image(garbage)
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    with pytest.raises(ReadError, match=r"empty\.dcm: the file is empty"):
        read_image(empty)


def test_every_error_is_an_ambiseg_error(tmp_path):
    with pytest.raises(AmbisegError):
        read_image(tmp_path / "missing.nii")
