"""`MedicalImage`: what every reader returns, and how it becomes a napari layer.

Geometry conventions (see docs/io.md):

* ``data`` is in napari axis order: ``(z, y, x)``, ``(t, y, x)`` or ``(y, x)``, with a trailing
  channel axis of 3 when ``rgb`` is true.
* ``spacing`` / ``origin`` have one entry per non-channel axis, in the same order as ``data``;
  they become the layer's ``scale`` / ``translate``. They are the ITK spacing and origin
  (LPS, millimetres) reversed to napari order; a time axis has spacing 1 and origin 0.
* ``direction`` is the 3x3 ITK direction matrix (columns = x, y, z index axes in LPS) of the
  displayed grid. It is kept for export, not applied in napari.
* ``geometry`` is the ITK geometry of the *source file's* voxel grid (always 3D), plus
  ``flip``: the ITK index axes (0 = x, 1 = y, 2 = z) that were flipped for display, and for
  multi-frame DICOM ``frame_order`` in the metadata (source frame of each displayed slice).
  Writers undo the flips and write
  labels on exactly the source grid, so they line up with the source in any other viewer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import CLINICAL_MODALITIES
from ..errors import InputError
from ..layer_contract import KIND_KEY, METADATA_KEY, SEGMENT_PROVENANCE_KEY
from .preprocess import guess_modality, to_grayscale
from .windows import window_to_limits


@dataclass
class MedicalImage:
    """An image read from disk, with geometry, window and the tags the writers need."""

    data: np.ndarray
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    axes: tuple[str, ...] = ("y", "x")
    modality: str = ""
    window: tuple[float, float] | None = None
    name: str = "image"
    rgb: bool = False
    gray: np.ndarray | None = None
    is_labels: bool = False
    geometry: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        nd = self.data.ndim - (1 if self.rgb else 0)
        if len(self.spacing) != nd or len(self.origin) != nd or len(self.axes) != nd:
            raise InputError(
                f"{self.name}: spacing/origin/axes need {nd} entries for data of shape "
                f"{self.data.shape}; got {self.spacing}, {self.origin}, {self.axes}"
            )
        self.spacing = tuple(float(s) for s in self.spacing)
        self.origin = tuple(float(o) for o in self.origin)
        self.direction = np.asarray(self.direction, dtype=float).reshape(3, 3)
        if not self.geometry:
            self.geometry = default_geometry(self.spatial_shape, self.spacing, self.origin, self.axes)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Shape without the colour channel (what a labels layer for this image has)."""
        return tuple(self.data.shape[:-1] if self.rgb else self.data.shape)

    @property
    def model_image(self) -> np.ndarray:
        """The grayscale array the model sees (``gray`` for colour data, else ``data``);
        colour data without ``gray`` gets its BT.601 luma, computed once."""
        if self.rgb and self.gray is None:
            self.gray = to_grayscale(self.data)
        return self.gray if self.gray is not None else self.data

    @property
    def model_modality(self) -> str:
        """Modality name for :func:`napari_ambiseg.io.preprocess.to_model_scale`."""
        if self.modality in CLINICAL_MODALITIES:
            return self.modality
        return guess_modality(self.model_image)

    def reference(self) -> dict[str, Any]:
        """Small, JSON-friendly description kept as ``layer.metadata['ambiseg']``.

        It holds everything the writers need to put labels back on the source grid
        (and no pixel data).
        """
        keep = ("source", "source_files", "sop_instance_uids", "frame_order", "tags",
                "windows", "photometric", "frame_time_ms", "warnings", "segment_labels",
                SEGMENT_PROVENANCE_KEY, KIND_KEY)
        return {
            "modality": self.modality,
            "model_modality": self.model_modality,
            "axes": list(self.axes),
            "shape": list(self.spatial_shape),
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "direction": self.direction.tolist(),
            "window": list(self.window) if self.window else None,
            "rgb": self.rgb,
            "geometry": self.geometry,
            **{k: self.metadata[k] for k in keep if k in self.metadata},
        }

    def to_layer_data(self) -> tuple[np.ndarray, dict[str, Any], str]:
        """napari LayerData tuple ``(data, kwargs, layer_type)`` for display."""
        kwargs: dict[str, Any] = {
            "name": self.name,
            "scale": self.spacing,
            "translate": self.origin,
            "metadata": {METADATA_KEY: self.reference()},
        }
        if self.is_labels:
            return self.data, kwargs, "labels"
        if self.rgb:
            kwargs["rgb"] = True
        else:
            kwargs["rgb"] = False
            kwargs["colormap"] = "gray_r" if self.metadata.get("photometric") == "MONOCHROME1" else "gray"
            if self.window:
                kwargs["contrast_limits"] = list(window_to_limits(*self.window))
            if self.metadata.get(KIND_KEY) == "agreement":  # a 0..1 map shown over its image
                kwargs.update(colormap="inferno", blending="additive")
        return self.data, kwargs, "image"

    def gray_layer_data(self) -> tuple[np.ndarray, dict[str, Any], str] | None:
        """Hidden grayscale companion layer ``"<name> (gray)"`` for colour images, else None."""
        if self.gray is None:
            return None
        ref = self.reference()
        ref["rgb"] = False
        ref["gray_of"] = self.name
        return (
            self.gray,
            {
                "name": f"{self.name} (gray)",
                "scale": self.spacing,
                "translate": self.origin,
                "colormap": "gray",
                "visible": False,
                "metadata": {METADATA_KEY: ref},
            },
            "image",
        )


def default_geometry(shape, spacing, origin, axes) -> dict[str, Any]:
    """ITK (x, y, z) geometry of an axis-aligned grid; a time axis is written as z (spacing 1)."""
    shape, spacing, origin = list(shape), list(spacing), list(origin)
    if len(shape) == 2:
        shape, spacing, origin = [1, *shape], [1.0, *spacing], [0.0, *origin]
    if axes and axes[0] == "t":
        spacing[0], origin[0] = 1.0, 0.0
    return {
        "size": shape[::-1],
        "spacing": [float(s) for s in spacing[::-1]],
        "origin": [float(o) for o in origin[::-1]],
        "direction": np.eye(3).ravel().tolist(),
        "flip": [],
    }


def grayscale_uint8(rgb: np.ndarray) -> np.ndarray:
    """uint8 BT.601 luma of an (..., 3) array, one frame at a time to keep temporaries small."""
    out = np.empty(rgb.shape[:-1], dtype=np.uint8)
    flat_in, flat_out = rgb.reshape(-1, *rgb.shape[-3:]), out.reshape(-1, *out.shape[-2:])
    for i in range(flat_in.shape[0]):
        flat_out[i] = np.clip(np.rint(to_grayscale(flat_in[i])), 0, 255)
    return out
