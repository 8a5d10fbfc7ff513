"""LIDC nodule sample data and the multi-rater .npz reader (contract C5)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import zipfile
from itertools import permutations
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from napari_ambiseg import _reader, _reader_npz, _sample_data
from napari_ambiseg.errors import ReadError
from napari_ambiseg.io.preprocess import to_model_scale
from napari_ambiseg.widgets.prompts import modality_of, spacing_of

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = {"clear": _sample_data.lidc_clear, "contested": _sample_data.lidc_contested,
           "unseen": _sample_data.lidc_unseen}


def make_script():
    spec = importlib.util.spec_from_file_location("make_lidc_samples",
                                                  ROOT / "scripts" / "make_lidc_samples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def disk(shape, cy, cx, r):
    yy, xx = np.ogrid[:shape[0], :shape[1]]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)


# ------------------------------------------------------------------------------ samples
@pytest.mark.parametrize("role", list(SAMPLES))
def test_lidc_sample_is_an_image_and_a_readers_labels_layer(role):
    (image, ikw, itype), (readers, rkw, rtype) = SAMPLES[role]()
    assert (itype, rtype) == ("image", "labels")
    z = image.shape[0]
    assert image.shape == (z, 128, 128) and image.dtype == np.uint8 and 5 <= z <= 12
    assert readers.shape == (4, z, 128, 128) and readers.dtype == np.uint8
    assert set(np.unique(readers)) <= {0, 1}
    ref = ikw["metadata"]["ambiseg"]
    assert ikw["name"].startswith("LIDC nodule ") and rkw["name"] == f"{ikw['name']} readers"
    assert ref["shape"] == [z, 128, 128] and ref["modality"] == "CT"
    assert ref["model_modality"] == "8bit"  # the crops are already on the model's 8-bit scale
    assert ref["spacing"][1:] == [0.703125, 0.703125] and ref["spacing"][0] in (1.25, 2.5)
    assert ref["source_info"]["split"] == "test" and "LIDC-IDRI" in ref["source_info"]["dataset"]
    # C5: the readers layer carries the image reference and names its image
    assert rkw["metadata"]["ambiseg"] == ref
    assert rkw["metadata"]["ambiseg_readers"] == {"count": 4, "image_name": ikw["name"]}
    assert tuple(rkw["scale"]) == (1.0, *ikw["scale"]) and rkw["axis_labels"][0] == "reader"
    assert tuple(ikw["contrast_limits"]) == (0, 255)


def test_the_three_cases_follow_the_selection_rule():
    readers = {role: f()[1][0] for role, f in SAMPLES.items()}
    per_slice = {role: (r.reshape(4, r.shape[1], -1).sum(-1) > 0).sum(0)
                 for role, r in readers.items()}
    assert (per_slice["clear"] == 4).mean() >= 0.8
    assert per_slice["contested"].max() == 4
    tracks = readers["unseen"].reshape(4, -1).any(1)
    assert tracks.sum() == 2  # two readers outlined it on some slice, two saw nothing


def test_sampling_the_sample_gives_the_model_its_training_input():
    (image, ikw, _), _ = _sample_data.lidc_clear()
    layer = SimpleNamespace(metadata=ikw["metadata"], scale=ikw["scale"])
    assert modality_of(layer) == "8bit"
    crop = image[image.shape[0] // 2].astype(np.float32)
    assert crop.min() == 0 and crop.max() == 255  # min-max scaled per slice, as in training
    np.testing.assert_array_equal(to_model_scale(crop, modality_of(layer)), crop)
    # known spacing: the sampler's resampling to the model's 0.7 mm is a <1% zoom
    assert abs(spacing_of(layer)[0] / 0.7 - 1) < 0.01


def test_reader_tracks_follow_one_reader_through_the_slices():
    """Shuffled per-slice reader order (as in LIDC) is undone by maximum-Dice linking."""
    rng = np.random.default_rng(0)
    shape = (48, 48)
    empty = np.zeros(shape, np.uint8)
    # (Z, R, H, W): three readers' disks side by side; reader 2 starts on slice 2, reader 3 never
    truth = np.stack([[empty if (r == 2 and z < 2) else disk(shape, 24, 14 + 10 * r, 3 + z % 2)
                       for r in range(3)] + [empty] for z in range(6)])
    shuffled = np.stack([s[rng.permutation(4)] for s in truth])
    linked = make_script().link_readers(shuffled)
    # same tracks up to one relabelling of the readers for the whole stack
    best = max(permutations(range(4)), key=lambda p: (linked[:, list(p)] == truth).mean())
    np.testing.assert_array_equal(linked[:, list(best)], truth)


def test_shipped_readers_are_linked_tracks():
    """Each consecutive slice pair of the shipped masks keeps the order that maximises Dice."""
    script = make_script()
    for role in SAMPLES:
        with np.load(_sample_data.lidc_path(role)) as d:
            masks = d["masks"]
        np.testing.assert_array_equal(script.link_readers(masks), masks)


def test_sample_data_is_small_and_credited():
    folder = Path(_sample_data.lidc_path("clear")).parent
    assert sum(p.stat().st_size for p in folder.iterdir()) < 2_000_000
    readme = (folder / "README.md").read_text()
    assert "CC BY 3.0" in readme and "10.7937/K9/TCIA.2015.LO9QL9SX" in readme
    for role in SAMPLES:
        with np.load(folder / f"{role}.npz", allow_pickle=False) as d:
            info = json.loads(str(d["info"]))
        assert info["patient_id"] in readme and info["split"] == "test"


# ------------------------------------------------------------------------------ npz reader
def write_npz(path, **arrays):
    np.savez_compressed(path, **arrays)
    return str(path)


def test_npz_reader_claims_multi_rater_files_only(tmp_path):
    imgs = np.zeros((3, 16, 16), np.uint8)
    good = write_npz(tmp_path / "good.npz", images=imgs, masks=np.zeros((3, 2, 16, 16), np.uint8))
    assert _reader_npz.napari_get_reader(good) is _reader_npz.read_npz
    assert _reader_npz.napari_get_reader([good]) is _reader_npz.read_npz
    assert _reader_npz.napari_get_reader([good, good]) is None
    assert _reader_npz.napari_get_reader(_sample_data.lidc_path("clear")) is _reader_npz.read_npz
    others = {
        "no_masks.npz": {"images": imgs},
        "other_keys.npz": {"x": imgs, "y": imgs},
        "masks_3d.npz": {"images": imgs, "masks": np.zeros((3, 16, 16), np.uint8)},
        "mismatch.npz": {"images": imgs, "masks": np.zeros((4, 2, 16, 16), np.uint8)},
        "objects.npz": {"images": np.array([None] * 3, dtype=object).reshape(3, 1, 1),
                        "masks": np.zeros((3, 1, 1, 1), np.uint8)},
    }
    for name, arrays in others.items():
        assert _reader_npz.napari_get_reader(write_npz(tmp_path / name, **arrays)) is None, name
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not really a zip")
    (tmp_path / "good.txt").write_bytes(Path(good).read_bytes())
    assert _reader_npz.napari_get_reader(str(tmp_path / "broken.npz")) is None
    assert _reader_npz.napari_get_reader(str(tmp_path / "good.txt")) is None
    assert _reader.napari_get_reader(good) is None  # the image reader leaves .npz alone


def test_npz_reader_training_format_without_spacing(tmp_path):
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, (5, 32, 24), dtype=np.uint8)
    masks = np.zeros((5, 3, 32, 24), np.uint8)
    masks[2, 1, 10:20, 5:15] = 7  # any non-zero is an outline
    path = write_npz(tmp_path / "cases.npz", images=imgs, masks=masks,
                     patient_id=np.array(["p"] * 5))
    (image, ikw, _), (readers, rkw, _) = _reader_npz.read_npz(path)
    np.testing.assert_array_equal(image, imgs)
    assert readers.shape == (3, 5, 32, 24) and readers[1, 2].sum() == 100 and readers.max() == 1
    ref = ikw["metadata"]["ambiseg"]
    assert ikw["name"] == "cases" and rkw["name"] == "cases readers"
    assert ref["assumed"] is True and "spacing unknown" in ref["warnings"][0]
    assert rkw["metadata"]["ambiseg_readers"] == {"count": 3, "image_name": "cases"}
    # unknown spacing: the sampler takes the pixels as they are (no resampling)
    assert spacing_of(SimpleNamespace(metadata=ikw["metadata"], scale=ikw["scale"])) is None


def test_npz_reader_refuses_big_files_with_a_clear_message(tmp_path, monkeypatch):
    path = write_npz(tmp_path / "big.npz", images=np.zeros((4, 64, 64), np.uint8),
                     masks=np.zeros((4, 4, 64, 64), np.uint8))
    monkeypatch.setattr(_reader_npz, "MAX_BYTES", 10_000)
    with pytest.raises(ReadError, match=r"big\.npz.*MB in memory \(limit 0 MB\).*subset"):
        _reader_npz.read_npz(path)


def test_npz_reader_never_loads_pickles(tmp_path):
    path = tmp_path / "p.npz"
    with zipfile.ZipFile(path, "w") as z:
        for key, arr in (("images", np.zeros((2, 8, 8), np.uint8)),
                         ("masks", np.zeros((2, 1, 8, 8), np.uint8))):
            with z.open(f"{key}.npy", "w") as f:
                np.lib.format.write_array(f, arr)
        with z.open("info.npy", "w") as f:
            np.lib.format.write_array(f, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ReadError, match="p.npz"):
        _reader_npz.read_npz(str(path))


def test_wheel_ships_the_sample_data(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(ROOT)], check=True, timeout=300)
    names = set(zipfile.ZipFile(next(tmp_path.glob("napari_ambiseg-*.whl"))).namelist())
    assert {f"napari_ambiseg/sample_data/{n}" for n in
            ("clear.npz", "contested.npz", "unseen.npz", "README.md")} <= names


# ------------------------------------------------------------------------------ in napari
@pytest.mark.gui
def test_open_sample_in_napari_gives_a_reader_axis(make_napari_viewer):
    viewer = make_napari_viewer()
    layers = viewer.open_sample("napari-ambiseg", "lidc_clear")
    assert [type(la).__name__ for la in layers] == ["Image", "Labels"]
    assert viewer.dims.ndim == 4 and viewer.dims.axis_labels[:2] == ("reader", "z")
    image, readers = layers
    assert readers.metadata["ambiseg_readers"]["image_name"] == image.name
    np.testing.assert_allclose(readers.data_to_world((0, 3, 10, 10))[1:],
                               image.data_to_world((3, 10, 10)))


@pytest.mark.gui
def test_viewer_opens_a_multi_rater_npz(make_napari_viewer, tmp_path):
    path = write_npz(tmp_path / "set.npz", images=np.zeros((2, 16, 16), np.uint8),
                     masks=np.ones((2, 4, 16, 16), np.uint8))
    viewer = make_napari_viewer()
    layers = viewer.open(path, plugin="napari-ambiseg")
    assert [la.name for la in layers] == ["set", "set readers"]
