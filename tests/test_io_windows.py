"""Windows and presets, the npe2 reader/writer/sample-data functions (no viewer), model input."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from napari_ambiseg import _reader, _sample_data, _writer
from napari_ambiseg.errors import InputError, ReadError, WriteError
from napari_ambiseg.io import CT_PRESETS, apply_window_preset, parse_windows, preset_limits, read_image
from napari_ambiseg.io.preprocess import to_model_scale
from napari_ambiseg.io.synthetic import write_ct_series


def test_presets_and_limits():
    assert CT_PRESETS == {"lung": (-600, 1500), "mediastinum": (40, 400), "bone": (400, 1800), "brain": (40, 80)}
    assert preset_limits("Lung") == (-1350.0, 150.0)
    assert preset_limits("brain") == (0.0, 80.0)
    with pytest.raises(InputError, match="unknown window preset"):
        preset_limits("liver-ish")


def test_multivalued_and_broken_window_tags():
    ds = Dataset()
    ds.WindowCenter, ds.WindowWidth = [40, -600], [400, 1500]
    assert parse_windows(ds) == [(40.0, 400.0), (-600.0, 1500.0)]
    ds.WindowCenter, ds.WindowWidth = [40, 300], 350
    assert parse_windows(ds) == [(40.0, 350.0), (300.0, 350.0)]
    ds.WindowCenter, ds.WindowWidth = 40, 0
    assert parse_windows(ds) == []
    assert parse_windows(Dataset()) == []


def test_apply_preset_widens_the_range():
    layer = SimpleNamespace(contrast_limits=(0, 1), contrast_limits_range=(-1000, 100))
    assert apply_window_preset(layer, "bone") == (-500.0, 1300.0)
    assert layer.contrast_limits == (-500.0, 1300.0) and layer.contrast_limits_range == (-1000, 1300.0)


def test_get_reader_claims_only_what_it_reads(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "b.csv").write_text("1,2")
    assert _reader.napari_get_reader(str(tmp_path / "a.txt")) is None
    # a folder of notes only: claimed, so that our reader says it holds no DICOM series
    # (tests/test_messages.py); a folder with other image files is left to other readers
    assert _reader.napari_get_reader(str(tmp_path)) is _reader.read_layers
    assert _reader.napari_get_reader([str(tmp_path / "a.txt"), str(tmp_path / "b.csv")]) is None
    assert _reader.napari_get_reader(get_testdata_file("CT_small.dcm")) is _reader.read_layers
    # a DICOM file without extension (as in dicomdirtests) is claimed by content
    no_ext = get_testdata_file("CT_small.dcm").replace("CT_small.dcm", "dicomdirtests/98892001/CT5N/2062")
    assert _reader.napari_get_reader(no_ext) is _reader.read_layers
    write_ct_series(tmp_path / "series", shape=(2, 8, 8))
    assert _reader.napari_get_reader(str(tmp_path / "series")) is _reader.read_layers


def test_read_layers_gives_plain_layer_data(tmp_path):
    write_ct_series(tmp_path, shape=(4, 16, 16), spacing=(3.0, 0.5, 0.6), origin=(10, 20, 30))
    [(data, kwargs, kind)] = _reader.read_layers(str(tmp_path))
    assert kind == "image" and data.shape == (4, 16, 16)
    assert kwargs["scale"] == pytest.approx((3.0, 0.5, 0.6))
    assert kwargs["translate"] == pytest.approx((10, 20, 30))
    assert kwargs["contrast_limits"] == [-160.0, 240.0]
    meta = kwargs["metadata"]["ambiseg"]
    assert len(meta["sop_instance_uids"]) == 4 and meta["axes"] == ["z", "y", "x"]
    assert meta["geometry"]["spacing"] == pytest.approx([0.6, 0.5, 3.0])
    assert meta["model_modality"] == "CT"


def test_sample_data_opens_like_a_user_file():
    [(data, kwargs, _)] = _sample_data.ct_small()
    [(data2, kwargs2, _)] = _reader.read_layers(get_testdata_file("CT_small.dcm"))
    np.testing.assert_array_equal(data, data2)
    assert kwargs["scale"] == kwargs2["scale"]
    [(_, mr, _)] = _sample_data.mr_small()
    assert mr["contrast_limits"] == [-200.0, 1400.0]
    pytest.importorskip("data_store")
    layers = _sample_data.us1()
    assert [k["name"] for _, k, _ in layers] == [layers[0][1]["name"], layers[0][1]["name"] + " (gray)"]
    assert layers[0][1]["rgb"] and layers[1][0].ndim == 2 and layers[1][1]["visible"] is False
    assert _sample_data.ct_693()[0][0].shape == (512, 512)
    assert _sample_data.emri_small()[0][0].shape == (10, 64, 64)


def test_missing_sample_names_the_package(monkeypatch):
    monkeypatch.setattr(pydicom.data, "get_testdata_file", lambda *a, **k: None)
    with pytest.raises(ReadError, match="pip install pydicom-data"):
        _sample_data.us1()


def test_npe2_writer_functions_without_viewer(tmp_path):
    write_ct_series(tmp_path / "ct", shape=(3, 8, 8))
    [(data, kwargs, _)] = _reader.read_layers(str(tmp_path / "ct"))
    labels = np.zeros(data.shape, np.int32)
    labels[1, 2:5, 2:5] = 2
    meta = {"metadata": kwargs["metadata"], "scale": kwargs["scale"], "translate": kwargs["translate"]}
    assert _writer.write_labels_volume(str(tmp_path / "l.nii.gz"), labels, meta) == [str(tmp_path / "l.nii.gz")]
    assert _writer.write_labels_dicom_seg(str(tmp_path / "l.dcm"), labels, meta) == [str(tmp_path / "l.dcm")]
    assert pydicom.dcmread(tmp_path / "l.dcm").Modality == "SEG"
    with pytest.raises(WriteError, match="no DICOM image read by napari-ambiseg"):
        _writer.write_labels_dicom_seg(str(tmp_path / "x.dcm"), labels, {"scale": (1, 1, 1)})


def test_model_modality_drives_preprocessing():
    [ct] = read_image(get_testdata_file("CT_small.dcm"))
    [mr] = read_image(get_testdata_file("MR_small.dcm"))
    assert ct.model_modality == "CT" and mr.model_modality == "MR"
    scaled = to_model_scale(ct.model_image, ct.model_modality)
    assert scaled.min() == 0 and scaled.max() == pytest.approx(255)


def test_monochrome1_is_shown_inverted_and_lists_of_paths(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "inv.dcm")
    [inv, ct] = read_image([tmp_path / "inv.dcm", get_testdata_file("CT_small.dcm")])
    assert inv.to_layer_data()[1]["colormap"] == "gray_r"
    np.testing.assert_array_equal(inv.data, ds.pixel_array)  # values are kept
    assert ct.modality == "CT"
