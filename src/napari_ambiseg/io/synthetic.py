"""Synthetic DICOM CT series for tests and benchmarks, written with pydicom.

pydicom's CT_small.dcm is the template; each slice gets new UIDs, its own ImagePositionPatient
along the slice normal, *reversed* InstanceNumbers and *shuffled* file names, so a reader that
sorts by anything but position gets the order wrong.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, generate_uid


def ramp_volume(shape: tuple[int, int, int]) -> np.ndarray:
    """Stored values ``100 * z + y`` (int16): every slice and row is recognisable."""
    z, y, x = shape
    vol = 100 * np.arange(z, dtype=np.int32)[:, None, None] + np.arange(y, dtype=np.int32)[None, :, None]
    return np.broadcast_to(vol, shape).astype(np.int16)


def write_ct_series(
    folder: str | os.PathLike,
    shape: tuple[int, int, int] = (8, 32, 32),
    spacing: tuple[float, float, float] = (2.5, 0.7, 0.8),
    origin: tuple[float, float, float] = (-30.0, -20.0, -10.0),
    *,
    description: str = "Synthetic CT",
    intercept: float = -1024.0,
    window: tuple[float, float] | None = (40.0, 400.0),
    volume: np.ndarray | Callable[[int], np.ndarray] | None = None,
    seed: int = 0,
    study_uid: str | None = None,
    orientation: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
) -> list[Path]:
    """Write a CT series; ``spacing``/``origin`` are (z, y, x) in mm; returns files in z order.

    ``volume`` is the stored int16 array (z, y, x) or a function slice index -> 2D array
    (used by the benchmark to avoid holding the whole volume); default :func:`ramp_volume`.
    ``orientation`` is the ImageOrientationPatient (row, column cosines); slice ``k`` lies at
    ``origin + k * spacing[0] * normal`` with ``origin`` as (z, y, x) LPS.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    nz, ny, nx = shape
    if volume is None:
        volume = ramp_volume(shape)
    get_slice = volume if callable(volume) else (lambda k: volume[k])
    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for tag in ("SmallestImagePixelValue", "LargestImagePixelValue", "WindowCenter", "WindowWidth"):
        if tag in template:
            delattr(template, tag)
    template.StudyInstanceUID = study_uid or generate_uid()
    template.SeriesInstanceUID = generate_uid()
    template.FrameOfReferenceUID = generate_uid()
    template.SeriesDescription = description
    template.Rows, template.Columns = ny, nx
    template.PixelSpacing = [spacing[1], spacing[2]]
    template.SliceThickness = spacing[0]
    template.ImageOrientationPatient = [float(v) for v in orientation]
    normal = np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:], float))
    template.RescaleSlope, template.RescaleIntercept = 1, intercept
    template.BitsAllocated, template.BitsStored, template.HighBit = 16, 16, 15
    template.PixelRepresentation = 1
    if window:
        template.WindowCenter, template.WindowWidth = window
    template.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    rng = np.random.default_rng(seed)
    names = [f"IM{v:06d}" for v in rng.permutation(10 * nz)[:nz]]
    files = []
    for k in range(nz):
        ds = template.copy()
        ds.file_meta = template.file_meta.copy()
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.ImagePositionPatient = [float(v) for v in np.add(origin[::-1], k * spacing[0] * normal).round(6)]
        ds.SliceLocation = float(origin[0] + k * spacing[0] * normal[2])
        ds.InstanceNumber = nz - k
        ds.PixelData = np.ascontiguousarray(get_slice(k), dtype=np.int16).tobytes()
        path = folder / names[k]
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files
