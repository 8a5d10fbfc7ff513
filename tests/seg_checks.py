"""Checks a written DICOM-SEG must pass (shared by the DICOM-SEG tests).

The Type 1 / Type 2 check uses the module tables of the DICOM standard that highdicom ships
(every root-level attribute of the SEG IOD's mandatory modules, plus Frame of Reference and
Common Instance Reference, which apply to SEGs of cross-sectional images).
"""

from __future__ import annotations

import highdicom as hd
import pydicom
from highdicom._standard_utils import get_iod_module_map, get_module_attribute_map, get_sop_class_iod_map

_ALSO_REQUIRED = ("frame-of-reference", "common-instance-reference")


def missing_attributes(ds: pydicom.Dataset) -> list[str]:
    """'<module>: <keyword> (type)' for each absent Type 1/2 or empty Type 1 root attribute."""
    iod = get_sop_class_iod_map()[str(ds.SOPClassUID)]
    table = get_module_attribute_map()
    problems = []
    for module in get_iod_module_map()[iod]:
        if module["usage"] != "M" and module["key"] not in _ALSO_REQUIRED:
            continue
        for attr in table[module["key"]]:
            if attr["path"] or attr["type"] not in ("1", "2"):
                continue
            keyword = attr["keyword"]
            if keyword not in ds or (attr["type"] == "1" and ds[keyword].is_empty):
                problems.append(f"{module['key']}: {keyword} ({attr['type']})")
    return problems


def check_seg(path, source_files, *, segments: int) -> hd.seg.Segmentation:
    """Read ``path`` with highdicom and pydicom and check it against its source files."""
    seg = hd.seg.segread(path)
    ds = pydicom.dcmread(path)
    assert missing_attributes(ds) == []
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in source_files]
    [ref] = ds.ReferencedSeriesSequence
    assert ref.SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in ref.ReferencedInstanceSequence} == \
        {s.SOPInstanceUID for s in sources}
    assert ds.StudyInstanceUID == sources[0].StudyInstanceUID
    assert ds.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    assert len(ds.SegmentSequence) == segments
    frames = sum(int(s.get("NumberOfFrames", 1) or 1) for s in sources)
    assert int(ds.NumberOfFrames) == segments * frames  # every frame, empty or not
    return seg
