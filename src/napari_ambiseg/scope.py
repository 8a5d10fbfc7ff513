"""Is an input inside the model's scope? Plain-language reasons when it is not (Qt-free).

The scope is the model's own record (`config.Scope`, stored in its weights config); the dock
shows these reasons as a persistent warning and `ambiseg sample` prints them on stderr.

Reasons: another modality than the model's, colour, a cine, a pixel spacing more than
:data:`SPACING_FACTOR` times off the model's, and, for a model of lung findings in CT
(``Scope.task`` names the lung), a CT that shows little or no lung. The lung rule: lung is
aerated parenchyma, :data:`LUNG_HU` (-950 to -500 HU; air outside the body and in the
airways is darker, soft tissue, vessels and bone brighter). A CT shows lung when one region
in that range, connected within a slice (8-neighbours), covers at least
:data:`LUNG_MIN_CM2` = 20 cm^2 on one of the slices checked: about the model's own view
around a prompt (64 px at 0.7 mm = 45 x 45 mm). Mid-chest, each lung covers 50 to 200 cm^2;
a head, abdomen, pelvis or limb CT has none, and pydicom's CT_small (a spine at chest level,
85 x 85 mm) only 8 cm^2 in two corners. Checked: the middle slice and those at a quarter
and three quarters of the volume (a chest CT's lungs fill all three), from the layer's data
when given, else read from its DICOM source files (cached); other sources are not judged.
The image must be in HU (``model_modality`` "CT"): the model's 8-bit training crops are not.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .config import ModelConfig, Scope

SPACING_FACTOR = 2.0  # pixel spacing this many times finer or coarser than the model's: warn
LUNG_HU = (-950.0, -500.0)  # aerated lung parenchyma
LUNG_MIN_CM2 = 20.0  # a lung region at least as large as the model's view around a prompt
_MAX_FILE_BYTES = 256 * 2**20  # a bigger single file (multi-frame) is not read for the check
_MODALITY_NAMES = {"CT": "a CT", "MR": "an MR", "US": "an ultrasound", "8bit": "an 8-bit"}


def is_cine(axes: Sequence[str] | None) -> bool:
    """A time series (cine): its frames are time points, not slices of a volume."""
    return bool(axes) and axes[0] == "t"


def lung_model(scope: Scope) -> bool:
    """A model of lung findings in CT (its task names the lung)."""
    return scope.modality == "CT" and "lung" in (scope.task or "").lower()


def scope_warnings(scope: Scope | ModelConfig, modality: str = "", spacing=None,
                   rgb: bool = False, axes: Sequence[str] | None = None,
                   lung_cm2: float | None = None) -> list[str]:
    """Why an input is outside the model's scope (empty list: nothing known against it).

    `modality`: the image's modality ("CT", "MR", "US"; "" or "8bit" = not known);
    `spacing`: its mm per pixel (in-plane = the last two; None = not known);
    `rgb`: a colour image; `axes`: its axis names ("t" first = a cine);
    `lung_cm2`: its largest lung region on a slice (:func:`lung_area_cm2`; None = not known)."""
    scope = scope.scope if isinstance(scope, ModelConfig) else scope
    model = f"{scope.modality} {scope.task}".strip() if scope.task else scope.modality
    out = []
    if rgb:
        out.append("it is a colour (RGB) image, the model saw grayscale only")
    if modality and modality != "8bit" and modality != scope.modality:
        out.append(f"it is {_MODALITY_NAMES.get(modality, modality)} image, the model was "
                   f"trained on {model} only")
    if lung_cm2 is not None and lung_cm2 < LUNG_MIN_CM2 and lung_model(scope) and modality == "CT":
        out.append(f"it shows little lung (its largest region of lung density, {LUNG_HU[0]:g} to "
                   f"{LUNG_HU[1]:g} HU, covers {lung_cm2:.0f} cm^2 of a slice; a lung CT has "
                   f"{LUNG_MIN_CM2:g} cm^2 or more), the model was trained on {model} only")
    if is_cine(axes):
        out.append("it is a cine: its frames are time points, sampled one by one as still "
                   "images, not slices of a volume")
    if spacing is not None and scope.pixel_spacing_mm:
        inplane = [float(s) for s in tuple(spacing)[-2:] if s and float(s) > 0]
        if inplane:
            s = sum(inplane) / len(inplane)
            ratio = s / scope.pixel_spacing_mm
            if ratio > SPACING_FACTOR or ratio < 1 / SPACING_FACTOR:
                out.append(f"its pixels are {s:.3g} mm, the model's {scope.pixel_spacing_mm:g} mm: "
                           "structures are resampled far from the scale it learnt")
    return out


def layer_scope_warnings(scope: Scope | ModelConfig, reference: Mapping[str, Any] | None,
                         rgb: bool = False, data: Any = None) -> list[str]:
    """`scope_warnings` for a layer from its `metadata["ambiseg"]` reference (the readers'
    record: modality, axes, spacing, rgb); spacing that was assumed is not held against it.
    For a lung model and a CT in HU, the lung is looked for in `data` (the layer's array)
    when given, else in the DICOM source files the reference names."""
    ref = dict(reference or {})
    modality = ref.get("modality") or ""
    if not modality and ref.get("model_modality") not in (None, "8bit", "CT"):
        modality = ref["model_modality"]  # guessed from the values: not HU
    spacing = None if ref.get("assumed") or _unit_spacing(ref) else ref.get("spacing")
    rgb = bool(ref.get("rgb")) or rgb
    lung = None
    own = scope.scope if isinstance(scope, ModelConfig) else scope
    if (lung_model(own) and modality == "CT" and ref.get("model_modality") == "CT" and not rgb
            and not is_cine(ref.get("axes")) and spacing is not None):
        lung = lung_area_cm2(data, spacing) if data is not None else _source_lung_cm2(ref)
    return scope_warnings(scope, modality, spacing, rgb=rgb, axes=ref.get("axes"), lung_cm2=lung)


def _checked(n: int) -> list[int]:
    """The slices looked at: the middle one, and those at a quarter and three quarters."""
    return sorted({n // 2, n // 4, (3 * n) // 4} & set(range(n)))


def lung_area_cm2(hu: Any, spacing: Sequence[float]) -> float:
    """Largest region of lung density (:data:`LUNG_HU`, 8-connected within a slice) on the
    checked slices of a 2D (y, x) or 3D (z, y, x) CT in HU, in cm^2 (`spacing`: mm, the
    last two in-plane)."""
    from scipy import ndimage

    hu = np.asarray(hu)
    planes = [hu] if hu.ndim == 2 else [hu[k] for k in _checked(len(hu))]
    pixel_cm2 = float(spacing[-2]) * float(spacing[-1]) / 100.0
    largest = 0
    for plane in planes:
        lung = (plane >= LUNG_HU[0]) & (plane <= LUNG_HU[1])
        labelled, n = ndimage.label(lung, structure=np.ones((3, 3), bool))
        if n:
            largest = max(largest, int(np.bincount(labelled.ravel())[1:].max()))
    return largest * pixel_cm2


def _source_lung_cm2(ref: Mapping[str, Any]) -> float | None:
    """`lung_area_cm2` of a layer's DICOM source files (None: not DICOM, or not readable)."""
    files = [str(f) for f in ref.get("source_files") or []]
    if not files:
        return None
    chosen = tuple(files[k] for k in _checked(len(files)))
    try:
        stamps = tuple(os.stat(f).st_mtime_ns for f in chosen)
        if len(chosen) == 1 and os.path.getsize(chosen[0]) > _MAX_FILE_BYTES:
            return None
    except OSError:
        return None
    return _files_lung_cm2(chosen, stamps, tuple(float(s) for s in ref["spacing"][-2:]))


@functools.lru_cache(maxsize=32)
def _files_lung_cm2(files: tuple[str, ...], _stamps: tuple[int, ...],
                    spacing: tuple[float, float]) -> float | None:
    import pydicom
    from pydicom.pixels import apply_modality_lut

    planes = []
    for f in files:
        try:
            ds = pydicom.dcmread(f)
            pixels = apply_modality_lut(ds.pixel_array, ds)
        except Exception:  # noqa: BLE001 - not DICOM, no decoder, damaged: not judged
            return None
        if pixels.ndim == 3 and int(ds.get("NumberOfFrames", 1) or 1) > 1:
            planes.extend(pixels[k] for k in _checked(len(pixels)))
        elif pixels.ndim == 2:
            planes.append(pixels)
        else:
            return None  # colour: not a CT in HU
    return max(lung_area_cm2(p, spacing) for p in planes) if planes else None


def _unit_spacing(ref: Mapping[str, Any]) -> bool:
    """Files without geometry (PNG, TIFF, .npy) get spacing 1: not a measured spacing."""
    spacing = ref.get("spacing") or []
    return not ref.get("modality") and all(float(s) == 1.0 for s in spacing)


def scope_text(warnings: Sequence[str]) -> str:
    """One paragraph for the dock / the terminal."""
    if not warnings:
        return ""
    return "Outside the model's scope: " + "; ".join(warnings) + ". Treat the samples with caution."
