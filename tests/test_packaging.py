"""The plugin manifest is valid and a non-editable build ships the weights as package data."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_manifest_is_valid_and_points_at_real_callables():
    from npe2 import PluginManifest

    pm = PluginManifest.from_distribution("napari-ambiseg")
    assert pm.name == "napari-ambiseg"
    for cmd in pm.contributions.commands:
        module, attr = cmd.python_name.split(":")
        mod = __import__(module, fromlist=[attr])
        assert callable(getattr(mod, attr)), cmd.python_name
    keys = set(pm.contributions.configurations["ambiseg"].properties)
    assert {"n_samples", "steps", "device", "weights_path"} <= keys


def test_core_imports_without_qt():
    code = ("import sys, napari_ambiseg.segmenter, napari_ambiseg.metrics, napari_ambiseg.cli, "
            "napari_ambiseg.training.trainer, napari_ambiseg.io, napari_ambiseg._reader, "
            "napari_ambiseg._sample_data, napari_ambiseg.testing; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('PyQt6', 'PySide6', 'qtpy', "
            "'napari')]; print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_wheel_contains_bundled_weights_and_manifest(tmp_path):
    if not (ROOT / "weights" / "ambiseg_lidc.safetensors").is_file():
        pytest.skip("no bundled weights in weights/ yet")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(ROOT)], check=True, timeout=300)
    wheel = next(tmp_path.glob("napari_ambiseg-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"napari_ambiseg/weights/ambiseg_lidc.safetensors",
            "napari_ambiseg/weights/ambiseg_lidc.json", "napari_ambiseg/napari.yaml"} <= names
