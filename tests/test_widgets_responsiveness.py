"""The viewer's event loop keeps running while the sampler works: the Sample click returns at
once and the GUI thread runs timer ticks between the worker's sampling steps. (How short the
gaps are is measured, not asserted: benchmarks/bench_gui_responsiveness.py.)"""

from __future__ import annotations

import time

import numpy as np
import pytest
from qtpy.QtCore import QTimer

from napari_ambiseg.testing import tiny_segmenter
from napari_ambiseg.widgets.sampling import SamplingWidget

pytestmark = pytest.mark.gui


class StepClock:
    """A segmenter that records when (in the worker thread) each sampling step ended."""

    def __init__(self, segmenter):
        self.segmenter, self.steps = segmenter, []

    def __getattr__(self, name):
        return getattr(self.segmenter, name)

    def sample(self, *args, progress=None, **kwargs):
        def step(i, k):
            self.steps.append(time.perf_counter())
            if progress is not None:
                progress(i, k)

        return self.segmenter.sample(*args, progress=step, **kwargs)


def test_event_loop_keeps_ticking_while_sampling(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).normal(-600, 200, (256, 256)).astype(np.float32))
    w = SamplingWidget(viewer)
    clock = StepClock(tiny_segmenter())
    w.set_segmenter(clock, "tiny")
    w.n.setValue(32)
    w.steps.setValue(20)
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    finished = []
    w.done.connect(lambda: finished.append(True))
    with qtbot.waitSignal(w.done, timeout=300_000):
        assert w.run() is not None
        assert not finished  # run() only started the worker
    timer.stop()
    assert w.last_error is None and w.last_outputs is not None
    assert len(clock.steps) == 20
    first, last = clock.steps[0], clock.steps[-1]
    assert any(first < t < last for t in ticks)  # the GUI thread ran while the worker sampled
