"""`SampleResult`: the one result type of sampling, for a 2D image and for a slab of slices.

The CLI, the widgets (`widgets.engine.Outputs` is this class), the benchmarks and the
gallery all read the same fields: masks, agreement, entropy, modes, their consensus and the
size of every hypothesis (`measure`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from .measure import Size, measure_all, summarize_sizes
from .modes import Mode, find_modes, mode_labels

# The two answers a result gives, in the words every front end uses (dock, gallery, CLI).
FINDING_TOOLTIP = (
    "The model's estimate of the share of expert readers who would outline a finding at this "
    "prompt (for a slab: on the slice it started from). Learnt from 4 radiologists per slice "
    "(LIDC-IDRI) and checked for calibration on patients never used in training "
    "(docs/benchmarks.md, 'Finding probability'). The samples below answer the second "
    "question: given a finding, what would experts outline?")


def finding_text(p: float | None, conditional: bool) -> str:
    """The first answer in words: "experts would outline a finding here: 78%"; for the
    unconditional (benchmark) distribution, that its empty samples are the 'no' answers."""
    if p is None:
        return "this model gives no finding probability"
    said = f"experts would outline a finding here: {100 * p:.0f}%"
    if conditional:
        return said
    return f"{said} (benchmark distribution: 'no finding' samples included)"


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """Pixel entropy in bits of a Bernoulli(p): 0 where all samples agree, 1 at p = 0.5."""
    p = np.clip(p, 1e-7, 1 - 1e-7)
    h = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    return np.where((p <= 1e-7) | (p >= 1 - 1e-7), 0.0, h).astype(np.float32)


def consensus(agreement: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Pixels marked by at least `threshold` of the samples (never the empty background)."""
    return (agreement >= threshold) & (agreement > 0)


@dataclass(eq=False)
class SampleResult:
    """N sampled masks aligned with the source: a 2D image, or slices z0..z0+Z-1 of a volume."""

    masks: np.ndarray               # (N, H, W) or (N, Z, H, W) bool
    agreement: np.ndarray           # (H, W) or (Z, H, W) float32: fraction of samples marking
    entropy: np.ndarray             # same shape: pixel entropy (bits)
    modes: list[Mode]               # sorted by frequency (3D modes for a slab)
    bounds: tuple[int, int, int, int]  # (y0, x0, y1, x1) image region the model saw (key slice)
    steps: int
    seed: int
    timings: dict[str, float] = field(default_factory=dict)  # seconds; "total" always
    z0: int | None = None           # first slice of the slab (None for a 2D image)
    key: int = 0                    # index of the prompt slice within the slab
    spacing: tuple[float, ...] | None = None  # mm per pixel of the mask axes ((z,) y, x)
    method: str = "per-slice"       # how the slices of a slab were sampled
    # the first answer: p(readers would outline a finding at the prompt) (None: no head); with
    # `conditional` the samples are drawn given a finding (the second answer only)
    finding_probability: float | None = None
    conditional: bool = False
    slice_probabilities: list[float] | None = None  # slab: p of every slice, z0 first
    # steering: the include / exclude clicks the samples were drawn given
    # (`constraints.Constraints`) and which samples satisfy them ((N,) bool)
    constraints: Any = None
    satisfies: np.ndarray | None = None
    drawn: int | None = None  # samples drawn to keep these n (rounds, `constraints`)

    @classmethod
    def from_masks(cls, masks: np.ndarray, bounds, steps: int, seed: int,
                   mode_min_iou: float = 0.5, **fields: Any) -> SampleResult:
        """The result of (N, H, W) or (N, Z, H, W) bool masks: agreement, entropy and modes
        derived here (the one place a result is assembled)."""
        masks = np.asarray(masks, bool)
        agreement = masks.mean(0, dtype=np.float32)
        flat = masks if masks.ndim == 3 else masks.reshape(len(masks), -1, masks.shape[-1])
        return cls(masks, agreement, binary_entropy(agreement), find_modes(flat, mode_min_iou),
                   tuple(int(v) for v in bounds), int(steps), int(seed), **fields)

    @property
    def n(self) -> int:
        return int(self.masks.shape[0])

    @property
    def volume(self) -> bool:
        """True for a slab of slices (masks (N, Z, H, W))."""
        return self.masks.ndim == 4

    @property
    def start(self) -> int | None:
        """The slice a slab was sampled from (where the finding is most evident, unless asked
        otherwise); None for a 2D image."""
        return None if self.z0 is None else self.z0 + self.key

    def finding_text(self) -> str:
        return finding_text(self.finding_probability, self.conditional)

    def steered(self, constraints, satisfies: np.ndarray, drawn: int | None = None) -> None:
        """Record the constraints the samples were drawn given, which satisfy them and how
        many samples were drawn to keep these."""
        self.constraints = constraints
        self.satisfies = np.asarray(satisfies, bool)
        self.drawn = self.n if drawn is None else int(drawn)

    @property
    def constraints_satisfied(self) -> float | None:
        """Share of the samples that satisfy the constraints (None: none given)."""
        return None if self.satisfies is None else float(self.satisfies.mean())

    @property
    def seconds(self) -> float:
        return float(self.timings.get("total", 0.0))

    @seconds.setter
    def seconds(self, value: float) -> None:
        self.timings["total"] = float(value)

    def consensus(self, threshold: float = 0.5) -> np.ndarray:
        """Pixels marked by at least `threshold` of the samples (never the empty background)."""
        return consensus(self.agreement, threshold)

    def mode_one(self, shape: tuple[int, ...]) -> np.ndarray:
        """Mode 1's representative on the source grid `shape` ((H, W), or (Z, H, W) with the
        slab's slices z0.. placed; what the gallery shows first, e.g. what clicks are made
        on, `Constraints.on`)."""
        mask = self.masks[self.modes[0].representative].astype(bool)
        if self.z0 is None:
            return mask
        out = np.zeros(shape, bool)
        out[self.z0:self.z0 + len(mask)] = mask[:max(0, shape[0] - self.z0)]
        return out

    def labelled(self) -> np.ndarray:
        """Samples as uint8 labels: each sample's pixels carry its mode's rank (1 = commonest)."""
        rank = np.zeros(self.n, dtype=np.uint8)
        for r, mode in enumerate(self.modes):
            rank[mode.members] = min(r + 1, 255)
        return self.masks.astype(np.uint8) * rank.reshape((-1,) + (1,) * (self.masks.ndim - 1))

    @property
    def one_slice(self) -> bool:
        """A single slice of a volume: measured as a plane (area in mm^2, not a volume)."""
        return self.volume and self.masks.shape[1] == 1

    @cached_property
    def sizes(self) -> list[Size]:
        """Size of every sample (`measure.measure`), computed once; sampling fills it in the
        worker so that a GUI thread never waits for it. One slice of a volume is a plane:
        its area, never the area times the slice thickness."""
        if self.one_slice:
            inplane = None if self.spacing is None else self.spacing[-2:]
            return measure_all(self.masks[:, 0], inplane)
        return measure_all(self.masks, self.spacing)

    def mode_sizes(self) -> list[dict[str, Any]]:
        """Per mode (by rank): count, `empty`, median/min/max of volume (or area), diameter,
        slices and extent over its members, and `text` like "410 mm^3 (310-520), 9.8 mm"
        ("..., one slice" for a single slice of a volume)."""
        sizes, out = self.sizes, []
        for r, m in enumerate(self.modes):
            size = {"rank": r + 1, **summarize_sizes([sizes[i] for i in m.members])}
            if self.one_slice and not size["empty"]:
                size["text"] += ", one slice"
            out.append(size)
        return out

    def describe(self) -> dict[str, Any]:
        """JSON-friendly summary kept in the output layers' metadata (the gallery reads it)."""
        return {"n": self.n, "steps": self.steps, "seed": self.seed,
                "modes": [m.members for m in self.modes], "bounds": list(self.bounds),
                "z0": self.z0, "key": self.key, "seconds": round(self.seconds, 3),
                "spacing": list(self.spacing) if self.spacing is not None else None,
                "method": self.method, "mode_sizes": self.mode_sizes(), **self._answers()}

    def _answers(self) -> dict[str, Any]:
        p = self.finding_probability
        share = self.constraints_satisfied
        return {"finding_probability": None if p is None else round(float(p), 4),
                "conditional": self.conditional, "start": self.start,
                "slice_probabilities": (None if self.slice_probabilities is None else
                                        [round(float(v), 4) for v in self.slice_probabilities]),
                "constraints": (None if self.constraints is None else
                                self.constraints.to_dict() | {"drawn": self.drawn}),
                "constraints_satisfied": None if share is None else round(share, 4),
                "satisfying_samples": (None if self.satisfies is None else
                                       np.flatnonzero(self.satisfies).tolist())}

    def summary(self) -> dict[str, Any]:
        """What `ambiseg sample` writes to summary.json: modes with sizes, every sample's size,
        the slab's place (z0, slices) and timings."""
        mode_sizes, labels = self.mode_sizes(), mode_labels(self.modes, self.masks)
        return {
            "n": self.n, "steps": self.steps, "seed": self.seed, "method": self.method,
            "bounds": list(self.bounds), "z0": self.z0, "key": self.key,
            "slices": int(self.masks.shape[1]) if self.volume else None,
            "spacing": list(self.spacing) if self.spacing is not None else None,
            "modes": [{"rank": r + 1, "label": label, "count": len(m.members),
                       "frequency": m.frequency, "representative": m.representative,
                       "members": m.members,
                       "area_px": int(self.masks[m.representative].sum()),
                       "size": s}
                      for r, (m, s, label) in enumerate(zip(self.modes, mode_sizes, labels))],
            "samples": [s.to_dict() for s in self.sizes],
            "empty_fraction": float((self.masks.reshape(self.n, -1).sum(1) == 0).mean()),
            "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
            **self._answers(),
        }
