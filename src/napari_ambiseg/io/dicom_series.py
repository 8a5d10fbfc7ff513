"""DICOM series folders with SimpleITK / GDCM.

GDCM finds the series (``GetGDCMSeriesIDs``) and sorts each one's files by position along the
slice normal (``GetGDCMSeriesFileNames``), not by file name or InstanceNumber. SimpleITK reads
the pixels with the rescale applied; pydicom reads the headers (stop before pixels) to check
the series and to keep the key tags and SOPInstanceUIDs in slice order for DICOM-SEG.

Memory: the volume is read in chunks of slices straight into one preallocated array of the
narrowest dtype that holds the rescaled values (int16 for usual CT), so the peak stays near
1x the volume plus one chunk; the heap GDCM used while scanning headers is handed back to the
OS before the volume is allocated (see docs/benchmarks_io.md).
"""

from __future__ import annotations

import ctypes
import os
import warnings

import numpy as np
import SimpleITK as sitk

from ..errors import ReadError
from .dicom_file import orientation_matrix, read_dicom_dataset, read_dicom_file
from .dicom_tags import check_is_image, integer_dtype_for, key_tags, layer_name, rescale_params
from .seg_read import is_dicom_seg, read_dicom_seg
from .sitk_io import quiet_itk
from .volume import MedicalImage
from .windows import parse_windows

CHUNK_SLICES = 48
#: what is checked on every slice (the first slice's header is read in full)
SLICE_TAGS = ["SOPClassUID", "SOPInstanceUID", "Rows", "Columns", "ImagePositionPatient",
              "ImageOrientationPatient", "RescaleSlope", "RescaleIntercept", "NumberOfFrames",
              "SamplesPerPixel"]
MAX_FOLDERS = 2000


def release_freed_memory() -> None:
    """Give memory freed by GDCM back to the OS (glibc keeps it otherwise: +1x the series in RSS)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def find_series(folder: str | os.PathLike) -> list[list[str]]:
    """File lists (sorted by slice position) of every DICOM series under ``folder``."""
    found: list[list[str]] = []
    with quiet_itk():
        for n, (root, dirs, files) in enumerate(os.walk(folder)):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            if n >= MAX_FOLDERS:
                break
            if not files:
                continue
            for sid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(root):
                names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(root, sid)
                if names:
                    found.append(list(names))
    release_freed_memory()
    return found


def read_dicom_folder(folder: str | os.PathLike) -> list[MedicalImage]:
    """One image per series found under ``folder``; problem series are skipped with a warning.

    Raises ReadError when nothing could be read (with the reason for a single series).
    """
    folder = os.fspath(folder)
    name = os.path.basename(folder.rstrip(os.sep)) or folder
    series = find_series(folder)
    if not series:
        raise ReadError(f"Cannot open folder {name}: it contains no DICOM image series.")
    images: list[MedicalImage] = []
    problems: list[str] = []
    for files in series:
        try:
            images.extend(read_series(files))
        except ReadError as e:
            problems.append(str(e))
    if not images:
        raise ReadError(problems[0] if len(problems) == 1 else
                        f"Cannot open folder {name}: none of its {len(series)} series could be read "
                        f"({'; '.join(problems)})")
    for p in problems:
        warnings.warn(f"Skipped one series in {name}: {p}", stacklevel=2)
    images.sort(key=lambda im: "dicom_seg" in im.metadata)  # SEG layers above the images
    _unique_names(images)
    return images


def _unique_names(images: list[MedicalImage]) -> None:
    seen: dict[str, int] = {}
    for im in images:
        k = seen.get(im.name, 0)
        seen[im.name] = k + 1
        if k:
            im.name = f"{im.name} ({k + 1})"


def _pixel_type(headers: list) -> tuple[int, np.dtype]:
    """(SimpleITK read type, numpy output dtype) for the rescaled values of a series.

    Integer rescales are read as the narrowest integer type holding the declared range; when
    that needs int32 (16-bit stored values plus an intercept) the output starts as int16 and
    is widened only if a chunk's actual values do not fit.
    """
    params = {rescale_params(h) for h in headers}
    if any(not (s.is_integer() and i.is_integer()) for s, i in params):
        return sitk.sitkFloat32, np.dtype(np.float32)
    h = headers[0]
    bits = int(h.get("BitsStored", h.get("BitsAllocated", 16)))
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if h.get("PixelRepresentation", 0) else (0, 2**bits - 1)
    ends = [lo * s + i for s, i in params] + [hi * s + i for s, i in params]
    dt = integer_dtype_for(min(ends), max(ends))
    if dt == np.int16:
        return sitk.sitkInt16, dt
    if dt == np.uint16:
        return sitk.sitkUInt16, dt
    if dt == np.int32:
        return sitk.sitkInt32, np.dtype(np.int16)
    return sitk.sitkFloat32, np.dtype(np.float32)


def _fits(chunk: np.ndarray, dtype: np.dtype) -> bool:
    if chunk.dtype == dtype or not np.issubdtype(dtype, np.integer) or not chunk.size:
        return True
    info = np.iinfo(dtype)
    return info.min <= chunk.min() and chunk.max() <= info.max


def _check(headers: list, files: list[str], desc: str) -> None:
    sizes = {(int(h.get("Rows", 0)), int(h.get("Columns", 0))) for h in headers}
    if len(sizes) > 1:
        raise ReadError(f"Cannot read series '{desc}': its slices have different sizes {sorted(sizes)}; "
                        "open the slices separately or fix the series.")
    iops = {tuple(np.round([float(v) for v in h.get("ImageOrientationPatient", [1, 0, 0, 0, 1, 0])], 3))
            for h in headers}
    if len(iops) > 1:
        raise ReadError(f"Cannot read series '{desc}': it mixes {len(iops)} slice orientations "
                        "(a localizer?); open its files one at a time.")


def _slice_steps(headers: list, direction: np.ndarray) -> np.ndarray:
    pos = np.array([[float(v) for v in h.get("ImagePositionPatient", [0, 0, 0])] for h in headers])
    return np.diff(pos @ direction[:, 2])


def read_series(files: list[str]) -> list[MedicalImage]:
    """Read one GDCM-sorted series (single files and colour/multi-frame go through pydicom)."""
    headers = [read_dicom_dataset(files[0], stop_before_pixels=True)]
    headers += [read_dicom_dataset(f, stop_before_pixels=True, specific_tags=SLICE_TAGS) for f in files[1:]]
    first = headers[0]
    if is_dicom_seg(first):  # our own (or another tool's) segmentation: labels on its source grid
        return [im for f in files for im in read_dicom_seg(f)]
    check_is_image(first, files[0])
    desc = layer_name(first, os.path.dirname(files[0]))
    if len(files) == 1 or int(first.get("NumberOfFrames", 1) or 1) > 1 or \
            int(first.get("SamplesPerPixel", 1) or 1) != 1:
        images = [read_dicom_file(f) for f in files]
        for im in images:
            im.name = desc
        return images
    _check(headers, files, desc)
    steps = _slice_steps(headers, orientation_matrix(first))
    if np.any(np.abs(steps) < 1e-3):
        raise ReadError(f"Cannot read series '{desc}': several slices share one position "
                        "(several echoes or time points?); 4D series are not supported.")
    read_type, dtype = _pixel_type(headers)
    n, rows, cols = len(files), int(first.Rows), int(first.Columns)
    data = np.empty((n, rows, cols), dtype=dtype)
    geometry = None
    with quiet_itk():
        for start in range(0, n, CHUNK_SLICES):
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(files[start:start + CHUNK_SLICES])
            reader.SetOutputPixelType(read_type)
            try:
                image = reader.Execute()
            except RuntimeError as e:
                raise ReadError(f"Cannot read series '{desc}': SimpleITK/GDCM failed on its pixels "
                                f"({str(e).strip().splitlines()[-1]}).") from e
            chunk = sitk.GetArrayViewFromImage(image)
            if not _fits(chunk, dtype):
                data, dtype = data.astype(chunk.dtype), chunk.dtype
            data[start:start + chunk.shape[0]] = chunk
            if geometry is None:
                geometry = {"size": [cols, rows, n], "spacing": list(image.GetSpacing()),
                            "origin": list(image.GetOrigin()), "direction": list(image.GetDirection()),
                            "flip": []}
            del chunk, image
    direction = np.asarray(geometry["direction"]).reshape(3, 3)
    meta = {
        "source": os.path.dirname(files[0]), "source_files": list(files), "tags": key_tags(first),
        "sop_instance_uids": [str(h.get("SOPInstanceUID", "")) for h in headers],
        "photometric": str(first.get("PhotometricInterpretation", "")),
    }
    if steps.size:
        geometry["spacing"][2] = float(np.mean(steps))
        if np.ptp(steps) > 0.01 * abs(np.mean(steps)) + 1e-3:
            msg = (f"series '{desc}' has uneven slice spacing ({steps.min():.3g} to {steps.max():.3g} mm); "
                   f"z uses the mean {np.mean(steps):.3g} mm")
            meta["warnings"] = [msg]
            warnings.warn(msg, stacklevel=2)
    wins = parse_windows(first)
    if wins:
        meta["windows"] = [list(w) for w in wins]
    sp, org = geometry["spacing"], geometry["origin"]
    return [MedicalImage(
        data=data, spacing=tuple(sp[::-1]), origin=tuple(org[::-1]), direction=direction,
        axes=("z", "y", "x"), modality=str(first.get("Modality", "")), window=wins[0] if wins else None,
        name=desc, geometry=geometry, metadata=meta,
    )]
