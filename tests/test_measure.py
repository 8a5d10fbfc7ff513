"""Sizes on hand-made masks of known size: volume, area, long-axis diameter, slice extent."""

import math

import numpy as np
import pytest

from napari_ambiseg.measure import measure, slice_diameter, summarize_sizes


def ellipsoid_of_sphere(radius_mm, spacing, shape, centre):
    """Voxels whose centre lies inside a sphere (mm), on an anisotropic grid."""
    z, y, x = np.indices(shape, dtype=float)
    d2 = sum(((a - c) * s) ** 2 for a, c, s in zip((z, y, x), centre, spacing))
    return d2 <= radius_mm**2


@pytest.mark.parametrize("spacing", [(2.5, 0.7, 0.8), (1.25, 0.9, 0.6), (3.0, 0.5, 0.5)])
def test_sphere_volume_diameter_and_extent(spacing):
    radius = 10.0
    shape = (25, 64, 64)
    mask = ellipsoid_of_sphere(radius, spacing, shape, (12, 31, 32))
    size = measure(mask, spacing)
    assert size.ndim == 3 and size.voxels == mask.sum()
    assert size.volume_mm3 == pytest.approx(4 / 3 * math.pi * radius**3, rel=0.03)
    # the long axis lies on the slice through the centre: within one pixel of 2r
    pixel = math.hypot(spacing[1], spacing[2])
    assert 2 * radius - pixel <= size.diameter_mm <= 2 * radius + pixel
    assert size.diameter_slice == 12
    k = int(radius // spacing[0])  # slices whose centre is inside (poles on voxel centres)
    assert size.slices == 2 * k + 1 and size.first_slice == 12 - k
    assert size.extent_mm == pytest.approx((2 * k + 1) * spacing[0])


def test_rectangle_diameter_is_the_diagonal_of_its_pixels():
    mask = np.zeros((10, 10), bool)
    mask[2:5, 3:7] = True  # 3 rows x 4 columns of pixels
    assert slice_diameter(mask) == pytest.approx(5.0)
    assert slice_diameter(mask, (2.0, 0.5)) == pytest.approx(math.hypot(6.0, 2.0))
    size = measure(mask, (2.0, 0.5))
    assert size.area_mm2 == pytest.approx(12 * 1.0) and size.volume_mm3 is None
    assert size.diameter_mm == pytest.approx(math.hypot(6.0, 2.0)) and size.slices == 1
    # a single pixel spans its diagonal; a non-convex shape measures its hull
    one = np.zeros((5, 5), bool)
    one[2, 2] = True
    assert slice_diameter(one) == pytest.approx(math.sqrt(2))
    ring = np.zeros((20, 20), bool)
    ring[5:15, 5:15] = True
    ring[7:13, 7:13] = False
    assert slice_diameter(ring) == pytest.approx(10 * math.sqrt(2))


def test_disk_area_and_diameter_2d():
    yy, xx = np.indices((80, 80))
    spacing = (0.7, 0.7)
    r_px = 12.0
    disk = (yy - 40) ** 2 + (xx - 40) ** 2 <= r_px**2
    size = measure(disk, spacing)
    assert size.area_mm2 == pytest.approx(math.pi * (r_px * 0.7) ** 2, rel=0.03)
    assert abs(size.diameter_mm - 2 * r_px * 0.7) <= math.hypot(*spacing)


def test_unknown_and_partial_spacing_and_empty():
    mask = np.zeros((4, 8, 8), bool)
    mask[1:3, 2:5, 2:4] = True
    px = measure(mask)
    assert px.voxels == 12 and px.volume_mm3 is None and px.diameter_mm is None
    assert px.diameter_px == pytest.approx(math.hypot(3, 2)) and px.slices == 2
    inplane = measure(mask, (0.5, 0.5))  # a volume with only the in-plane spacing
    assert inplane.diameter_mm == pytest.approx(0.5 * math.hypot(3, 2))
    assert inplane.volume_mm3 is None and inplane.extent_mm is None
    empty = measure(np.zeros((3, 8, 8), bool), (2.0, 1.0, 1.0))
    assert empty.empty and empty.volume_mm3 == 0.0 and empty.slices == 0
    assert empty.first_slice is None
    with pytest.raises(ValueError):
        measure(np.zeros(5, bool))


def test_summary_of_a_group_and_its_text():
    sizes = [measure(np.ones((1, k, k), bool), (2.0, 1.0, 1.0)) for k in (4, 5, 6)]
    s = summarize_sizes(sizes)
    assert s["count"] == 3 and not s["empty"]
    assert s["volume_mm3"] == {"median": 50.0, "min": 32.0, "max": 72.0}
    assert s["text"] == f"50 mm^3 (32-72), {5 * math.sqrt(2):.1f} mm"
    flat = summarize_sizes([measure(np.ones((3, 3), bool), (0.5, 0.5))])
    assert flat["text"] == f"2.2 mm^2, {1.5 * math.sqrt(2):.1f} mm"
    assert summarize_sizes([measure(np.zeros((3, 3), bool))])["text"] == "no finding"
    assert summarize_sizes([measure(np.ones((2, 3, 3), bool))])["text"].startswith("18 voxels")


def test_specks_do_not_count_toward_the_size():
    """Issue 27.9: a separate piece smaller than a 3 mm nodule (14.1 mm^3; in 2D a 3 mm disc,
    7.1 mm^2; without spacing 10 voxels) is a speck: left out of volume, long axis and extent.
    The largest piece always counts, however small."""
    from napari_ambiseg.measure import SPECK_MM2, SPECK_MM3, SPECK_VOXELS

    assert SPECK_MM3 == pytest.approx(4 / 3 * math.pi * 1.5**3) and SPECK_VOXELS == 10
    assert SPECK_MM2 == pytest.approx(math.pi * 1.5**2)
    spacing = (2.5, 0.7, 0.7)
    nodule = ellipsoid_of_sphere(5.0, spacing, (12, 40, 40), (5, 20, 20))
    alone = measure(nodule, spacing)
    assert alone.specks == 0
    mask = nodule.copy()
    mask[0, 1, 1] = mask[11, 38, 2] = mask[11, 38, 3] = True  # 3 voxels = 3.7 mm^3, far off
    size = measure(mask, spacing)
    assert size.voxels == alone.voxels and size.specks == 3
    assert size.volume_mm3 == pytest.approx(alone.volume_mm3)
    assert size.diameter_mm == pytest.approx(alone.diameter_mm)
    assert (size.slices, size.first_slice, size.extent_mm) == (alone.slices, alone.first_slice,
                                                               alone.extent_mm)
    # a second piece of a real size (2 x 4 x 4 voxels = 39 mm^3) counts
    mask[9:11, 2:6, 30:34] = True
    two = measure(mask, spacing)
    assert two.voxels == alone.voxels + 32 and two.specks == 3
    assert (two.first_slice, two.slices) == (alone.first_slice, 10 - alone.first_slice + 1)

    # 2D with spacing: a 3 mm disc is 14.4 px at 0.7 mm
    plane = nodule[5].copy()
    plane[0:3, 0:4] = True  # 12 px = 5.9 mm^2: a speck
    flat = measure(plane, spacing[1:])
    assert flat.voxels == nodule[5].sum() and flat.specks == 12
    plane[0:4, 0:4] = True  # 16 px = 7.8 mm^2: counts
    assert measure(plane, spacing[1:]).specks == 0

    # no spacing: pieces of fewer than 10 voxels
    px = np.zeros((3, 20, 20), bool)
    px[1, 5:10, 5:10] = True
    px[0, 15:17, 15:19] = True  # 8 voxels
    assert measure(px).voxels == 25 and measure(px).specks == 8
    # a mask that is one speck keeps it: the largest piece is the sample's finding
    tiny = np.zeros((3, 20, 20), bool)
    tiny[1, 3, 3] = True
    assert measure(tiny, spacing).voxels == 1 and not measure(tiny, spacing).empty
