"""Is an input inside the model's scope? Plain-language reasons when it is not (Qt-free).

The scope is the model's own record (`config.Scope`, stored in its weights config); the dock
shows these reasons as a persistent warning and `ambiseg sample` prints them on stderr.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .config import ModelConfig, Scope

SPACING_FACTOR = 2.0  # pixel spacing this many times finer or coarser than the model's: warn
_MODALITY_NAMES = {"CT": "a CT", "MR": "an MR", "US": "an ultrasound", "8bit": "an 8-bit"}


def is_cine(axes: Sequence[str] | None) -> bool:
    """A time series (cine): its frames are time points, not slices of a volume."""
    return bool(axes) and axes[0] == "t"


def scope_warnings(scope: Scope | ModelConfig, modality: str = "", spacing=None,
                   rgb: bool = False, axes: Sequence[str] | None = None) -> list[str]:
    """Why an input is outside the model's scope (empty list: nothing known against it).

    `modality`: the image's modality ("CT", "MR", "US"; "" or "8bit" = not known);
    `spacing`: its mm per pixel (in-plane = the last two; None = not known);
    `rgb`: a colour image; `axes`: its axis names ("t" first = a cine)."""
    scope = scope.scope if isinstance(scope, ModelConfig) else scope
    model = f"{scope.modality} {scope.task}".strip() if scope.task else scope.modality
    out = []
    if rgb:
        out.append("it is a colour (RGB) image, the model saw grayscale only")
    if modality and modality != "8bit" and modality != scope.modality:
        out.append(f"it is {_MODALITY_NAMES.get(modality, modality)} image, the model was "
                   f"trained on {model} only")
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
                         rgb: bool = False) -> list[str]:
    """`scope_warnings` for a layer from its `metadata["ambiseg"]` reference (the readers'
    record: modality, axes, spacing, rgb); spacing that was assumed is not held against it."""
    ref = dict(reference or {})
    modality = ref.get("modality") or ""
    if not modality and ref.get("model_modality") not in (None, "8bit", "CT"):
        modality = ref["model_modality"]  # guessed from the values: not HU
    spacing = None if ref.get("assumed") or _unit_spacing(ref) else ref.get("spacing")
    return scope_warnings(scope, modality, spacing, rgb=bool(ref.get("rgb")) or rgb,
                          axes=ref.get("axes"))


def _unit_spacing(ref: Mapping[str, Any]) -> bool:
    """Files without geometry (PNG, TIFF, .npy) get spacing 1: not a measured spacing."""
    spacing = ref.get("spacing") or []
    return not ref.get("modality") and all(float(s) == 1.0 for s in spacing)


def scope_text(warnings: Sequence[str]) -> str:
    """One paragraph for the dock / the terminal."""
    if not warnings:
        return ""
    return "Outside the model's scope: " + "; ".join(warnings) + ". Treat the samples with caution."
