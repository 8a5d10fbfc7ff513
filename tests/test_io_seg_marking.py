"""Issue 27.9: what a saved DICOM-SEG says about who made each segment is true.

A label adopted from the model and left as adopted is SEMIAUTOMATIC (with napari-ambiseg as
the algorithm) and named after what was adopted ("nodule, mode 1 (sample k)"); adopted then
edited by hand it says so ("..., edited"); a label painted by hand is MANUAL. Saved through
napari's File > Save (the npe2 writer), as a user does.
"""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from napari_ambiseg.widgets.gallery import GalleryWidget
from napari_ambiseg.widgets.sampling import SamplingWidget

pytestmark = pytest.mark.gui

PLUGIN = "napari-ambiseg"


def _segments(viewer, layer, path) -> dict[int, tuple[str, str]]:
    """Save `layer` as DICOM-SEG; label value -> (SegmentAlgorithmType, SegmentLabel)."""
    viewer.layers.selection.active = layer
    assert viewer.layers.save(str(path), selected=True, plugin=PLUGIN)
    seg = pydicom.dcmread(path)
    out = {}
    for s in seg.SegmentSequence:
        value = int(str(s.TrackingID).split()[-1])
        out[value] = (str(s.SegmentAlgorithmType), str(s.SegmentLabel))
        algorithm = "SegmentationAlgorithmIdentificationSequence" in s
        assert algorithm == (s.SegmentAlgorithmType != "MANUAL")
    return out


def test_adopted_edited_and_hand_painted_labels(make_napari_viewer, qtbot, tmp_path):
    from test_recovery_public_api import open_and_sample

    viewer, src, _, gallery = open_and_sample(
        make_napari_viewer, qtbot, tmp_path / "series",
        lambda v: (SamplingWidget(v), GalleryWidget(v)))
    labels = gallery.adopt_mode(1)
    what = labels.metadata["ambiseg_adopted"]["what"]
    assert what.startswith("mode 1")
    adopted = f"nodule, {what}"
    assert _segments(viewer, labels, tmp_path / "a.dcm") == {1: ("SEMIAUTOMATIC", adopted)}

    labels.selected_label = 2  # a second label, painted by hand away from the mode (the
    labels.paint((2, 2, 2), labels.selected_label)  # brush paints the selected label)
    assert _segments(viewer, labels, tmp_path / "b.dcm") == {
        1: ("SEMIAUTOMATIC", adopted), 2: ("MANUAL", "label 2")}

    inside = tuple(int(i) for i in np.argwhere(np.asarray(labels.data) == 1)[0])
    labels.paint(inside, 0)  # the adopted outline edited (the eraser paints 0)
    assert _segments(viewer, labels, tmp_path / "c.dcm")[1] == ("SEMIAUTOMATIC",
                                                                f"{adopted}, edited")
    labels.undo()  # back to what was adopted: untouched again
    assert _segments(viewer, labels, tmp_path / "d.dcm")[1] == ("SEMIAUTOMATIC", adopted)

    # a consensus adopted into the same layer lies inside mode 1: it writes no pixel, and the
    # hand-painted 2 (now the highest value) is not taken for it
    gallery.target.set_value(labels)
    gallery.confirm = lambda target: True
    gallery.adopt_consensus(0.5)
    assert "0 pixels written" in gallery.status.text()
    assert _segments(viewer, labels, tmp_path / "e.dcm") == {
        1: ("SEMIAUTOMATIC", adopted), 2: ("MANUAL", "label 2")}

    # a labels layer painted by hand (Layers > New labels layer): MANUAL; the consensus
    # adopted into it gets its own value, named after it
    hand = viewer.add_labels(np.zeros(src.data.shape, np.uint8), scale=src.scale,
                             translate=src.translate, name="by hand")
    hand.paint((2, 1, 1), 1)
    assert _segments(viewer, hand, tmp_path / "f.dcm") == {1: ("MANUAL", "label 1")}
    gallery.target.set_value(hand)
    assert gallery.adopt_consensus(0.5) is hand
    segments = _segments(viewer, hand, tmp_path / "g.dcm")
    assert segments[1] == ("MANUAL", "label 1")
    assert segments[2][0] == "SEMIAUTOMATIC" and segments[2][1].startswith("nodule, consensus >=")
