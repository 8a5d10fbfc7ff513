"""`ambiseg demo`: headless screenshot of the whole window with the LIDC nodule and its readers;
a clear failure without weights; setup.sh installs what the demo needs without a screen."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageColor

from napari_ambiseg.testing import save_tiny_weights
from napari_ambiseg.widgets import demo

pytestmark = pytest.mark.gui
ROOT_SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


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
    # the CT is drawn: a bright area (chest wall in the lung window) in the canvas
    assert (gray > 150).mean() > 0.03
    # the readers' outlines are drawn, one colour per reader
    for name in ("pink", "green"):
        colour = np.array(ImageColor.getrgb(demo.READER_COLORS[name]))
        assert (np.abs(img.astype(int) - colour).max(2) < 40).sum() > 100, name


def test_demo_samples_the_slice_where_the_readers_agree():
    (_, ikw, _), (readers, _, _) = demo.demo_layers()
    z, row, col = demo.demo_target(readers)
    on_slice = readers[:, z].reshape(len(readers), -1).any(1)
    assert on_slice.all()  # all 4 readers outlined this slice
    assert all(readers[r, z, int(row), int(col)] for r in range(len(readers)))  # inside all
    assert z == demo.agreement_slice(readers)
    assert ikw["metadata"]["ambiseg"]["source_info"]["role"] == demo.DEMO_SAMPLE == "clear"


def test_the_demo_gives_the_two_answers(make_napari_viewer):
    """Issue 23: with the bundled model, the demo's clear nodule shows outline modes only
    (drawn given a finding) and its finding probability; the sample two of whose four readers
    saw nothing gets a clearly lower one."""
    from napari_ambiseg.segmenter import Segmenter
    from napari_ambiseg.weights_io import bundled_weights_path

    if not bundled_weights_path().is_file():
        pytest.skip("no bundled weights")
    seg = Segmenter.load(None, "cpu")
    p = {}
    for role in ("clear", "unseen"):
        viewer = make_napari_viewer(show=True)
        image, _ = demo.add_demo_layers(viewer, role)
        sampler, gallery = demo.sample_demo_point(viewer, image, seg, "bundled LIDC model")
        out = sampler.last_outputs
        p[role] = out.finding_probability
        assert out.conditional and f"here: {100 * p[role]:.0f}%" in gallery.answer.text()
        if role == "clear":
            assert all(name.startswith("mode ") for name in gallery.names)
    assert p["clear"] >= p["unseen"] + 0.15


def test_demo_without_weights_says_so_in_one_line(tmp_path):
    r = ambiseg("--screenshot", str(tmp_path / "x.png"), "--weights",
                str(tmp_path / "missing.safetensors"), timeout=120)
    assert r.returncode != 0
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "weights" in lines[0] and "missing.safetensors" in lines[0]
    assert not (tmp_path / "x.png").exists()


def test_demo_falls_back_to_headless_without_a_display(monkeypatch):
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


FAKE_PYTHON = """#!/bin/sh
# stand-in python: `-m venv DIR` works only once python3.11-venv is "installed"
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  [ -f "$FAKE/venv-installed" ] || exit 1
  mkdir -p "$3/bin" && cp "$0" "$3/bin/python" && cp "$FAKE/pip" "$3/bin/pip" && exit 0
fi
[ "$1" = "-c" ] && case "$2" in *version_info*) echo 3.11 ;; esac
exit 0
"""
LOGGER = """#!/bin/sh
echo "$(basename "$0") $*" >> "$FAKE/log"
case "$(basename "$0") $*" in
  dpkg*) exit 1 ;;  # every package is missing
  *python3.11-venv*) touch "$FAKE/venv-installed" ;;
esac
exit 0
"""


@pytest.mark.parametrize("display", [None, ":5"])
def test_setup_installs_what_the_demo_needs(tmp_path, display):
    """setup.sh on a fresh Debian (simulated: apt, dpkg, python are stand-ins that log):
    makes the venv (installing python3.11-venv first), and installs Qt's libraries, plus Xvfb
    when there is no display, through system_deps.sh."""
    import shutil

    repo, fake = tmp_path / "repo", tmp_path / "bin"
    (repo / "scripts").mkdir(parents=True)
    fake.mkdir()
    for name in ("setup.sh", "system_deps.sh"):
        shutil.copy(ROOT_SCRIPTS / name, repo / "scripts" / name)
    for name, text in (("python3", FAKE_PYTHON), ("dpkg", LOGGER), ("apt-get", LOGGER),
                       ("sudo", LOGGER), ("pip", LOGGER)):
        (fake / name).write_text(text)
        (fake / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.update(PATH=f"{fake}:{env['PATH']}", FAKE=str(fake), PYTHON=str(fake / "python3"))
    if display:
        env["DISPLAY"] = display
    r = subprocess.run(["bash", str(repo / "scripts" / "setup.sh")], capture_output=True,
                       text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    log = (fake / "log").read_text().splitlines()
    installs = [line for line in log if line.startswith(("apt-get install", "sudo env"))]
    assert any("python3.11-venv" in line for line in installs)
    assert any("pip install -q -e .[testing]" in line for line in log)
    qt = [line for line in installs if "libxcb-cursor0" in line]
    assert len(qt) == 1 and "libglib2.0-0" in qt[0]
    assert ("xvfb" in qt[0].split()) == (display is None)
