"""Reader comparison figures on a hand-made case with known values."""

from __future__ import annotations

import numpy as np
import pytest

from napari_ambiseg.compare import compare_readers, report_text


def _box(y0, y1, shape=(10, 10)):
    m = np.zeros(shape, bool)
    m[y0:y1, 0:4] = True
    return m


def test_hand_made_case():
    a = _box(0, 4)          # 16 px
    b = _box(0, 2)          # 8 px, inside a: IoU(a, b) = 0.5
    z = np.zeros((10, 10), bool)
    samples = np.stack([a, a, z, z])   # modes: [0, 1] (a), [2, 3] (no finding)
    readers = np.stack([a, b, z])
    modes = [[0, 1], [2, 3]]
    c = compare_readers(samples, readers, modes)
    # d = 1 - IoU. cross (4 x 3): rows a,a: (0, .5, 1); rows z,z: (1, 1, 0) -> sum 7 / 12
    # within samples (4 x 4): a-z pairs 8 of 16 are 1 -> 0.5
    # within readers (3 x 3): a-b .5 x2, a-z 1 x2, b-z 1 x2 -> 5 / 9
    assert c["ged"] == pytest.approx(2 * 7 / 12 - 0.5 - 5 / 9)
    # HM-IoU: L = 12; each sample x3, each reader x4; best matching: a->a (x4... ) computed:
    # samples a (6 copies), z (6 copies); readers a (4), b (4), z (4): a-a 4 x 1, a-b 2 x .5,
    # z-z 4 x 1, z-b 2 x 0 -> (4 + 1 + 4) / 12
    assert c["hm_iou"] == pytest.approx(9 / 12)
    assert c["samples_empty"] == 2 and c["readers_empty"] == 1
    assert c["reader_modes"] == [1, 1, 2]  # b: IoU 0.5 with mode 1's representative
    assert c["reader_iou"] == pytest.approx([1.0, 0.5, 1.0])
    text = report_text(c, ["mode 1", "no finding"])
    assert text.startswith("GED4 ") and "1 of 3 readers, 2 of 4 samples" in text
    assert "reader 3 -> no finding" in text


def test_volume_masks_and_a_reader_in_no_mode():
    s = np.zeros((2, 3, 8, 8), bool)
    s[:, 1, 2:6, 2:6] = True
    r = np.zeros((1, 3, 8, 8), bool)
    r[0, 0, 0:2, 0:2] = True  # elsewhere: no mode
    c = compare_readers(s, r, [[0, 1]])
    assert c["reader_modes"] == [None] and c["ged"] == pytest.approx(2 * 1 - 0 - 0)
    with pytest.raises(ValueError):
        compare_readers(s, r[:, :2], [[0, 1]])
