"""The viewer's event loop keeps ticking while the sampler works (QTimer probe, 10 ms)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from napari_ambiseg.testing import tiny_segmenter
from napari_ambiseg.widgets.sampling import SamplingWidget

pytestmark = pytest.mark.gui

BENCH = Path(__file__).parents[1] / "benchmarks" / "bench_gui_responsiveness.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_gui_responsiveness", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_event_loop_keeps_ticking_while_sampling(make_napari_viewer):
    bench = _bench()
    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.random.default_rng(0).normal(-600, 200, (256, 256)).astype(np.float32))
    w = SamplingWidget(viewer)
    viewer.window.add_dock_widget(w, name="AmbiSeg")
    w.set_segmenter(tiny_segmenter(), "tiny")
    w.n.setValue(64)
    w.steps.setValue(30)
    bench.measure(viewer, w)  # first run: napari builds the output layers
    for _attempt in range(2):  # the machine is shared: one retry
        r = bench.measure(viewer, w)
        gaps, model_ms = r["sampling_gap_ms"], r["model_s"] * 1000
        print(r)
        assert r["error"] is None
        # a GUI blocked by sampling would tick about once in model_ms
        ok = (gaps["ticks"] >= 0.4 * model_ms / 10 and gaps["p95"] < 100
              and r["show_layers_ms"] < 500)
        if ok:
            break
    assert ok, r
