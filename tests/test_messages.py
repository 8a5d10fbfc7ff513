"""Issue 13 item 6: the plugin's own clear messages for everyday mistakes."""

from __future__ import annotations

import numpy as np
import pytest

from napari_ambiseg import _reader
from napari_ambiseg.errors import InputError, ReadError, WeightsError
from napari_ambiseg.io import can_read, read_image
from napari_ambiseg.io.preprocess import check_image_2d
from napari_ambiseg.weights_io import load_weights, weights_problem


def test_empty_folder_is_ours_and_says_no_dicom(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".DS_Store").write_bytes(b"\x00\x01")  # hidden files do not count
    assert _reader.napari_get_reader(str(empty)) is _reader.read_layers
    with pytest.raises(ReadError, match="^Cannot open folder empty: it contains no DICOM image series"):
        _reader.read_layers(str(empty))


def test_folder_of_notes_is_ours_folder_of_images_is_not(tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "readme.txt").write_text("patient list\n")
    (notes / "sizes.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ReadError, match="contains no DICOM image series"):
        _reader.napari_get_reader(str(notes))(str(notes))
    pngs = tmp_path / "pngs"
    pngs.mkdir()
    (pngs / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    assert _reader.napari_get_reader(str(pngs)) is None  # napari's own stack reader's turn
    (tmp_path / "data.zarr").mkdir()
    assert _reader.napari_get_reader(str(tmp_path / "data.zarr")) is None


def test_text_files_are_not_offered_to_our_reader(tmp_path):
    """The manifest's "*" pattern sends every file here: content decides."""
    for name, text in (("notes.txt", "hello"), ("bmi.txt", "BMI report: 25\n"),  # "BM" != BMP
                       ("noext", "ObjectType? no: just words")):
        (tmp_path / name).write_text(text)
        assert not can_read(tmp_path / name) and _reader.napari_get_reader(str(tmp_path / name)) is None
    with pytest.raises(ReadError, match="notes.txt: unsupported file type; napari-ambiseg opens DICOM"):
        read_image(tmp_path / "notes.txt")  # our message when called directly


def test_one_pixel_image_is_too_small_not_empty():
    with pytest.raises(InputError, match=r"^image is too small to sample \(1x1 pixels"):
        check_image_2d(np.zeros((1, 1)))
    with pytest.raises(InputError, match=r"too small to sample \(1x40 pixels"):
        check_image_2d(np.zeros((1, 40)))
    with pytest.raises(InputError, match="empty"):
        check_image_2d(np.zeros((0, 5)))


def test_weights_that_exist_are_never_not_found(tmp_path):
    pickle = tmp_path / "model.pt"
    pickle.write_bytes(b"\x80\x04not loaded")
    for path in (pickle, tmp_path / "model.ckpt"):
        path.write_bytes(b"\x80\x04")
        problem = weights_problem(path)
        assert "not found" not in problem and "is not a .safetensors file" in problem
        assert "pickles (.pt, .pth, .ckpt) are never loaded" in problem
        with pytest.raises(WeightsError, match="is not a .safetensors file"):
            load_weights(path)
    assert "is a folder" in weights_problem(tmp_path)
    assert weights_problem(tmp_path / "missing.safetensors").startswith("weights file not found")


@pytest.mark.gui
def test_viewer_offers_our_reader_for_an_empty_folder(make_napari_viewer, tmp_path):
    """File > Open on an empty folder lists our reader (beside napari's), and ours answers
    "no DICOM image series"; before, only napari's builtins claimed it."""
    from napari.plugins import _npe2

    viewer = make_napari_viewer()
    (tmp_path / "empty").mkdir()
    assert "napari-ambiseg" in _npe2.get_readers(str(tmp_path / "empty"))
    with pytest.raises(Exception) as info:
        viewer.open(str(tmp_path / "empty"), plugin="napari-ambiseg")
    exc, chain = info.value, []
    while exc is not None:
        chain.append(str(exc))
        exc = exc.__cause__
    assert any("contains no DICOM image series" in text for text in chain), chain
    del info, exc
    assert len(viewer.layers) == 0


@pytest.mark.gui
def test_weights_field_says_what_an_existing_file_is(make_napari_viewer, tmp_path):
    from napari_ambiseg.widgets.sampling import SamplingWidget

    (tmp_path / "model.pth").write_bytes(b"\x80\x04")
    w = SamplingWidget(make_napari_viewer())
    w.set_weights(str(tmp_path / "model.pth"))
    text = w.model_status.text()
    assert "not found" not in text and text.startswith("Model.pth is not a .safetensors file")
    assert "never loaded" in text
