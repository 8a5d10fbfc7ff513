"""Quality check of the shipped weights on a small LIDC `test` subset (needs ../shared)."""

import numpy as np
import pytest

from napari_ambiseg.segmenter import Segmenter
from napari_ambiseg.training.data import load_npz
from napari_ambiseg.training.evaluate import evaluate_model
from napari_ambiseg.weights_io import bundled_weights_path

pytestmark = pytest.mark.skipif(not bundled_weights_path().is_file(),
                                reason="no bundled weights in weights/ yet")


@pytest.fixture(scope="module")
def seg():
    return Segmenter.load(None, device="cpu")


def test_bundled_model_loads_with_its_documented_recipe(seg):
    cfg = seg.cfg
    assert (cfg.prediction, cfg.schedule, cfg.input_scale, cfg.loss_weighting) == (
        "x", "cosine", 0.1, "snr+1")
    assert cfg.steps == 10 and cfg.crop_size == 64
    assert bundled_weights_path().stat().st_size < 50e6


def test_bundled_model_quality_on_a_test_subset(seg, lidc_dir):
    data = load_npz(lidc_dir / "test.npz")
    sub = data.subset(np.linspace(0, len(data) - 1, 48).astype(int))
    m = evaluate_model(seg, sub, n=16, steps=10, seed=0)
    # measured on the full test split in docs/benchmarks.md; bounds leave room for the subset
    assert m["ged"] < 0.35 and m["hm_iou"] > 0.50 and m["ece"] < 0.05
