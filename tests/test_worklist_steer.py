"""Steering a worklist case (#25 with #24): a case opened from a triage run is steered by the
sampling dock's Steer row like a fresh result: its clicks draw the case's own prompt again
(same seed, N, place), the case's layers and gallery follow, and closing the case takes the
clicks with it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from napari_ambiseg import worklist as wl
from napari_ambiseg.widgets import layers as L
from napari_ambiseg.widgets import steer as S
from napari_ambiseg.widgets.sampling import SamplingWidget

sys.path.insert(0, str(Path(__file__).parent))
import test_worklist_dock as wd  # noqa: E402
from test_steer_dock import Steerable, masks_of, settle, world_of  # noqa: E402

made, run_dir = wd.made, wd.run_dir  # the Worklist dock tests' run, copied per test
_open, dock = wd._open, wd.dock

pytestmark = pytest.mark.gui


def test_a_worklist_case_is_steered_with_its_own_prompt(make_napari_viewer, qtbot, run_dir):
    viewer, w = dock(make_napari_viewer, qtbot)
    sampler = SamplingWidget(viewer)
    viewer.window.add_dock_widget(sampler, name="Sampling", area="right")
    seg = Steerable()
    sampler.set_segmenter(seg, "stand-in")
    assert w.open_run(run_dir)
    _open(w, qtbot, "slice_b")
    image = w.image_layer
    run = wl.read_run(run_dir)
    result = wl.load_case(run, "slice_b").result
    assert sampler.steer.isEnabled() and sampler.last_outputs is w.current.out
    assert sampler.status.text().startswith("From case slice_b of the worklist:")
    before = masks_of(viewer, image)

    sampler.steer.choose(S.INCLUDE)
    layer = S.constraints_layer(viewer, image)
    box = tuple(result["request"]["box"])  # the case's prompt: a box
    centre = (int((box[0] + box[2]) // 2), int((box[1] + box[3]) // 2))
    layer.add(layer.world_to_data(world_of(image, centre)))
    settle(qtbot, sampler)
    call = seg.calls[-1]
    assert call["constraints"].include == (centre,)
    # made on the case's mode 1 (what a click-conditioned model reads the click against)
    assert (call["constraints"].shown == w.current.out.mode_one(image.data.shape)).all()
    assert call["box"] == pytest.approx(box)
    assert call["seed"] == result["seed"] and call["n"] == run.info["n"]
    assert call["steps"] == run.info["steps"]
    assert "satisfy the click" in sampler.status.text()
    assert (masks_of(viewer, image) != before).any()  # the case's layers show the redraw

    sampler.steer.undo()  # back to the case as triage drew it
    settle(qtbot, sampler)
    assert (masks_of(viewer, image) == before).all()

    _open(w, qtbot, "series_c")  # another case takes the clicks' layer away with this one
    assert sampler.status.text().startswith("From case series_c of the worklist:")
    assert layer not in viewer.layers and image not in viewer.layers
    assert not any(L.output_info(la) for la in viewer.layers
                   if (L.output_info(la) or {}).get("source") == L.source_id(image))
