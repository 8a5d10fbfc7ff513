"""Single DICOM files with pydicom 3: slices, enhanced multi-frame, ultrasound stills and cines.

* Grayscale pixels go through the modality LUT (HU for CT).
* ``RGB`` / ``YBR_*`` pixels come out of pydicom as RGB; ``PALETTE COLOR`` goes through the
  palette LUT. Colour images are shown as an rgb layer and get a grayscale ``gray`` for the model.
* Frames are a ``z`` axis for CT/MR/PT/NM and enhanced objects (sorted by position when the
  per-frame functional groups give one) and a ``t`` axis otherwise (ultrasound, XA cines).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut

from ..errors import ReadError
from .dicom_tags import (
    check_decoder,
    check_is_image,
    is_decoder_error,
    key_tags,
    layer_name,
    missing_decoder_message,
    rescale_params,
    to_modality_units,
)
from .volume import MedicalImage, grayscale_uint8
from .windows import parse_windows

_VOLUME_MODALITIES = {"CT", "MR", "PT", "NM"}


def read_dicom_dataset(path: str | os.PathLike, stop_before_pixels: bool = False,
                       specific_tags: list[str] | None = None) -> Dataset:
    """``pydicom.dcmread`` with one clear ReadError for empty, foreign or corrupt files."""
    name = os.path.basename(os.fspath(path))
    if os.path.getsize(path) == 0:
        raise ReadError(f"Cannot open {name}: the file is empty (0 bytes).")
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, specific_tags=specific_tags)
    except InvalidDicomError:
        pass  # no preamble: try once more without it, then judge by content
    except Exception as e:  # noqa: BLE001
        raise ReadError(f"Cannot open {name}: the DICOM header is corrupt ({type(e).__name__}: {e}).") from e
    try:
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=stop_before_pixels,
                             specific_tags=specific_tags)
    except Exception as e:  # noqa: BLE001
        raise ReadError(f"Cannot open {name}: it is not a DICOM file ({type(e).__name__}).") from e
    if "SOPClassUID" not in ds and "Rows" not in ds:
        raise ReadError(f"Cannot open {name}: it is not a DICOM file (no DICOM header found).")
    return ds


def _first(item: Any, *names: str) -> Any:
    """Walk nested sequences' first items, e.g. _first(ds, 'SharedFunctionalGroupsSequence', ...)."""
    for n in names:
        seq = item.get(n) if item is not None else None
        if not seq:
            return None
        item = seq[0]
    return item


def _group_item(ds: Dataset, seq_name: str, frame: int = 0) -> Any:
    """A functional-group macro item: shared first, else the given frame's."""
    return _first(ds, "SharedFunctionalGroupsSequence", seq_name) or (
        _first(ds.PerFrameFunctionalGroupsSequence[frame], seq_name)
        if ds.get("PerFrameFunctionalGroupsSequence") else None
    )


def _check_size(ds: Dataset, name: str) -> None:
    """Refuse headers that announce more pixels than this machine could hold."""
    try:
        n = int(ds.Rows) * int(ds.Columns) * int(ds.get("NumberOfFrames", 1) or 1)
        n *= int(ds.get("SamplesPerPixel", 1) or 1) * max(int(ds.BitsAllocated) // 8, 1)
    except (AttributeError, TypeError, ValueError) as e:
        raise ReadError(f"Cannot read {name}: the image size tags are missing or invalid ({e}).") from e
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 2**34
    if n <= 0 or 4 * n > ram:
        raise ReadError(f"Cannot read {name}: its header announces {n} bytes of pixels, more than "
                        "this computer can hold (or a corrupt header).")


def decode_pixels(ds: Dataset, path: str | os.PathLike) -> np.ndarray:
    """``ds.pixel_array`` (YBR converted to RGB) with clear errors for every failure."""
    name = os.path.basename(os.fspath(path))
    if "PixelData" not in ds:
        raise ReadError(f"Cannot read {name}: it has no pixel data (only integer Pixel Data is supported).")
    check_decoder(ds, path)
    _check_size(ds, name)
    try:
        return ds.pixel_array
    except Exception as e:  # noqa: BLE001
        if is_decoder_error(e):
            raise ReadError(missing_decoder_message(path, ds.file_meta.TransferSyntaxUID)) from e
        raise ReadError(
            f"Cannot read {name}: the pixel data is truncated or corrupt ({type(e).__name__}: {e}); "
            "copy the file again from its source."
        ) from e


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    if rgb.dtype == np.uint8:
        return rgb
    if rgb.dtype.itemsize == 2 and rgb.max() > 255:  # 16-bit palette entries
        return (rgb >> 8).astype(np.uint8)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    """(row spacing = y, column spacing = x) in mm, from the image or ultrasound regions."""
    item = _group_item(ds, "PixelMeasuresSequence")
    for src in (item, ds):
        ps = src.get("PixelSpacing") if src is not None else None
        if ps and len(ps) == 2:
            return float(ps[0]), float(ps[1])
    for region in ds.get("SequenceOfUltrasoundRegions", []) or []:
        if region.get("RegionSpatialFormat") == 1 and region.get("PhysicalUnitsXDirection") == 3 \
                and region.get("PhysicalUnitsYDirection") == 3:
            return float(region.PhysicalDeltaY) * 10.0, float(region.PhysicalDeltaX) * 10.0
    ps = ds.get("ImagerPixelSpacing")
    if ps and len(ps) == 2:
        return float(ps[0]), float(ps[1])
    return None


def orientation_matrix(ds: Dataset) -> np.ndarray:
    """3x3 ITK direction: columns are the row cosine (x), column cosine (y) and normal."""
    item = _group_item(ds, "PlaneOrientationSequence")
    iop = (item.get("ImageOrientationPatient") if item is not None else None) or ds.get("ImageOrientationPatient")
    if not iop or len(iop) != 6:
        return np.eye(3)
    row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    normal = np.cross(row, col)
    if not np.isclose(np.linalg.norm(normal), 1.0, atol=1e-3):
        return np.eye(3)
    return np.column_stack([row, col, normal])


def _frame_positions(ds: Dataset, n: int) -> np.ndarray | None:
    seq = ds.get("PerFrameFunctionalGroupsSequence")
    if not seq or len(seq) != n:
        return None
    pos = [_first(f, "PlanePositionSequence") for f in seq]
    if any(p is None or not p.get("ImagePositionPatient") for p in pos):
        return None
    return np.array([[float(v) for v in p.ImagePositionPatient] for p in pos])


def _frame_time_ms(ds: Dataset) -> float | None:
    for key in ("FrameTime",):
        if ds.get(key):
            return float(ds.get(key))
    if ds.get("RecommendedDisplayFrameRate"):
        return 1000.0 / float(ds.RecommendedDisplayFrameRate)
    return None


def _grayscale(arr: np.ndarray, ds: Dataset, frames: int) -> np.ndarray:
    """Modality LUT, from the top level or the (shared / per-frame) functional groups."""
    if "RescaleSlope" in ds or "ModalityLUTSequence" in ds or frames == 1 and not \
            ds.get("SharedFunctionalGroupsSequence"):
        return to_modality_units(arr, ds)
    shared = _first(ds, "SharedFunctionalGroupsSequence", "PixelValueTransformationSequence")
    if shared is not None:
        return to_modality_units(arr, shared)
    per = ds.get("PerFrameFunctionalGroupsSequence") or []
    items = [_first(f, "PixelValueTransformationSequence") for f in per]
    if len(items) != frames or any(i is None for i in items):
        return arr
    params = {rescale_params(i) for i in items}
    if len(params) == 1:
        return to_modality_units(arr, items[0])
    return np.stack([to_modality_units(arr[k], items[k]).astype(np.float32) for k in range(frames)])


def _window(ds: Dataset) -> list[tuple[float, float]]:
    wins = parse_windows(ds)
    if not wins:
        item = _group_item(ds, "FrameVOILUTSequence")
        wins = parse_windows(item) if item is not None else []
    return wins


def read_dicom_file(path: str | os.PathLike) -> MedicalImage:
    """Read one DICOM file (single- or multi-frame image) into a :class:`MedicalImage`."""
    path = os.fspath(path)
    name = os.path.basename(path)
    ds = read_dicom_dataset(path)
    check_is_image(ds, path)
    arr = decode_pixels(ds, path)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    spp = int(ds.get("SamplesPerPixel", 1) or 1)

    rgb = False
    if photometric == "PALETTE COLOR":
        arr, rgb = _to_uint8(apply_color_lut(arr, ds)), True
    elif spp == 3:
        arr, rgb = _to_uint8(arr), True
    elif spp != 1:
        raise ReadError(f"Cannot read {name}: {spp} samples per pixel are not supported.")
    else:
        arr = _grayscale(arr, ds, frames)
    if frames > 1 and arr.shape[0] != frames:
        raise ReadError(f"Cannot read {name}: expected {frames} frames, decoded shape {arr.shape}.")

    modality = str(ds.get("Modality", "") or "")
    sop_name = getattr(ds.get("SOPClassUID"), "name", "")
    direction = orientation_matrix(ds)
    ps = _pixel_spacing(ds) or (1.0, 1.0)
    ipp = ds.get("ImagePositionPatient")
    origin3 = np.array([float(v) for v in ipp]) if ipp and len(ipp) == 3 else np.zeros(3)
    meta: dict[str, Any] = {
        "source": path, "tags": key_tags(ds), "photometric": photometric,
        "sop_instance_uids": [str(ds.get("SOPInstanceUID", ""))], "source_files": [path],
    }
    thickness = float(ds.get("SpacingBetweenSlices") or ds.get("SliceThickness") or 1.0)

    if frames == 1:
        axes: tuple[str, ...] = ("y", "x")
        spacing = ps
        dz = thickness
    elif modality in _VOLUME_MODALITIES or "Enhanced" in sop_name or _frame_positions(ds, frames) is not None:
        axes = ("z", "y", "x")
        positions = _frame_positions(ds, frames)
        dz = thickness
        if positions is not None:
            order = np.argsort(positions @ direction[:, 2], kind="stable")
            if not np.array_equal(order, np.arange(frames)):
                arr = arr[order]
                meta["frame_order"] = order.tolist()
            origin3 = positions[order[0]]
            steps = np.diff(positions[order] @ direction[:, 2])
            if steps.size and steps.mean() > 0:
                dz = float(steps.mean())
        spacing = (dz, *ps)
    else:
        axes, spacing, dz = ("t", "y", "x"), (1.0, *ps), 1.0
        ft = _frame_time_ms(ds)
        if ft:
            meta["frame_time_ms"] = ft

    origin = (*([0.0] if axes[0] == "t" else [origin3[2]] if len(axes) == 3 else []), origin3[1], origin3[0])
    wins = _window(ds) if not rgb else []
    if wins:
        meta["windows"] = [list(w) for w in wins]
    n_z = frames if axes[0] == "z" else 1
    geometry = {
        "size": [arr.shape[-2 if rgb else -1], arr.shape[-3 if rgb else -2], n_z],
        "spacing": [ps[1], ps[0], dz],
        "origin": origin3.tolist() if axes[0] != "t" else [0.0, 0.0, 0.0],
        "direction": direction.ravel().tolist() if axes[0] != "t" else np.eye(3).ravel().tolist(),
        "flip": [],
    }
    if axes[0] == "t":
        origin = (0.0, 0.0, 0.0)
    return MedicalImage(
        data=arr, spacing=tuple(spacing), origin=origin, direction=direction, axes=axes,
        modality=modality, window=wins[0] if wins else None, name=layer_name(ds, path, series=False),
        rgb=rgb, gray=grayscale_uint8(arr) if rgb else None, geometry=geometry, metadata=meta,
    )
