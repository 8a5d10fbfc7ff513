import numpy as np
import pytest
from PIL import Image

from napari_ambiseg.errors import InputError
from napari_ambiseg.training.data import load_data, load_lidc_pickle, load_npz


def test_npz_and_its_errors(tmp_path):
    np.savez(tmp_path / "ok.npz", images=np.zeros((3, 16, 16), np.uint8),
             masks=np.ones((3, 4, 16, 16), np.uint8) * 3)
    d = load_npz(tmp_path / "ok.npz", limit=2)
    assert d.images.shape == (2, 16, 16) and d.masks.max() == 1 and len(d) == 2
    np.savez(tmp_path / "bad.npz", images=np.zeros((3, 16, 16)))
    with pytest.raises(InputError, match="masks"):
        load_npz(tmp_path / "bad.npz")
    np.savez(tmp_path / "shape.npz", images=np.zeros((3, 16, 16)), masks=np.zeros((3, 4, 8, 8)))
    with pytest.raises(InputError, match="do not match"):
        load_npz(tmp_path / "shape.npz")
    with pytest.raises(InputError, match="not found"):
        load_npz(tmp_path / "none.npz")


def test_case_folder_with_png_npy_and_uneven_raters(tmp_path):
    for case, raters in (("a", 2), ("b", 3)):
        c = tmp_path / case
        c.mkdir()
        Image.fromarray(np.full((16, 16), 100, np.uint8)).save(c / "image.png")
        for r in range(raters):
            m = np.zeros((16, 16), np.uint8)
            m[r:r + 4, 4:8] = 1
            np.save(c / f"mask_{r}.npy", m) if r % 2 else Image.fromarray(m * 255).save(
                c / f"mask_{r}.png")
    d = load_data(tmp_path)
    assert d.images.shape == (2, 16, 16) and d.masks.shape == (2, 3, 16, 16)
    assert d.masks[0, 2].sum() == 0 and d.masks[1, 2].sum() == 16  # padded with an empty rater
    (tmp_path / "c").mkdir()
    with pytest.raises(InputError, match="case c"):
        load_data(tmp_path)


def test_pickle_needs_explicit_opt_in(tmp_path):
    import pickle

    p = tmp_path / "data_lidc.pickle"
    item = {"image": np.random.rand(8, 8).astype(np.float32),
            "masks": [np.ones((8, 8), np.uint8)] * 4}
    p.write_bytes(pickle.dumps({"case1": item}))
    with pytest.raises(InputError, match="allow-pickle"):
        load_data(p)
    with pytest.warns(UserWarning, match="runs code"):
        d = load_lidc_pickle(p, allow_pickle=True)
    assert d.images.dtype == np.uint8 and d.masks.shape == (1, 4, 8, 8)
