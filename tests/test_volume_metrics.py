"""3D metrics of the volumes benchmark on hand-made stacks."""

import numpy as np
import pytest

from napari_ambiseg import metrics
from napari_ambiseg.volume_metrics import equivalent_diameter, link_readers, slice_dice, stack_metrics, volume_distance


def square(y, x, k=4, size=16):
    m = np.zeros((size, size), bool)
    m[y:y + k, x:x + k] = True
    return m


def shuffled_readers():
    """Two readers (one on the left, one on the right), listed in a different order on each
    slice, and a third who marks only the middle slice."""
    z = 4
    left = [square(2, 1 + k % 2) for k in range(z)]
    right = [square(8, 10 - k % 2) for k in range(z)]
    empty = np.zeros((16, 16), bool)
    third = [empty, square(5, 5), empty, empty]
    order = [(0, 1, 2), (2, 1, 0), (1, 2, 0), (1, 0, 2)]
    per_slice = []
    for k in range(z):
        readers = [left[k], right[k], third[k]]
        per_slice.append(np.stack([readers[i] for i in order[k]]))
    return np.stack(per_slice), np.stack(left), np.stack(right), np.stack(third)


def test_link_readers_follows_each_reader_through_the_slices():
    masks, left, right, third = shuffled_readers()
    tracks = link_readers(masks)
    assert tracks.shape == (3, 4, 16, 16)
    found = {i for t in tracks for i, ref in enumerate((left, right, third))
             if (t == ref).all()}
    assert found == {0, 1, 2}


def test_slice_dice_skips_pairs_that_are_both_empty():
    _, left, _, third = shuffled_readers()
    d = slice_dice(np.stack([left, third]))
    overlap = (square(2, 1) & square(2, 2)).sum() * 2 / 32
    assert d == pytest.approx([overlap] * 3 + [0.0, 0.0])  # third: 1 mark, then nothing


def test_equivalent_diameter_and_volume_distance():
    assert equivalent_diameter(4 / 3 * np.pi * 5**3) == pytest.approx(10.0)
    assert equivalent_diameter(0.0) == 0.0
    v = 4 / 3 * np.pi * np.array([2.0, 3.0]) ** 3
    assert volume_distance(v, v) == pytest.approx(0.0)
    assert volume_distance([0.0, 0.0], v) == pytest.approx(5.0)  # mean of 4 and 6 mm


def test_stack_metrics_on_perfect_samples():
    masks, *_ = shuffled_readers()
    tracks = link_readers(masks)
    samples = np.repeat(tracks, 2, axis=0)  # every reader twice: a perfect sampler
    m = stack_metrics(samples, tracks, voxel_mm3=2.0)
    assert m["hm_iou"] == pytest.approx(1.0) and m["volume_w1_mm"] == pytest.approx(0.0)
    s3 = samples.reshape(6, -1, 16)
    assert m["ged"] == pytest.approx(metrics.ged(s3, tracks.reshape(3, -1, 16)))
    assert np.mean(m["slice_dice_samples"]) == pytest.approx(np.mean(m["slice_dice_readers"]))
