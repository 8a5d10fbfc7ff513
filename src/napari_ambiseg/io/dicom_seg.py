"""Labels and agreement maps -> DICOM-SEG with highdicom, referencing the source DICOM instances.

* :func:`write_dicom_seg`: BINARY SEG, one segment per non-zero label value (numbered 1..N in
  increasing value order), labelled ``"label <value>"`` unless named; the value is kept in the
  segment's TrackingID (``"label <value>"``) so :mod:`.seg_read` gives the same values back.
  An empty volume gives one empty segment ``"no finding"`` (a SEG needs at least one).
* :func:`write_fractional_seg`: FRACTIONAL / PROBABILITY SEG (0..1 in steps of 1/255) with one
  segment, for the agreement heatmap.

Frames are tied to the source slices: the data are put back on the source grid and frame ``i``
refers to the ``i``-th file in slice order (or frame ``i`` of a multi-frame source in the
file's frame order). Every frame is written, empty or not, so the SEG spans the whole source
grid. Anonymised sources often lack Type 2 patient/study attributes; highdicom gets in-memory
copies of the headers with those attributes present and empty (the source files are never
touched).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pydicom

from .. import __version__
from ..errors import WriteError
from .atomic import atomic_output
from .dicom_file import _frame_positions
from .geometry import to_source_grid

#: Type 2 attributes of the Patient and General Study modules (PS3.3 C.7.1.1, C.7.2.1): they must
#: be present but may be empty; highdicom copies them from the source into the SEG.
TYPE2_PATIENT_STUDY = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "StudyID", "AccessionNumber",
)
#: Type 1 attributes a SEG cannot be made without (they identify what it refers to).
_REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
#: what the algorithm identification of model-made segments says
ALGORITHM_NAME = "napari-ambiseg"
MANUFACTURER = "napari-ambiseg"
NO_FINDING = "no finding"
_VALUE_ID = re.compile(r"^label (\d+)$")


def tracking_value(tracking_id: Any) -> int | None:
    """Label value kept in a segment's TrackingID by :func:`write_dicom_seg`, else None."""
    m = _VALUE_ID.match(str(tracking_id or "").strip())
    return int(m.group(1)) if m else None


def _complete_header(ds: pydicom.Dataset, name: str) -> pydicom.Dataset:
    """The header with missing Type 2 patient/study attributes added empty (in memory only)."""
    missing = [k for k in _REQUIRED_UIDS if not ds.get(k)]
    if missing:
        raise WriteError(f"Cannot write DICOM-SEG: source file {name} has no {', '.join(missing)}, "
                         "which a DICOM-SEG must refer to; save as NIfTI (.nii.gz) instead.")
    for keyword in TYPE2_PATIENT_STUDY:
        if keyword not in ds:
            setattr(ds, keyword, None)  # present, zero length
    return ds


def _source_datasets(reference: dict[str, Any]) -> list[pydicom.Dataset]:
    if not isinstance(reference, dict):
        raise WriteError("Cannot write DICOM-SEG: the reference must be the image's metadata['ambiseg'] "
                         "dict (MedicalImage.reference()).")
    files = reference.get("source_files") or []
    tags = reference.get("tags") or {}
    if not files or not reference.get("sop_instance_uids") or "SOPClassUID" not in tags:
        raise WriteError("Cannot write DICOM-SEG: the labels are not tied to a DICOM source; open the "
                         "DICOM series with napari-ambiseg and draw on it, or save as NIfTI (.nii.gz).")
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise WriteError(f"Cannot write DICOM-SEG: source file {missing[0]} is gone (moved or deleted); "
                         "open the series again from its new place.")
    # dcmread gives fresh in-memory datasets: completing them never changes the files
    datasets = [_complete_header(pydicom.dcmread(f, stop_before_pixels=True), os.path.basename(f)) for f in files]
    frames = int(datasets[0].get("NumberOfFrames", 1) or 1)
    if len(datasets) == 1 and frames > 1 and _frame_positions(datasets[0], frames) is None:
        raise WriteError(f"Cannot write DICOM-SEG: {os.path.basename(files[0])} gives no position for its "
                         "frames (no PlanePositionSequence), so a SEG cannot say which frame a mask belongs "
                         "to; save as NIfTI (.nii.gz) instead.")
    if len(datasets) > 1:
        for ds in datasets:  # often absent or stale: highdicom then writes the step between the positions
            ds.pop("SpacingBetweenSlices", None)
    return datasets


def _on_source_frames(data: np.ndarray, reference: dict[str, Any], n_files: int) -> np.ndarray:
    """Displayed-grid data -> frames in the source's order: ``(frames, rows, cols)``."""
    src = to_source_grid(np.asarray(data), reference)  # (z, y, x) on the sorted grid
    order = reference.get("frame_order")
    if order is not None:  # multi-frame source: back to the file's frame order
        unsorted = np.empty_like(src)
        unsorted[np.asarray(order)] = src
        src = unsorted
    if src.shape[0] != n_files and n_files != 1:
        raise WriteError(f"Cannot write DICOM-SEG: the source has {n_files} files but the labels "
                         f"have {src.shape[0]} slices.")
    return src


def _segment_map(src: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Label values -> segment numbers 1..N (label-map style array) and the sorted values."""
    if np.issubdtype(src.dtype, np.floating) and not np.array_equal(src, np.round(src)):
        raise WriteError("Cannot write DICOM-SEG: labels must be whole numbers; got fractional values.")
    values = [int(v) for v in np.unique(src) if v != 0]
    if values and min(values) < 0:
        raise WriteError("Cannot write DICOM-SEG: labels must be positive numbers.")
    dtype = np.uint8 if len(values) < 256 else np.uint16
    if not values:
        return np.zeros(src.shape, dtype), []
    lut = np.zeros(max(values) + 1, dtype=dtype)
    lut[values] = np.arange(1, len(values) + 1, dtype=dtype)
    return lut[src.astype(np.int64, copy=False)], values


def _algorithm(hd: Any) -> Any:
    from pydicom.sr.codedict import codes

    return hd.AlgorithmIdentificationSequence(
        name=ALGORITHM_NAME, version=__version__, family=codes.cid7162.ArtificialIntelligence)


def _named(names: Mapping[int, str] | None, value: int) -> str | None:
    name = str(names[value]).strip() if names and value in names else ""
    return name or None


def _segment_name(value: int, names: Mapping[int, str] | None, segment_label: str | None, single: bool,
                  origin: Any = None, read_back: Mapping[int, str] | None = None) -> str:
    """Given names, else what made the value (an adopted or edited model outline), else a
    name read back from a SEG, else ``segment_label``, else ``"label <value>"``."""
    name = _named(names, value) or (origin.label() if origin is not None else None) or _named(read_back, value)
    if name:
        return name
    if segment_label:
        return segment_label if single else f"{segment_label} {value}"
    return f"label {value}"


def _save(hd: Any, datasets: list, pixels: np.ndarray, descriptions: list, path: str, *,
          series_description: str, **options: Any) -> list[str]:
    try:
        seg = hd.seg.Segmentation(
            source_images=datasets, pixel_array=pixels, segment_descriptions=descriptions,
            series_instance_uid=hd.UID(), series_number=9901, sop_instance_uid=hd.UID(),
            instance_number=1, manufacturer=MANUFACTURER, manufacturer_model_name="napari-ambiseg",
            software_versions=__version__, device_serial_number="0",
            series_description=series_description, content_label="AMBISEG",
            content_description=series_description[:64], omit_empty_frames=False, **options,
        )
    except (ValueError, TypeError, AttributeError, KeyError) as e:
        raise WriteError(f"Cannot write DICOM-SEG {os.path.basename(path)}: highdicom refused the "
                         f"source ({e}); save as NIfTI (.nii.gz) instead.") from e
    with atomic_output(path) as tmp:
        seg.save_as(tmp)
    return [path]


def _single_frame(datasets: list) -> bool:
    return len(datasets) == 1 and int(datasets[0].get("NumberOfFrames", 1) or 1) == 1


def write_dicom_seg(
    labels: np.ndarray,
    path: str | os.PathLike,
    reference: dict[str, Any],
    *,
    series_description: str = "AmbiSeg labels",
    segment_labels: Mapping[int, str] | None = None,
    segment_label: str | None = None,
    from_model: bool = False,
    origins: Mapping[int, Any] | None = None,
    property_category: Any = None,
    property_type: Any = None,
) -> list[str]:
    """Write ``labels`` (drawn on the displayed image) as one BINARY DICOM-SEG file; returns ``[path]``.

    ``reference`` is the image's ``metadata["ambiseg"]`` dict (or a MedicalImage's
    ``reference()``); it must come from a DICOM file or series read by napari-ambiseg.
    Who made each value: ``origins[value]`` (a :class:`napari_ambiseg.provenance.Origin`:
    adopted from the model, adopted then edited, or manual) when given; values it does not
    list follow ``from_model`` (True: labels adopted from AmbiSeg samples). Model-made
    segments are SEMIAUTOMATIC with the algorithm identification (napari-ambiseg, its
    version, family Artificial Intelligence); the others MANUAL.
    Segment names: ``segment_labels[value]``, else the origin's (``"nodule, mode 1 (sample
    3)"``, ``"..., edited"``), else a name read back from a SEG (``reference["segment_labels"]``),
    else ``segment_label`` (``"<segment_label> <value>"`` when there are several values), else
    ``"label <value>"``.
    The segmented property defaults to SCT "Morphologically Abnormal Structure" / "Lesion".
    """
    import highdicom as hd  # slow imports: only when writing
    from pydicom.sr.codedict import codes

    category = property_category or codes.SCT.MorphologicallyAbnormalStructure
    prop_type = property_type or codes.SCT.Lesion
    path = os.fspath(path)
    datasets = _source_datasets(reference)
    mapped, values = _segment_map(_on_source_frames(labels, reference, len(datasets)))
    read_back = {int(v): str(n) for v, n in (reference.get("segment_labels") or {}).items()
                 if str(v).isdigit() and n != NO_FINDING}  # names of a SEG read back
    if _single_frame(datasets):
        mapped = mapped[0]
    kind = hd.seg.SegmentAlgorithmTypeValues
    origins = origins or {}

    def algorithm(value: int | None) -> dict[str, Any]:
        """Model-made (the value's origin, else ``from_model``): SEMIAUTOMATIC, else MANUAL."""
        origin = origins.get(value)
        if (from_model if origin is None else origin.algorithm != kind.MANUAL.value):
            return {"algorithm_type": kind.SEMIAUTOMATIC, "algorithm_identification": _algorithm(hd)}
        return {"algorithm_type": kind.MANUAL}

    entries = [(k, v, _segment_name(v, segment_labels, segment_label, len(values) == 1, origins.get(v), read_back),
                f"label {v}") for k, v in enumerate(values, start=1)]
    entries = entries or [(1, None, NO_FINDING, NO_FINDING)]
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=k, segment_label=name, segmented_property_category=category,
            segmented_property_type=prop_type, tracking_uid=hd.UID(), tracking_id=tracking_id, **algorithm(v),
        )
        for k, v, name, tracking_id in entries
    ]
    return _save(hd, datasets, mapped, descriptions, path, series_description=series_description,
                 segmentation_type=hd.seg.SegmentationTypeValues.BINARY)


def write_fractional_seg(
    probabilities: np.ndarray,
    path: str | os.PathLike,
    reference: dict[str, Any],
    *,
    segment_label: str = "agreement",
    series_description: str = "AmbiSeg agreement",
    property_category: Any = None,
    property_type: Any = None,
) -> list[str]:
    """Write a 0..1 map (e.g. the agreement heatmap, displayed grid) as a FRACTIONAL SEG; ``[path]``.

    PROBABILITY type, 8-bit (MaximumFractionalValue 255: values are rounded to steps of 1/255),
    one AUTOMATIC segment named ``segment_label`` with the napari-ambiseg algorithm
    identification, every source frame written.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    path = os.fspath(path)
    prob = np.asarray(probabilities)
    if prob.dtype == bool or not np.issubdtype(prob.dtype, np.number):
        raise WriteError(f"Cannot write {os.path.basename(path)}: the agreement map must be numbers in 0..1.")
    prob = prob.astype(np.float32, copy=False)
    if prob.size and (not np.all(np.isfinite(prob)) or prob.min() < -1e-6 or prob.max() > 1 + 1e-6):
        raise WriteError(f"Cannot write {os.path.basename(path)}: a FRACTIONAL DICOM-SEG holds values "
                         "0..1; this map has values outside that range (or NaN).")
    datasets = _source_datasets(reference)
    frames = np.clip(_on_source_frames(prob, reference, len(datasets)), 0.0, 1.0)[..., np.newaxis]
    description = hd.seg.SegmentDescription(
        segment_number=1, segment_label=segment_label,
        segmented_property_category=property_category or codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=property_type or codes.SCT.Lesion,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=_algorithm(hd), tracking_uid=hd.UID(), tracking_id=segment_label,
    )
    return _save(hd, datasets, frames, [description], path, series_description=series_description,
                 segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL,
                 fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY,
                 max_fractional_value=255)
