"""Writers with the source geometry: labels, the agreement map and plain images.

* :func:`write_labels`: NIfTI / MHA / MHD / NRRD marked as labels, or DICOM-SEG for ``.dcm``.
* :func:`write_agreement`: a 0..1 map as float32 volume marked ``"agreement"``, or a
  FRACTIONAL DICOM-SEG for ``.dcm``.
* :func:`write_image`: any image volume (dtype kept, RGB as 3 components), unmarked.

Every writer takes data on the displayed grid of ``reference`` (contract C1: a MedicalImage,
a layer's metadata or its ``metadata["ambiseg"]``): a slab with ``reference["z0"]`` is first
placed in a zero volume of the full shape (:func:`embed_in_reference`). A reference marked
``"assumed": True`` (geometry not read from a file, :func:`reference_from_layer`) is still
written, and a note ``<file>.geometry.txt`` beside the file says what was assumed and how to
fix it; a later save of the same file with a known geometry removes that note.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import WriteError
from .atomic import atomic_output
from .dicom_seg import write_dicom_seg
from .sitk_io import label_dtype, write_volume
from .volume import METADATA_KEY, MedicalImage, default_geometry

NOTE_SUFFIX = ".geometry.txt"
_NOTE_HEAD = "napari-ambiseg geometry note"


def reference_from_layer(shape: Sequence[int], scale: Sequence[float] | None = None,
                         translate: Sequence[float] | None = None, *,
                         axes: Sequence[str] | None = None) -> dict[str, Any]:
    """Reference for data with no source image: axis-aligned grid from napari scale/translate
    (identity direction), marked ``"assumed": True`` (contract C1)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3):
        raise WriteError(f"Cannot write data of shape {shape}: only 2D and 3D images and labels "
                         "can be saved.")
    scale = [float(s) for s in scale] if scale is not None else [1.0] * len(shape)
    translate = [float(t) for t in translate] if translate is not None else [0.0] * len(shape)
    axes = tuple(axes) if axes else ("z", "y", "x")[-len(shape):]
    return {"shape": list(shape), "axes": list(axes), "spacing": scale, "origin": translate,
            "direction": np.eye(3).tolist(), "geometry": default_geometry(shape, scale, translate, axes),
            "assumed": True}


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
    raise WriteError("Cannot write: the reference has no geometry (expected an image read by "
                     "napari-ambiseg or its metadata['ambiseg']).")


def fits_reference(shape: Sequence[int], reference: dict[str, Any]) -> bool:
    """Whether data of spatial ``shape`` is the reference's grid, or its slab from ``z0``."""
    shape, full = tuple(int(s) for s in shape), tuple(int(s) for s in reference.get("shape", ()))
    if shape == full:
        return True
    z0 = reference.get("z0")
    return (z0 is not None and len(shape) == len(full) >= 3 and shape[1:] == full[1:]
            and 0 <= int(z0) and int(z0) + shape[0] <= full[0])


def embed_in_reference(data: np.ndarray, reference: dict[str, Any]) -> np.ndarray:
    """``data`` on the reference's full grid: a slab (slices z0.. of the source, contract C1)
    is placed in zeros of ``reference["shape"]``; full-size data is returned as is. Trailing
    axes beyond the reference's (a colour channel) are kept."""
    data = np.asarray(data)
    full = tuple(int(s) for s in reference["shape"])
    nd = len(full)
    if data.shape[:nd] == full:
        return data
    if not fits_reference(data.shape[:nd], reference):
        z0 = reference.get("z0")
        where = f" starting at slice {z0}" if z0 is not None else ""
        raise WriteError(f"Cannot write data of shape {data.shape[:nd]}{where} on the source grid "
                         f"{full}: draw the labels on a layer made from that image.")
    out = np.zeros(full + data.shape[nd:], dtype=data.dtype)
    z0 = int(reference["z0"])
    out[z0:z0 + data.shape[0]] = data
    return out


def geometry_note_path(path: str | os.PathLike) -> str:
    """The sidecar note beside a file written with assumed geometry."""
    return os.fspath(path) + NOTE_SUFFIX


def assumed_geometry_text(path: str | os.PathLike, reference: dict[str, Any]) -> str:
    """The sidecar note: what was assumed, why, and how to fix it."""
    geom = reference["geometry"]
    why = [str(w) for w in reference.get("warnings") or []] or ["the data came with no source geometry"]
    fmt = ", ".join
    axis_aligned = np.allclose(geom["direction"], np.eye(3).ravel())
    direction = "identity (axis-aligned)" if axis_aligned else fmt(f"{d:.4g}" for d in geom["direction"])
    return "\n".join([
        f"{_NOTE_HEAD} for {os.path.basename(os.fspath(path))}",
        "",
        "The geometry of this file was ASSUMED, not read from a source image:",
        f"  spacing (x, y, z): {fmt(f'{s:g}' for s in geom['spacing'])} mm",
        f"  origin (x, y, z):  {fmt(f'{o:g}' for o in geom['origin'])} mm",
        f"  direction:         {direction}",
        "Why: " + "; ".join(why) + ".",
        "The file may not line up with the original scan in other viewers (Slicer, OHIF, ITK-SNAP).",
        "",
        "To fix: open the source scan with napari-ambiseg (File > Open) in the same viewer, so that",
        "the layer has the same shape, scale and translate as that image (or sample and adopt on it),",
        "and save again. A save with a known geometry removes this note.",
        "",
    ])


def _note(path: str | os.PathLike, reference: dict[str, Any]) -> list[str]:
    """Write the sidecar note for an assumed geometry; remove a stale one of ours otherwise."""
    note = geometry_note_path(path)
    if not reference.get("assumed"):
        try:
            with open(note, encoding="utf-8") as f:
                ours = f.read(len(_NOTE_HEAD)) == _NOTE_HEAD
        except (OSError, UnicodeDecodeError):
            return []
        if ours:
            os.remove(note)
        return []
    with atomic_output(note) as tmp:
        tmp.write_text(assumed_geometry_text(path, reference), encoding="utf-8")
    return [note]


def _is_dcm(path: str | os.PathLike) -> bool:
    return os.fspath(path).lower().endswith(".dcm")


def _prepare(data: Any, reference: MedicalImage | dict[str, Any] | None,
             rgb: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    data = np.asarray(data)
    ref = as_reference(reference, data.shape[:-1] if rgb else data.shape)
    return embed_in_reference(data, ref), ref


def write_labels(labels: np.ndarray, path: str | os.PathLike,
                 reference: MedicalImage | dict[str, Any] | None = None, *,
                 from_model: bool = False, provenance: Mapping[str, Any] | None = None) -> list[str]:
    """Write labels; ``.dcm`` gives DICOM-SEG, the other extensions a volume marked as labels
    (NIfTI intent LABEL, ``ambiseg_kind`` = ``"labels"``). Returns the written paths (plus the
    geometry note when the reference is assumed).

    Labels have the reference image's shape (without colour channel), or are its slab from
    ``reference["z0"]``; they are written on the source file's grid with its spacing, origin
    and direction. DICOM-SEG only: ``provenance`` (the layer's metadata) says per label value
    whether the model made it (adopted, or adopted then edited: SEMIAUTOMATIC, named after
    what was adopted) or not (MANUAL), see :mod:`napari_ambiseg.provenance`; values it knows
    nothing about are SEMIAUTOMATIC with ``from_model``, else MANUAL. Writes are atomic.
    """
    if _is_dcm(path):
        from ..provenance import origins

        read_back = {METADATA_KEY: as_reference(reference, np.shape(labels))}  # a SEG read back
        known = origins(labels, provenance if provenance is not None else read_back)
        labels, ref = _prepare(labels, reference)
        return write_dicom_seg(labels, path, ref, from_model=from_model, origins=known)
    labels, ref = _prepare(labels, reference)
    labels = np.asarray(labels)
    written = write_volume(labels.astype(label_dtype(labels), copy=False), path, ref,
                           kind="labels")
    return written + _note(path, ref)


def write_agreement(agreement: np.ndarray, path: str | os.PathLike,
                    reference: MedicalImage | dict[str, Any] | None = None) -> list[str]:
    """Write an agreement map (fraction of samples, 0..1) on the source grid; returns the paths.

    Volumes: float32 marked ``"agreement"`` (NRRD/MHA key ``ambiseg_kind``; NIfTI intent
    ESTIMATE named "agreement"); they reopen as an image with contrast limits 0..1.
    ``.dcm``: FRACTIONAL (PROBABILITY) DICOM-SEG, one segment "agreement" (needs a DICOM source).
    """
    agreement, ref = _prepare(agreement, reference)
    name = os.path.basename(os.fspath(path))
    if agreement.dtype == bool or not np.issubdtype(agreement.dtype, np.number):
        raise WriteError(f"Cannot write {name}: the agreement map must be numbers in 0..1.")
    agreement = agreement.astype(np.float32, copy=False)
    if agreement.size and (not np.all(np.isfinite(agreement)) or agreement.min() < -1e-6
                           or agreement.max() > 1 + 1e-6):
        raise WriteError(f"Cannot write {name}: the agreement map must hold values in 0..1 "
                         "(it has values outside that range, or NaN).")
    agreement = np.clip(agreement, 0.0, 1.0)
    if _is_dcm(path):
        from .dicom_seg import write_fractional_seg

        return write_fractional_seg(agreement, path, ref, segment_label="agreement")
    return write_volume(agreement, path, ref, kind="agreement") + _note(path, ref)


def write_image(data: np.ndarray, path: str | os.PathLike,
                reference: MedicalImage | dict[str, Any] | None = None, *,
                rgb: bool = False) -> list[str]:
    """Write an image volume (dtype kept; ``rgb`` data ``(..., 3)`` as 3 components) on the
    source grid as NIfTI / MHA / MHD / NRRD, unmarked. Returns the written paths."""
    if _is_dcm(path):
        raise WriteError(f"Cannot write {os.path.basename(os.fspath(path))}: napari-ambiseg writes an "
                         "image as DICOM only as a FRACTIONAL DICOM-SEG of a 0..1 map (the agreement "
                         "heatmap); save this image as .nii.gz, .nrrd or .mha.")
    data, ref = _prepare(data, reference, rgb)
    return write_volume(data, path, ref, rgb=rgb) + _note(path, ref)
