"""Display windows: DICOM WindowCenter/WindowWidth, CT presets, and napari contrast limits.

A window (center, width) maps to contrast limits ``(center - width/2, center + width/2)``
in the units of the displayed data (Hounsfield units for CT after the rescale).
"""

from __future__ import annotations

from typing import Any

from ..errors import InputError

#: CT windows (center, width) in HU, as on most PACS consoles.
CT_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (40.0, 400.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}


def window_to_limits(center: float, width: float) -> tuple[float, float]:
    """Contrast limits (low, high) of a window; width must be positive."""
    center, width = float(center), float(width)
    if not width > 0:
        raise InputError(f"window width must be positive; got {width}")
    return center - width / 2.0, center + width / 2.0


def preset_limits(name: str) -> tuple[float, float]:
    """Contrast limits of a CT preset by name (case-insensitive): lung, mediastinum, bone, brain."""
    key = name.strip().lower()
    if key not in CT_PRESETS:
        raise InputError(f"unknown window preset {name!r}; choose one of {sorted(CT_PRESETS)}")
    return window_to_limits(*CT_PRESETS[key])


def _floats(value: Any) -> list[float]:
    """DICOM DS/multi-valued element (or a Dataset value) -> list of floats."""
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [float(v) for v in value]
    return [float(value)]


def parse_windows(ds: Any) -> list[tuple[float, float]]:
    """All (center, width) pairs of a pydicom dataset (or functional-group item).

    Handles multi-valued WindowCenter/WindowWidth (pairs by position; a single width is
    shared), ignores pairs with a non-positive width, and returns ``[]`` when absent.
    """
    try:
        centers = _floats(ds.get("WindowCenter"))
        widths = _floats(ds.get("WindowWidth"))
    except (TypeError, ValueError):
        return []
    if not centers or not widths:
        return []
    if len(widths) == 1:
        widths = widths * len(centers)
    return [(c, w) for c, w in zip(centers, widths) if w > 0]


def apply_window_preset(layer: Any, name: str) -> tuple[float, float]:
    """Set a napari image layer's contrast limits to a CT preset and return them.

    Works on any object with ``contrast_limits`` / ``contrast_limits_range`` attributes
    (napari is not imported); the range is widened when the preset exceeds it.
    """
    lo, hi = preset_limits(name)
    rng = getattr(layer, "contrast_limits_range", None)
    if rng is not None and (lo < rng[0] or hi > rng[1]):
        layer.contrast_limits_range = (min(lo, rng[0]), max(hi, rng[1]))
    layer.contrast_limits = (lo, hi)
    return lo, hi
