"""The model's scope (its weights config) and the reasons an input is outside it (Qt-free)."""

import re
from pathlib import Path

import numpy as np

from napari_ambiseg import _sample_data as sd
from napari_ambiseg.config import ModelConfig, Scope
from napari_ambiseg.scope import layer_scope_warnings, scope_text, scope_warnings
from napari_ambiseg.weights_io import bundled_weights_path, load_config

LIDC = Scope(modality="CT", task="lung nodules", pixel_spacing_mm=0.7)


def _image_refs(layers):
    return [(kw["metadata"]["ambiseg"], kw.get("rgb", False)) for _, kw, kind in layers
            if kind == "image"]


def test_ct_at_the_model_scale_is_in_scope():
    assert scope_warnings(LIDC, "CT", (0.66, 0.66), axes=("y", "x")) == []
    assert scope_warnings(LIDC, "", None) == [] and scope_text([]) == ""
    assert scope_warnings(LIDC, "8bit", (2.5, 0.7, 0.7), axes=("z", "y", "x")) == []


def test_each_reason_is_named():
    assert re.search(r"an MR image, .*CT lung nodules", scope_warnings(LIDC, "MR")[0])
    assert "ultrasound" in scope_warnings(LIDC, "US")[0]
    rgb = scope_warnings(LIDC, "US", rgb=True)
    assert len(rgb) == 2 and "colour (RGB)" in rgb[0]
    cine = scope_warnings(LIDC, "CT", axes=("t", "y", "x"))
    assert len(cine) == 1 and "frames are time points" in cine[0]
    coarse = scope_warnings(LIDC, "CT", (5.0, 1.6, 1.6))  # in-plane only: 1.6 mm > 2 x 0.7
    assert len(coarse) == 1 and "1.6 mm" in coarse[0] and "0.7 mm" in coarse[0]
    assert scope_warnings(LIDC, "CT", (5.0, 1.3, 1.3)) == []  # within 2x
    assert scope_warnings(Scope(), "CT", (3.0, 3.0)) == []  # model without a recorded spacing
    text = scope_text(scope_warnings(LIDC, "MR"))
    assert text.startswith("Outside the model's scope: it is an MR image") and "caution" in text


def test_real_files_against_the_bundled_model():
    cfg, _ = load_config(bundled_weights_path())
    for ref, rgb in _image_refs(sd.lidc_clear()):  # CT_small: see the lung test below
        assert layer_scope_warnings(cfg, ref, rgb) == [], ref.get("source")
    us = [layer_scope_warnings(cfg, ref, rgb) for ref, rgb in _image_refs(sd.us1())]
    assert any("colour (RGB)" in w for w in us[0]) and all(
        any("ultrasound" in w for w in ws) for ws in us)  # the hidden gray layer too
    mr = layer_scope_warnings(cfg, *_image_refs(sd.mr_small())[0])
    assert any("an MR image" in w for w in mr)


def test_layers_without_geometry_are_not_judged_by_spacing():
    ref = {"modality": "", "model_modality": "8bit", "axes": ["t", "y", "x"],
           "spacing": [1.0, 1.0, 1.0], "rgb": False}  # a multi-page TIFF cine
    assert [w for w in layer_scope_warnings(LIDC, ref) if "pixels" in w] == []
    assert any("cine" in w for w in layer_scope_warnings(LIDC, ref))
    assert layer_scope_warnings(LIDC, {"spacing": [3.0, 3.0], "assumed": True,
                                       "modality": "CT"}) == []


def test_model_card_states_the_scope_in_the_configs_words():
    cfg, _ = load_config(bundled_weights_path())
    card = (Path(__file__).parents[1] / "docs" / "model_card.md").read_text()
    assert cfg.scope.description() in card
    assert ModelConfig().scope.modality == "CT" and ModelConfig().scope.task == ""


# ------------------------------------------------------------------ lung or not (issue 27.9)
def _chest_slice(shape=(256, 256)) -> np.ndarray:
    """HU of an axial chest slice at 0.7 mm: air around a body, two lungs inside it."""
    y, x = np.indices(shape, dtype=float)
    cy, cx = shape[0] / 2, shape[1] / 2
    hu = np.full(shape, -1000.0)
    hu[((y - cy) / 100) ** 2 + ((x - cx) / 120) ** 2 <= 1] = 40.0  # body
    for side in (-1, 1):  # lungs: 80 x 160 px ellipses, about 49 cm^2 each (a child's chest)
        hu[((y - cy) / 80) ** 2 + ((x - cx - side * 60) / 40) ** 2 <= 1] = -850.0
    noise = np.random.default_rng(0).normal(0, 25, shape)
    return (hu + noise).astype(np.int16)


def test_a_ct_without_lung_is_outside_a_lung_model(tmp_path):
    from napari_ambiseg.io import read_image
    from napari_ambiseg.io.synthetic import write_ct_series
    from napari_ambiseg.scope import LUNG_MIN_CM2, lung_area_cm2

    cfg, _ = load_config(bundled_weights_path())
    [(ref, rgb)] = _image_refs(sd.ct_small())  # a spine at chest level: lung only at two corners
    [why] = layer_scope_warnings(cfg, ref, rgb)
    assert re.search(r"little lung .* 8 cm\^2 .*CT lung nodules", why)
    chest = np.stack([_chest_slice()] * 3)
    write_ct_series(tmp_path / "chest", shape=chest.shape, spacing=(2.5, 0.7, 0.7),
                    volume=(chest + 1024).astype(np.int16))  # stored = HU + 1024
    [ct] = read_image(tmp_path / "chest")
    assert lung_area_cm2(ct.data, ct.spacing) > 2 * LUNG_MIN_CM2
    assert layer_scope_warnings(cfg, ct.reference()) == []  # read from the source files
    belly = np.where(chest < -900, chest, 40).astype(np.int16)  # the same body, no lung
    assert "little lung" in layer_scope_warnings(cfg, ct.reference(), data=belly)[0]
    assert scope_warnings(LIDC, "CT", lung_cm2=3.0) and not scope_warnings(LIDC, "CT", lung_cm2=40)
    assert scope_warnings(Scope(modality="CT"), "CT", lung_cm2=3.0) == []  # no lung task
