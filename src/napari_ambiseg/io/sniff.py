"""What kind of file is this? Content first (magic bytes), extension second."""

from __future__ import annotations

import os

from .raster import RASTER_SUFFIXES
from .sitk_io import VOLUME_SUFFIXES, suffix_of

DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
_MAX_SCAN = 500  # files looked at when deciding whether a folder holds DICOM


def _head(path: str, n: int = 352) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def content_kind(path: str) -> str | None:
    """'dicom', 'nifti', 'nrrd', 'metaimage', 'raster' or None, from the first bytes."""
    head = _head(path)
    if head[128:132] == b"DICM":
        return "dicom"
    if head.startswith((b"\x89PNG", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"BM")):
        return "raster"
    if head.startswith(b"NRRD"):
        return "nrrd"
    if head[344:348] in (b"n+1\x00", b"ni1\x00") or head[4:8] in (b"n+2\x00",):
        return "nifti"
    text = head[:200].lstrip()
    if text.startswith((b"ObjectType", b"NDims")):
        return "metaimage"
    # DICOM without preamble: starts with an (0008,xxxx) group-length or tag, little endian
    if head[:2] in (b"\x08\x00", b"\x02\x00") and len(head) >= 8 and head[3] == 0:
        return "dicom"
    return None


def extension_kind(path: str) -> str | None:
    suffix = suffix_of(path)
    if suffix in DICOM_SUFFIXES:
        return "dicom"
    if suffix in (".nii", ".nii.gz"):
        return "nifti"
    if suffix in (".nrrd", ".nhdr"):
        return "nrrd"
    if suffix in (".mha", ".mhd"):
        return "metaimage"
    if suffix in RASTER_SUFFIXES:
        return "raster"
    return None


def folder_has_dicom(folder: str) -> bool:
    """True if one of the first files under ``folder`` looks like DICOM."""
    seen = 0
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            if f.startswith("."):
                continue
            p = os.path.join(root, f)
            if content_kind(p) == "dicom" or (extension_kind(p) == "dicom" and os.path.getsize(p) > 0):
                return True
            seen += 1
            if seen >= _MAX_SCAN:
                return False
    return False


def can_read(path: str | os.PathLike) -> bool:
    """Cheap test used by napari_get_reader: would ``read_image`` claim this path?"""
    path = os.fspath(path)
    if os.path.isdir(path):
        return folder_has_dicom(path)
    if not os.path.isfile(path):
        return extension_kind(path) is not None
    return extension_kind(path) is not None or content_kind(path) is not None


__all__ = ["DICOM_SUFFIXES", "VOLUME_SUFFIXES", "RASTER_SUFFIXES", "can_read", "content_kind",
           "extension_kind", "folder_has_dicom"]
