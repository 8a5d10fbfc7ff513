"""What one training item is: an image, the outline to learn, and (3D models) the same
reader's outline on the adjacent slice.

Two kinds of items, mixed per batch:

* plain (probability 1 - p): a row drawn uniformly from all rows; the outline is one reader's,
  drawn uniformly among the readers who marked the row when the model has an existence head
  (the head learns "is there a finding" from the readers' non-empty share, so the denoiser only
  learns outlines), else among all readers (an empty mask included). No neighbour.
* paired (probability p, models with neighbour conditioning): a pair drawn uniformly from the
  pairs of consecutive slices of one nodule on which the same linked reader
  (`volume_metrics.reader_links`) marked both; the outline of one slice is learnt given the
  other's.

Leak-free by construction (docs/model_card.md, "3D coherence"): the LIDC crops exist only for
slices some reader marked, so a missing neighbour means "end of the nodule". Whether an item
gets a neighbour is decided by a coin, never by whether the neighbour exists: plain items are
all rows uniformly (the 2D training distribution) and paired items are only real pairs, so
the network cannot learn anything from a missing or absent neighbour. The existence head is
trained on plain items only (all rows uniformly, one slice, no neighbour).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import MultiRaterData


@dataclass
class Batch:
    rows: np.ndarray          # (B,) image rows
    target: np.ndarray        # (B, H, W) uint8: the outline to learn
    neighbour: np.ndarray     # (B, H, W) uint8: the same reader on the adjacent slice (or 0)
    has_neighbour: np.ndarray  # (B,) bool
    learn_outline: np.ndarray  # (B,) float: 0 where the row has no outline to learn
    exists: np.ndarray        # (B,) float: readers' non-empty share (existence target)
    learn_exists: np.ndarray  # (B,) float: 1 on plain items (existence trained on those)


def nodule_stacks(index_csv: str | Path, split: str) -> list[np.ndarray]:
    """Rows of each nodule's consecutive slices (`index.csv`: split, row, patient_id, nodule,
    slice), in slice order; only runs of consecutive slice numbers form a stack."""
    groups: dict[tuple[str, str], list[tuple[int, int]]] = {}
    with open(index_csv, newline="") as f:
        for rec in csv.DictReader(f):
            if rec["split"] == split:
                key = (rec["patient_id"], rec["nodule"])
                groups.setdefault(key, []).append((int(rec["slice"]), int(rec["row"])))
    stacks = []
    for items in groups.values():
        items.sort()
        run = [items[0][1]]
        for (s0, _), (s1, r1) in zip(items, items[1:]):
            if s1 == s0 + 1:
                run.append(r1)
            else:
                stacks.append(np.array(run))
                run = [r1]
        stacks.append(np.array(run))
    return stacks


def neighbour_pairs(masks: np.ndarray, stacks: list[np.ndarray]) -> np.ndarray:
    """(P, 4) int: row, reader, neighbour row, neighbour reader, for every pair of adjacent
    slices (both directions) on which one linked reader track marked both."""
    from ..volume_metrics import reader_links  # scipy's optimiser: only for 3D models

    marked = masks.reshape(*masks.shape[:2], -1).any(-1)
    out = []
    for rows in stacks:
        if len(rows) < 2:
            continue
        links = reader_links(masks[rows])
        for z in range(len(rows) - 1):
            for t in range(links.shape[1]):
                a, b = links[z, t], links[z + 1, t]
                if marked[rows[z], a] and marked[rows[z + 1], b]:
                    out.append((rows[z], a, rows[z + 1], b))
                    out.append((rows[z + 1], b, rows[z], a))
    return np.array(out, dtype=np.int64).reshape(-1, 4)


class TrainingExamples:
    """Draws training items from a multi-rater set (see the module docstring)."""

    def __init__(self, data: MultiRaterData, *, existence: bool, pairs: np.ndarray | None = None,
                 p_neighbour: float = 0.0):
        self.data = data
        self.existence = existence
        self.pairs = pairs if pairs is not None and len(pairs) else None
        self.p_neighbour = p_neighbour if self.pairs is not None else 0.0
        self.marked = data.masks.reshape(*data.masks.shape[:2], -1).any(-1)  # (K, R)
        self.share = self.marked.mean(1).astype(np.float32)

    def draw(self, b: int, rng: np.random.Generator) -> Batch:
        masks = self.data.masks
        k, r = masks.shape[:2]
        rows = rng.integers(k, size=b)
        if self.existence:  # a reader who marked the row (any reader if none did)
            u = rng.random((b, r)) + ~self.marked[rows]  # unmarked readers sort last
            readers = u.argmin(1)
        else:
            readers = rng.integers(r, size=b)
        neighbour = np.zeros((b, *masks.shape[2:]), np.uint8)
        has = np.zeros(b, bool)
        if self.p_neighbour > 0:
            paired = np.flatnonzero(rng.random(b) < self.p_neighbour)
            pick = self.pairs[rng.integers(len(self.pairs), size=len(paired))]
            rows[paired], readers[paired] = pick[:, 0], pick[:, 1]
            neighbour[paired] = masks[pick[:, 2], pick[:, 3]]
            has[paired] = True
        target = masks[rows, readers]
        learn_outline = np.ones(b, np.float32)
        if self.existence:
            learn_outline = self.marked[rows, readers].astype(np.float32)
        return Batch(rows, target, neighbour, has, learn_outline, self.share[rows],
                     (~has).astype(np.float32))


def examples_for(data: MultiRaterData, cfg, index_csv: str | Path | None, split: str,
                 p_neighbour: float) -> TrainingExamples:
    """The items a model config trains on; neighbour pairs need the volume index (LIDC
    `index.csv`), else a 3D model trains its slices as plain items only."""
    pairs = None
    if cfg.neighbour_conditioning and index_csv:
        pairs = neighbour_pairs(data.masks, nodule_stacks(index_csv, split))
    return TrainingExamples(data, existence=cfg.existence_head, pairs=pairs,
                            p_neighbour=p_neighbour)
