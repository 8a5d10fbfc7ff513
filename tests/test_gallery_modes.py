"""Modes: specks (<= 2 px per slice) join the mode they lie in, or count as no finding."""

from __future__ import annotations

import numpy as np
import pytest

from napari_ambiseg.modes import empty_or_speck, find_modes, mode_labels, mode_names


def _disk(c, r, shape=(32, 32)):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - c[0]) ** 2 + (xx - c[1]) ** 2 <= r * r


def test_specks_join_their_mode_or_no_finding():
    big = _disk((10, 10), 4)
    other = _disk((24, 24), 4)
    speck_in = np.zeros((32, 32), bool)
    speck_in[10, 10] = True                   # inside `big`: joins its mode
    speck_out = np.zeros((32, 32), bool)
    speck_out[2, 30] = speck_out[2, 29] = True  # nowhere: counted as no finding
    masks = np.stack([big] * 5 + [other] * 3 + [np.zeros_like(big)] * 2 + [speck_in, speck_out])
    modes = find_modes(masks)
    assert [len(m.members) for m in modes] == [6, 3, 3]
    assert modes[0].specks == [10] and 10 in modes[0].members
    assert modes[0].representative in range(5)
    assert modes[2].specks == [11] and not masks[modes[2].representative].any()
    assert abs(sum(m.frequency for m in modes) - 1.0) < 1e-9


def test_specks_without_an_empty_sample_make_the_no_finding_mode():
    big = _disk((10, 10), 4)
    speck = np.zeros((32, 32), bool)
    speck[30, 2] = True
    modes = find_modes(np.stack([big] * 4 + [speck, speck]))
    assert [len(m.members) for m in modes] == [4, 2]
    assert modes[1].specks == [4, 5]


def test_speck_rule_is_per_marked_slice_for_volumes():
    v = np.zeros((3, 4, 8, 8), bool)
    v[0, :3, 1, 1] = True                      # 1 px on each of 3 slices: speck
    v[1, 0, :3, :3] = True                     # 9 px on one slice: a finding
    empty, speck = empty_or_speck(v)
    assert empty.tolist() == [False, False, True]
    assert speck.tolist() == [True, False, False]


def test_outline_modes_are_numbered_consecutively_wherever_no_finding_sits():
    """Issue 27.2: "no finding" first left "mode 2", "mode 3" with no mode 1."""
    assert mode_names([True, False, False]) == ["no finding", "mode 1", "mode 2"]
    assert mode_names([False, True, False]) == ["mode 1", "no finding", "mode 2"]
    assert mode_names([False, False]) == ["mode 1", "mode 2"]
    big, other = _disk((10, 10), 4), _disk((24, 24), 4)
    masks = np.stack([np.zeros_like(big)] * 9 + [big] * 5 + [other] * 2)
    assert mode_labels(find_modes(masks), masks) == [
        "no finding - 9 of 16", "mode 1 - 5 of 16", "mode 2 - 2 of 16"]


@pytest.mark.gui
def test_gallery_says_where_specks_went(make_napari_viewer, qtbot):
    from dock_helpers import sampled

    from napari_ambiseg.testing import ScriptedSegmenter

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64), np.float32), name="ct")
    # 10 empty, 4 disks, 2 one-pixel specks at the disks' centre: they join the disks' mode
    _, gallery = sampled(viewer, qtbot, ScriptedSegmenter(groups=(10, 4, 2), radii=(0, 6, 0.5)))
    texts = [h.text().replace("<b>", "").replace("</b>", "") for h in gallery.headers]
    assert texts[0] == "no finding - 10 of 16" and texts[1].startswith("mode 1 - 6 of 16: ")
    assert gallery.notes.text() == "2 specks (<= 2 px) joined mode 1"
    assert gallery.notes.isVisible() or not gallery.isVisible()
    assert sorted(gallery.adopt_buttons) == [2]
