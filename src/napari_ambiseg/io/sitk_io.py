"""NIfTI, MetaImage (.mha/.mhd) and NRRD with SimpleITK: read images, write labels.

Read: the header is checked first (``ReadImageInformation``: 4D, size), the voxels are read
and flipped for display (see :mod:`.geometry`). NIfTI-2, which SimpleITK cannot read, falls
back to nibabel. Write: labels are put back on the source grid and written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from ..errors import ReadError, WriteError
from .atomic import atomic_output
from .geometry import canonical_flips, display_geometry, flip_array, to_source_grid
from .volume import MedicalImage, grayscale_uint8

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".nhdr")
_LABEL_WORDS = ("label", "seg", "mask")


@contextmanager
def quiet_itk() -> Iterator[None]:
    """Silence ITK's stderr warnings (we report problems ourselves)."""
    old = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(old)


def suffix_of(path: str | os.PathLike) -> str:
    """Lower-case extension, treating ``.nii.gz`` as one."""
    name = os.path.basename(os.fspath(path)).lower()
    return ".nii.gz" if name.endswith(".nii.gz") else os.path.splitext(name)[1]


def stem_of(path: str | os.PathLike) -> str:
    name = os.path.basename(os.fspath(path))
    return name[: len(name) - len(suffix_of(path))] or name


def _ram_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 2**34


class _NoImageIO(ReadError):
    """SimpleITK has no ImageIO for this file (e.g. NIfTI-2)."""


def _read_information(path: str, name: str) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        kind = _NoImageIO if "Unable to determine ImageIO" in str(e) else ReadError
        raise kind(f"Cannot read {name}: not a valid {suffix_of(path)} image "
                        f"({str(e).strip().splitlines()[-1][:200]}).") from e
    size = reader.GetSize()
    dim = reader.GetDimension()
    if dim == 4 and size[3] == 1:
        reader.SetExtractIndex([0, 0, 0, 0])
        reader.SetExtractSize([*size[:3], 0])
    elif dim not in (2, 3):
        raise ReadError(f"Cannot read {name}: it is a {dim}D image {tuple(size)}; napari-ambiseg "
                        "reads 2D and 3D images: save one volume (e.g. the first time point) as 3D.")
    nbytes = int(np.prod(size, dtype=np.float64)) * reader.GetNumberOfComponents() * 8
    if nbytes <= 0 or nbytes > _ram_bytes():
        raise ReadError(f"Cannot read {name}: its header announces a {tuple(size)} image, too large "
                        "for this computer (or a corrupt header).")
    return reader


def _nifti2_with_nibabel(path: str, name: str) -> tuple[np.ndarray, dict[str, Any]]:
    """NIfTI-2 (and other NIfTI SimpleITK rejects) via nibabel, converted to ITK/LPS geometry."""
    import nibabel as nib

    try:
        img = nib.load(path)
        shape = img.shape
        if 8 * float(np.prod(shape, dtype=np.float64)) > _ram_bytes():
            raise ReadError(f"Cannot read {name}: its header announces a {shape} image, too large "
                            "for this computer (or a corrupt header).")
        data = np.asanyarray(img.dataobj)
    except ReadError:
        raise
    except Exception as e:  # noqa: BLE001
        raise ReadError(f"Cannot read {name}: not a valid NIfTI image ({type(e).__name__}: {e}).") from e
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim not in (2, 3):
        raise ReadError(f"Cannot read {name}: it is a {data.ndim}D image {data.shape}; napari-ambiseg "
                        "reads 2D and 3D images: save one volume (e.g. the first time point) as 3D.")
    if data.ndim == 2:
        data = data[..., np.newaxis]
    ras_to_lps = np.diag([-1.0, -1.0, 1.0])
    m = ras_to_lps @ img.affine[:3, :3]
    spacing = np.linalg.norm(m, axis=0)
    geometry = {"size": list(data.shape), "spacing": spacing.tolist(),
                "origin": (ras_to_lps @ img.affine[:3, 3]).tolist(),
                "direction": (m / spacing).ravel().tolist(), "flip": []}
    return np.ascontiguousarray(data.transpose(2, 1, 0)), geometry


def _geometry_3d(image: sitk.Image) -> dict[str, Any]:
    if image.GetDimension() == 3:
        return {"size": list(image.GetSize()), "spacing": list(image.GetSpacing()),
                "origin": list(image.GetOrigin()), "direction": list(image.GetDirection()), "flip": []}
    d2 = np.asarray(image.GetDirection()).reshape(2, 2)
    d3 = np.eye(3)
    d3[:2, :2] = d2
    return {"size": [*image.GetSize(), 1], "spacing": [*image.GetSpacing(), 1.0],
            "origin": [*image.GetOrigin(), 0.0], "direction": d3.ravel().tolist(), "flip": []}


def read_volume(path: str | os.PathLike) -> MedicalImage:
    """Read a NIfTI / MHA / MHD / NRRD file (2D or 3D, grayscale or RGB)."""
    path = os.fspath(path)
    name = os.path.basename(path)
    if os.path.getsize(path) == 0:
        raise ReadError(f"Cannot open {name}: the file is empty (0 bytes).")
    try:
        with quiet_itk():
            reader = _read_information(path, name)
            image = reader.Execute()
        arr = sitk.GetArrayFromImage(image)
        geometry = _geometry_3d(image)
        ncomp, ndim = image.GetNumberOfComponentsPerPixel(), image.GetDimension()
        del image
    except _NoImageIO:
        if suffix_of(path) not in (".nii", ".nii.gz"):
            raise
        arr, geometry = _nifti2_with_nibabel(path, name)
        ncomp, ndim = 1, 3
    except RuntimeError as e:
        raise ReadError(f"Cannot read {name}: the image data is corrupt or truncated "
                        f"({str(e).strip().splitlines()[-1][:200]}).") from e
    if ndim == 2 and arr.ndim == 2 + (ncomp > 1):
        arr = arr[np.newaxis]
    rgb = ncomp in (3, 4)
    if ncomp > 1 and not rgb:
        raise ReadError(f"Cannot read {name}: {ncomp} components per voxel are not supported "
                        "(grayscale or RGB only).")
    if rgb:
        arr = arr[..., :3]
    geometry["flip"] = canonical_flips(np.asarray(geometry["direction"]).reshape(3, 3))
    arr = flip_array(arr, geometry["flip"])
    if ndim == 2:
        arr = arr[0]
    spatial = 2 if ndim == 2 else 3
    spacing, origin, direction = display_geometry(geometry, spatial)
    gray = None
    if rgb:
        arr = arr if arr.dtype == np.uint8 else np.clip(arr, 0, 255).astype(np.uint8)
        gray = grayscale_uint8(arr)
    is_labels = (not rgb and np.issubdtype(arr.dtype, np.integer)
                 and any(w in stem_of(path).lower() for w in _LABEL_WORDS))
    return MedicalImage(
        data=arr, spacing=spacing, origin=origin, direction=direction,
        axes=("z", "y", "x")[-spatial:], name=stem_of(path), rgb=rgb, gray=gray,
        is_labels=is_labels, geometry=geometry, metadata={"source": path, "source_files": [path]},
    )


def label_dtype(labels: np.ndarray) -> np.dtype:
    """Narrowest integer dtype for a label array (unsigned when possible)."""
    a = np.asarray(labels)
    if a.dtype == bool:
        return np.dtype(np.uint8)
    if not np.issubdtype(a.dtype, np.integer):
        if not np.array_equal(a, np.round(a)):
            raise WriteError("Labels must be whole numbers; got fractional values.")
    lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
    for dt in (np.uint8, np.uint16, np.uint32) if lo >= 0 else (np.int8, np.int16, np.int32):
        if np.iinfo(dt).min <= lo and hi <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.int64)


def write_labels_volume(labels: np.ndarray, path: str | os.PathLike, reference: dict[str, Any]) -> list[str]:
    """Write labels (displayed grid) to NIfTI/MHA/MHD/NRRD on the reference's source grid."""
    path = os.fspath(path)
    if suffix_of(path) not in VOLUME_SUFFIXES:
        raise WriteError(f"Cannot write {os.path.basename(path)}: use one of {', '.join(VOLUME_SUFFIXES)}.")
    src = to_source_grid(labels, reference)
    geom = reference["geometry"]
    image = sitk.GetImageFromArray(src.astype(label_dtype(src), copy=False))
    image.SetSpacing([float(s) for s in geom["spacing"]])
    image.SetOrigin([float(o) for o in geom["origin"]])
    image.SetDirection([float(d) for d in geom["direction"]])
    with atomic_output(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)
    written = [path]
    if suffix_of(path) in (".mhd", ".nhdr"):
        written += [str(Path(path).with_suffix(s)) for s in (".raw", ".zraw", ".raw.gz")
                    if Path(path).with_suffix(s).exists()]
    return written
