"""The disagreement score of a sampled case: how much would experts disagree here?

The readers' own disagreement on a slice is 1 - their mean pairwise IoU (distinct pairs,
empty-vs-empty counted as agreement). The score is the same statistic for two readers drawn
from the model: with finding probability p and outlines drawn given a finding (mean pairwise
IoU m over distinct pairs of samples), two readers both outline with probability p^2 (IoU m),
both see nothing with (1 - p)^2 (IoU 1) and disagree on existence otherwise (IoU 0):

    score = 1 - (p^2 m + (1 - p)^2)

Computed from p and the conditional samples, it carries no noise from existence draws. For
samples drawn unconditionally (or by a model without a finding probability) it is 1 - m of
the samples themselves. Chosen by measurement: benchmarks/triage_score.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..metrics import pairwise_iou


def mean_pairwise_iou(masks: np.ndarray) -> float:
    """Mean IoU over the distinct pairs of (N, ...) masks (empty-vs-empty = 1); 1 for N < 2."""
    masks = np.asarray(masks, bool)
    n = len(masks)
    if n < 2:
        return 1.0
    iou = pairwise_iou(masks.reshape(n, -1, masks.shape[-1]), masks.reshape(n, -1, masks.shape[-1]))
    return float((iou.sum() - np.trace(iou)) / (n * (n - 1)))


def expected_agreement(p: float | None, outline_iou: float) -> float:
    """Mean IoU of two readers drawn from the model: existence with p, outlines given one."""
    if p is None:
        return outline_iou
    return float(p * p * outline_iou + (1 - p) ** 2)


def disagreement(result) -> dict[str, Any]:
    """`score` (0 = experts would agree, 1 = they would not) and its parts for a
    `SampleResult`."""
    m = mean_pairwise_iou(result.masks)
    p = result.finding_probability if result.conditional else None
    return {"score": 1.0 - expected_agreement(p, m), "outline_disagreement": 1.0 - m,
            "finding_probability": result.finding_probability}
