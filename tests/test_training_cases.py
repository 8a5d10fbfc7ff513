"""Cases from an image and its readers (`training.cases.make_case`) and the atomic case-folder
writer (`training.data.write_case`): round trip through the folder reader into a training run."""

from __future__ import annotations

import numpy as np
import pytest

from napari_ambiseg.errors import InputError, WriteError
from napari_ambiseg.testing import disk, tiny_config
from napari_ambiseg.training.cases import make_case
from napari_ambiseg.training.config import TrainConfig
from napari_ambiseg.training.data import count_cases, load_folder, write_case
from napari_ambiseg.training.trainer import train


def ct_slice(size=80, centre=(30, 50), radius=6):
    rng = np.random.default_rng(0)
    img = rng.normal(-800, 30, (size, size)).astype(np.int16)
    img[disk(size, radius, centre) > 0] = 30
    return img


def test_case_is_the_patch_the_model_sees_centred_on_the_outlines():
    img = ct_slice()
    readers = np.stack([disk(80, 6, (30, 50)), disk(80, 4, (30, 50)), np.zeros((80, 80))])
    case = make_case(img, readers, context_size=32, crop_size=16)
    assert case.image.dtype == np.uint8 and case.image.shape == (32, 32)
    assert case.masks.shape == (3, 32, 32) and case.masks[2].sum() == 0
    assert case.masks[0].sum() == readers[0].sum()          # whole, exact crop
    ys, xs = np.nonzero(case.masks[0])
    assert (ys.min() + ys.max()) / 2 == pytest.approx(15.5, abs=0.5)
    assert (xs.min() + xs.max()) / 2 == pytest.approx(15.5, abs=0.5)
    assert case.info["modality"] == "CT" and case.info["outlined_by"] == 2
    assert case.image[16, 16] == 255 and case.warnings == []


def test_outlines_at_the_border_stay_zero_outside_the_image():
    img = ct_slice(centre=(3, 40))
    mask = np.zeros((80, 80), np.uint8)
    mask[0:6, 37:43] = 1                                     # touches the top edge
    case = make_case(img, mask[None], context_size=32, crop_size=16)
    assert case.masks[0].sum() == mask.sum()                 # not smeared beyond the edge


def test_pixel_spacing_is_resampled_to_the_models():
    img = ct_slice(radius=8)
    case = make_case(img, disk(80, 8, (30, 50))[None], context_size=32, crop_size=16,
                     spacing=(0.35, 0.35), model_spacing=0.7)
    assert case.info["zoom"] == pytest.approx(0.5)
    assert case.masks[0].sum() == pytest.approx(np.pi * 4 ** 2, rel=0.35)
    empty = make_case(img, np.zeros((1, 80, 80)), context_size=32, crop_size=16,
                      center=(30, 50))
    assert empty.info["center"] == [30.0, 50.0] and "no finding" in empty.warnings[0]
    with pytest.raises(InputError, match="do not match"):
        make_case(img, np.zeros((2, 40, 40)), context_size=32, crop_size=16)


def test_write_case_round_trips_into_a_training_run(tmp_path):
    root = tmp_path / "cases"
    img = ct_slice()
    readers = np.stack([disk(80, 6, (30, 50)), disk(80, 3, (30, 50)), np.zeros((80, 80))])
    for k in range(2):
        case = make_case(img, readers, context_size=32, crop_size=32)
        path = write_case(root, case.image, case.masks, ["ann", "bo b", "cy"], case.info)
        assert path.name == f"case_000{k + 1}"
    assert sorted(p.name for p in (root / "case_0001").iterdir()) == [
        "case.json", "image.png", "mask_00_ann.png", "mask_01_bo-b.png", "mask_02_cy.png"]
    data = load_folder(root)
    assert count_cases(root) == 2 and data.masks.shape == (2, 3, 32, 32)
    assert np.array_equal(data.images[0], case.image) and np.array_equal(data.masks[1], case.masks)
    out = train(tiny_config(), TrainConfig(data=str(root), iterations=2, batch_size=2, warmup=1,
                                           val_every=10**9, checkpoint_every=10**9),
                tmp_path / "run", resume=False)
    assert out.step == 2 and out.last == tmp_path / "run" / "last.safetensors"
    assert out.last.is_file()
    with pytest.raises(InputError, match="are \\(32, 32\\)"):
        write_case(root, np.zeros((16, 16), np.uint8), np.zeros((1, 16, 16), np.uint8))


def test_a_failed_write_leaves_no_case(tmp_path, monkeypatch):
    from PIL import Image

    root = tmp_path / "cases"
    write_case(root, np.zeros((8, 8), np.uint8), np.ones((1, 8, 8), np.uint8))
    saves = {"n": 0}
    real = Image.Image.save

    def flaky(self, fp, *a, **kw):
        saves["n"] += 1
        if saves["n"] == 3:
            raise OSError("disk full")
        return real(self, fp, *a, **kw)

    monkeypatch.setattr(Image.Image, "save", flaky)
    with pytest.raises(WriteError, match="disk full"):
        write_case(root, np.zeros((8, 8), np.uint8), np.ones((2, 8, 8), np.uint8))
    assert [p.name for p in root.iterdir()] == ["case_0001"]  # no half case, no leftovers
    assert len(load_folder(root)) == 1
