"""napari sample data: LIDC-IDRI nodules shipped with the plugin, and real files shipped with
pydicom and pydicom-data, each opened like a user's file.

The LIDC nodules (``sample_data/*.npz``, made by ``scripts/make_lidc_samples.py``; CC BY 3.0,
credit in ``sample_data/README.md``) open through the multi-rater .npz reader: an image stack
(Z, 128, 128) and a Labels layer of the 4 readers' outlines with a leading reader axis (C5).
The DICOM files go through File > Open's reader (:func:`napari_ambiseg._reader.read_layers`);
the pydicom-data files need ``pip install pydicom-data``; nothing is downloaded.
"""

from __future__ import annotations

from typing import Any

from ._reader import read_layers
from ._reader_npz import read_npz
from .errors import ReadError

LIDC_ROLES = ("clear", "contested", "unseen")


def lidc_path(role: str) -> str:
    """Path of a shipped LIDC nodule: "clear", "contested" or "unseen"."""
    from importlib.resources import files

    if role not in LIDC_ROLES:
        raise ValueError(f"role must be one of {LIDC_ROLES}; got {role!r}")
    path = files("napari_ambiseg") / "sample_data" / f"{role}.npz"
    if not path.is_file():
        raise ReadError(f"The LIDC sample {role}.npz is missing from this installation.")
    return str(path)


def lidc_clear():
    """LIDC nodule, all 4 readers outlined it on most slices and agree (+ readers' outlines)."""
    return read_npz(lidc_path("clear"))


def lidc_contested():
    """LIDC nodule, all 4 readers outlined it but disagree in extent (+ readers' outlines)."""
    return read_npz(lidc_path("contested"))


def lidc_unseen():
    """LIDC nodule that 2 of 4 readers outlined and 2 saw nothing (+ readers' outlines)."""
    return read_npz(lidc_path("unseen"))


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
