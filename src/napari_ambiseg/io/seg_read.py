"""DICOM-SEG -> labels (BINARY / LABELMAP) or 0..1 maps (FRACTIONAL), aligned with the source.

Where the frames go, in order of preference:

1. **On the source grid** (exact) when the referenced series is found beside the SEG (its own
   folder or a subfolder, the parent folder or another of its subfolders; matched by
   SeriesInstanceUID with GDCM and by SOPInstanceUID) and has the SEG's rows, columns and
   orientation: each frame goes to the slice
   of the source instance (and frame) it references, or else to the slice at its position. The
   result has the source's shape and geometry, exactly as :func:`read_image` gives the source,
   and the source files in its metadata, so it can be saved again as DICOM-SEG.
2. **On the SEG's own positions** otherwise (Per-frame PlanePositionSequence, shared
   orientation and pixel spacing): slices from the lowest to the highest position along the
   slice normal (same display rule as the DICOM readers: sorted by position, not flipped).
   This is the source grid when the SEG has every frame (as the SEGs napari-ambiseg writes);
   a SEG with only some frames spans only the segmented slices (same world positions, smaller
   array). Such labels save as NIfTI/NRRD/MHA but not as DICOM-SEG (no source files).

Label values: SEGs written by napari-ambiseg give back the original values (kept in each
segment's TrackingID ``"label <value>"``); other SEGs give segment numbers. Overlapping
segments: the higher segment number wins. A FRACTIONAL SEG gives one float32 image (0..1) per
segment.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import iter_pixels

from ..errors import ReadError
from .dicom_file import _frame_positions, _pixel_spacing, orientation_matrix, read_dicom_dataset, read_dicom_file
from .dicom_seg import MANUFACTURER, tracking_value
from .dicom_tags import SEG_SOP_CLASSES, check_decoder, is_decoder_error, key_tags, layer_name, missing_decoder_message
from .geometry import display_geometry
from .sitk_io import quiet_itk
from .volume import MedicalImage

#: subfolders of the SEG's folder (and of its parent) searched for its source series, at most
MAX_NEARBY_FOLDERS = 64
_LABELMAP = "1.2.840.10008.5.1.4.1.1.66.7"
_POSITION_TOL = 0.01  # mm, in-plane / along the normal
_SOURCE_HEADER_TAGS = ["SOPInstanceUID", "ImagePositionPatient", "ImageOrientationPatient", "Rows", "Columns"]


def is_dicom_seg(ds: Dataset) -> bool:
    return str(ds.get("SOPClassUID", "")) in SEG_SOP_CLASSES


def is_dicom_seg_file(path: str | os.PathLike) -> bool:
    """True for a DICOM Segmentation (binary, fractional or label map) file."""
    try:
        return is_dicom_seg(read_dicom_dataset(path, stop_before_pixels=True, specific_tags=["SOPClassUID"]))
    except ReadError:
        return False


@dataclass
class _Grid:
    """Where the labels are drawn: ITK geometry (x, y, z), display dims, source metadata."""

    geometry: dict[str, Any]
    ndim: int
    metadata: dict[str, Any] = field(default_factory=dict)
    slot_of: dict[tuple[str, int | None], int] = field(default_factory=dict)  # (uid, frame) -> slice
    modality: str = ""

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.geometry["size"][::-1])

    def slice_at(self, position: np.ndarray) -> int | None:
        """Index of the slice at ``position`` (LPS), or None off the grid."""
        d = np.asarray(self.geometry["direction"], float).reshape(3, 3)
        offset = (np.asarray(position, float) - np.asarray(self.geometry["origin"], float)) @ d
        k = offset[2] / self.geometry["spacing"][2]
        if abs(offset[0]) > _POSITION_TOL or abs(offset[1]) > _POSITION_TOL:
            return None
        i = int(round(k))
        if abs(k - i) * self.geometry["spacing"][2] > max(_POSITION_TOL, 0.05 * self.geometry["spacing"][2]):
            return None
        return i if 0 <= i < self.shape[0] else None


# --- what the SEG says about each frame ---------------------------------------------------

def _macro(ds: Dataset, frame: int, name: str) -> Any:
    per = ds.get("PerFrameFunctionalGroupsSequence")
    for groups in ((per[frame] if per and frame < len(per) else None),
                   (ds.SharedFunctionalGroupsSequence[0] if ds.get("SharedFunctionalGroupsSequence") else None)):
        seq = groups.get(name) if groups is not None else None
        if seq:
            return seq[0]
    return None


def _frame_segments(ds: Dataset, n: int) -> list[int]:
    """Segment number of each frame (0 for LABELMAP: pixel values are the segment numbers)."""
    if str(ds.SOPClassUID) == _LABELMAP:
        return [0] * n
    out = []
    for k in range(n):
        item = _macro(ds, k, "SegmentIdentificationSequence")
        if item is None or "ReferencedSegmentNumber" not in item:
            raise ReadError(f"Cannot read DICOM-SEG: frame {k + 1} names no segment (SegmentIdentificationSequence).")
        out.append(int(item.ReferencedSegmentNumber))
    return out


def _frame_sources(ds: Dataset, n: int) -> list[tuple[str, int | None] | None]:
    """(ReferencedSOPInstanceUID, ReferencedFrameNumber or None) of each frame's first source."""
    out: list[tuple[str, int | None] | None] = []
    for k in range(n):
        item = _macro(ds, k, "DerivationImageSequence")
        src = item.get("SourceImageSequence") if item is not None else None
        if not src:
            out.append(None)
            continue
        frame = src[0].get("ReferencedFrameNumber")
        if isinstance(frame, (list, MultiValue)):
            frame = frame[0] if len(frame) else None
        frame = int(frame) if frame not in (None, "") else None
        out.append((str(src[0].ReferencedSOPInstanceUID), frame))
    return out


def _segment_values(ds: Dataset) -> tuple[dict[int, int], dict[str, str]]:
    """segment number -> label value, and value -> segment label (for the metadata)."""
    segments = list(ds.get("SegmentSequence") or [])
    numbers = [int(s.SegmentNumber) for s in segments]
    values = dict(zip(numbers, numbers))
    if str(ds.get("Manufacturer", "")) == MANUFACTURER:
        ours = {int(s.SegmentNumber): tracking_value(s.get("TrackingID")) for s in segments}
        kept = [v for v in ours.values() if v is not None]
        if kept and len(set(kept)) == len(kept):
            values = {n: (v if v is not None else n) for n, v in ours.items()}
            if len(set(values.values())) != len(values):
                values = dict(zip(numbers, numbers))
    names = {str(values[int(s.SegmentNumber)]): str(s.get("SegmentLabel", "")) for s in segments
             if values[int(s.SegmentNumber)] != 0}  # a label map's segment 0 is the background
    return values, names


def _model_made(ds: Dataset, values: dict[int, int], data: np.ndarray) -> dict[str, Any]:
    """``segment_provenance`` of a SEG written by napari-ambiseg: its SEMIAUTOMATIC segments
    (made by the model) by label value, named and fingerprinted as read, so that saving the
    labels again keeps them SEMIAUTOMATIC and sees edits (:mod:`napari_ambiseg.provenance`).
    Other SEGs' algorithms are not ours to claim: nothing is recorded."""
    from ..provenance import READ_KEY, SEMIAUTOMATIC, entry

    if str(ds.get("Manufacturer", "")) != MANUFACTURER:
        return {}
    made = {}
    for s in ds.get("SegmentSequence") or []:
        value = values.get(int(s.SegmentNumber), 0)
        if value and str(s.get("SegmentAlgorithmType", "")).upper() == SEMIAUTOMATIC and (data == value).any():
            made[str(value)] = entry(data, value, "", name=str(s.get("SegmentLabel", "")))
    return {READ_KEY: made} if made else {}


# --- the source series beside the SEG -------------------------------------------------------

def _subfolders(folder: str, skip: str = "") -> list[str]:
    try:
        return sorted(e.path for e in os.scandir(folder) if e.is_dir() and not e.name.startswith(".")
                      and e.path != skip)
    except OSError:
        return []


def _search_folders(path: str) -> list[str]:
    """The SEG's folder, its subfolders, its parent folder and the parent's other subfolders."""
    here = os.path.dirname(os.path.abspath(path))
    parent = os.path.dirname(here)
    folders = [here, *_subfolders(here)[:MAX_NEARBY_FOLDERS]]
    if parent and parent != here:
        folders += [parent, *_subfolders(parent, skip=here)[:MAX_NEARBY_FOLDERS]]
    return folders


def _referenced(ds: Dataset) -> list[tuple[str, set[str]]]:
    out = []
    for ref in ds.get("ReferencedSeriesSequence") or []:
        uids = {str(i.ReferencedSOPInstanceUID) for i in ref.get("ReferencedInstanceSequence") or []}
        if ref.get("SeriesInstanceUID") and uids:
            out.append((str(ref.SeriesInstanceUID), uids))
    return out


def candidate_series(ds: Dataset, path: str | os.PathLike) -> Iterator[tuple[list[str], set[str]]]:
    """(files in slice order, as the series reader sorts them; SOPInstanceUIDs the SEG refers to)
    for each referenced series GDCM finds near the SEG."""
    refs = _referenced(ds)
    if not refs:
        return
    for folder in _search_folders(os.fspath(path)):
        with quiet_itk():
            try:
                ids = set(sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder))
            except RuntimeError:
                continue
            found = [(list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, uid)), wanted)
                     for uid, wanted in refs if uid in ids]
        yield from found


def _source_grid(files: list[str]) -> _Grid:
    """The grid :func:`read_image` gives the source, from headers (a single file is read whole)."""
    if len(files) == 1:
        image = read_dicom_file(files[0])
        if image.axes[0] == "t":
            raise ReadError("the source frames are time points, not slices")
        meta = {k: image.metadata[k] for k in ("source_files", "sop_instance_uids", "tags", "frame_order")
                if k in image.metadata}
        uid = meta["sop_instance_uids"][0]
        grid = _Grid(dict(image.geometry), len(image.axes), meta, modality=image.modality)
        order = meta.get("frame_order") or list(range(grid.shape[0]))
        for i, f in enumerate(order):
            grid.slot_of[(uid, int(f) + 1)] = i
        if grid.shape[0] == 1:
            grid.slot_of[(uid, None)] = 0
        return grid
    first = read_dicom_dataset(files[0], stop_before_pixels=True)
    headers = [first] + [read_dicom_dataset(f, True, _SOURCE_HEADER_TAGS) for f in files[1:]]
    if int(first.get("NumberOfFrames", 1) or 1) > 1 or any("ImagePositionPatient" not in h for h in headers):
        raise ReadError("its files are not single slices with positions")
    direction = orientation_matrix(first)
    positions = np.array([[float(v) for v in h.ImagePositionPatient] for h in headers])
    steps = np.diff(positions @ direction[:, 2])
    ps = _pixel_spacing(first) or (1.0, 1.0)
    geometry = {"size": [int(first.Columns), int(first.Rows), len(files)],
                "spacing": [ps[1], ps[0], float(np.mean(steps))], "origin": positions[0].tolist(),
                "direction": direction.ravel().tolist(), "flip": []}
    uids = [str(h.SOPInstanceUID) for h in headers]
    meta = {"source_files": list(files), "sop_instance_uids": uids, "tags": key_tags(first)}
    grid = _Grid(geometry, 3, meta, modality=str(first.get("Modality", "")))
    grid.slot_of = {(u, None): i for i, u in enumerate(uids)}
    return grid


# --- the SEG's own grid -----------------------------------------------------------------------

def _slice_step(levels: np.ndarray, hint: float | None) -> float:
    """Step of the grid through the frame levels (mm along the normal, sorted, first 0)."""
    diffs = np.diff(levels)
    for dz in ([hint] if hint and hint > 0 else []) + [float(diffs.min())]:
        multiples = diffs / dz
        if np.abs(multiples - np.round(multiples)).max() * dz <= max(_POSITION_TOL, 0.05 * dz):
            # every slice present: the series reader's mean step
            return float(diffs.mean()) if np.allclose(multiples, 1.0, atol=0.05) else dz
    raise ReadError("its frames are not regularly spaced and its source series was not found beside it; "
                    "put the SEG in or next to its source series' folder")


def _own_grid(ds: Dataset, n: int) -> _Grid:
    """Grid through the SEG's own frame positions (lowest position along the normal first)."""
    positions = _frame_positions(ds, n)
    if positions is None:
        raise ReadError("its frames have no positions (PlanePositionSequence) and its source series "
                        "was not found beside it; put the SEG in or next to its source series' folder")
    direction = orientation_matrix(ds)
    along = positions @ direction[:, 2]
    first = int(np.argmin(along))
    if np.abs((positions - positions[first]) @ direction[:, :2]).max() > _POSITION_TOL:
        raise ReadError("its frames do not lie on one stack of slices")
    ordered = np.sort(along - along[first])
    levels = ordered[np.concatenate([[True], np.diff(ordered) > _POSITION_TOL])]
    measures = _macro(ds, 0, "PixelMeasuresSequence")
    hint = measures.get("SpacingBetweenSlices") if measures is not None else None
    ps = _pixel_spacing(ds) or (1.0, 1.0)
    if levels.size == 1:
        thickness = hint or (measures.get("SliceThickness") if measures is not None else None)
        dz, nz = float(thickness or 1.0), 1
    else:
        dz = _slice_step(levels, float(hint) if hint else None)
        nz = int(round(levels[-1] / dz)) + 1
        if nz > 20 * levels.size + 1000:
            raise ReadError(f"its {levels.size} frame positions span {nz} slices; put the SEG in or next "
                            "to its source series' folder")
    geometry = {"size": [int(ds.Columns), int(ds.Rows), nz], "spacing": [ps[1], ps[0], dz],
                "origin": positions[first].tolist(), "direction": direction.ravel().tolist(), "flip": []}
    return _Grid(geometry, 2 if nz == 1 else 3)


# --- reading ----------------------------------------------------------------------------------

def _frames(path: str, ds: Dataset, order: list[int]) -> Any:
    """Decoded frames ``order[0], order[1], ...`` one at a time (raw stored values)."""
    check_decoder(ds, path)
    try:
        yield from iter_pixels(path, raw=True, indices=order)
    except Exception as e:  # noqa: BLE001
        if is_decoder_error(e):
            raise ReadError(missing_decoder_message(path, ds.file_meta.TransferSyntaxUID)) from e
        raise ReadError(f"Cannot read {os.path.basename(path)}: the segmentation frames are truncated or "
                        f"corrupt ({type(e).__name__}: {e}).") from e


def _placement(ds: Dataset, grid: _Grid, n: int, sources: list, positions: np.ndarray | None) -> list[int] | None:
    """Slice index of each frame on ``grid``, or None if a frame does not fit it."""
    if (int(ds.Rows), int(ds.Columns)) != grid.shape[1:]:
        return None
    same_plane = np.allclose(orientation_matrix(ds)[:, :2],
                             np.asarray(grid.geometry["direction"]).reshape(3, 3)[:, :2], atol=1e-3)
    out = []
    for k in range(n):
        ref = sources[k]
        slot = None
        if ref is not None and same_plane:
            slot = grid.slot_of.get(ref, grid.slot_of.get((ref[0], None)))
        if slot is None and positions is not None and same_plane:
            slot = grid.slice_at(positions[k])
        if slot is None:
            return None
        out.append(slot)
    return out


def _fill(path: str, ds: Dataset, slots: list[int], segments: list[int], shape: tuple, values: dict[int, int],
          fractional: bool) -> dict[int, np.ndarray]:
    """Decode the frames into one label volume, or one 0..1 volume per segment (fractional)."""
    order = sorted(range(len(slots)), key=lambda k: segments[k])  # higher segment number wins overlaps
    if fractional:
        top = float(ds.get("MaximumFractionalValue") or 255)
        out = {s: np.zeros(shape, np.float32) for s in sorted(set(segments))}
        for k, frame in zip(order, _frames(path, ds, order)):
            out[segments[k]][slots[k]] = np.asarray(frame, np.float32) / top
        return out
    lut = np.zeros(max([0, *values, *segments]) + 1, np.int64)
    lut[list(values)] = list(values.values())
    lut[[s for s in set(segments) if s not in values]] = [s for s in set(segments) if s not in values]
    hi = int(lut.max())
    labels = np.zeros(shape, np.uint8 if hi < 256 else np.uint16 if hi < 65536 else np.uint32)
    lut = lut.astype(labels.dtype)
    for k, frame in zip(order, _frames(path, ds, order)):
        frame, target = np.asarray(frame), labels[slots[k]]
        if segments[k] == 0:  # LABELMAP: the pixel values are segment numbers
            mask = (frame > 0) & (frame < lut.size)
            target[mask] = lut[frame[mask]]
        else:
            target[frame > 0] = lut[segments[k]]
    return {0: labels}


def _locate(ds: Dataset, path: str, n: int) -> tuple[_Grid, list[int], str | None]:
    """The grid and the slice of each frame: the source's grid when found, else the SEG's own.

    The third item says why the source's grid was not used (None when it was).
    """
    sources, positions = _frame_sources(ds, n), _frame_positions(ds, n)
    note = "its source series was not found beside it"
    for files, wanted in candidate_series(ds, path):
        try:
            grid = _source_grid(files)
        except ReadError as e:
            note = f"its source series could not be used ({e})"
            continue
        if not wanted <= set(grid.metadata["sop_instance_uids"]):
            continue  # some of the instances it refers to are elsewhere
        slots = _placement(ds, grid, n, sources, positions)
        if slots is not None:
            return grid, slots, None
        note = "its frames are not on its source series' pixel grid"
    grid = _own_grid(ds, n)
    slots = _placement(ds, grid, n, [None] * n, positions)
    if slots is None:
        raise ReadError("its frames could not be placed on one grid")
    return grid, slots, note


def read_dicom_seg(path: str | os.PathLike) -> list[MedicalImage]:
    """Read a DICOM-SEG: one Labels image (BINARY/LABELMAP) or one 0..1 image per segment (FRACTIONAL)."""
    path = os.fspath(path)
    name = os.path.basename(path)
    ds = read_dicom_dataset(path, stop_before_pixels=True)
    n = int(ds.get("NumberOfFrames", 1) or 1)
    fractional = str(ds.get("SegmentationType", "")).upper() == "FRACTIONAL"
    try:
        segments = _frame_segments(ds, n)
        values, names = _segment_values(ds)
        grid, slots, note = _locate(ds, path, n)
    except ReadError as e:
        msg = str(e)
        raise ReadError(msg if msg.startswith("Cannot") else f"Cannot read DICOM-SEG {name}: {msg}.") from e
    volumes = _fill(path, ds, slots, segments, grid.shape, values, fractional)
    spacing, origin, direction = display_geometry(grid.geometry, grid.ndim)
    axes = ("z", "y", "x")[-grid.ndim:]
    meta: dict[str, Any] = {"source": path, "dicom_seg": path, **grid.metadata}
    if note:
        note = (f"DICOM-SEG {name}: {note}; the labels are placed on the SEG's own frame positions "
                "(the source grid when the SEG has every frame) and can be saved as NIfTI/NRRD/MHA, not as "
                "DICOM-SEG")
        meta["warnings"] = [note]
        warnings.warn(note, stacklevel=2)
    base = layer_name(ds, path, series=False)
    images = []
    for seg, vol in volumes.items():
        data = vol if grid.ndim == 3 else vol[0]
        if fractional:
            label = next((str(s.get("SegmentLabel", "")) for s in ds.SegmentSequence
                          if int(s.SegmentNumber) == seg), "") or f"segment {seg}"
            images.append(MedicalImage(
                data=data, spacing=spacing, origin=origin, direction=direction, axes=axes,
                modality=grid.modality, window=(0.5, 1.0), name=base if base.endswith(label) else f"{base} {label}",
                geometry=dict(grid.geometry), metadata={**meta, "segment_label": label}))
        else:
            images.append(MedicalImage(
                data=data, spacing=spacing, origin=origin, direction=direction, axes=axes,
                modality=grid.modality, name=base, is_labels=True, geometry=dict(grid.geometry),
                metadata={**meta, "segment_labels": names, **_model_made(ds, values, data)}))
    return images
