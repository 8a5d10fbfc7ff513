"""Issue 12 item 1 at the writer level: a layer's own geometry record puts the saved labels on
the source's grid after the source is gone; a layer without one is matched to an open image,
or written with an announced assumed geometry (warning + sidecar note). Qt-free."""

from __future__ import annotations

import copy

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from napari_ambiseg import _writer
from napari_ambiseg._reader import read_layers
from napari_ambiseg.errors import WriteError
from napari_ambiseg.io import read_image
from napari_ambiseg.io.writers import NOTE_SUFFIX

SHAPE_XYZ = (7, 6, 5)  # nibabel array axes (i, j, k)


def _rotation(deg_z: float, deg_x: float) -> np.ndarray:
    a, b = np.deg2rad(deg_z), np.deg2rad(deg_x)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


AFFINES = {  # RAS affines: spacing 0.8 / 0.9 / 3.0 mm, non-zero origin
    "diagonal": np.diag([0.8, 0.9, 3.0]),
    "flipped": np.diag([-0.8, 0.9, -3.0]),  # i towards the left, k towards the feet
    "oblique": _rotation(25, 10) @ np.diag([0.8, 0.9, 3.0]),
}


pytestmark = pytest.mark.usefixtures("no_viewer")  # tests/conftest.py


def _source(tmp_path, kind: str):
    affine = np.eye(4)
    affine[:3, :3] = AFFINES[kind]
    affine[:3, 3] = [-31.5, 17.25, 102.0]
    values = np.arange(np.prod(SHAPE_XYZ), dtype=np.int16).reshape(SHAPE_XYZ) - 1000  # unique, CT-like
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(values, affine), path)
    [image] = read_image(path)
    return path, image


def _layer_meta(image, name="ct consensus", **extra):
    """What napari passes a writer for a layer napari-ambiseg made from `image` (contract C1)."""
    nd = len(image.spacing)
    meta = {"name": name, "scale": list(image.spacing), "translate": list(image.origin),
            "rotate": np.eye(nd), "shear": [0.0] * (nd * (nd - 1) // 2), "affine": np.eye(nd + 1),
            "metadata": {"ambiseg": copy.deepcopy(image.reference()),
                         "ambiseg_adopted": {"source_name": "ct", "what": "consensus", "time": "now"}}}
    meta.update(extra)
    return meta


def _displayed_point(image, zyx) -> np.ndarray:
    """World (LPS) point of a displayed voxel, from the displayed grid's own geometry."""
    idx = np.asarray(zyx, dtype=float)[::-1]
    return np.asarray(image.origin[::-1]) + image.direction @ (idx * np.asarray(image.spacing[::-1]))


@pytest.mark.parametrize("kind", list(AFFINES))
@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_labels_land_on_the_source_grid_without_the_source(tmp_path, kind, suffix, no_viewer):
    src_path, image = _source(tmp_path, kind)
    assert not image.is_labels  # a CT-like int16 "ct.nii.gz" stays an image
    labels = np.zeros(image.data.shape, np.uint8)
    labels[image.data % 7 == 0] = 1
    labels[image.data % 11 == 0] = 2
    out = tmp_path / f"consensus{suffix}"
    written = _writer.write_labels_volume(str(out), labels, _layer_meta(image))
    assert written == [str(out)] and not no_viewer  # known geometry: no note, no warning
    assert not (tmp_path / f"consensus{suffix}{NOTE_SUFFIX}").exists()

    source, saved = sitk.ReadImage(str(src_path)), sitk.ReadImage(str(out))
    assert saved.GetSize() == source.GetSize()
    np.testing.assert_allclose(saved.GetOrigin(), source.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(saved.GetSpacing(), source.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(saved.GetDirection(), source.GetDirection(), atol=1e-4)
    # every voxel is labelled where the source holds the value it was drawn on (no flips or shifts)
    src, lab = sitk.GetArrayFromImage(source), sitk.GetArrayFromImage(saved)
    expected = np.where(src % 11 == 0, 2, np.where(src % 7 == 0, 1, 0))
    np.testing.assert_array_equal(lab, expected)
    # ... and at the same physical point the displayed voxel was shown at
    for value in (-1000 + 7 * 3, -1000 + 11 * 17, int(src.max())):
        zyx_file = [int(i) for i in np.argwhere(src == value)[0]]
        zyx_shown = [int(i) for i in np.argwhere(image.data == value)[0]]
        point = np.asarray(saved.TransformIndexToPhysicalPoint(zyx_file[::-1]))
        np.testing.assert_allclose(point, source.TransformIndexToPhysicalPoint(zyx_file[::-1]), atol=1e-4)
        np.testing.assert_allclose(point, _displayed_point(image, zyx_shown), atol=1e-4)
        assert lab[tuple(zyx_file)] == labels[tuple(zyx_shown)]
    if suffix == ".nii.gz":
        np.testing.assert_allclose(nib.load(out).affine, nib.load(src_path).affine, atol=1e-4)

    # reopened: an editable labels layer exactly on top of the source image
    [back] = read_image(out)
    assert back.is_labels
    np.testing.assert_array_equal(back.data, labels)
    [(data, kwargs, layer_type)] = read_layers(str(out))
    [(_, src_kwargs, src_type)] = read_layers(str(src_path))
    assert (layer_type, src_type) == ("labels", "image")
    np.testing.assert_array_equal(data, labels)
    np.testing.assert_allclose(kwargs["scale"], src_kwargs["scale"], atol=1e-6)
    np.testing.assert_allclose(kwargs["translate"], src_kwargs["translate"], atol=1e-4)


def test_a_slab_layer_is_embedded_in_the_full_volume(tmp_path, no_viewer):
    src_path, image = _source(tmp_path, "oblique")
    meta = _layer_meta(image)
    meta["metadata"]["ambiseg"]["z0"] = 2
    slab = np.ones((2, *image.data.shape[1:]), np.uint8)
    out = tmp_path / "slab.nii.gz"
    _writer.write_labels_volume(str(out), slab, meta)
    [back] = read_image(out)
    assert back.data.shape == image.data.shape
    assert back.data[2:4].all() and not back.data[:2].any() and not back.data[4:].any()
    np.testing.assert_allclose(sitk.ReadImage(str(out)).GetOrigin(), sitk.ReadImage(str(src_path)).GetOrigin(),
                               atol=1e-4)
    # slices 4..6 of a 5-slice source do not fit its record: written as assumed, and said so
    meta["metadata"]["ambiseg"]["z0"] = 4
    written = _writer.write_labels_volume(str(tmp_path / "bad.nii.gz"), np.ones((3, 6, 7), np.uint8), meta)
    assert written[1].endswith(NOTE_SUFFIX)
    assert "(its metadata['ambiseg'] is for (5, 6, 7))" in (tmp_path / f"bad.nii.gz{NOTE_SUFFIX}").read_text()


def test_without_any_geometry_the_save_says_so(tmp_path, no_viewer):
    labels = np.zeros((4, 5, 6), np.uint8)
    labels[1, 2, 3] = 1
    rot = np.eye(3)
    rot[1:, 1:] = [[0.8, -0.6], [0.6, 0.8]]
    meta = {"name": "Labels", "scale": [3.0, 0.5, 0.25], "translate": [-1.0, 2.0, 4.0],
            "rotate": rot, "shear": [0.0, 0.0, 0.0], "affine": np.eye(4), "metadata": {}}
    out = tmp_path / "drawn.nii.gz"
    note = tmp_path / f"drawn.nii.gz{NOTE_SUFFIX}"
    assert _writer.write_labels_volume(str(out), labels, meta) == [str(out), str(note)]
    saved = sitk.ReadImage(str(out))
    assert saved.GetSpacing() == pytest.approx((0.25, 0.5, 3.0))
    assert saved.GetOrigin() == pytest.approx((4.0, 2.0, -1.0))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(saved), labels)
    [warning] = no_viewer
    assert "ASSUMED" in warning and "'Labels'" in warning and "rotate" in warning and str(note) in warning
    text = note.read_text()
    assert "ASSUMED" in text and "0.25, 0.5, 3 mm" in text and "rotate" in text and "To fix" in text
    assert read_image(out)[0].is_labels  # still marked as labels

    # saved again with a known geometry: the stale note goes away
    shape_ref = read_image(out)[0].reference()
    shape_ref.pop("assumed", None)
    _writer.write_labels_volume(str(out), labels, {"name": "Labels", "metadata": {"ambiseg": shape_ref}})
    assert not note.exists() and len(no_viewer) == 1


def test_an_assumed_own_geometry_is_announced_too(tmp_path, no_viewer):
    from napari_ambiseg.io import reference_from_layer

    ref = reference_from_layer((3, 4, 5), (2.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    assert ref["assumed"] is True
    out = tmp_path / "npz_labels.mha"
    written = _writer.write_labels_volume(str(out), np.ones((3, 4, 5), np.uint8),
                                          {"name": "x", "metadata": {"ambiseg": ref}})
    assert written[1].endswith(NOTE_SUFFIX) and len(no_viewer) == 1
    assert "no geometry of its own" in no_viewer[0]


def test_new_labels_layer_matches_an_open_image(tmp_path, monkeypatch, no_viewer):
    """(b): Layers > New labels layer on an image opened with napari-ambiseg (no Qt)."""
    from napari.components import ViewerModel

    src_path, _ = _source(tmp_path, "oblique")
    viewer = ViewerModel()
    [(data, kwargs, _)] = read_layers(str(src_path))
    image = viewer.add_image(data, **kwargs)
    drawn = viewer.add_labels(np.zeros(data.shape, np.uint8), scale=image.scale, translate=image.translate)
    drawn.data[1, 2, 3] = 1
    monkeypatch.setattr(_writer, "_current_viewer", lambda: viewer)
    out = tmp_path / "drawn.nrrd"
    assert _writer.write_labels_volume(str(out), drawn.data, drawn._get_state()) == [str(out)]
    np.testing.assert_allclose(sitk.ReadImage(str(out)).GetDirection(),
                               sitk.ReadImage(str(src_path)).GetDirection(), atol=1e-6)
    assert not no_viewer
    # the same labels moved by a voxel no longer sit on the image: assumed, and said so
    drawn.translate = np.asarray(drawn.translate) + [0, 0, 0.8]
    written = _writer.write_labels_volume(str(tmp_path / "moved.nrrd"), drawn.data, drawn._get_state())
    assert written[1].endswith(NOTE_SUFFIX) and len(no_viewer) == 1


def test_a_samples_layer_is_refused_with_advice(tmp_path):
    _, image = _source(tmp_path, "diagonal")
    samples = np.zeros((4, *image.data.shape), np.uint8)
    with pytest.raises(WriteError, match="4 masks.*adopt one"):
        _writer.write_labels_volume(str(tmp_path / "s.nii.gz"), samples, _layer_meta(image))
