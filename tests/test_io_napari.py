"""The reader, writers and sample data inside a real napari viewer (Qt under Xvfb)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file

from napari_ambiseg.errors import ReadError
from napari_ambiseg.io.synthetic import write_ct_series

pytestmark = pytest.mark.gui
PLUGIN = "napari-ambiseg"


def _original(exc: BaseException) -> BaseException:
    """The ReadError napari wrapped (ReaderPluginError keeps it as the cause)."""
    while exc.__cause__ is not None and not isinstance(exc, ReadError):
        exc = exc.__cause__
    return exc


def test_open_series_then_bad_file_viewer_keeps_working(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    write_ct_series(tmp_path / "ct", shape=(6, 24, 24), spacing=(2.0, 0.5, 0.5), origin=(5, 6, 7))
    [layer] = viewer.open(str(tmp_path / "ct"), plugin=PLUGIN)
    assert layer.name == "Synthetic CT" and layer.data.shape == (6, 24, 24)
    np.testing.assert_allclose(layer.scale, (2.0, 0.5, 0.5))
    np.testing.assert_allclose(layer.translate, (5, 6, 7))
    np.testing.assert_allclose(layer.contrast_limits, (-160, 240))
    assert layer.metadata["ambiseg"]["modality"] == "CT"

    with pytest.raises(Exception) as info:
        viewer.open(get_testdata_file("MR_truncated.dcm"), plugin=PLUGIN)
    err = _original(info.value)
    assert isinstance(err, ReadError) and "MR_truncated.dcm" in str(err)
    del err, info

    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    with pytest.raises(Exception, match="(?i)reader|plugin"):  # we do not claim it: no crash
        viewer.open(str(bad), plugin=PLUGIN)

    [mr] = viewer.open(get_testdata_file("MR_small.dcm"), plugin=PLUGIN)
    assert len(viewer.layers) == 2
    np.testing.assert_allclose(mr.contrast_limits, (-200, 1400))


def test_reader_error_becomes_a_notification(make_napari_viewer, tmp_path, monkeypatch):
    """File > Open path: the error reaches napari's notification manager; the viewer goes on."""
    from napari.utils.notifications import ErrorNotification, notification_manager

    viewer = make_napari_viewer()
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    monkeypatch.setattr(notification_manager, "catch_error", True)
    shown = []
    monkeypatch.setattr(notification_manager, "dispatch", shown.append)
    try:
        viewer.window._qt_viewer._qt_open([str(tmp_path / "empty.nii.gz")], stack=False, plugin=PLUGIN)
    except Exception as e:  # noqa: BLE001 - what napari's Qt excepthook does with it
        notification_manager.receive_error(type(e), e, e.__traceback__)
    [note] = shown
    assert isinstance(note, ErrorNotification)
    err = _original(note.exception)
    assert isinstance(err, ReadError) and str(err) == "Cannot open empty.nii.gz: the file is empty (0 bytes)."
    del note, err
    shown.clear()  # the traceback holds the Qt viewer: let the leak check pass
    assert len(viewer.layers) == 0
    viewer.open(get_testdata_file("CT_small.dcm"), plugin=PLUGIN)
    assert len(viewer.layers) == 1


def test_rgb_ultrasound_adds_hidden_gray_layer(make_napari_viewer):
    pytest.importorskip("data_store")
    viewer = make_napari_viewer()
    layers = viewer.open_sample(PLUGIN, "us1")
    assert [ly.rgb for ly in layers] == [True, False]
    assert layers[1].name == f"{layers[0].name} (gray)" and not layers[1].visible
    assert layers[1].data.shape == layers[0].data.shape[:2]


def test_new_labels_layer_saves_with_source_geometry(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    write_ct_series(tmp_path / "ct", shape=(5, 16, 20), spacing=(3.0, 0.75, 0.6), origin=(-9, 8, 7))
    [image] = viewer.open(str(tmp_path / "ct"), plugin=PLUGIN)
    viewer.layers.selection.active = image
    viewer._new_labels()  # Layers > New labels layer: no metadata, same shape/scale/translate
    labels = viewer.layers[-1]
    assert "ambiseg" not in labels.metadata
    labels.data[2, 3:6, 4:9] = 1
    nii = tmp_path / "drawn.nii.gz"
    viewer.layers.selection = {labels}
    assert viewer.layers.save(str(nii), selected=True, plugin=PLUGIN) == [str(nii)]
    written = sitk.ReadImage(str(nii))
    assert written.GetSpacing() == pytest.approx((0.6, 0.75, 3.0))
    assert written.GetOrigin() == pytest.approx((7, 8, -9))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), labels.data)

    from napari_ambiseg._writer import write_labels_dicom_seg

    [seg_path] = write_labels_dicom_seg(str(tmp_path / "drawn.dcm"), labels.data, labels._get_state())
    seg = pydicom.dcmread(seg_path)
    [k] = [k for k, frame in enumerate(seg.pixel_array) if frame.any()]  # every frame is written
    ref = seg.PerFrameFunctionalGroupsSequence[k].DerivationImageSequence[0].SourceImageSequence[0]
    assert ref.ReferencedSOPInstanceUID == image.metadata["ambiseg"]["sop_instance_uids"][2]


def test_save_agreement_and_unplaced_labels_from_the_viewer(make_napari_viewer, tmp_path, monkeypatch):
    """File > Save Selected Layers: the agreement heatmap after its source was closed (own
    geometry record), and labels with no geometry anywhere (saved, with a warning notification
    and a sidecar note)."""
    from napari.utils.notifications import NotificationSeverity, notification_manager

    viewer = make_napari_viewer()
    write_ct_series(tmp_path / "ct", shape=(5, 16, 20), spacing=(3.0, 0.75, 0.6), origin=(-9, 8, 7))
    [image] = viewer.open(str(tmp_path / "ct"), plugin=PLUGIN)
    agreement = np.zeros(image.data.shape, np.float32)
    agreement[2, 4:8, 5:9] = 0.5
    heat = viewer.add_image(agreement, name="agreement", scale=image.scale, translate=image.translate,
                            metadata={"ambiseg_output": {"kind": "agreement"},
                                      "ambiseg": dict(image.metadata["ambiseg"])})
    viewer.layers.remove(image)
    viewer.layers.selection = {heat}
    nii = tmp_path / "agreement.nii.gz"
    assert viewer.layers.save(str(nii), selected=True) == [str(nii)]  # the only writer of .nii.gz
    [back] = viewer.open(str(nii), plugin=PLUGIN)
    assert back.contrast_limits == [0.0, 1.0]
    np.testing.assert_array_equal(back.data, agreement)
    np.testing.assert_allclose(back.translate, heat.translate, atol=1e-4)

    shown = []
    monkeypatch.setattr(notification_manager, "dispatch", shown.append)
    drawn = viewer.add_labels(np.zeros((4, 6, 8), np.uint8), name="sketch", scale=(2, 1, 1))
    viewer.layers.selection = {drawn}
    out = tmp_path / "sketch.nrrd"
    written = viewer.layers.save(str(out), selected=True, plugin=PLUGIN)
    assert str(out) in written and (tmp_path / "sketch.nrrd.geometry.txt").is_file()
    [note] = [n for n in shown if n.severity == NotificationSeverity.WARNING]
    assert "ASSUMED" in note.message and "'sketch'" in note.message
