"""A nodule in 3D through the GUI (issue 14), as a user walks it: File > Open a CT volume
(Z, H, W) with known spacing -> the sampling dock on a slice range, or following the finding
-> the gallery's per-mode sizes -> Adopt a 3D mode -> the Labels layer holds it on every
slice of the slab, at the right z of the full volume, on the image's grid -> File > Save
Selected Layers through the plugin's NIfTI writer -> reopen -> the same voxels on all slices.
The sizes the docks report are `measure`'s on the adopted labels (mm^3 from the spacing)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from napari_ambiseg.measure import measure, summarize_sizes
from napari_ambiseg.testing import ScriptedSegmenter, ThresholdSegmenter, disk
from napari_ambiseg.widgets import layers as L
from napari_ambiseg.widgets.gallery import GalleryWidget
from napari_ambiseg.widgets.sampling import SLICE_MODES, SamplingWidget

pytestmark = pytest.mark.gui

PLUGIN = "napari-ambiseg"
SHAPE = (12, 48, 40)              # (z, y, x)
SPACING = (2.5, 0.8, 0.7)         # mm (z, y, x)
CENTER = (24, 20)                 # the prompt (row, col) on every slice
RADII = (0, 0, 0, 0, 4, 7, 8, 7, 4, 0, 0, 0)  # the bright nodule per stored slice
DIRECTIONS = {"stored-as-shown": np.eye(3), "z-flipped": np.diag([1.0, 1.0, -1.0])}


def _ct_file(path, direction) -> str:
    """A CT volume in HU: air whose value tells the stored slice (-800 + 10 z), a nodule (40)."""
    ct = np.empty(SHAPE, np.int16)
    for z, r in enumerate(RADII):
        ct[z] = -800 + 10 * z
        if r:
            ct[z][disk(SHAPE[1:], r, CENTER)] = 40
    img = sitk.GetImageFromArray(ct)
    img.SetSpacing(SPACING[::-1])
    img.SetOrigin((-30.0, 12.5, -140.0))
    img.SetDirection(tuple(np.asarray(direction, float).ravel()))
    sitk.WriteImage(img, str(path))
    return str(path)


def _open(viewer, path, kind):
    from napari.layers import Image, Labels

    layers = viewer.open(str(path), plugin=PLUGIN)
    found = [la for la in layers if isinstance(la, {"image": Image, "labels": Labels}[kind])]
    assert len(found) == 1, [type(la).__name__ for la in layers]
    return found[0]


def _setup(make_napari_viewer, tmp_path, direction, segmenter, slices, z, z_range=None):
    """Viewer with the CT opened by napari-ambiseg, both docks, a point on slice `z`; the
    sampler run once with the dock's `slices` mode ("range" with `z_range`, or "follow")."""
    viewer = make_napari_viewer()
    src = _open(viewer, _ct_file(tmp_path / "ct.nii.gz", direction), "image")
    np.testing.assert_allclose(src.scale, SPACING, rtol=1e-6)
    sampler, gallery = SamplingWidget(viewer), GalleryWidget(viewer)
    viewer.window.add_dock_widget(sampler, name="sampling")
    viewer.window.add_dock_widget(gallery, name="gallery")
    viewer.dims.set_point(0, src.data_to_world((z, 0, 0))[0])
    point = viewer.add_points([src.data_to_world((z, *CENTER))], name="prompt")
    sampler.set_segmenter(segmenter, "scripted")
    sampler.image.set_value(src)
    sampler.where.set_value(point)
    sampler.slices.setCurrentIndex([key for _, key in SLICE_MODES].index(slices))
    if z_range is not None:
        assert sampler.z_from.isVisibleTo(sampler)  # the range row shows for "slice range"
        sampler.z_from.setValue(z_range[0])
        sampler.z_to.setValue(z_range[1])
    sampler.n.setValue(16)
    sampler.steps.setValue(2)
    return viewer, src, sampler, gallery


def _sample(qtbot, sampler):
    with qtbot.waitSignal(sampler.done, timeout=60_000):
        sampler.run_button.click()
    assert sampler.last_error is None, sampler.last_error
    return sampler.last_outputs


def _headers(gallery) -> list[str]:
    return [h.text().replace("<b>", "").replace("</b>", "") for h in gallery.headers]


def _spacing(src) -> tuple[float, ...]:
    return tuple(src.metadata["ambiseg"]["spacing"])  # (z, y, x) as read from the file


def _check_on_grid(labels, src) -> None:
    assert labels.data.shape == SHAPE
    np.testing.assert_allclose(labels.scale, src.scale)
    np.testing.assert_allclose(labels.translate, src.translate)


def _save_via_menu(viewer, labels, path, monkeypatch) -> None:
    """File > Save Selected Layers..., the plugin's labels writer chosen in the dialog."""
    from napari._app_model import get_app_model
    from napari.plugins._npe2 import file_extensions_string_for_layers
    from qtpy.QtWidgets import QFileDialog

    viewer.layers.selection.active = labels
    ext_str, _ = file_extensions_string_for_layers([labels])
    chosen = [e for e in ext_str.split(";;") if "labels with source geometry" in e]
    assert chosen, ext_str
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        lambda *a, **k: (str(path), chosen[0]))
    get_app_model().commands.execute_command(
        "napari.window.file.save_layers_dialog.selected").result()
    assert path.is_file()
    assert not path.with_name(path.name + ".geometry.txt").exists()  # geometry was known


def _reopen_and_compare(viewer, src_path, path, expected, scale, translate) -> None:
    viewer.layers.clear()
    again = _open(viewer, path, "labels")
    np.testing.assert_array_equal(np.asarray(again.data), expected)  # all slices
    np.testing.assert_allclose(again.scale, scale, atol=1e-4)
    np.testing.assert_allclose(again.translate, translate, atol=1e-4)
    a, b = sitk.ReadImage(str(src_path)), sitk.ReadImage(str(path))  # the source's grid
    for get in ("GetOrigin", "GetSpacing", "GetDirection", "GetSize"):
        np.testing.assert_allclose(getattr(b, get)(), getattr(a, get)(), atol=1e-4)


@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_slice_range_adopt_mode_save_reopen(direction, make_napari_viewer, qtbot, tmp_path,
                                            monkeypatch):
    # 16 samples: mode 1 = discs of radius 5 (5 samples) and 6 (4 samples; IoU 0.7 with
    # radius 5), mode 2 = radius 12 (5), no finding (2); the same disc on every slice
    seg = ScriptedSegmenter(groups=(5, 4, 5, 2), radii=(5, 6, 12, 0))
    viewer, src, sampler, gallery = _setup(make_napari_viewer, tmp_path, DIRECTIONS[direction],
                                           seg, "range", z=6, z_range=(3, 8))
    out = _sample(qtbot, sampler)
    assert (out.z0, out.masks.shape[1], out.key) == (3, 6, 3)
    assert {c["shape"] for c in seg.calls} == {SHAPE[1:]} and len(seg.calls) == 6

    # the gallery: per-mode sizes in mm^3 with their ranges, the no-finding mode last
    texts = _headers(gallery)
    assert texts[0].startswith("mode 1 - 9 of 16: ") and "mm^3 (" in texts[0], texts
    assert texts[1].startswith("mode 2 - 5 of 16: ") and "mm^3" in texts[1], texts
    assert texts[2] == "no finding - 2 of 16"
    assert sorted(gallery.adopt_buttons) == [1, 2]

    # adopt mode 1 (its representative, a radius-5 sample) with its Adopt button
    gallery.adopt_buttons[1].click()
    rep = out.modes[0].members[0]
    mode1 = viewer.layers.selection.active
    assert mode1.name == f"{src.name} labels" and mode1.metadata["ambiseg_adopted"]
    _check_on_grid(mode1, src)
    data = np.asarray(mode1.data)
    on = [int(data[z].any()) for z in range(SHAPE[0])]
    assert on == [0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0]  # the slab 3..8 in the full volume
    for z in range(3, 9):  # every slice of the slab, not only the prompt's
        np.testing.assert_array_equal(data[z] > 0, disk(SHAPE[1:], 5, CENTER))
    np.testing.assert_array_equal(data > 0, L.embed(out.masks[rep], SHAPE, out.z0))

    # a radius-6 member of mode 1, adopted as a sample: the top of mode 1's range
    big = next(k for k in out.modes[0].members if out.masks[k, 0].sum() > out.masks[rep, 0].sum())
    gallery.buttons[big].click()
    gallery.adopt_sample_button.click()
    member = viewer.layers.selection.active
    assert member is not mode1
    _check_on_grid(member, src)

    # the sizes shown are measure's on the adopted labels, volume from the file's spacing
    spacing = _spacing(src)
    small, large = measure(data > 0, spacing), measure(np.asarray(member.data) > 0, spacing)
    voxel = float(np.prod(spacing))
    assert small.volume_mm3 == pytest.approx(6 * disk(SHAPE[1:], 5, CENTER).sum() * voxel)
    assert small.slices == 6 and small.extent_mm == pytest.approx(6 * spacing[0])
    for k, size in ((rep, small), (big, large)):  # per sample: the same figures
        mine = out.sizes[k]
        assert (mine.voxels, mine.slices) == (size.voxels, size.slices)
        assert mine.volume_mm3 == pytest.approx(size.volume_mm3)
        assert mine.diameter_mm == pytest.approx(size.diameter_mm)
        assert mine.extent_mm == pytest.approx(size.extent_mm)
        assert mine.first_slice + out.z0 == size.first_slice
    expected = summarize_sizes([small] * 5 + [large] * 4)["text"]  # 5 + 4 members
    assert texts[0] == f"mode 1 - 9 of 16: {expected}"
    assert out.mode_sizes()[0]["text"] == expected

    # File > Save Selected Layers (NIfTI, the plugin's writer); close all; reopen
    saved = tmp_path / "mode1.nii.gz"
    scale, translate = np.array(mode1.scale), np.array(mode1.translate)
    _save_via_menu(viewer, mode1, saved, monkeypatch)
    # in the file, the labels sit on the stored slices showing the sampled slices' air values
    stored = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "ct.nii.gz")))
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(saved)))
    shown_air = {int(src.data[z, 0, 0]) for z in range(3, 9)}
    assert {int(stored[z, 0, 0]) for z in np.flatnonzero(written.any((1, 2)))} == shown_air
    _reopen_and_compare(viewer, tmp_path / "ct.nii.gz", saved, data, scale, translate)


@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_follow_the_finding_adopt_save_reopen(direction, make_napari_viewer, qtbot, tmp_path,
                                              monkeypatch):
    # every sample marks the plane's bright pixels: the nodule, slice by slice
    viewer, src, sampler, gallery = _setup(make_napari_viewer, tmp_path, DIRECTIONS[direction],
                                           ThresholdSegmenter(), "follow", z=6)
    assert not sampler.z_from.isVisibleTo(sampler)
    out = _sample(qtbot, sampler)
    nodule = np.asarray(src.data) > 0
    marked = np.flatnonzero(nodule.any((1, 2)))
    # followed up and down to the first empty slice on each side, and no further
    assert (out.z0, out.masks.shape[1]) == (marked[0] - 1, len(marked) + 2)

    spacing = _spacing(src)
    truth = measure(nodule, spacing)
    assert truth.slices == 5
    text = _headers(gallery)[0]
    assert text == f"mode 1 - 16 of 16: {summarize_sizes([truth])['text']}", text
    assert "mm^3" in text and "(" not in text  # one outline: no range

    gallery.adopt_buttons[1].click()
    labels = viewer.layers.selection.active
    _check_on_grid(labels, src)
    data = np.asarray(labels.data)
    np.testing.assert_array_equal(data > 0, nodule)  # every slice of the finding, right z
    size = measure(data > 0, spacing)
    assert size.volume_mm3 == pytest.approx(nodule.sum() * float(np.prod(spacing)))
    assert out.sizes[0].volume_mm3 == pytest.approx(size.volume_mm3)
    assert out.sizes[0].diameter_mm == pytest.approx(size.diameter_mm)
    assert out.sizes[0].extent_mm == pytest.approx(5 * spacing[0])

    saved = tmp_path / "finding.nii.gz"
    scale, translate = np.array(labels.scale), np.array(labels.translate)
    _save_via_menu(viewer, labels, saved, monkeypatch)
    stored = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "ct.nii.gz")))
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(saved)))
    np.testing.assert_array_equal(written > 0, stored > 0)  # voxel for voxel on the file's grid
    _reopen_and_compare(viewer, tmp_path / "ct.nii.gz", saved, data, scale, translate)
