"""Readers beside the samples: the figures the gallery reports for one case (Qt-free).

Samples (N, ...) and readers' outlines (R, ...) on the same grid (a 2D plane, or the sampled
slab of slices as 3D masks). Reported: GED with d = 1 - IoU, self-pairs included, and HM-IoU
(both `metrics`, named by N, e.g. GED16), how many readers and samples left the case empty,
and which mode each reader falls into: the mode whose representative has the best IoU with
the reader, if that IoU is at least `MATCH_IOU` (two empty masks have IoU 1: a reader who saw
nothing falls into the "no finding" mode when there is one), else none.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import metrics

MATCH_IOU = 0.5


def _flat(masks) -> np.ndarray:
    """(K, ...) -> (K, P, W) boolean stack, as the metrics take it (3D masks: slices stacked)."""
    m = np.asarray(masks).astype(bool)
    return m.reshape(len(m), -1, m.shape[-1])


def compare_readers(samples, readers, modes: list[list[int]]) -> dict[str, Any]:
    """Figures of one case. `modes`: member lists by rank, representative first."""
    s, y = _flat(samples), _flat(readers)
    if s.shape[1:] != y.shape[1:]:
        raise ValueError(f"samples {np.shape(samples)[1:]} and readers "
                         f"{np.shape(readers)[1:]} are not on the same grid")
    reps = [m[0] for m in modes]
    iou = metrics.pairwise_iou(y, s[reps]) if reps else np.zeros((len(y), 0))
    reader_modes, reader_iou = [], []
    for row in iou:
        best = int(np.argmax(row)) if len(row) else -1
        ok = best >= 0 and row[best] >= MATCH_IOU
        reader_modes.append(best + 1 if ok else None)
        reader_iou.append(float(row[best]) if best >= 0 else 0.0)
    empty = lambda m: int((m.reshape(len(m), -1).sum(1) == 0).sum())  # noqa: E731
    return {"n": len(s), "readers": len(y), "ged": metrics.ged(s, y),
            "hm_iou": metrics.hm_iou(s, y), "samples_empty": empty(s),
            "readers_empty": empty(y), "reader_modes": reader_modes, "reader_iou": reader_iou}


def report_text(c: dict[str, Any], mode_names: list[str] | None = None) -> str:
    """Lines like "GED16 0.42, HM-IoU16 0.61; empty: 1 of 4 readers, 2 of 16 samples;
    reader 1 -> mode 1, reader 2 -> none"."""
    n, r = c["n"], c["readers"]
    names = mode_names or [f"mode {i}" for i in range(1, 1 + max(
        [m for m in c["reader_modes"] if m] or [0]))]
    where = ", ".join(f"reader {i} -> {names[m - 1] if m else 'none'}"
                      for i, m in enumerate(c["reader_modes"], start=1))
    return (f"GED{n} {c['ged']:.2f}, HM-IoU{n} {c['hm_iou']:.2f}; left empty by "
            f"{c['readers_empty']} of {r} readers, {c['samples_empty']} of {n} samples; {where}")
