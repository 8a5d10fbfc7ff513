"""``read_image``: one entry point for every supported path, one error type out."""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..errors import AmbisegError, ReadError
from .dicom_file import read_dicom_file
from .dicom_series import read_dicom_folder
from .raster import read_raster
from .seg_read import is_dicom_seg_file, read_dicom_seg
from .sitk_io import read_volume, suffix_of
from .sniff import content_kind, extension_kind
from .volume import MedicalImage

_VOLUME_KINDS = ("nifti", "nrrd", "metaimage")
_RENAME = {"nifti": ".nii", "nrrd": ".nrrd", "metaimage": ".mha"}


def _read_file(path: str) -> list[MedicalImage]:
    name = os.path.basename(path)
    by_content, by_ext = content_kind(path), extension_kind(path)
    if os.path.getsize(path) == 0:
        raise ReadError(f"Cannot open {name}: the file is empty (0 bytes).")
    kind = by_content or by_ext
    if kind == "dicom":
        return read_dicom_seg(path) if is_dicom_seg_file(path) else [read_dicom_file(path)]
    if kind == "raster":
        return [read_raster(path)]
    if kind in _VOLUME_KINDS:
        if by_ext not in _VOLUME_KINDS and not (kind == "metaimage" and by_ext is None):
            raise ReadError(f"Cannot read {name}: it is a {kind} file named '{suffix_of(path) or name}'; "
                            f"rename it to end in {_RENAME[kind]} and open it again.")
        return [read_volume(path)]
    raise ReadError(f"Cannot read {name}: unsupported file type; napari-ambiseg opens DICOM, NIfTI, "
                    "MHA/MHD, NRRD, PNG, JPEG and TIFF.")


def read_image(path: str | os.PathLike | Sequence[str | os.PathLike]) -> list[MedicalImage]:
    """Read a file, a DICOM folder, or a list of them; always a list of images.

    Every failure is an :class:`~napari_ambiseg.errors.ReadError` (or another
    :class:`~napari_ambiseg.errors.AmbisegError`) with one sentence naming the file, what is
    wrong and what to do.
    """
    if isinstance(path, (list, tuple)):
        return [im for p in path for im in read_image(p)]
    path = os.fspath(path)
    name = os.path.basename(path.rstrip(os.sep)) or path
    try:
        if os.path.isdir(path):
            return read_dicom_folder(path)
        if not os.path.isfile(path):
            raise ReadError(f"Cannot open {name}: no such file or folder.")
        return _read_file(path)
    except AmbisegError:
        raise
    except MemoryError as e:
        raise ReadError(f"Cannot read {name}: not enough memory for this image.") from e
    except Exception as e:  # noqa: BLE001 - the contract is one clear error type
        raise ReadError(f"Cannot read {name}: {type(e).__name__}: {e}") from e
