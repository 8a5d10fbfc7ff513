import numpy as np
import pytest

from napari_ambiseg.errors import Cancelled, InputError
from napari_ambiseg.geometry import Region, region_for
from napari_ambiseg.models import build_model
from napari_ambiseg.result import binary_entropy
from napari_ambiseg.segmenter import Segmenter
from napari_ambiseg.testing import tiny_config


@pytest.fixture(scope="module")
def seg():
    cfg = tiny_config()
    return Segmenter(build_model(cfg), cfg, "cpu")


def test_region_extract_is_exact_crop_and_paste_inverts_it():
    img = np.arange(100 * 120, dtype=np.float32).reshape(100, 120)
    r = Region(50, 60, 1.0)
    np.testing.assert_array_equal(r.extract(img, 32), img[34:66, 44:76])
    back = r.paste(r.extract(img, 32)[None], img.shape)[0]
    np.testing.assert_array_equal(back[34:66, 44:76], img[34:66, 44:76])
    assert back[:34].sum() == 0 and back[66:].sum() == 0
    assert r.bounds(32, img.shape) == (34, 44, 66, 76)


def test_region_zoom_and_edges():
    img = np.zeros((64, 64), np.float32)
    img[30:34, 30:34] = 1
    r = Region(32, 32, 0.5)  # half zoom: the model sees 2x the field of view
    patch = r.extract(img, 32)
    assert patch.shape == (32, 32) and patch[15:17, 15:17].min() == 1 and patch.sum() == 4
    back = r.paste(patch[None], img.shape)[0]
    assert np.abs(back - img)[28:36, 28:36].max() < 0.6  # round trip keeps the blob in place
    edge = Region(0, 0, 1.0).extract(img + 5, 32)  # outside the image: edge values
    assert (edge == 5).all()


def test_region_for_box_fits_and_errors():
    r = region_for((256, 256), 64, box=(100, 100, 200, 180))
    assert (r.cy, r.cx) == (150, 140) and r.zoom == pytest.approx(0.8 * 64 / 100)
    assert region_for((256, 256), 64, spacing=(0.35, 0.35), model_spacing=0.7).zoom == 0.5
    with pytest.raises(InputError):
        region_for((10, 10), 64, center=(20, 3))
    with pytest.raises(InputError):
        region_for((10, 10), 64, box=(5, 5, 2, 8))


def test_sample_is_aligned_deterministic_and_reports(seg):
    img = np.random.default_rng(0).integers(0, 255, (90, 140)).astype(np.uint8)
    steps = []
    a = seg.sample(img, n=6, steps=4, seed=3, center=(10, 130), progress=lambda i, t: steps.append(i))
    assert steps == [1, 2, 3, 4]
    assert a.masks.shape == (6, 90, 140) and a.agreement.shape == (90, 140)
    y0, x0, y1, x1 = a.bounds
    assert (y0, x0, y1, x1) == (0, 114, 26, 140)
    outside = np.ones((90, 140), bool)
    outside[y0:y1, x0:x1] = False
    assert not a.masks[:, outside].any()
    b = seg.sample(img, n=6, steps=4, seed=3, center=(10, 130))
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_allclose(a.agreement, a.masks.mean(0))
    assert sum(m.frequency for m in a.modes) == pytest.approx(1.0)
    assert sorted(i for m in a.modes for i in m.members) == list(range(6))
    s = a.summary()
    assert s["n"] == 6 and s["steps"] == 4 and len(s["modes"]) == len(a.modes)


def test_sample_rgb_and_cancel(seg):
    rgb = np.zeros((40, 40, 3), np.uint8)
    assert seg.sample(rgb, n=2, steps=2).masks.shape == (2, 40, 40)
    with pytest.raises(Cancelled):
        seg.sample(rgb, n=2, steps=5, should_stop=lambda: True)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((4, 5, 6)), "2D"),
    (np.full((8, 8), np.nan), "NaN"),
    (np.zeros((0, 8)), "empty"),
    (np.array([["a", "b"], ["c", "d"]]), "numeric"),
])
def test_bad_images_raise_clear_errors(seg, bad, match):
    with pytest.raises(InputError, match=match):
        seg.sample(bad, n=1, steps=1)


def test_consensus_and_entropy():
    p = np.array([0.0, 0.25, 0.5, 1.0], np.float32)
    h = binary_entropy(p)
    assert h[0] == 0 and h[3] == 0 and h[2] == pytest.approx(1.0) and 0 < h[1] < 1


def test_the_models_hu_window_shapes_ct_input():
    """CT (HU) is clipped to the model's own `hu_window` before the min-max to 0..255."""
    from napari_ambiseg.io.preprocess import to_model_scale

    yy, xx = np.mgrid[:64, :64]
    ct = np.where((yy - 32) ** 2 + (xx - 32) ** 2 < 100, 60.0, -850.0).astype(np.float32)
    ct[:8] = -2048.0  # outside the scanner's field of view
    ct[-4:] = 1500.0  # bone
    region = Region(32, 32, 1.0)

    def network_input(window):
        cfg = tiny_config(hu_window=window)
        return Segmenter(build_model(cfg), cfg, "cpu").prepare(ct, region, "CT")[0, 0].numpy()

    lidc, soft = network_input((-1000.0, None)), network_input((-160.0, 240.0))
    assert not np.allclose(lidc, soft)
    context = region.extract(ct, 64)  # min-max over the context, then its centre crop
    expect = (to_model_scale(np.clip(context, -160.0, 240.0), "8bit") / 127.5 - 1.0)[16:48, 16:48]
    np.testing.assert_allclose(soft, expect, atol=1e-6)
    # soft tissue: lung is the bottom of the scale, the nodule (60 HU) at 0.1
    assert soft[2, 2] == pytest.approx(-1.0) and soft[16, 16] == pytest.approx(0.1, abs=1e-5)
    # LIDC: lung (-850 HU) sits above air, clipped at -1000: -1 + 2 * 150 / 2500
    assert lidc[2, 2] == pytest.approx(-0.88, abs=1e-5)
