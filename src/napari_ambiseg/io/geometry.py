"""ITK <-> napari geometry.

SimpleITK arrays are ``(z, y, x)`` while its spacing, origin and size are ``(x, y, z)`` and its
direction is a row-major 3x3 whose *columns* are the x, y, z index axes in LPS. napari wants
``scale``/``translate`` in array order, so everything here is reversed exactly once.

For display, volumes are flipped (never permuted) so that each index axis points towards
+L, +P or +S: axial slices then look as on a PACS (patient's right on the screen's left,
anterior up) whatever the file's storage order (e.g. RAS NIfTI). The flips are recorded so
the writers can put labels back on the source grid.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import WriteError


def direction_matrix(geometry: dict[str, Any]) -> np.ndarray:
    return np.asarray(geometry["direction"], dtype=float).reshape(3, 3)


def canonical_flips(direction: np.ndarray) -> list[int]:
    """ITK axes whose direction column points mostly towards -L, -P or -S."""
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    return [a for a in range(3) if d[np.argmax(np.abs(d[:, a])), a] < 0]


def flip_geometry(geometry: dict[str, Any], axes: list[int]) -> dict[str, Any]:
    """Geometry of the same voxels after reversing the index order along ITK ``axes``.

    Flipping the same axes twice gives back the original geometry (up to rounding).
    """
    d = direction_matrix(geometry)
    origin = np.asarray(geometry["origin"], dtype=float)
    for a in axes:
        origin = origin + d[:, a] * geometry["spacing"][a] * (geometry["size"][a] - 1)
        d[:, a] = -d[:, a]
    out = dict(geometry)
    out["origin"] = origin.tolist()
    out["direction"] = d.ravel().tolist()
    return out


def flip_array(array: np.ndarray, axes: list[int]) -> np.ndarray:
    """Reverse a ``(z, y, x)`` array (view, no copy) along the given ITK axes."""
    if not axes:
        return array
    return np.flip(array, axis=tuple(2 - a for a in axes))


def display_geometry(source: dict[str, Any], ndim: int) -> tuple[tuple, tuple, np.ndarray]:
    """napari (spacing, origin, direction) for the displayed (flipped) grid.

    ``ndim`` is 3 for volumes, 2 for single slices (the z entries are dropped).
    """
    shown = flip_geometry(source, source.get("flip", []))
    spacing = tuple(shown["spacing"][::-1][-ndim:])
    origin = tuple(shown["origin"][::-1][-ndim:])
    return spacing, origin, direction_matrix(shown)


def to_source_grid(labels: np.ndarray, reference: dict[str, Any]) -> np.ndarray:
    """Labels drawn on the displayed image -> ``(z, y, x)`` array on the grid of ``geometry``.

    Multi-frame DICOM frames stay in position order; the DICOM-SEG writer maps them back to
    the file's frame order with ``reference["frame_order"]``.
    """
    geom = reference["geometry"]
    shape = tuple(reference["shape"])
    a = np.asarray(labels)
    if a.shape != shape:
        raise WriteError(
            f"The labels have shape {a.shape} but the source image has shape {shape}: "
            "draw the labels on a layer made from that image (Layers > New labels layer)."
        )
    if a.ndim == 2:
        a = a[np.newaxis]
    a = flip_array(a, geom.get("flip", []))
    expected = tuple(geom["size"][::-1])
    if a.shape != expected:
        raise WriteError(f"The labels of shape {a.shape} do not fit the source grid {expected}.")
    return np.ascontiguousarray(a)
