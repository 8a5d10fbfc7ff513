"""io.npz.read_npz: the same arrays as np.load, chunked; objects and damage refused."""

from __future__ import annotations

import numpy as np
import pytest

from napari_ambiseg.errors import InputError
from napari_ambiseg.io import npz
from napari_ambiseg.training.data import load_npz


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_same_arrays_as_np_load_across_chunks(tmp_path, monkeypatch, save):
    monkeypatch.setattr(npz, "CHUNK", 1000)  # many chunks, the last one partial
    rng = np.random.default_rng(0)
    arrays = {"images": rng.integers(0, 255, (5, 33, 17), dtype=np.uint8),
              "masks": rng.random((5, 3, 33, 17)) > 0.5,
              "fortran": np.asfortranarray(rng.random((7, 9))),
              "empty": np.zeros((0, 4), np.float32)}
    save(tmp_path / "a.npz", **arrays)
    got = npz.read_npz(tmp_path / "a.npz", tuple(arrays))
    for name, want in arrays.items():
        assert got[name].dtype == want.dtype and got[name].shape == want.shape
        np.testing.assert_array_equal(got[name], want)
    got["images"][0, 0, 0] = 7  # writable, like np.load's arrays


def test_only_the_named_members_and_what_is_missing(tmp_path):
    np.savez(tmp_path / "a.npz", images=np.zeros((1, 4, 4), np.uint8), other=np.ones(3))
    assert list(npz.read_npz(tmp_path / "a.npz", ("images",))) == ["images"]
    with pytest.raises(KeyError) as e:
        npz.read_npz(tmp_path / "a.npz", ("images", "masks"))
    assert e.value.args == (["masks"], ["images", "other"])


def test_object_arrays_and_damaged_files_are_input_errors(tmp_path):
    np.savez(tmp_path / "obj.npz", images=np.zeros((2, 8, 8), np.uint8),
             masks=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(InputError, match="pickle"):
        load_npz(tmp_path / "obj.npz")
    np.savez_compressed(tmp_path / "ok.npz", images=np.zeros((2, 8, 8), np.uint8),
                        masks=np.zeros((2, 1, 8, 8), np.uint8))
    raw = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "text.npz").write_text("not a zip")
    for name in ("cut.npz", "text.npz"):
        with pytest.raises(InputError, match="cannot read"):
            load_npz(tmp_path / name)


def test_binary_masks_are_kept_and_others_binarised(tmp_path):
    masks = np.zeros((2, 1, 8, 8), np.uint8)
    masks[0, 0, :2] = 1
    np.savez(tmp_path / "a.npz", images=np.zeros((2, 8, 8), np.uint8), masks=masks)
    np.testing.assert_array_equal(load_npz(tmp_path / "a.npz").masks, masks)
    np.savez(tmp_path / "b.npz", images=np.zeros((2, 8, 8), np.uint8), masks=masks * 255)
    got = load_npz(tmp_path / "b.npz").masks
    assert got.dtype == np.uint8 and got.max() == 1
    np.testing.assert_array_equal(got, masks)
