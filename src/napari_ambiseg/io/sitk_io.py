"""NIfTI, MetaImage (.mha/.mhd) and NRRD with SimpleITK: read images, write labels and maps.

Read: the header is checked first (``ReadImageInformation``: 4D, size), the voxels are read
and flipped for display (see :mod:`.geometry`). NIfTI-2, which SimpleITK cannot read, falls
back to nibabel. Write: arrays are put back on the source grid and written atomically.

What a file holds is marked so it reopens as the right layer (docs/io.md, "Label marking"):
NRRD/MHA/MHD get the metadata key ``ambiseg_kind`` (``"labels"`` or ``"agreement"``); NIfTI,
whose free-form metadata SimpleITK drops, gets its intent: NIFTI_INTENT_LABEL (1002) for labels,
NIFTI_INTENT_ESTIMATE (1001) with intent_name ``"agreement"`` for the agreement map. SimpleITK
2.x does not write the intent, so it is set in the header (nibabel) before the file is published.
On reading, a marked file, or an integer volume with at most :data:`MAX_LABEL_VALUES` distinct
values whose name says seg/label/mask, is labels.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from ..errors import ReadError, WriteError
from ..layer_contract import FLIP_KEY, KIND_KEY
from .atomic import atomic_output
from .geometry import canonical_flips, display_geometry, flip_array, to_source_grid
from .volume import MedicalImage, grayscale_uint8

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".nhdr")
#: KIND_KEY marks what a file holds; FLIP_KEY keeps the display flips of the source (ITK axes)
#: in marked files, so they reopen the way their source is shown (a DICOM series is shown as
#: stored; NIfTI/NRRD/MHA images are flipped). Both belong to napari_ambiseg.layer_contract.
#: NIfTI intent (code, intent_name) and description written for each kind
NIFTI_INTENTS = {"labels": (1002, "labels"), "agreement": (1001, "agreement")}
_DESCRIPTIONS = {"labels": "napari-ambiseg labels", "agreement": "napari-ambiseg agreement (0..1)"}
#: an unmarked integer volume named like a segmentation is labels up to this many distinct values
MAX_LABEL_VALUES = 64


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


def _nifti2_with_nibabel(path: str, name: str) -> tuple[np.ndarray, dict[str, Any], str | None]:
    """NIfTI-2 (and other NIfTI SimpleITK rejects) via nibabel, converted to ITK/LPS geometry;
    also the kind its intent marks (see :func:`kind_of_intent`)."""
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
    code, name_ = int(img.header["intent_code"]), img.header["intent_name"].tobytes().decode("latin-1")
    return np.ascontiguousarray(data.transpose(2, 1, 0)), geometry, kind_of_intent(code, name_)


def _geometry_3d(image: sitk.Image) -> dict[str, Any]:
    if image.GetDimension() == 3:
        return {"size": list(image.GetSize()), "spacing": list(image.GetSpacing()),
                "origin": list(image.GetOrigin()), "direction": list(image.GetDirection()), "flip": []}
    d2 = np.asarray(image.GetDirection()).reshape(2, 2)
    d3 = np.eye(3)
    d3[:2, :2] = d2
    return {"size": [*image.GetSize(), 1], "spacing": [*image.GetSpacing(), 1.0],
            "origin": [*image.GetOrigin(), 0.0], "direction": d3.ravel().tolist(), "flip": []}


def kind_of_intent(code: int, name: str) -> str | None:
    """The kind a NIfTI intent marks: ``"labels"`` for NIFTI_INTENT_LABEL, ``"agreement"``
    for NIFTI_INTENT_ESTIMATE named "agreement", else None."""
    name = name.strip("\x00 ").lower()
    for kind, (k_code, k_name) in NIFTI_INTENTS.items():
        if code == k_code and (kind == "labels" or name == k_name):
            return kind
    return None


def _marked_kind(reader: sitk.ImageFileReader) -> str | None:
    """``ambiseg_kind`` (NRRD/MHA/MHD) or the NIfTI intent of a file, None when unmarked."""
    keys = set(reader.GetMetaDataKeys())
    if KIND_KEY in keys:
        return reader.GetMetaData(KIND_KEY).strip() or None
    if "intent_code" in keys:
        try:
            code = int(float(reader.GetMetaData("intent_code")))
        except ValueError:
            return None
        name = reader.GetMetaData("intent_name") if "intent_name" in keys else ""
        return kind_of_intent(code, name)
    return None


def _flip_text(flip) -> str:
    return ",".join(str(int(a)) for a in flip) or "none"


def _marked_flip(reader: sitk.ImageFileReader) -> list[int] | None:
    """The source's display flips recorded by :func:`write_volume`, None when absent."""
    keys = set(reader.GetMetaDataKeys())
    text = reader.GetMetaData(FLIP_KEY) if FLIP_KEY in keys else ""
    if not text and "descrip" in keys:  # NIfTI: in the description
        descrip = reader.GetMetaData("descrip")
        text = descrip.split(f"{FLIP_KEY}=", 1)[1] if f"{FLIP_KEY}=" in descrip else ""
    text = text.strip().split()[0] if text.strip() else ""
    if not text:
        return None
    if text == "none":
        return []
    try:
        axes = sorted({int(a) for a in text.split(",")})
    except ValueError:
        return None
    return axes if all(0 <= a <= 2 for a in axes) else None


def named_like_labels(path: str | os.PathLike) -> bool:
    """A file name that says segmentation: a word ending in seg (``ct_seg``, ``aseg``,
    ``dseg``), or containing label or mask (``labels``, ``labelmap``, ``brainmask``)."""
    words = re.split(r"[^a-z0-9]+", stem_of(path).lower())
    return any(w.endswith(("seg", "segmentation")) or "label" in w or "mask" in w for w in words)


def few_values(arr: np.ndarray, bound: int = MAX_LABEL_VALUES) -> bool:
    """Whether an integer array holds at most ``bound`` distinct values.

    A strided sample rejects images (CT has thousands of values) at once; otherwise the values
    are counted exactly, slab by slab, with ``bincount`` over the value range (one pass, small
    temporaries). A range wider than 2**16 counts as many values.
    """
    flat = arr.reshape(-1)
    if flat.size == 0:
        return True
    step = max(1, flat.size // 1_000_000)
    if np.unique(flat[::step]).size > bound:
        return False
    lo, hi = int(flat.min()), int(flat.max())
    if hi - lo >= 2**16:
        return False
    seen = np.zeros(hi - lo + 1, dtype=bool)
    chunk = 1 << 22
    base = flat.dtype.type(lo)
    for i in range(0, flat.size, chunk):  # subtract in the array's own type: no overflow
        part = (flat[i:i + chunk] - base).astype(np.int64)
        seen |= np.bincount(part, minlength=seen.size).astype(bool)
    return int(seen.sum()) <= bound


def _whole_numbers(arr: np.ndarray) -> np.ndarray | None:
    """``arr`` as the narrowest integer type when it holds only whole numbers, else None."""
    if np.issubdtype(arr.dtype, np.integer):
        return arr
    if not np.issubdtype(arr.dtype, np.floating) or not np.all(np.isfinite(arr)) \
            or not np.array_equal(arr, np.round(arr)):
        return None
    return arr.astype(label_dtype(arr))


def read_volume(path: str | os.PathLike) -> MedicalImage:
    """Read a NIfTI / MHA / MHD / NRRD file (2D or 3D, grayscale or RGB).

    Labels (``is_labels``): files marked as labels (:data:`KIND_KEY` or NIfTI intent LABEL)
    holding whole numbers, and unmarked integer volumes named like a segmentation
    (:func:`named_like_labels`) with few values (:func:`few_values`). A file marked
    ``"agreement"`` opens as an image with contrast limits 0..1 (``metadata["ambiseg_kind"]``).
    """
    path = os.fspath(path)
    name = os.path.basename(path)
    if os.path.getsize(path) == 0:
        raise ReadError(f"Cannot open {name}: the file is empty (0 bytes).")
    try:
        with quiet_itk():
            reader = _read_information(path, name)
            kind = _marked_kind(reader)
            flip = _marked_flip(reader) if kind else None
            image = reader.Execute()
        arr = sitk.GetArrayFromImage(image)
        geometry = _geometry_3d(image)
        ncomp, ndim = image.GetNumberOfComponentsPerPixel(), image.GetDimension()
        del image
    except _NoImageIO:
        if suffix_of(path) not in (".nii", ".nii.gz"):
            raise
        arr, geometry, kind = _nifti2_with_nibabel(path, name)
        ncomp, ndim, flip = 1, 3, None
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
    geometry["flip"] = (flip if flip is not None
                        else canonical_flips(np.asarray(geometry["direction"]).reshape(3, 3)))
    arr = flip_array(arr, geometry["flip"])
    if ndim == 2:
        arr = arr[0]
    spatial = 2 if ndim == 2 else 3
    spacing, origin, direction = display_geometry(geometry, spatial)
    gray = None
    if rgb:
        arr = arr if arr.dtype == np.uint8 else np.clip(arr, 0, 255).astype(np.uint8)
        gray = grayscale_uint8(arr)
    is_labels = False
    if not rgb and kind == "labels" and (whole := _whole_numbers(arr)) is not None:
        arr, is_labels = whole, True
    elif not rgb and kind is None and np.issubdtype(arr.dtype, np.integer):
        is_labels = named_like_labels(path) and few_values(arr)
    metadata: dict[str, Any] = {"source": path, "source_files": [path]}
    if kind:
        metadata[KIND_KEY] = kind
    return MedicalImage(
        data=arr, spacing=spacing, origin=origin, direction=direction,
        axes=("z", "y", "x")[-spatial:], name=stem_of(path), rgb=rgb, gray=gray,
        window=(0.5, 1.0) if kind == "agreement" and not rgb else None,
        is_labels=is_labels, geometry=geometry, metadata=metadata,
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


def _set_nifti_intent(nii: Path, kind: str, flip: str) -> None:
    """Write the intent and description of ``kind`` into an uncompressed NIfTI header in place
    (SimpleITK 2.x ignores ``intent_code``/``intent_name`` metadata when writing NIfTI)."""
    import nibabel as nib

    code, intent_name = NIFTI_INTENTS[kind]
    with open(nii, "r+b") as f:
        first = f.read(4)
        size = next((n for n in (348, 540) if first in (n.to_bytes(4, "little"), n.to_bytes(4, "big"))), None)
        if size is None:
            raise WriteError(f"Cannot mark {nii.name} as {kind}: SimpleITK wrote no NIfTI header.")
        header_class = nib.Nifti1Header if size == 348 else nib.Nifti2Header
        header = header_class(binaryblock=first + f.read(size - 4), check=False)
        header.set_intent(code, name=intent_name)
        header["descrip"] = f"{_DESCRIPTIONS[kind]}; {FLIP_KEY}={flip}".encode()
        f.seek(0)
        f.write(header.binaryblock)


def _gzip(src: Path, dst: Path) -> None:
    with open(src, "rb") as fin, gzip.open(dst, "wb", compresslevel=6) as fout:
        shutil.copyfileobj(fin, fout, 1 << 22)
    src.unlink()


def write_volume(data: np.ndarray, path: str | os.PathLike, reference: dict[str, Any], *,
                 kind: str | None = None, rgb: bool = False) -> list[str]:
    """Write ``data`` (displayed grid of ``reference``) to NIfTI/MHA/MHD/NRRD on the source grid.

    The dtype is kept (bool becomes uint8); ``rgb`` data ``(..., 3)`` is written as a
    3-component image. ``kind`` (``"labels"``, ``"agreement"``) marks the file (module doc).
    Returns the written paths (``.mhd``/``.nhdr`` also give their data file).
    """
    path = os.fspath(path)
    suffix = suffix_of(path)
    if suffix not in VOLUME_SUFFIXES:
        raise WriteError(f"Cannot write {os.path.basename(path)}: use one of {', '.join(VOLUME_SUFFIXES)}.")
    data = np.asarray(data)
    if data.dtype == bool:
        data = data.astype(np.uint8)
    if rgb:
        src = np.stack([to_source_grid(data[..., c], reference) for c in range(data.shape[-1])], axis=-1)
    else:
        src = to_source_grid(data, reference)
    geom = reference["geometry"]
    image = sitk.GetImageFromArray(src, isVector=rgb)
    image.SetSpacing([float(s) for s in geom["spacing"]])
    image.SetOrigin([float(o) for o in geom["origin"]])
    image.SetDirection([float(d) for d in geom["direction"]])
    flip = _flip_text(geom.get("flip", []))
    if kind:
        image.SetMetaData(KIND_KEY, kind)
        image.SetMetaData(FLIP_KEY, flip)
    nifti = suffix in (".nii", ".nii.gz")
    with atomic_output(path) as tmp:
        if nifti and kind in NIFTI_INTENTS:  # intent goes into the header before publishing
            raw = tmp.with_name(tmp.name[: -len(suffix)] + ".nii")
            sitk.WriteImage(image, str(raw), useCompression=False)
            _set_nifti_intent(raw, kind, flip)
            if suffix == ".nii.gz":
                _gzip(raw, tmp)
        else:
            sitk.WriteImage(image, str(tmp), useCompression=True)
    written = [path]
    if suffix in (".mhd", ".nhdr"):
        written += [str(Path(path).with_suffix(s)) for s in (".raw", ".zraw", ".raw.gz")
                    if Path(path).with_suffix(s).exists()]
    return written
