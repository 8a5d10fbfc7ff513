"""npe2 writers: a labels layer saved on its source image's grid (NIfTI/MHA/NRRD or DICOM-SEG).

The source geometry comes from, in order: the labels layer's own ``metadata['ambiseg']``
(layers made by napari-ambiseg carry it), an image layer in the current napari viewer read by
napari-ambiseg with the same shape, scale and translate (e.g. after Layers > New labels layer),
or, for volumes only, the layer's scale and translate with an identity direction.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import WriteError
from .io import METADATA_KEY, reference_from_layer, write_dicom_seg, write_labels


def _matches(layer: Any, shape: tuple, scale: Any, translate: Any) -> bool:
    ref = getattr(layer, "metadata", {}).get(METADATA_KEY)
    if not ref or tuple(ref.get("shape", ())) != shape:
        return False
    ok_scale = scale is None or np.allclose(ref["spacing"], scale, rtol=1e-5)
    ok_translate = translate is None or np.allclose(ref["origin"], translate, atol=1e-4)
    return ok_scale and ok_translate


def _from_viewer(shape: tuple, scale: Any, translate: Any) -> dict[str, Any] | None:
    """metadata['ambiseg'] of a matching image layer in the current viewer (active one first)."""
    try:
        import napari
    except ImportError:
        return None
    viewer = napari.current_viewer()
    if viewer is None:
        return None
    active = viewer.layers.selection.active
    layers = [active, *reversed(list(viewer.layers))] if active is not None else list(reversed(viewer.layers))
    for layer in layers:
        if _matches(layer, shape, scale, translate):
            return layer.metadata[METADATA_KEY]
    return None


def _reference(data: Any, meta: dict[str, Any]) -> dict[str, Any] | None:
    own = (meta.get("metadata") or {}).get(METADATA_KEY)
    if own and tuple(own.get("shape", ())) == tuple(np.shape(data)):
        return own
    return _from_viewer(tuple(np.shape(data)), meta.get("scale"), meta.get("translate"))


def write_labels_volume(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Save a labels layer as .nii/.nii.gz/.mha/.mhd/.nrrd with the source geometry."""
    labels = np.asarray(data)
    ref = _reference(labels, meta) or reference_from_layer(labels.shape, meta.get("scale"), meta.get("translate"))
    return write_labels(labels, path, ref)


def write_labels_dicom_seg(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Save a labels layer as DICOM-SEG referencing the DICOM source it was drawn on."""
    labels = np.asarray(data)
    ref = _reference(labels, meta)
    if ref is None:
        raise WriteError("Cannot write DICOM-SEG: no DICOM image read by napari-ambiseg matches these "
                         "labels (same shape, scale and translate); open the series with napari-ambiseg, "
                         "add labels on it, or save as NIfTI (.nii.gz).")
    return write_dicom_seg(labels, path, ref)
