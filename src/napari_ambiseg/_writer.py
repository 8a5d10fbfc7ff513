"""npe2 writers (File > Save Selected Layers): labels and images saved on their source's grid.

Where the geometry comes from, in order (:func:`resolve_reference`, docs/io.md):

1. the layer's own ``metadata['ambiseg']`` (every layer napari-ambiseg makes carries its
   source's), when it describes the layer's grid or a slab of it (``z0``);
2. a layer of the current viewer holding a napari-ambiseg geometry with the layer's shape and
   the same scale, translate, rotate, shear and affine (e.g. Layers > New labels layer on an
   image opened with napari-ambiseg);
3. the layer's own scale and translate with an identity direction, marked ``"assumed"``: the
   file is written, a warning notification says so and a note ``<file>.geometry.txt`` beside
   it says what was assumed and how to fix it. Never silently.

Labels go to NIfTI/MHA/MHD/NRRD marked as labels, or DICOM-SEG (DICOM sources only). Images:
an agreement heatmap (float 0..1) as an agreement-marked float32 volume or a FRACTIONAL
DICOM-SEG; any other image as a plain volume with its dtype (only volume formats and .dcm
are claimed, so napari's own TIFF/PNG/NPY saving is untouched).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from .errors import WriteError
from .io import embed_in_reference, reference_from_layer, write_agreement, write_image, write_labels
from .io.dicom_seg import write_fractional_seg
from .io.writers import fits_reference, geometry_note_path
from .layer_contract import ADOPTED_KEY, KIND_KEY, METADATA_KEY, OUTPUT_KEY, geometry_record, on_grid, record


# ------------------------------------------------------------------------------ geometry
def _current_viewer() -> Any:
    try:
        from napari import current_viewer
    except ImportError:
        return None
    return current_viewer()


def _warn(message: str) -> None:
    """A napari warning notification (a Python warning where napari is absent)."""
    try:
        from napari.utils.notifications import show_warning
    except ImportError:
        warnings.warn(message, stacklevel=3)
        return
    show_warning(message)


def _own(meta: dict[str, Any]) -> dict[str, Any] | None:
    """The C1 record of a layer's state dict (``meta["metadata"]``), or None."""
    return geometry_record(meta.get("metadata"))


def _from_viewer(shape: tuple[int, ...], meta: dict[str, Any], viewer: Any) -> list[dict[str, Any]]:
    """Geometries of the viewer's layers that sit exactly where the data does (active first)."""
    if viewer is None:
        return []
    layers = list(reversed(list(viewer.layers)))
    active = viewer.layers.selection.active
    if active is not None:
        layers = [active, *(ly for ly in layers if ly is not active)]
    found = []
    for layer in layers:
        ref = geometry_record(getattr(layer, "metadata", None))
        if ref is not None and fits_reference(shape, ref) and on_grid(layer, meta, shape):
            found.append(ref)
    return found


def _transform_loss(meta: dict[str, Any], nd: int) -> list[str]:
    """The layer's rotate/shear/affine that an axis-aligned assumed geometry cannot hold."""
    identity = {"rotate": np.eye(nd), "shear": np.zeros(nd * (nd - 1) // 2), "affine": np.eye(nd + 1)}
    lost = []
    for name, ident in identity.items():
        value = meta.get(name)
        if value is None:
            continue
        value = np.asarray(value, dtype=float)
        if value.shape == ident.shape and not np.allclose(value, ident, atol=1e-6):
            lost.append(name)
        elif name == "shear" and value.shape == (nd, nd) and not np.allclose(value, np.eye(nd), atol=1e-6):
            lost.append(name)
    return lost


def resolve_reference(shape: tuple[int, ...], meta: dict[str, Any], viewer: Any = None) -> dict[str, Any]:
    """The reference (contract C1) to write data of spatial ``shape`` with (see module doc).

    A geometry read from a file wins over an assumed one. An assumed result is a copy with the
    reason in ``"warnings"`` (it goes into the sidecar note).
    """
    name = meta.get("name") or "layer"
    own = _own(meta)
    if own is not None and len(shape) > len(own["shape"]):
        raise WriteError(f"Cannot save '{name}': it holds {shape[0]} masks along its first axis (samples "
                         "or readers), not one label volume; adopt one in the gallery (or Layers > "
                         "Split Stack) and save that layer.")
    own_fits = own is not None and fits_reference(shape, own)
    if own_fits and not own.get("assumed"):
        return own
    matches = _from_viewer(shape, meta, viewer)
    real = [ref for ref in matches if not ref.get("assumed")]
    if real:
        return real[0]
    nd = len(shape)
    if own_fits:
        ref = dict(own)
        why = "its source image had no geometry of its own (an array or a file without spacing)"
    elif matches:
        ref, why = dict(matches[0]), "the matching image in the viewer had no geometry of its own"
    else:
        scale, translate = meta.get("scale"), meta.get("translate")
        ref = reference_from_layer(shape, None if scale is None else list(scale)[-nd:],
                                   None if translate is None else list(translate)[-nd:])
        why = f"layer '{name}' carries no source geometry"
        if own is not None:
            why += f" for its shape {shape} (its metadata['ambiseg'] is for {tuple(own['shape'])})"
        why += " and no image open in the viewer has its shape and transform"
    reasons = [why]
    lost = _transform_loss(meta, nd)
    if lost:
        reasons.append(f"the layer's {'/'.join(lost)} cannot be expressed in it and was NOT written")
    ref["warnings"] = [*ref.get("warnings", []), *reasons]
    ref["assumed"] = True
    return ref


def _reference(data: np.ndarray, meta: dict[str, Any], rgb: bool = False) -> dict[str, Any]:
    shape = tuple(data.shape[:-1] if rgb else data.shape)
    return resolve_reference(shape, meta, _current_viewer())


def _announce(path: str, ref: dict[str, Any], meta: dict[str, Any]) -> None:
    if not ref.get("assumed"):
        return
    geom = ref["geometry"]
    spacing = ", ".join(f"{s:g}" for s in geom["spacing"])
    origin = ", ".join(f"{o:g}" for o in geom["origin"])
    _warn(f"Saved '{meta.get('name') or 'layer'}' with ASSUMED geometry (spacing {spacing} mm, origin "
          f"{origin} mm, x/y/z; identity direction): {'; '.join(ref['warnings'][-2:])}. It may not line "
          "up with the scan in other viewers. To fix: open the source image with napari-ambiseg and "
          f"save again. Note: {geometry_note_path(path)}")


def _array(data: Any, meta: dict[str, Any]) -> np.ndarray:
    if meta.get("multiscale"):
        raise WriteError(f"Cannot save '{meta.get('name')}': napari-ambiseg does not save multiscale layers.")
    return np.asarray(data)


# ------------------------------------------------------------------------------ labels
def write_labels_volume(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Save a labels layer as .nii/.nii.gz/.mha/.mhd/.nrrd, marked as labels, with the source
    geometry (or an announced assumed one)."""
    labels = _array(data, meta)
    ref = _reference(labels, meta)
    written = write_labels(labels, path, ref)
    _announce(path, ref, meta)
    return written


def _dicom_reference(data: np.ndarray, meta: dict[str, Any], what: str) -> dict[str, Any]:
    ref = _reference(data, meta)
    if ref.get("assumed"):
        raise WriteError(f"Cannot write {what}: no DICOM image read by napari-ambiseg matches this layer "
                         "(same shape, scale and translate); open the series with napari-ambiseg, work on "
                         "it, or save as NIfTI (.nii.gz).")
    return ref


def write_labels_dicom_seg(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Save a labels layer as DICOM-SEG referencing the DICOM source it was drawn on; labels
    adopted from samples (``metadata['ambiseg_adopted']``) are marked as made by the algorithm."""
    labels = _array(data, meta)
    ref = _dicom_reference(labels, meta, "DICOM-SEG")
    adopted = record(meta.get("metadata"), ADOPTED_KEY) is not None
    return write_labels(labels, path, ref, from_model=adopted, provenance=meta.get("metadata"))


# ------------------------------------------------------------------------------ images
def _kind(meta: dict[str, Any]) -> str | None:
    md = meta.get("metadata")
    output = record(md, OUTPUT_KEY)
    if output is not None and output.get("kind"):
        return str(output["kind"])
    ref = record(md, METADATA_KEY)
    return ref.get(KIND_KEY) if ref is not None else None


def _fraction(data: np.ndarray) -> bool:
    """Float data within 0..1 (a map of fractions or probabilities)."""
    if not np.issubdtype(data.dtype, np.floating) or data.size == 0:
        return False
    finite = bool(np.all(np.isfinite(data)))
    return finite and float(data.min()) >= -1e-6 and float(data.max()) <= 1 + 1e-6


def write_image_volume(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Save an image layer as .nii/.nii.gz/.mha/.mhd/.nrrd with the source geometry.

    The agreement heatmap (float 0..1) is written as an agreement-marked float32 map (reopens
    with contrast limits 0..1); any other image as a plain volume with its own dtype (RGB as
    3 components).
    """
    image = _array(data, meta)
    rgb = bool(meta.get("rgb"))
    ref = _reference(image, meta, rgb)
    if not rgb and _kind(meta) == "agreement" and _fraction(image):
        written = write_agreement(image, path, ref)
    else:
        written = write_image(image, path, ref, rgb=rgb)
    _announce(path, ref, meta)
    return written


def write_image_dicom_seg(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Save a 0..1 image layer (the agreement heatmap, a probability map) of a DICOM source as a
    FRACTIONAL (PROBABILITY) DICOM-SEG; any other image is refused with advice."""
    image = _array(data, meta)
    if meta.get("rgb") or not _fraction(image):
        raise WriteError(f"Cannot save '{meta.get('name')}' as DICOM: napari-ambiseg writes an image as "
                         "DICOM only as a FRACTIONAL DICOM-SEG of a 0..1 map (the agreement heatmap); "
                         "save this image as .nii.gz, .nrrd or .mha.")
    ref = _dicom_reference(image, meta, "a FRACTIONAL DICOM-SEG")
    if _kind(meta) == "agreement":
        return write_agreement(image, path, ref)
    label = str(meta.get("name") or "probability")[:64]
    return write_fractional_seg(embed_in_reference(image, ref), path, ref, segment_label=label)
