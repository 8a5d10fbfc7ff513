"""Turn a read image into model input on the LIDC 8-bit scale.

How the training crops were made (measured by benchmarks/hu_window.py, documented in
docs/model_card.md): every LIDC crop has minimum 0 and maximum 255, with a spike of clipped
pixels at 0 (air) and lung parenchyma (~-850 HU) near 16. Fitting the lung (-850 HU) and
soft-tissue (+40 HU) histogram peaks of each crop gives a lower bound of about -1000 HU
(median -978) and an upper end that follows each crop's own maximum (median ~1170 HU).
So the 8-bit scale is: clip HU below at -1000, then min-max over the 128x128 context to
0..255. The same transform is applied at inference to HU input (CT), with the model's own
window (`ModelConfig.hu_window`; the LIDC one, `config.LIDC_HU_WINDOW`, is its default).

MR and ultrasound have no absolute scale: they are clipped to the 0.5-99.5 percentiles of the
context and min-max scaled to 0..255 (the same per-context min-max the CT crops got).
Input that is already 8-bit (uint8: PNG exports, the LIDC crops) only gets the min-max step.
"""

from __future__ import annotations

import numpy as np

from ..config import LIDC_HU_WINDOW, MODALITIES
from ..errors import InputError

PERCENTILES = (0.5, 99.5)


def check_image_2d(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Validate a 2D grayscale image (RGB is converted) and return it as float32."""
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[-1] in (3, 4):
        a = to_grayscale(a)
    if a.ndim != 2:
        raise InputError(f"{name} must be 2D (H, W) or RGB (H, W, 3); got shape {a.shape}")
    if a.size == 0:
        raise InputError(f"{name} is empty (shape {a.shape})")
    if min(a.shape) < 2:
        raise InputError(f"{name} is too small to sample ({a.shape[0]}x{a.shape[1]} pixels; "
                         "at least 2x2 are needed)")
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise InputError(f"{name} must be numeric; got dtype {a.dtype}")
    a = a.astype(np.float32, copy=False)
    if not np.isfinite(a).all():
        raise InputError(f"{name} contains NaN or infinite values")
    return a


def to_grayscale(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of an (..., 3|4) array (alpha ignored), float32."""
    rgb = np.asarray(rgb, dtype=np.float32)[..., :3]
    return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def guess_modality(image: np.ndarray, modality: str = "auto") -> str:
    if modality not in MODALITIES:
        raise InputError(f"modality must be one of {MODALITIES}; got {modality!r}")
    if modality != "auto":
        return modality
    a = np.asarray(image)
    if a.dtype == np.uint8:
        return "8bit"
    if np.issubdtype(a.dtype, np.number) and a.size and float(np.min(a)) < -500:
        return "CT"  # Hounsfield units (air is ~ -1000)
    return "MR"  # unknown scale: percentile normalisation


def minmax_255(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros_like(a, dtype=np.float32)
    return ((a - lo) * (255.0 / (hi - lo))).astype(np.float32)


def to_model_scale(context: np.ndarray, modality: str,
                   hu_window: tuple[float | None, float | None] = LIDC_HU_WINDOW) -> np.ndarray:
    """Map a context crop (float) to the LIDC 8-bit scale, float32 in [0, 255].

    CT (HU) is clipped to `hu_window` (low, high; None: the crop's own) first: pass the
    model's `ModelConfig.hu_window`."""
    a = np.asarray(context, dtype=np.float32)
    if modality == "CT":
        lo, hi = hu_window
        a = np.clip(a, -np.inf if lo is None else lo, np.inf if hi is None else hi)
    elif modality in ("MR", "US"):
        lo, hi = np.percentile(a, PERCENTILES)
        a = np.clip(a, lo, hi)
    elif modality != "8bit":
        raise InputError(f"unknown modality {modality!r}")
    return minmax_255(a)


def to_network_input(scaled_255: np.ndarray) -> np.ndarray:
    """0..255 -> [-1, 1], the range the network sees."""
    return (np.asarray(scaled_255, dtype=np.float32) / 127.5 - 1.0).astype(np.float32)
