"""`ambiseg demo`: headless screenshot of the whole window; a clear failure without weights."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from napari_ambiseg.widgets.tiny import save_tiny_weights

pytestmark = pytest.mark.gui


def ambiseg(*args, display: bool = True, timeout: int = 600):
    env = dict(os.environ)
    if not display:
        env.pop("DISPLAY", None)  # the demo must start its own virtual display
    return subprocess.run([sys.executable, "-m", "napari_ambiseg.cli", "demo", *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


def test_demo_screenshot_is_not_blank(tmp_path):
    """Without DISPLAY: the demo starts its own virtual display (pyvirtualdisplay + Xvfb)."""
    weights = save_tiny_weights(tmp_path / "tiny")
    shot = tmp_path / "demo.png"
    r = ambiseg("--screenshot", str(shot), "--weights", str(weights), "--n", "4",
                "--steps", "2", display=False)
    assert r.returncode == 0, r.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[0] >= 800 and img.shape[1] >= 1200  # the whole window, not the canvas
    gray = img.mean(2)
    assert gray.std() > 20 and len(np.unique(img.reshape(-1, 3), axis=0)) > 200
    # the CT is drawn: a large bright (soft tissue in a lung window) area in the canvas
    assert (gray > 200).mean() > 0.05


def test_demo_without_weights_says_so_in_one_line(tmp_path):
    r = ambiseg("--screenshot", str(tmp_path / "x.png"), "--weights",
                str(tmp_path / "missing.safetensors"), timeout=120)
    assert r.returncode != 0
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "weights" in lines[0] and "missing.safetensors" in lines[0]
    assert not (tmp_path / "x.png").exists()


def test_demo_falls_back_to_headless_without_a_display(monkeypatch):
    from napari_ambiseg.widgets import demo

    monkeypatch.setattr(demo.sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert not demo.has_display()
    seen = {}
    monkeypatch.setattr(demo, "ensure_display", lambda: None)

    def fake_show(segmenter, name, screenshot, n, steps):
        seen["shot"] = screenshot
        return 0

    monkeypatch.setattr(demo, "_show", fake_show)
    assert demo.run_demo(segmenter=object()) == 0
    assert seen["shot"] == demo.HEADLESS_SCREENSHOT
    monkeypatch.setenv("DISPLAY", ":0")
    assert demo.has_display()
