"""Who made each label value of a labels layer: adopted from the model, adopted then edited,
or not from the model (drawn by hand, or from elsewhere). Qt-free; what DICOM-SEG writing
states per segment (``SegmentAlgorithmType`` and ``SegmentLabel``, docs/io.md).

* After every adoption (:func:`napari_ambiseg.widgets.recovery.protect` runs after each
  adopt), :func:`record_adoption` stores under ``metadata["ambiseg_segments"]["values"]``
  the label value the adoption wrote, what was adopted (``metadata["ambiseg_adopted"]
  ["what"]``, e.g. ``"mode 1 (sample 3)"``) and a fingerprint of that value's voxels. The
  value is the adoption record's ``label`` when it names one, else the highest value in the
  layer (the gallery adopts into a new layer as 1, into an existing one as a new value above
  all others), unless that value was painted by hand on the layer (an adoption that wrote no
  pixel, all of them already labelled, leaves the highest value a hand-painted one): then
  nothing is attributed to that adoption. Painted by hand = the brush's label (the layer's
  ``selected_label``) at a paint event while the layer is protected; a layer painted before
  its first adoption is not followed, so a first adoption into it that writes no pixel would
  be attributed to its highest value (the gallery reports "0 pixels written"). An adoption
  record naming its ``label`` removes the guess.
* At saving, :func:`origins` compares each value's voxels with its fingerprint: the same ->
  ``adopted``; changed since (painted over, erased, grown, even one voxel) -> ``edited``;
  a value with no record -> ``manual``. An undo back to the adopted voxels is ``adopted``
  again: the content decides, not the edit history.
* DICOM (PS3.3 C.8.20.2): SEMIAUTOMATIC is a "calculated segment with user assistance",
  MANUAL a "user-entered segment". An adopted mode is calculated (the user placed the
  prompt and chose the mode): SEMIAUTOMATIC, named ``"nodule, <what>"``. Edited by hand it
  is still the model's outline with the user's help: SEMIAUTOMATIC, named
  ``"nodule, <what>, edited"``. A value the model never wrote is MANUAL.
* A DICOM-SEG written by napari-ambiseg and read back (:mod:`.io.seg_read`) carries the same
  record for its SEMIAUTOMATIC segments (``metadata["ambiseg"]["segment_provenance"]``), so
  saving it again keeps them true.

A layer with an adoption record but no ``ambiseg_segments`` (adopted by code that did not
call ``protect``) gets no per-value answer (:func:`origins` returns ``{}``): the writers then
fall back to marking every value as adopted (``from_model``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .layer_contract import (
    ADOPTED_KEY,
    METADATA_KEY,
    SEGMENT_PROVENANCE_KEY,
    SEGMENTS_KEY,
    record,
)

KEY = SEGMENTS_KEY  # layer metadata: the last adoption seen, and per label value
#                           ("values") what the model wrote there
READ_KEY = SEGMENT_PROVENANCE_KEY  # the same, in metadata["ambiseg"] of a SEG read back
FINDING = "nodule"  # what the model outlines (its scope: lung nodules)
SEMIAUTOMATIC, MANUAL = "SEMIAUTOMATIC", "MANUAL"
EDITED = "edited"
_LABEL_MAX = 64  # SegmentLabel is LO: 64 characters


def fingerprint(data: Any, value: int) -> str:
    """Digest of where `data` holds `value` (the voxel set, with the array's shape)."""
    mask = np.asarray(data) == int(value)
    h = hashlib.blake2b(digest_size=16)
    h.update(str(mask.shape).encode())
    h.update(np.packbits(mask, axis=None).tobytes())
    return h.hexdigest()


def entry(data: Any, value: int, what: str, **extra: Any) -> dict[str, Any]:
    """The record of one model-made label value."""
    return {"what": str(what), "algorithm": SEMIAUTOMATIC,
            "fingerprint": fingerprint(data, value), **extra}


def record_adoption(metadata: Mapping[str, Any] | None, data: Any,
                    painted: Iterable[int] = ()) -> dict[str, Any] | None:
    """The layer's new ``metadata["ambiseg_segments"]`` after an adoption, or None when there
    is nothing new to record (no adoption record, or this adoption is recorded already).
    `painted`: label values known to be painted by hand on the layer (never the adopted one)."""
    adoption = record(metadata, ADOPTED_KEY)
    if adoption is None:
        return None
    previous = record(metadata, KEY) or {}
    if previous.get("adoption") == adoption:
        return None
    values = dict(record(previous, "values") or {})
    data = np.asarray(data)
    value = adoption.get("label")
    if value is None:
        value = int(data.max()) if data.size else 0
        if value in {int(v) for v in painted} or str(value) in values:
            value = 0  # wrote nothing new: the highest value is not this adoption's
    if int(value) > 0 and (data == int(value)).any():
        values[str(int(value))] = entry(data, int(value), adoption.get("what") or "adopted")
    return {"adoption": dict(adoption), "values": values}


@dataclass(frozen=True)
class Origin:
    """Who made one label value: ``adopted``, ``edited`` (adopted, changed since) or ``manual``."""

    kind: str
    what: str = ""
    name: str = ""  # a segment name read back from a SEG

    @property
    def algorithm(self) -> str:
        return MANUAL if self.kind == "manual" else SEMIAUTOMATIC

    def label(self) -> str | None:
        """The segment label it implies (None: manual, named as any other label)."""
        if self.kind == "manual":
            return None
        text = self.name or f"{FINDING}, {self.what}"
        if self.kind == EDITED and not text.endswith(f", {EDITED}"):
            text = f"{text[:_LABEL_MAX - len(EDITED) - 2]}, {EDITED}"
        return text[:_LABEL_MAX]


def records(metadata: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Model-made values recorded for a layer: a SEG's read back, then the layer's own."""
    out = dict(record(record(metadata, METADATA_KEY), READ_KEY) or {})
    out.update(record(record(metadata, KEY), "values") or {})
    return {str(k): v for k, v in out.items() if isinstance(v, Mapping) and "fingerprint" in v}


def origins(labels: Any, metadata: Mapping[str, Any] | None) -> dict[int, Origin]:
    """Label value -> :class:`Origin` for every non-zero value of `labels` (the layer's data,
    as displayed); ``{}`` when nothing is recorded (then nothing is known per value)."""
    known = records(metadata)
    if not known:
        return {}
    labels = np.asarray(labels)
    out = {}
    for value in (int(v) for v in np.unique(labels) if v != 0):
        e = known.get(str(value))
        if e is None:
            out[value] = Origin("manual")
            continue
        kind = "adopted" if fingerprint(labels, value) == e["fingerprint"] else EDITED
        out[value] = Origin(kind, str(e.get("what", "")), str(e.get("name", "")))
    return out
