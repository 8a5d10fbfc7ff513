"""The layer-metadata contract, in one place: keys, the records under them, the pixel grid.

Every layer napari-ambiseg makes or reads carries records in ``layer.metadata`` under these
keys (docs/io.md, contracts C1-C5):

* :data:`METADATA_KEY` (C1): the source's geometry record (``MedicalImage.reference()``:
  shape, spacing, origin, direction, ITK geometry, ...), so a layer can be saved on the
  source's grid;
* :data:`OUTPUT_KEY`: a sampler output's record (source id and name, ``kind``: samples,
  agreement, uncertainty or readers, the result's fields);
* :data:`ADOPTED_KEY` (C4): what was adopted as labels, from which image, and when;
* :data:`READERS_KEY` (C5): a readers' outlines layer (``count``, ``image_name``);
* :data:`KIND_KEY` / :data:`FLIP_KEY`: what a written file holds (labels, agreement) and the
  axes flipped for display, in the file's header and in the geometry record.

It also owns the rules every room applies to layers: the full-resolution data of a
(possibly multiscale) layer (:func:`base_data`), its pixel grid without colour channel
(:func:`spatial_shape`), and whether two layers share a pixel grid (:func:`on_grid`,
:func:`reader_count`). Qt-free and napari-free: layers are used through their attributes
(``data``, ``metadata``, ``multiscale``, ``rgb``, ``scale``, ...), and a layer's state dict
(``layer._get_state()``, what npe2 writers receive) works where a transform is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np

METADATA_KEY = "ambiseg"  # C1: the source's geometry record
OUTPUT_KEY = "ambiseg_output"  # a sampler output's record (kind: samples/agreement/...)
ADOPTED_KEY = "ambiseg_adopted"  # C4: labels adopted from samples
READERS_KEY = "ambiseg_readers"  # C5: readers' outlines, one per reader
KIND_KEY = "ambiseg_kind"  # file marking: "labels" / "agreement"
FLIP_KEY = "ambiseg_flip"  # file marking: ITK axes flipped for display
SEGMENTS_KEY = "ambiseg_segments"  # what each label value holds (provenance: adopted/edited)
SEGMENT_PROVENANCE_KEY = "segment_provenance"  # the same, inside METADATA_KEY of a SEG read

TRANSFORMS = ("scale", "translate", "rotate", "shear", "affine")
GRID_RTOL, GRID_ATOL = 1e-5, 1e-4  # transforms read back from files differ by rounding


# ------------------------------------------------------------------------------ records
def record(metadata: Mapping[str, Any] | None, key: str) -> dict[str, Any] | None:
    """The dict under `key` in a metadata mapping, or None (absent, or not a dict)."""
    value = metadata.get(key) if isinstance(metadata, Mapping) else None
    return value if isinstance(value, dict) else None


def layer_record(layer: Any, key: str) -> dict[str, Any] | None:
    """The dict under `key` in a layer's metadata, or None."""
    return record(getattr(layer, "metadata", None), key)


def geometry_record(metadata: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The C1 record of a metadata mapping when it describes a grid (has ``geometry`` and
    ``shape``), else None."""
    ref = record(metadata, METADATA_KEY)
    return ref if ref is not None and "geometry" in ref and "shape" in ref else None


def readers_record(count: int, image_name: str) -> dict[str, Any]:
    """The C5 record of a readers' layer: `count` readers outlining image `image_name`."""
    return {"count": int(count), "image_name": str(image_name)}


def adoption_record(source_name: str, what: str) -> dict[str, str]:
    """The C4 record: `what` was adopted from image `source_name`, now."""
    return {"source_name": str(source_name), "what": str(what),
            "time": datetime.now().astimezone().isoformat(timespec="seconds")}


# ------------------------------------------------------------------------------ grid
def base_data(layer: Any) -> Any:
    """A layer's full-resolution data: level 0 of a multiscale layer, else its data."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def spatial_shape(layer: Any) -> tuple[int, ...]:
    """Shape of a layer's pixel grid without the colour channel (what its labels have)."""
    shape = tuple(int(s) for s in np.shape(base_data(layer)))
    return shape[:-1] if getattr(layer, "rgb", False) else shape


def transforms(layer: Any) -> dict[str, Any]:
    """A layer's data-to-world transform by name (scale, translate, rotate, shear, affine);
    a state dict (``Layer._get_state()``) gives its own entries."""
    if isinstance(layer, Mapping):
        return {name: layer[name] for name in TRANSFORMS if layer.get(name) is not None}
    out = {}
    for name in TRANSFORMS:
        value = getattr(layer, name, None)
        if value is not None:
            out[name] = getattr(value, "affine_matrix", value)
    return out


def _full(name: str, value: Any, n: int) -> np.ndarray:
    """Transform `name` of an `n`-axis layer as a vector (scale, translate) or a square
    matrix (rotate; shear, also given as its upper-triangular entries; affine)."""
    a = np.asarray(value, dtype=float)
    if name == "shear" and a.ndim == 1:
        m = np.eye(n)
        m[np.triu_indices(n, 1)] = a
        return m
    return a


def _trailing(name: str, a: np.ndarray, nd: int) -> np.ndarray | None:
    """The part of a transform acting on the last `nd` axes (None if it has fewer)."""
    k = nd + 1 if name == "affine" else nd
    if a.ndim == 1:
        return a[-nd:] if a.size >= nd else None
    return a[-k:, -k:] if a.shape[0] >= k else None


def same_transform(a: Any, b: Any, nd: int) -> bool:
    """Whether layers (or state dicts) `a` and `b` map their last `nd` axes to the same
    world positions: scale, translate, rotate, shear and affine agree on those axes
    (leading axes, such as samples or readers, are not compared; a transform one side does
    not state is not compared)."""
    ta, tb = transforms(a), transforms(b)
    na = len(np.atleast_1d(ta.get("scale", np.ones(nd))))
    nb = len(np.atleast_1d(tb.get("scale", np.ones(nd))))
    for name in TRANSFORMS:
        if name not in ta or name not in tb:
            continue
        try:
            ma = _trailing(name, _full(name, ta[name], na), nd)
            mb = _trailing(name, _full(name, tb[name], nb), nd)
        except (TypeError, ValueError):
            return False
        if ma is None or mb is None or ma.shape != mb.shape:
            return False
        if not np.allclose(ma, mb, rtol=GRID_RTOL, atol=GRID_ATOL):
            return False
    return True


def on_grid(layer: Any, other: Any, shape: tuple[int, ...] | None = None) -> bool:
    """Whether `layer` is on `other`'s pixel grid: the same spatial shape (`shape`, when
    given, stands for `other`'s) and the same scale, translate, rotate, shear and affine."""
    grid = tuple(shape) if shape is not None else spatial_shape(other)
    return spatial_shape(layer) == grid and same_transform(layer, other, len(grid))


def reader_count(layer: Any, image: Any) -> int | None:
    """How many readers a Labels layer holds for `image`: 1 (on the image's grid), R (a
    leading reader axis in front of that grid), or None when it is not on the grid."""
    shape, grid = spatial_shape(layer), spatial_shape(image)
    if shape == grid:
        count = 1
    elif len(shape) == len(grid) + 1 and shape[1:] == grid:
        count = shape[0]
    else:
        return None
    return count if same_transform(layer, image, len(grid)) else None
