"""``write_labels``: labels to NIfTI / MHA / MHD / NRRD / DICOM-SEG with the source geometry."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import WriteError
from .dicom_seg import write_dicom_seg
from .sitk_io import write_labels_volume
from .volume import METADATA_KEY, MedicalImage, default_geometry


def reference_from_layer(shape: Sequence[int], scale: Sequence[float] | None = None,
                         translate: Sequence[float] | None = None) -> dict[str, Any]:
    """Reference for labels with no source image: axis-aligned grid from napari scale/translate."""
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3):
        raise WriteError(f"Cannot write labels of shape {shape}: only 2D and 3D labels can be saved.")
    scale = tuple(scale) if scale is not None else (1.0,) * len(shape)
    translate = tuple(translate) if translate is not None else (0.0,) * len(shape)
    return {"shape": list(shape), "geometry": default_geometry(shape, scale, translate, ())}


def as_reference(reference: MedicalImage | dict[str, Any] | None, shape: Sequence[int]) -> dict[str, Any]:
    """Normalise a MedicalImage, a layer metadata dict or a reference dict (None: identity grid)."""
    if reference is None:
        return reference_from_layer(shape)
    if isinstance(reference, MedicalImage):
        return reference.reference()
    if METADATA_KEY in reference:
        return reference[METADATA_KEY]
    if "geometry" in reference and "shape" in reference:
        return reference
    raise WriteError("Cannot write labels: the reference has no geometry (expected an image read by "
                     "napari-ambiseg or its metadata['ambiseg']).")


def write_labels(labels: np.ndarray, path: str | os.PathLike,
                 reference: MedicalImage | dict[str, Any] | None = None) -> list[str]:
    """Write labels; ``.dcm`` gives DICOM-SEG, the other extensions a volume. Returns the paths.

    Labels must have the reference image's shape (without colour channel); they are written
    on the source file's grid with its spacing, origin and direction. Writes are atomic.
    """
    labels = np.asarray(labels)
    ref = as_reference(reference, labels.shape)
    if os.fspath(path).lower().endswith(".dcm"):
        return write_dicom_seg(labels, path, ref)
    return write_labels_volume(labels, path, ref)
