"""`ambiseg sample` on volumes: --slices / --follow outputs, and --export / --export-agreement
files that sit exactly on the source's grid (checked with SimpleITK, independently of our
writers: same origin, spacing and direction, and the consensus voxels at the physical points
of the source voxels the samples marked)."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from napari_ambiseg.cli import main
from napari_ambiseg.config import ModelConfig
from napari_ambiseg.models import build_model
from napari_ambiseg.result import SampleResult
from napari_ambiseg.testing import tiny_config
from napari_ambiseg.weights_io import save_weights


class Blob:
    """Scripted segmenter: every sample marks the plane's pixels above 0 HU (the blob)."""

    cfg = ModelConfig()  # the CLI reads the model's scope from it

    def sample(self, image, n, steps, seed, *, progress=None, **_):
        n, steps = n or 4, steps or 2
        for i in range(steps):
            progress and progress(i + 1, steps)
        masks = np.repeat((np.asarray(image) > 0)[None], n, 0)
        return SampleResult.from_masks(masks, (0, 0, *masks.shape[1:]), steps, seed)


@pytest.fixture
def blob(monkeypatch):
    from napari_ambiseg.segmenter import Segmenter

    monkeypatch.setattr(Segmenter, "load", classmethod(lambda cls, *a, **k: Blob()))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    cfg = tiny_config()
    return str(save_weights(build_model(cfg), cfg, tmp_path_factory.mktemp("w") / "tiny"))


def blob_volume(shape=(9, 40, 36), slices=(3, 4, 5)):
    """(x, y, z)-ordered NIfTI array: -1000 HU with a bright blob on the given z slices."""
    z, y, x = shape
    data = np.full((x, y, z), -1000, np.int16)
    for k in slices:
        data[10:17, 20:30, k] = 100
    return data


def oblique_affine():
    a, b = np.deg2rad(20), np.deg2rad(-12)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ ry @ np.diag([0.8, 0.9, 3.0])
    affine[:3, 3] = (-40.5, 12.25, 77.0)
    return affine


@pytest.fixture
def oblique_nifti(tmp_path):
    nib = pytest.importorskip("nibabel")
    path = tmp_path / "oblique.nii.gz"
    nib.save(nib.Nifti1Image(blob_volume(), oblique_affine()), path)
    return path


@pytest.fixture
def ct_series(tmp_path):
    from napari_ambiseg.io.synthetic import write_ct_series

    vol = np.zeros((8, 32, 30), np.int16)  # stored values; HU = stored - 1024
    vol[2:5, 12:18, 8:15] = 1100
    write_ct_series(tmp_path / "series", shape=vol.shape, spacing=(2.5, 0.7, 0.8),
                    origin=(-30.0, -20.0, -10.0), volume=vol)
    return tmp_path / "series"


def read_series(folder):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def points(image, mask):
    """Physical points (LPS, mm) of the voxels of `image` where `mask` (z, y, x) is set."""
    return np.array(sorted(image.TransformIndexToPhysicalPoint([int(i) for i in idx[::-1]])
                           for idx in np.argwhere(mask)))


def same_grid(a, b):
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-4)


def run(args):
    assert main([str(a) for a in args]) == 0


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_export_from_an_oblique_nifti_sits_on_the_source_voxels(tmp_path, oblique_nifti, blob,
                                                               suffix):
    source = sitk.ReadImage(str(oblique_nifti))
    marked = sitk.GetArrayFromImage(source) > 0  # (z, y, x): the blob, on source slices 3-5
    out, labels = tmp_path / "out", tmp_path / f"consensus{suffix}"
    run(["sample", oblique_nifti, "--slices", 0, 8, "--out", out, "--export", labels])
    written = sitk.ReadImage(str(labels))
    same_grid(written, source)
    got = sitk.GetArrayFromImage(written)
    assert set(np.unique(got)) == {0, 1}
    np.testing.assert_allclose(points(written, got > 0), points(source, marked), atol=1e-3)


def test_export_of_one_slice_is_zero_elsewhere_and_agreement_too(tmp_path, oblique_nifti, blob):
    source = sitk.ReadImage(str(oblique_nifti))
    marked = sitk.GetArrayFromImage(source) > 0
    out, labels = tmp_path / "out", tmp_path / "one.nii.gz"
    run(["sample", oblique_nifti, "--slice", 4, "--out", out, "--export", labels,
         "--export-agreement", tmp_path / "agreement.nii.gz"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["z0"] == 4 and summary["slices"] == 1
    got = sitk.GetArrayFromImage(sitk.ReadImage(str(labels))) > 0
    assert got.any(axis=(1, 2)).sum() == 1  # one slice of the source grid
    got_points = {tuple(np.round(p, 3)) for p in points(source, got)}
    assert got_points <= {tuple(np.round(p, 3)) for p in points(source, marked)}
    assert got.sum() == marked.sum() // 3
    heat = sitk.ReadImage(str(tmp_path / "agreement.nii.gz"))
    same_grid(heat, source)
    values = sitk.GetArrayFromImage(heat)
    assert values.dtype == np.float32 and values.max() == pytest.approx(1.0)
    np.testing.assert_array_equal(values > 0, got)


def test_export_from_a_dicom_series(tmp_path, ct_series, blob):
    source = read_series(ct_series)
    marked = sitk.GetArrayFromImage(source) > 0
    out = tmp_path / "out"
    run(["sample", ct_series, "--slices", 1, 6, "--out", out,
         "--export", tmp_path / "consensus.nrrd", "--export-agreement", tmp_path / "agreement.mha"])
    written = sitk.ReadImage(str(tmp_path / "consensus.nrrd"))
    same_grid(written, source)
    got = sitk.GetArrayFromImage(written) > 0
    np.testing.assert_allclose(points(written, got), points(source, marked), atol=1e-3)
    heat = sitk.ReadImage(str(tmp_path / "agreement.mha"))
    same_grid(heat, source)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(heat) > 0, got)
    samples = np.load(out / "samples.npy")
    assert samples.shape == (16, 6, 32, 30) and samples.dtype == np.uint8


def test_export_dicom_seg_from_a_dicom_series(tmp_path, ct_series, blob):
    pydicom = pytest.importorskip("pydicom")
    source = read_series(ct_series)
    marked = sitk.GetArrayFromImage(source) > 0
    seg_path, heat_path = tmp_path / "consensus.dcm", tmp_path / "agreement.dcm"
    run(["sample", ct_series, "--slices", 0, 7, "--out", tmp_path / "out", "--export", seg_path,
         "--export-agreement", heat_path])
    ds = pydicom.dcmread(seg_path)
    assert ds.Modality == "SEG" and ds.SegmentationType == "BINARY"
    assert pydicom.dcmread(heat_path).SegmentationType == "FRACTIONAL"
    series_uid = pydicom.dcmread(next(ct_series.iterdir())).SeriesInstanceUID
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid
    # every non-empty SEG frame sits on a source slice that has the blob (all frames are written)
    blob_z = {round(source.TransformIndexToPhysicalPoint((0, 0, int(k)))[2], 3)
              for k in np.flatnonzero(marked.any(axis=(1, 2)))}
    frame_z = {round(float(f.PlanePositionSequence[0].ImagePositionPatient[2]), 3)
               for f, pixels in zip(ds.PerFrameFunctionalGroupsSequence, ds.pixel_array) if pixels.any()}
    assert frame_z == blob_z


def test_dicom_seg_export_needs_a_dicom_input(tmp_path, oblique_nifti, blob, capsys):
    assert main(["sample", str(oblique_nifti), "--out", str(tmp_path / "o"),
                 "--export", str(tmp_path / "x.dcm")]) == 2
    err = capsys.readouterr().err
    assert "DICOM-SEG" in err and "needs a DICOM input" in err
    assert not (tmp_path / "o").exists()  # refused before any work
    assert main(["sample", str(oblique_nifti), "--out", str(tmp_path / "o"),
                 "--export", str(tmp_path / "x.png")]) == 2
    assert "unknown format" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".nii.gz", ".mha"])
def test_an_empty_consensus_writes_a_valid_file(tmp_path, oblique_nifti, blob, suffix):
    source = sitk.ReadImage(str(oblique_nifti))
    labels = tmp_path / f"empty{suffix}"
    run(["sample", oblique_nifti, "--slices", 6, 8, "--out", tmp_path / "o", "--export", labels])
    written = sitk.ReadImage(str(labels))
    same_grid(written, source)
    assert not sitk.GetArrayFromImage(written).any()


def test_empty_consensus_dicom_seg_is_valid(tmp_path, ct_series, blob):
    pydicom = pytest.importorskip("pydicom")
    seg_path = tmp_path / "empty.dcm"
    run(["sample", ct_series, "--slices", 6, 7, "--out", tmp_path / "o", "--export", seg_path])
    assert pydicom.dcmread(seg_path).Modality == "SEG"


def test_npy_volume_export_says_the_geometry_is_assumed(tmp_path, blob, capsys):
    vol = np.full((5, 20, 20), -1000.0, np.float32)
    vol[2, 5:9, 5:9] = 50.0
    np.save(tmp_path / "v.npy", vol)
    labels = tmp_path / "c.nii.gz"
    run(["sample", tmp_path / "v.npy", "--slices", 1, 3, "--spacing", 2, 0.5, 0.5,
         "--out", tmp_path / "o", "--export", labels])
    assert "no geometry" in capsys.readouterr().err
    assert (tmp_path / "c.nii.gz.geometry.txt").is_file()  # the writers' note beside the file
    written = sitk.ReadImage(str(labels))
    assert written.GetSize() == (20, 20, 5)
    np.testing.assert_allclose(written.GetSpacing(), (0.5, 0.5, 2.0))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written) > 0, vol > 0)
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["geometry_assumed"] and summary["z0"] == 1
    big = summary["modes"][0]["size"]
    assert big["volume_mm3"]["median"] == pytest.approx(16 * 2 * 0.25)


def test_slices_with_a_real_tiny_model(tmp_path, weights):
    vol = np.random.default_rng(0).normal(-700, 100, (6, 40, 44)).astype(np.float32)
    np.save(tmp_path / "v.npy", vol)
    out = tmp_path / "o"
    run(["sample", tmp_path / "v.npy", "--slices", 2, 4, "--n", 3, "--steps", 2,
         "--weights", weights, "--out", out, "--center", 20, 22])
    samples, agreement = np.load(out / "samples.npy"), np.load(out / "agreement.npy")
    assert samples.shape == (3, 3, 40, 44) and samples.dtype == np.uint8
    assert agreement.shape == (3, 40, 44) and agreement.dtype == np.float32
    np.testing.assert_allclose(agreement, samples.mean(0), atol=1e-6)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["z0"] == 2 and summary["key"] == 0 and summary["slices"] == 3
    assert summary["input_shape"] == [6, 40, 44] and "total" in summary["timings_s"]
    assert all("size" in m for m in summary["modes"]) and len(summary["samples"]) == 3


def test_follow_outputs(tmp_path, oblique_nifti, blob, capsys):
    out = tmp_path / "o"
    from napari_ambiseg.io import read_image

    shown = read_image(oblique_nifti)[0].data  # displayed (z, y, x) order
    on = np.flatnonzero((shown > 0).any(axis=(1, 2)))
    start = int(on[len(on) // 2])
    run(["sample", oblique_nifti, "--follow", "--slice", start, "--n", 4, "--out", out])
    summary = json.loads((out / "summary.json").read_text())
    z0, z1 = on[0] - 1, on[-1] + 1  # the finding and the empty slice at each end
    assert summary["z0"] == z0 and summary["key"] == start - z0
    samples = np.load(out / "samples.npy")
    assert samples.shape == (4, z1 - z0 + 1, *shown.shape[1:])
    assert np.load(out / "agreement.npy").shape == samples.shape[1:]
    assert "mode 1 - 4 of 4" in capsys.readouterr().out


def test_many_samples_print_a_bounded_list_of_modes(tmp_path, capsys):
    from napari_ambiseg.cli import mode_lines

    masks = np.zeros((1024, 30, 30), bool)
    for i in range(1024):  # 40 distinct squares, the first far more common
        k = 0 if i < 600 else i % 40
        masks[i, k % 6 * 5:k % 6 * 5 + 3, k // 6 * 4:k // 6 * 4 + 3] = True
    res = SampleResult.from_masks(masks, (0, 0, 30, 30), 10, 0, spacing=(0.5, 0.5))
    lines = mode_lines(res)
    assert len(lines) == 9 and lines[0].startswith("  mode 1 - ")
    assert "mm^2" in lines[0] and "smaller modes" in lines[-1]
