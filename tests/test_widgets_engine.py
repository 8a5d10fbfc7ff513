"""The widgets' inference layer without Qt: volumes, propagation, the thread bridge, layers."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from napari_ambiseg.errors import Cancelled, InputError
from napari_ambiseg.testing import ThresholdSegmenter, tiny_segmenter
from napari_ambiseg.widgets import layers as L
from napari_ambiseg.widgets.engine import Prompt, Request, run_request, sampling_job, stream

Threshold = ThresholdSegmenter



def drifting_blob(depth=9, size=40, slices=range(2, 7)):
    """A blob on `slices` that moves right by 2 pixels per slice."""
    vol = np.full((depth, size, size), -1.0, np.float32)
    for z in slices:
        vol[z, 15:21, 10 + 2 * z:16 + 2 * z] = 1.0
    return vol


def test_follow_the_finding_up_and_down_recentring():
    seg, vol = Threshold(), drifting_blob()
    req = Request(vol, Prompt(center=(17.0, 17.0), z=4), n=3, steps=2, volume=True,
                  propagate=True)
    seen = []
    out = run_request(seg, req, progress=lambda d, t, s: seen.append((d, t, s)))
    # sampled 4, then up 5, 6 and the empty 7; down 3, 2 and the empty 1
    assert out.z0 == 1 and out.masks.shape == (3, 7, 40, 40) and out.key == 3
    assert [bool(out.masks[0, z].any()) for z in range(7)] == [0, 1, 1, 1, 1, 1, 0]
    assert seg.calls[1] == (18.0, 20.0)  # re-centred on slice 4 (rows 15-20, cols 18-23)
    assert seen[-1][0] == seen[-1][1] == 7 * 2 and seen[-1][2].startswith("slice")


def test_slice_range_and_bad_range():
    seg, vol = Threshold(), drifting_blob()
    out = run_request(seg, Request(vol, Prompt(z=3), n=2, steps=1, volume=True,
                                   slices=[5, 3, 4]))
    assert out.z0 == 3 and out.masks.shape[1] == 3 and out.key == 0
    np.testing.assert_array_equal(out.agreement, out.masks.mean(0))
    with pytest.raises(InputError):
        run_request(seg, Request(vol, n=2, steps=1, volume=True, slices=[7, 12]))


def test_outputs_label_samples_by_mode_rank():
    seg, vol = Threshold(), drifting_blob()
    out = run_request(seg, Request(vol[4], n=4, steps=1))
    assert out.z0 is None and set(np.unique(out.labelled())) == {0, 1}
    assert out.describe()["modes"] == [[0, 1, 2, 3]]


def test_stream_yields_events_returns_and_raises():
    stop = threading.Event()

    def work(emit, should_stop):
        for i in range(3):
            emit(i)
        return "done"

    gen = stream(work, stop, tick=0.01)
    got = []
    with pytest.raises(StopIteration) as end:
        while True:
            got.append(next(gen))
    assert [g for g in got if g is not None] == [0, 1, 2] and end.value.value == "done"

    def boom(emit, should_stop):
        raise InputError("bad input")

    with pytest.raises(InputError, match="bad input"):
        list(stream(boom, threading.Event(), tick=0.01))


def test_closing_the_stream_stops_the_work():
    stop, finished = threading.Event(), threading.Event()

    def slow(emit, should_stop):
        while not should_stop():
            time.sleep(0.005)
        finished.set()

    gen = stream(slow, stop, tick=0.01)
    next(gen)
    gen.close()
    assert stop.is_set() and finished.wait(1.0)


def test_sampling_job_with_a_real_tiny_model_and_cancel():
    seg = tiny_segmenter()
    img = np.random.default_rng(0).normal(size=(48, 48)).astype(np.float32)
    gen = sampling_job(lambda: seg, Request(img, n=2, steps=2), threading.Event(), tick=0.01)
    events = []
    try:
        while True:
            events.append(next(gen))
    except StopIteration as end:
        out = end.value
    assert out.masks.shape == (2, 48, 48) and out.agreement.dtype == np.float32
    assert any(e and e["done"] == 2 and e["total"] == 2 for e in events)

    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        list(sampling_job(lambda: seg, Request(img, n=2, steps=50), stop, tick=0.01))


def test_write_where_empty_and_geometry_without_a_viewer():
    from napari.layers import Image, Labels

    labels = Labels(np.array([[0, 2], [0, 0]], np.uint8))
    written, kept = L.write_where_empty(labels, np.array([[1, 1], [1, 0]], bool), 5)
    assert (written, kept) == (2, 1)
    np.testing.assert_array_equal(labels.data, [[5, 2], [5, 0]])
    labels.undo()
    np.testing.assert_array_equal(labels.data, [[0, 2], [0, 0]])

    src = Image(np.zeros((4, 8, 8)), scale=(2, 0.5, 0.5), translate=(1, 2, 3),
                rotate=np.eye(3), affine=np.diag([1.0, 2.0, 1.0, 1.0]))
    geo = L.geometry(src, lead=1, z0=2)
    assert geo["scale"] == (1.0, 2.0, 0.5, 0.5) and geo["translate"] == (0.0, 5.0, 2.0, 3.0)
    np.testing.assert_allclose(geo["affine"], np.diag([1.0, 1.0, 2.0, 1.0, 1.0]))
    full = L.embed(np.ones((1, 8, 8), bool), (4, 8, 8), 2)
    assert full[2].all() and full.sum() == 64


def test_outputs_are_the_core_result_with_sizes():
    from napari_ambiseg.result import SampleResult as Core
    from napari_ambiseg.widgets.engine import Outputs

    assert Outputs is Core
    seg, vol = Threshold(), drifting_blob()
    out = run_request(seg, Request(vol, Prompt(center=(17.0, 17.0), z=4), n=2, steps=1,
                                   volume=True, slices=[3, 5], spacing=(3.0, 0.5, 0.5)))
    d = out.describe()
    assert d["z0"] == 3 and d["spacing"] == [3.0, 0.5, 0.5]
    assert d["mode_sizes"][0]["volume_mm3"]["median"] == pytest.approx(3 * 36 * 0.75)
    assert d["mode_sizes"][0]["text"].startswith("81 mm^3")
