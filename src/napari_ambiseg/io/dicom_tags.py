"""DICOM helpers shared by the file and series readers: key tags, checks, rescale."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import UID

from ..errors import ReadError

KEY_TAGS = (
    "PatientID", "PatientName", "StudyInstanceUID", "StudyDate", "StudyDescription",
    "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "Modality", "SOPClassUID",
    "FrameOfReferenceUID", "BodyPartExamined", "Manufacturer",
)

#: pip packages that give pydicom a decoder, by transfer syntax UID prefix.
_DECODER_PACKAGES = {
    "1.2.840.10008.1.2.4.5": "pylibjpeg pylibjpeg-libjpeg",  # JPEG baseline/extended
    "1.2.840.10008.1.2.4.7": "pylibjpeg pylibjpeg-libjpeg",  # JPEG lossless
    "1.2.840.10008.1.2.4.8": "pylibjpeg pylibjpeg-libjpeg",  # JPEG-LS
    "1.2.840.10008.1.2.4.9": "pylibjpeg pylibjpeg-openjpeg",  # JPEG 2000
    "1.2.840.10008.1.2.4.20": "pylibjpeg pylibjpeg-openjpeg",  # HTJ2K
    "1.2.840.10008.1.2.5": "pylibjpeg pylibjpeg-rle",  # RLE
}

#: Segmentation (BINARY/FRACTIONAL) and Label Map Segmentation SOP classes: read by io/seg_read.py
SEG_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")

_NOT_IMAGES = {
    **{uid: "a DICOM-SEG segmentation, not an image: open it with File > Open (or "
       "napari_ambiseg.io.read_image), which reads it as labels" for uid in SEG_SOP_CLASSES},
    "1.2.840.10008.5.1.4.1.1.481.3": "an RT Structure Set (contours), not an image: open the "
    "image series it refers to instead",
}


def key_tags(ds: Dataset) -> dict[str, str]:
    """The identifying tags of a dataset as plain strings (missing ones are left out)."""
    out = {}
    for k in KEY_TAGS:
        v = ds.get(k)
        if v not in (None, ""):
            out[k] = str(v)
    return out


def layer_name(ds: Dataset, path: str | os.PathLike, series: bool = True) -> str:
    """Series description; else '<Modality> <SeriesNumber>' for a series, the file name for a file."""
    desc = str(ds.get("SeriesDescription", "") or "").strip()
    if desc:
        return desc
    mod, num = ds.get("Modality", ""), ds.get("SeriesNumber", "")
    if series and mod and num not in (None, ""):
        return f"{mod} {num}"
    base = os.path.basename(os.fspath(path).rstrip(os.sep))
    return os.path.splitext(base)[0] or base or "DICOM"


def check_is_image(ds: Dataset, path: str | os.PathLike) -> None:
    """Raise ReadError for DICOM objects that carry no image (RTSTRUCT, SEG, SR, ...).

    Works on headers read with ``stop_before_pixels`` (judges by SOP class and Rows).
    """
    name = os.path.basename(os.fspath(path))
    sop = str(ds.get("SOPClassUID", ""))
    if sop in _NOT_IMAGES:
        raise ReadError(f"Cannot open {name}: it is {_NOT_IMAGES[sop]}.")
    if "Rows" not in ds or "Columns" not in ds:
        kind = UID(sop).name if sop else "object"
        raise ReadError(
            f"Cannot open {name}: this DICOM {kind} ({ds.get('Modality', '?')}) holds no image; "
            "open an image file or series instead."
        )


def missing_decoder_message(path: str | os.PathLike, tsyntax: str, detail: str = "") -> str:
    """One sentence naming the transfer syntax and the pip packages that decode it."""
    uid = UID(tsyntax)
    pkgs = next((p for k, p in _DECODER_PACKAGES.items() if uid.startswith(k)),
                "pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg")
    msg = (f"Cannot decode {os.path.basename(os.fspath(path))}: its pixel data is compressed as "
           f"'{uid.name}' and no decoder for it is installed; run `pip install {pkgs}`")
    return msg + (f" ({detail})." if detail else ".")


def check_decoder(ds: Dataset, path: str | os.PathLike) -> None:
    """Raise ReadError (naming the package to install) if pydicom cannot decode the pixels."""
    meta = getattr(ds, "file_meta", None)
    tsyntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if not tsyntax or not UID(tsyntax).is_compressed:
        return
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError as e:
        raise ReadError(f"Cannot decode {os.path.basename(os.fspath(path))}: {e}.") from e
    if not decoder.is_available:
        raise ReadError(missing_decoder_message(path, tsyntax))


def is_decoder_error(exc: BaseException) -> bool:
    """True for pydicom's 'plugins are missing dependencies' failures."""
    return isinstance(exc, RuntimeError) and "missing dependencies" in str(exc)


def _number(value: Any, default: float) -> float:
    try:
        return float(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def rescale_params(item: Any) -> tuple[float, float]:
    """(slope, intercept) of a dataset or functional-group item, default (1, 0)."""
    return _number(item.get("RescaleSlope"), 1.0), _number(item.get("RescaleIntercept"), 0.0)


def integer_dtype_for(lo: float, hi: float) -> np.dtype | None:
    """Smallest signed (or uint16) integer dtype holding [lo, hi], or None."""
    for dt in (np.int16, np.uint16, np.int32):
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dt)
    return None


def to_modality_units(arr: np.ndarray, item: Any) -> np.ndarray:
    """Stored values -> modality units (HU for CT) with pydicom's modality LUT.

    Integer slope/intercept (the usual CT case) keep a compact integer dtype instead of
    pydicom's float64; other rescales give float32.
    """
    if item.get("ModalityLUTSequence"):
        return apply_modality_lut(arr, item)
    slope, intercept = rescale_params(item)
    if slope == 1.0 and intercept == 0.0:
        return arr
    if slope.is_integer() and intercept.is_integer() and np.issubdtype(arr.dtype, np.integer):
        ends = [float(arr.min()) * slope + intercept, float(arr.max()) * slope + intercept] if arr.size else [0, 0]
        dt = integer_dtype_for(min(ends), max(ends))
        if dt is not None:
            out = arr.astype(dt)
            if slope != 1.0:
                out *= dt.type(slope)
            out += dt.type(intercept)
            return out
    rescaled = Dataset()
    rescaled.RescaleSlope, rescaled.RescaleIntercept = slope, intercept
    return apply_modality_lut(arr, rescaled).astype(np.float32)
