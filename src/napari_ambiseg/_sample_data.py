"""napari sample data: real files shipped with pydicom and pydicom-data, opened like a user's file.

Each function goes through the same path as File > Open (:func:`napari_ambiseg._reader.read_layers`).
The pydicom-data files need ``pip install pydicom-data``; nothing is downloaded.
"""

from __future__ import annotations

from typing import Any

from ._reader import read_layers
from .errors import ReadError


def _sample(filename: str, package: str = "pydicom-data") -> list[tuple[Any, dict, str]]:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(filename, download=False)
    if path is None:
        raise ReadError(f"Sample {filename} is not installed: run `pip install {package}`.")
    return read_layers(path)


def ct_small():
    """CT slice 128x128 in HU (pydicom's CT_small.dcm)."""
    return _sample("CT_small.dcm", "pydicom")


def mr_small():
    """MR slice 64x64 with its window (pydicom's MR_small.dcm)."""
    return _sample("MR_small.dcm", "pydicom")


def ct_693():
    """CT slice 512x512 with a window (pydicom-data's 693_UNCR.dcm)."""
    return _sample("693_UNCR.dcm")


def us1():
    """RGB ultrasound still, plus its hidden grayscale layer (pydicom-data's US1_UNCR.dcm)."""
    return _sample("US1_UNCR.dcm")


def emri_small():
    """Enhanced MR, 10 frames as z (pydicom-data's emri_small.dcm)."""
    return _sample("emri_small.dcm")
