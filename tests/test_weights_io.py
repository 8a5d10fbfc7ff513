import json

import pytest
import torch

from napari_ambiseg.config import FORMAT_VERSION, ModelConfig
from napari_ambiseg.errors import WeightsError
from napari_ambiseg.models import build_model
from napari_ambiseg.testing import tiny_config
from napari_ambiseg.weights_io import load_weights, save_weights


def test_round_trip_keeps_config_and_outputs(tmp_path):
    cfg = tiny_config(latent_dim=3, prediction="v", input_scale=0.5)
    m = build_model(cfg)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    path = save_weights(m, cfg, tmp_path / "w", info={"step": 7})
    assert path.suffix == ".safetensors" and (tmp_path / "w.json").is_file()
    meta = json.loads((tmp_path / "w.json").read_text())
    assert meta["format_version"] == FORMAT_VERSION and meta["info"] == {"step": 7}
    m2, cfg2, info = load_weights(path)
    assert cfg2 == cfg and info["step"] == 7
    x = torch.randn(2, 1, 32, 32)
    args = (x, torch.zeros(2), m2.encode_image(torch.randn(1, 1, 32, 32)), torch.ones(2, 3))
    m.eval()
    assert torch.equal(m.denoise(*args), m2.denoise(*args))


def test_save_is_atomic_and_shareable(tmp_path, monkeypatch):
    """Weights go through io.atomic: readable by others (the umask, not mkstemp's 0600), no
    temporary leftovers, and a failed save leaves the previous file untouched."""
    import os

    from napari_ambiseg.errors import WriteError

    cfg = tiny_config()
    old = os.umask(0o022)
    try:
        path = save_weights(build_model(cfg), cfg, tmp_path / "sub" / "w")  # folder created
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in path.parent.iterdir()) == ["w.json", "w.safetensors"]
    before = path.read_bytes()

    def broken(_):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken)  # fails after the bytes were written
    with pytest.raises(WriteError, match="disk full"):
        save_weights(build_model(cfg), cfg, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["w.json", "w.safetensors"]


def test_load_errors(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_weights(tmp_path / "missing.safetensors")
    cfg = tiny_config()
    save_weights(build_model(cfg), cfg, tmp_path / "w")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00garbage" * 10)
    (tmp_path / "bad.json").write_text((tmp_path / "w.json").read_text())
    with pytest.raises(WeightsError, match="corrupt"):
        load_weights(tmp_path / "bad.safetensors")
    other = json.loads((tmp_path / "w.json").read_text())
    other["config"]["mask_widths"] = [16, 16, 16]
    (tmp_path / "w.json").write_text(json.dumps(other))
    with pytest.raises(WeightsError, match="do not match"):
        load_weights(tmp_path / "w")
    (tmp_path / "w.json").write_text("{not json")
    with pytest.raises(WeightsError, match="not valid"):
        load_weights(tmp_path / "w")


def test_config_validation_and_versions():
    with pytest.raises(ValueError, match="prediction"):
        ModelConfig(prediction="score")
    d = ModelConfig().to_dict()
    d["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(ValueError, match="newer"):
        ModelConfig.from_dict(d)
    assert ModelConfig.from_dict(ModelConfig().to_dict()) == ModelConfig()


def test_format_1_files_migrate_their_scope(tmp_path):
    """Format 1 kept the modality at the top and the spacing in `extra`: both reach `scope`."""
    cfg = tiny_config()
    save_weights(build_model(cfg), cfg, tmp_path / "old")
    meta = json.loads((tmp_path / "old.json").read_text())
    config = {k: v for k, v in meta["config"].items() if k not in ("scope", "format_version")}
    config |= {"modality": "MR", "extra": {"pixel_spacing_mm": 0.9, "note": "kept"}}
    (tmp_path / "old.json").write_text(json.dumps({"format_version": 1, "config": config}))
    _, cfg1, _ = load_weights(tmp_path / "old")
    assert cfg1.scope.modality == "MR" and cfg1.scope.pixel_spacing_mm == 0.9
    assert cfg1.extra == {"note": "kept"} and cfg1.scope.task == ""
    assert ModelConfig.from_dict(cfg1.to_dict()) == cfg1  # format 2 round trip


def test_bundled_config_states_its_scope():
    from napari_ambiseg.weights_io import bundled_weights_path, load_config

    cfg, _ = load_config(bundled_weights_path())
    scope = cfg.scope
    assert (scope.modality, scope.task, scope.pixel_spacing_mm) == ("CT", "lung nodules", 0.7)
    assert "LIDC-IDRI train split" in scope.training_data and "-1000" in scope.intensity
    assert cfg.extra == {}


@pytest.mark.parametrize("version", [2, 3])
def test_files_with_the_dropped_name_field_still_load(tmp_path, version):
    """`ModelConfig.name` was never read and is gone; format 2 and 3 files carry it."""
    cfg = tiny_config(steps=20, n_samples=8)
    save_weights(build_model(cfg), cfg, tmp_path / "old")
    meta = json.loads((tmp_path / "old.json").read_text())
    meta["format_version"] = meta["config"]["format_version"] = version
    meta["config"]["name"] = "ambiseg"
    (tmp_path / "old.json").write_text(json.dumps(meta))
    _, loaded, _ = load_weights(tmp_path / "old")
    assert loaded == cfg and "name" not in loaded.to_dict()
    current = cfg.to_dict() | {"name": "ambiseg", "format_version": FORMAT_VERSION + 1}
    with pytest.raises(ValueError, match="newer"):
        ModelConfig.from_dict(current)


def test_bundled_weights_load_without_the_name_field():
    """The shipped file (format 2) carries `name`; it loads all the same."""
    from napari_ambiseg.weights_io import bundled_weights_path

    _, cfg, _ = load_weights(bundled_weights_path())
    assert not hasattr(cfg, "name") and cfg.hu_window == (-1000.0, None)


def test_hu_window_is_validated():
    assert ModelConfig(hu_window=[-1200, 600]).hu_window == (-1200, 600)
    with pytest.raises(ValueError, match="hu_window"):
        ModelConfig(hu_window=(400.0, -400.0))
    with pytest.raises(ValueError, match="n_samples and steps"):
        ModelConfig(steps=0)
