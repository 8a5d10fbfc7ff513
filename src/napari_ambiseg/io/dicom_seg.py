"""Labels -> DICOM-SEG with highdicom, referencing the source DICOM instances.

Each distinct non-zero label value becomes one segment (numbered 1..N in increasing label
order, labelled ``"label <value>"``). Frames are tied to the source slices: the labels are put
back on the source grid and frame ``i`` refers to the ``i``-th file in slice order (or frame
``i`` of a multi-frame source in the file's frame order).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pydicom

from .. import __version__
from ..errors import WriteError
from .atomic import atomic_output
from .geometry import to_source_grid


def _source_datasets(reference: dict[str, Any]) -> list[pydicom.Dataset]:
    files = reference.get("source_files") or []
    tags = reference.get("tags") or {}
    if not files or not reference.get("sop_instance_uids") or "SOPClassUID" not in tags:
        raise WriteError("Cannot write DICOM-SEG: the labels are not tied to a DICOM source; open the "
                         "DICOM series with napari-ambiseg and draw on it, or save as NIfTI (.nii.gz).")
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise WriteError(f"Cannot write DICOM-SEG: source file {missing[0]} is gone (moved or deleted); "
                         "open the series again from its new place.")
    return [pydicom.dcmread(f, stop_before_pixels=True) for f in files]


def _segment_map(src: np.ndarray) -> tuple[np.ndarray, list[int]]:
    values = [int(v) for v in np.unique(src) if v != 0]
    if not values:
        raise WriteError("Cannot write DICOM-SEG: the labels layer is empty (nothing is painted).")
    if min(values) < 0:
        raise WriteError("Cannot write DICOM-SEG: labels must be positive numbers.")
    dtype = np.uint8 if len(values) < 256 else np.uint16
    lut = np.zeros(max(values) + 1, dtype=dtype)
    lut[values] = np.arange(1, len(values) + 1, dtype=dtype)
    return lut[src.astype(np.int64, copy=False)], values


def write_dicom_seg(
    labels: np.ndarray,
    path: str | os.PathLike,
    reference: dict[str, Any],
    *,
    series_description: str = "AmbiSeg labels",
    property_category: Any = None,
    property_type: Any = None,
) -> list[str]:
    """Write ``labels`` (drawn on the displayed image) as one DICOM-SEG file; returns ``[path]``.

    ``reference`` is the image's ``metadata["ambiseg"]`` dict (or a MedicalImage's
    ``reference()``); it must come from a DICOM file or series read by napari-ambiseg.
    The segmented property defaults to SCT "Morphologically Abnormal Structure" / "Lesion".
    """
    import highdicom as hd  # slow imports: only when writing
    from pydicom.sr.codedict import codes

    property_category = property_category or codes.SCT.MorphologicallyAbnormalStructure
    property_type = property_type or codes.SCT.Lesion
    path = os.fspath(path)
    datasets = _source_datasets(reference)
    src = to_source_grid(np.asarray(labels), reference)  # (z, y, x) on the sorted grid
    order = reference.get("frame_order")
    if order is not None:  # multi-frame source: back to the file's frame order
        unsorted = np.empty_like(src)
        unsorted[np.asarray(order)] = src
        src = unsorted
    mapped, values = _segment_map(src)
    if len(datasets) == 1 and int(datasets[0].get("NumberOfFrames", 1) or 1) == 1:
        mapped = mapped[0]
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=k, segment_label=f"label {v}", segmented_property_category=property_category,
            segmented_property_type=property_type,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            tracking_uid=hd.UID(), tracking_id=f"label {v}",
        )
        for k, v in enumerate(values, start=1)
    ]
    try:
        seg = hd.seg.Segmentation(
            source_images=datasets, pixel_array=mapped,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=9901,
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer="napari-ambiseg",
            manufacturer_model_name="napari-ambiseg", software_versions=__version__,
            device_serial_number="0", series_description=series_description,
        )
    except (ValueError, TypeError, AttributeError, KeyError) as e:
        raise WriteError(f"Cannot write DICOM-SEG {os.path.basename(path)}: highdicom refused the "
                         f"source ({e}); save as NIfTI (.nii.gz) instead.") from e
    with atomic_output(path) as tmp:
        seg.save_as(tmp)
    return [path]
