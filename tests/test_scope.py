"""The model's scope (its weights config) and the reasons an input is outside it (Qt-free)."""

import re
from pathlib import Path

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
    for ref, rgb in _image_refs(sd.ct_small()) + _image_refs(sd.lidc_clear()):
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
