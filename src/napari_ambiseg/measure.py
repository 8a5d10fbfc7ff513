"""Sizes of masks as radiologists report them: volume (or area), long-axis diameter, extent.

Conventions (pure numpy/scipy, no Qt):

* ``spacing``: millimetres per pixel along the mask's axes, ``(y, x)`` for a 2D mask and
  ``(z, y, x)`` for a volume (z = distance between slice centres). ``None`` means unknown: the
  sizes are then in pixels only and every ``*_mm*`` field is ``None``; a volume with only the
  in-plane ``(y, x)`` spacing gets diameters in mm but no volume or extent in mm.
* Volume = marked voxels x voxel volume (z spacing x pixel area); area (2D) = marked pixels x
  pixel area.
* Long-axis diameter (RECIST 1.1 style, in-plane): on each slice, the longest segment between
  two points of the marked region *as displayed*, that is between corners of marked pixels
  (each pixel is the square it covers on screen), with the in-plane spacing; the largest
  over slices. It is the maximum pairwise distance over the convex hull of the pixel squares.
  For a region digitised from a shape of true diameter D (pixels whose centre lies inside),
  this lies between about D and D + one pixel diagonal; the distance between pixel *centres*
  would instead underestimate by up to one pixel.
* Slice extent: slices from the first to the last marked one, inclusive (a gap counts), and
  that number x z spacing in mm (the craniocaudal extent).
* Specks do not count: a mask is cut into connected pieces (pixels or voxels touching by a
  face, an edge or a corner); the largest piece always counts, and every other piece counts
  only when it is at least as large as a 3 mm nodule: :data:`SPECK_MM3` = 14.1 mm^3 (a ball
  of 3 mm diameter) for a volume with a known voxel size, :data:`SPECK_MM2` = 7.1 mm^2 (a
  disc of 3 mm) for a 2D mask with a known pixel size, else :data:`SPECK_VOXELS` = 10
  voxels or pixels. Smaller pieces are left out of every size (voxels, volume or area, long
  axis, slices and extent); ``Size.specks`` counts the voxels left out. Why 3 mm: LIDC-IDRI
  readers outlined nodules of 3 mm or more (smaller ones only got a point), so a piece below
  that is sampler noise, not a finding a reader would measure; one stray voxel far from the
  nodule would otherwise stretch the long axis and the slice extent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.distance import pdist

SPECK_DIAMETER_MM = 3.0  # pieces smaller than a nodule of this diameter are specks
SPECK_MM3 = np.pi / 6 * SPECK_DIAMETER_MM**3  # 14.1 mm^3: a 3 mm ball
SPECK_MM2 = np.pi / 4 * SPECK_DIAMETER_MM**2  # 7.07 mm^2: a 3 mm disc
SPECK_VOXELS = 10  # when the voxel size is unknown


@dataclass(frozen=True)
class Size:
    """Size of one mask (2D or 3D). mm fields are None when the spacing is unknown."""

    ndim: int                       # 2 (an image) or 3 (a slab of slices)
    voxels: int                     # marked pixels (2D) or voxels (3D)
    diameter_px: float              # long axis in pixels (in-plane spacing taken as 1 x 1)
    slices: int                     # first..last marked slice, inclusive (0 when empty)
    first_slice: int | None         # index within the mask of the first marked slice
    diameter_slice: int | None      # index of the slice carrying the long axis
    area_mm2: float | None = None   # 2D only
    volume_mm3: float | None = None  # 3D only
    diameter_mm: float | None = None
    extent_mm: float | None = None  # 3D only: slices x z spacing
    specks: int = 0                 # voxels of pieces too small to count (left out above)

    @property
    def empty(self) -> bool:
        return self.voxels == 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[tuple[float, float] | None,
                                                                 float | None]:
    """(in-plane (y, x) spacing or None, z spacing or None) of a mask with `ndim` axes."""
    if spacing is None:
        return None, None
    s = tuple(float(v) for v in spacing)
    if not all(np.isfinite(v) and v > 0 for v in s):
        return None, None
    inplane = (s[-2], s[-1]) if len(s) >= 2 else None
    z = s[-3] if ndim == 3 and len(s) >= 3 else None
    return inplane, z


def outline_hull(mask: np.ndarray) -> np.ndarray:
    """Corners (row, col, in pixel units) of the convex hull of a 2D mask's pixel squares;
    (0, 2) for an empty mask. An axis scaling maps hull vertices to hull vertices, so the same
    points serve any pixel spacing."""
    mask = np.asarray(mask, dtype=bool)
    rows = np.flatnonzero(mask.any(1))
    if not len(rows):
        return np.zeros((0, 2))
    # the hull only needs each row's outermost pixels: their outer corners
    sub = mask[rows]
    left = sub.argmax(1)
    right = sub.shape[1] - sub[:, ::-1].argmax(1)  # one past the last marked column
    r = rows.astype(float)
    points = np.concatenate([np.stack([r, left], 1), np.stack([r + 1, left], 1),
                             np.stack([r, right], 1), np.stack([r + 1, right], 1)])
    points = np.unique(points, axis=0)
    if len(points) <= 8:
        return points
    try:
        return points[ConvexHull(points).vertices]
    except QhullError:  # all corners on one line cannot happen for squares; be safe
        return points


def slice_diameter(mask: np.ndarray, pixel: tuple[float, float] = (1.0, 1.0)) -> float:
    """Longest distance between corners of the marked pixels of a 2D mask, in the units of
    `pixel` (row, column spacing). 0 for an empty mask."""
    return _diameter(outline_hull(mask), pixel)


def _diameter(hull: np.ndarray, pixel) -> float:
    return float(pdist(hull * np.asarray(pixel, dtype=float)).max()) if len(hull) else 0.0


def speck_voxels(ndim: int, inplane: tuple[float, float] | None, dz: float | None) -> float:
    """Voxels (pixels) a piece other than the largest needs to count (module notes)."""
    if inplane is not None and ndim == 2:
        return SPECK_MM2 / (inplane[0] * inplane[1])
    if inplane is not None and dz is not None:
        return SPECK_MM3 / (inplane[0] * inplane[1] * dz)
    return float(SPECK_VOXELS)


def without_specks(mask: np.ndarray, minimum: float) -> tuple[np.ndarray, int]:
    """`mask` keeping its largest connected piece and the others of at least `minimum`
    voxels (face, edge or corner neighbours connect), and the number of voxels dropped."""
    box = []
    for axis in range(mask.ndim):  # label only the box around the marked voxels
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if not hit.size:
            return mask, 0
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    box = tuple(box)
    labelled, n = ndimage.label(mask[box], structure=np.ones((3,) * mask.ndim, bool))
    if n <= 1:
        return mask, 0
    counts = np.bincount(labelled.ravel())
    counts[0] = 0
    keep = counts >= minimum
    keep[int(counts.argmax())] = True
    keep[0] = False
    dropped = int(counts[~keep].sum())
    if not dropped:
        return mask, 0
    out = np.zeros_like(mask)
    out[box] = keep[labelled]
    return out, dropped


def measure(mask: np.ndarray, spacing: Sequence[float] | None = None) -> Size:
    """Size of a 2D (H, W) or 3D (Z, H, W) mask; see the module notes for the conventions
    (specks, pieces smaller than a 3 mm nodule, are left out)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim not in (2, 3):
        raise ValueError(f"expected a 2D or 3D mask, got shape {mask.shape}")
    ndim = mask.ndim
    inplane, dz = _spacing(spacing, ndim)
    mask, specks = without_specks(mask, speck_voxels(ndim, inplane, dz))
    vol = mask[None] if ndim == 2 else mask
    marked = np.flatnonzero(vol.reshape(len(vol), -1).any(1))
    voxels = int(vol.sum())
    area = inplane[0] * inplane[1] if inplane is not None else None
    if not len(marked):
        return Size(ndim, 0, 0.0, 0, None, None,
                    area_mm2=0.0 if ndim == 2 and area is not None else None,
                    volume_mm3=0.0 if ndim == 3 and area is not None and dz is not None else None,
                    diameter_mm=0.0 if inplane is not None else None,
                    extent_mm=0.0 if dz is not None else None)
    hulls = {int(z): outline_hull(vol[z]) for z in marked}
    px = {z: _diameter(h, (1.0, 1.0)) for z, h in hulls.items()}
    mm = {z: _diameter(h, inplane) for z, h in hulls.items()} if inplane else px
    at = max(mm, key=mm.get)
    slices = int(marked[-1] - marked[0] + 1)
    size = dict(ndim=ndim, voxels=voxels, diameter_px=max(px.values()), slices=slices,
                first_slice=int(marked[0]), diameter_slice=at, specks=specks)
    if inplane is not None:
        size["diameter_mm"] = mm[at]
        if ndim == 2:
            size["area_mm2"] = voxels * area
        elif dz is not None:
            size["volume_mm3"] = voxels * area * dz
    if ndim == 3 and dz is not None:
        size["extent_mm"] = slices * dz
    return Size(**size)


def measure_all(masks: np.ndarray, spacing: Sequence[float] | None = None) -> list[Size]:
    """`measure` of every mask of a stack (N, H, W) or (N, Z, H, W)."""
    return [measure(m, spacing) for m in np.asarray(masks)]


_STATS = ("voxels", "volume_mm3", "area_mm2", "diameter_mm", "diameter_px", "slices", "extent_mm")


def summarize_sizes(sizes: Sequence[Size]) -> dict[str, Any]:
    """Median, min and max over a group of sizes (e.g. the members of a mode), per field that
    is known for all of them; plus `empty` (all members empty) and a one-line `text`."""
    out: dict[str, Any] = {"count": len(sizes), "empty": all(s.empty for s in sizes),
                           "ndim": sizes[0].ndim if sizes else None}
    for key in _STATS:
        values = [getattr(s, key) for s in sizes]
        if values and all(v is not None for v in values):
            v = np.asarray(values, dtype=float)
            out[key] = {"median": float(np.median(v)), "min": float(v.min()),
                        "max": float(v.max())}
    out["text"] = size_text(out)
    return out


def _num(v: float) -> str:
    """Short human number for a volume, an area or a pixel count: 1543, 71, 4.2, 0.42."""
    if v >= 10:
        return f"{v:.0f}"
    return f"{v:.1f}" if v >= 1 else f"{v:.2g}"


def _with_range(stat: dict[str, float], unit: str) -> str:
    text = f"{_num(stat['median'])} {unit}"
    lo, hi = _num(stat["min"]), _num(stat["max"])
    return text if lo == hi else f"{text} ({lo}-{hi})"


def size_text(summary: dict[str, Any]) -> str:
    """"410 mm^3 (310-520), 9.8 mm" (median (min-max) size, median long axis) of a group,
    in pixels/voxels when the spacing is unknown; "no finding" for an empty group."""
    if summary.get("empty"):
        return "no finding"
    if "volume_mm3" in summary:
        return (f"{_with_range(summary['volume_mm3'], 'mm^3')}, "
                f"{summary['diameter_mm']['median']:.1f} mm")
    if "area_mm2" in summary:
        return (f"{_with_range(summary['area_mm2'], 'mm^2')}, "
                f"{summary['diameter_mm']['median']:.1f} mm")
    if "voxels" not in summary:
        return ""
    unit = "voxels" if summary.get("ndim") == 3 else "pixels"
    return (f"{_with_range(summary['voxels'], unit)}, "
            f"{summary['diameter_px']['median']:.1f} px")
