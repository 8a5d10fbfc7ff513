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
    if head.startswith((b"\x89PNG", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*")):
        return "raster"
    if head.startswith(b"BM") and head[6:10] == b"\x00\x00\x00\x00":  # BMP: reserved bytes 0
        return "raster"  # (a text file that starts with "BM" is not one)
    if head.startswith(b"NRRD"):
        return "nrrd"
    if head[344:348] in (b"n+1\x00", b"ni1\x00") or head[4:8] in (b"n+2\x00",):
        return "nifti"
    text = head[:200].lstrip()
    if text.startswith((b"ObjectType", b"NDims")) and b"=" in text.split(b"\n", 1)[0]:
        return "metaimage"  # a "Key = Value" header line
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


def _is_text(path: str) -> bool:
    """Plain text (notes, CSV, JSON) or an empty file: nothing an image reader opens."""
    head = _head(path, 1024)
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start >= len(head) - 3  # a character cut at the end of the sample
    return True


def folder_kind(folder: str) -> str:
    """'dicom' if one of the first files under ``folder`` looks like DICOM, 'nothing' if it
    holds no file an image reader could open (empty, or text files only), else 'other'."""
    seen, other = 0, False
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            if f.startswith("."):
                continue
            p = os.path.join(root, f)
            if content_kind(p) == "dicom" or (extension_kind(p) == "dicom" and os.path.getsize(p) > 0):
                return "dicom"
            other = other or not _is_text(p) or extension_kind(p) is not None
            seen += 1
            if seen >= _MAX_SCAN:
                return "other"
    return "other" if other else "nothing"


def folder_has_dicom(folder: str) -> bool:
    """True if one of the first files under ``folder`` looks like DICOM."""
    return folder_kind(folder) == "dicom"


def can_read(path: str | os.PathLike) -> bool:
    """Cheap test used by napari_get_reader: would ``read_image`` claim this path?"""
    path = os.fspath(path)
    if os.path.isdir(path):
        # DICOM inside; or nothing any reader opens (an empty folder, notes only): claimed so
        # that our reader says "contains no DICOM image series" instead of napari's generic
        # refusal. Folders of other files (zarr, image stacks) are left to other readers.
        if path.rstrip(os.sep).lower().endswith(".zarr"):
            return False
        return folder_kind(path) != "other"
    if not os.path.isfile(path):
        return extension_kind(path) is not None
    return extension_kind(path) is not None or content_kind(path) is not None


__all__ = ["DICOM_SUFFIXES", "VOLUME_SUFFIXES", "RASTER_SUFFIXES", "can_read", "content_kind",
           "extension_kind", "folder_has_dicom", "folder_kind"]
