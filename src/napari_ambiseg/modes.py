"""Group sampled masks into modes (clusters by IoU) with their frequencies."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .metrics import pairwise_iou


@dataclass
class Mode:
    members: list[int]        # sample indices, the representative first
    frequency: float          # fraction of samples in this mode
    representative: int       # medoid: highest mean IoU to the other members

    def label(self, rank: int, n: int) -> str:
        return f"mode {rank} - {len(self.members)} of {n}"


def find_modes(masks: np.ndarray, min_iou: float = 0.5) -> list[Mode]:
    """Average-linkage clustering on d = 1 - IoU, cut where clusters' mean IoU < `min_iou`.

    Empty masks have IoU 1 with each other, so "no finding" forms its own mode. Modes are
    sorted by frequency (ties: by first member).
    """
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    n = len(masks)
    if n == 0:
        return []
    sim = pairwise_iou(masks, masks)
    if n == 1:
        labels = np.array([1])
    else:
        dist = np.clip(1.0 - sim, 0.0, 1.0)
        np.fill_diagonal(dist, 0.0)
        tree = linkage(squareform(dist, checks=False), method="average")
        labels = fcluster(tree, t=1.0 - min_iou, criterion="distance")
    modes = []
    for lab in np.unique(labels):
        idx = np.flatnonzero(labels == lab)
        medoid = int(idx[np.argmax(sim[np.ix_(idx, idx)].mean(1))])
        members = [medoid] + [int(i) for i in idx if i != medoid]
        modes.append(Mode(members, len(idx) / n, medoid))
    modes.sort(key=lambda m: (-len(m.members), min(m.members)))
    return modes
