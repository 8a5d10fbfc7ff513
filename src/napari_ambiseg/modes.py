"""Group sampled masks into modes (clusters by IoU) with their frequencies.

Specks (samples of at most `SPECK_PX` pixels per marked slice) form no mode of their own: a
speck lying mostly inside a mode's representative joins that mode, any other counts as "no
finding" (it joins the empty mode, made for it if no sample is empty).

Names users see (`mode_names`, `mode_labels`): the empty mode is "no finding", the outline
modes are numbered 1..k in rank order wherever "no finding" sits, so that "mode 1" is the
commonest outline and every reference to a mode (headers, readers, CLI) can be matched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .metrics import pairwise_iou


@dataclass
class Mode:
    members: list[int]        # sample indices, the representative first
    frequency: float          # fraction of samples in this mode
    representative: int       # medoid: highest mean IoU to the other members
    specks: list[int] = field(default_factory=list)  # members merged in as specks


SPECK_PX = 2  # a sample of at most this many pixels per marked slice is a speck


def empty_or_speck(masks: np.ndarray, speck_px: int = SPECK_PX) -> tuple[np.ndarray, np.ndarray]:
    """(empty, speck) flags of (N, H, W) or (N, Z, H, W) masks: speck = not empty and at most
    `speck_px` pixels per marked slice on average (a 2D mask is one slice)."""
    m = np.asarray(masks).astype(bool)
    n = len(m)
    px = m.reshape(n, -1).sum(1)
    slices = m.reshape(n, m.shape[1], -1).any(2).sum(1) if m.ndim == 4 else (px > 0)
    empty = px == 0
    speck = ~empty & (px <= speck_px * np.maximum(slices, 1))
    return empty, speck


def find_modes(masks: np.ndarray, min_iou: float = 0.5, speck_px: int = SPECK_PX) -> list[Mode]:
    """Average-linkage clustering on d = 1 - IoU, cut where clusters' mean IoU < `min_iou`.

    Empty masks have IoU 1 with each other, so "no finding" forms its own mode. Specks
    (`empty_or_speck`) are merged afterwards (module docstring). Modes are sorted by
    frequency (ties: by first member).
    """
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    masks = np.asarray(masks).astype(bool)
    n = len(masks)
    if n == 0:
        return []
    empty, speck = empty_or_speck(masks, speck_px)
    if speck.all():  # nothing but specks: keep them as they are, grouped as no finding
        speck[:] = False
    kept = np.flatnonzero(~speck)
    sim = pairwise_iou(masks[kept], masks[kept])
    if len(kept) == 1:
        labels = np.array([1])
    else:
        dist = np.clip(1.0 - sim, 0.0, 1.0)
        np.fill_diagonal(dist, 0.0)
        tree = linkage(squareform(dist, checks=False), method="average")
        labels = fcluster(tree, t=1.0 - min_iou, criterion="distance")
    groups = []
    for lab in np.unique(labels):
        idx = np.flatnonzero(labels == lab)
        medoid = int(idx[np.argmax(sim[np.ix_(idx, idx)].mean(1))])
        groups.append([int(kept[medoid])] + [int(kept[i]) for i in idx if i != medoid])
    specks: dict[int, list[int]] = {}
    flat = masks.reshape(n, -1)
    for k in np.flatnonzero(speck):
        inside = [flat[k][flat[g[0]]].sum() / flat[k].sum() if g else 0.0 for g in groups]
        best = int(np.argmax(inside)) if groups else -1
        if best < 0 or inside[best] < 0.5:
            best = next((i for i, g in enumerate(groups) if not g or empty[g[0]]), None)
            if best is None:  # no empty sample: the specks make the no-finding mode
                groups.append([])
                best = len(groups) - 1
        specks.setdefault(best, []).append(int(k))
    modes = []
    for i, g in enumerate(groups):
        members = g + specks.get(i, [])
        modes.append(Mode(members, len(members) / n, members[0], specks.get(i, [])))
    modes.sort(key=lambda m: (-len(m.members), min(m.members)))
    return modes



NO_FINDING = "no finding"


def no_finding(modes: Sequence[Sequence[int]], masks: np.ndarray) -> list[bool]:
    """Per mode (member lists, representative first): whether it says "no finding", its
    representative being empty or a speck (`empty_or_speck`)."""
    empty, speck = empty_or_speck(masks)
    return [bool(empty[m[0]] or speck[m[0]]) for m in modes]


def mode_names(nothing: Sequence[bool]) -> list[str]:
    """Names of the modes in rank order from their `no_finding` flags: "no finding", and the
    outline modes numbered consecutively "mode 1".."mode k" wherever "no finding" sits."""
    names, k = [], 0
    for flag in nothing:
        k += not flag
        names.append(NO_FINDING if flag else f"mode {k}")
    return names


def mode_labels(modes: Sequence[Mode], masks: np.ndarray) -> list[str]:
    """Headers of `find_modes`' modes for `masks`: "mode 1 - 9 of 16", "no finding - 4 of 16"
    (the CLI's mode lines and summary.json)."""
    names = mode_names(no_finding([m.members for m in modes], masks))
    return [f"{name} - {len(m.members)} of {len(masks)}" for name, m in zip(names, modes)]
