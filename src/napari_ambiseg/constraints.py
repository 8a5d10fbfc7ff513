"""What the annotator knows: include / exclude clicks (and painted areas) that steer sampling.

`Constraints(include=[(y, x), ...], exclude=[...])` on a 2D image, `(z, y, x)` on a volume
(pixel indices of the source; `Constraints.from_points` rounds a Points layer's data
coordinates); optionally painted `include_mask` / `exclude_mask` of the image's (or volume's)
shape. Give it to `Segmenter.sample(..., constraints=)`, `volume_sampling.Request(
constraints=)` (or, one draw, `Segmenter.sample_slices(..., constraints=)`): the N samples
are drawn again *given* the clicks, inside the diffusion process.

How (`diffusion.sampler.Known`; the knobs chosen on LIDC `test` slices, docs/benchmarks.md
"steer_clicks"):
* each click becomes a disk whose x_0 is known, +1 inside an include and -1 inside an
  exclude (the clicked pixel itself always): `radius` = 2 model pixels (at the model's crop
  scale, 0.7 mm per pixel for the LIDC model) for a model without a click encoder,
  `known_radius` = 1 for one with (its encoder reads the click's `radius` disk and completes
  the outline; the known disk kept small, since a click on a thin error region, e.g. a rim
  one pixel wide, would otherwise fix pixels on the other side of the wanted boundary: on
  outlines under 50 px a third of an include's 2-pixel disk and a fifth of an exclude's lie
  there; `known_disk`; chosen on `val`, docs/results/steer_val_selection.md); after every
  network evaluation the x-prediction takes these values there (RePaint-style replacement),
  so the next step's x_t carries them at that noise level and the network completes the
  outline around them. The
  last estimate is the network's own, except that an include's clicked pixel is set in it
  (`pin`; an exclude's is not: no hole is punched). Where an include disk and an exclude disk
  overlap nothing is known but the clicked pixels. RePaint's resampling (`restarts`: run the
  last `restart_steps` steps again around the completed estimate) is available but off: it
  did not help at 10 steps.
* click-conditioned models (the shipped one) also read the clicks and the mask they were
  made on (`shown`, `on()`: the gallery's mode 1 when clicking; without it
  `volume_sampling.sample_request` takes the request's own unsteered result) through their
  click encoder (`models.network.ClickEncoder`), as corrections of that mask.
* `rounds`: samples that still miss a click are replaced from further steered draws of N
  (round r with seed + r * 1000003), up to 3 rounds: the N kept are those that satisfy the
  clicks first, in draw order (`pick`); the result says how many were drawn.
* An include click also says there is a finding on its slice: every sample exists there
  (`given_finding`; for a slab, the existence plan makes every sample's finding reach each
  slice with an include click). An exclude says nothing about existence.

A sample *satisfies* the constraints when every include point lies in a non-speck part of it
(a connected piece that `measure`'s speck rule keeps and that is more than a speck of
`modes.SPECK_PX` pixels, not only the clicked pixel) and no exclude point lies inside it;
painted areas count like points for 95% of their pixels. `SampleResult.constraints_satisfied`
is the share of samples that do (summary.json, the dock).

Bad input (a point outside the image or the slab, include and exclude on one pixel, an
include inside a painted exclude, an exclude that covers the only (painted) include) is an
`InputError` with one line (`check`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from .errors import InputError

__all__ = ["Constraints", "KNOWN_RADIUS", "RADIUS", "RESTARTS", "RESTART_STEPS", "PIN", "ROUNDS",
           "next_click", "pick"]

# the steering knobs, first chosen on 20 LIDC `test` slices; the radius checked on `val`
# against 1 and 0 (docs/results/steer_val_selection.md)
RADIUS = 2.0   # model pixels (~1.4 mm at 0.7 mm/pixel)
KNOWN_RADIUS = 1.0  # the known disk of a model with a click encoder (it reads RADIUS disks)
RESTARTS = 0   # times the last RESTART_STEPS steps are run again around the completed estimate
RESTART_STEPS = 3
PIN = True     # an include's clicked pixel also set in the returned masks
ROUNDS = 3     # draws of N at most: samples that miss a click are replaced from the next
ROUND_SEED = 1_000_003  # round r is drawn with seed + r * ROUND_SEED
AREA_SHARE = 0.95  # painted areas: share of their pixels that must be inside / outside

Point = tuple[int, ...]


def _points(points, name: str) -> tuple[Point, ...]:
    """Rounded integer pixel indices of (K, 2) or (K, 3) points (a Points layer's data)."""
    if points is None:
        return ()
    a = np.asarray(points, dtype=float)
    if a.size == 0:
        return ()
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or a.shape[1] not in (2, 3):
        raise InputError(f"{name} points must be (y, x) or (z, y, x) each; got shape {a.shape}")
    if not np.isfinite(a).all():
        raise InputError(f"{name} points must be finite numbers")
    return tuple(tuple(int(v) for v in np.floor(row + 0.5)) for row in a)


def _text(p: Sequence[int]) -> str:
    return "(" + ", ".join(str(v) for v in p) + ")"


@dataclass(frozen=True, eq=False)
class Constraints:
    """Include / exclude clicks (pixel indices: (y, x) on an image, (z, y, x) on a volume)
    and optional painted (H, W) / (Z, H, W) bool areas; module notes."""

    include: Any = ()
    exclude: Any = ()
    include_mask: np.ndarray | None = None
    exclude_mask: np.ndarray | None = None
    radius: float = RADIUS  # disk around each click, model pixels (what an encoder reads)
    known_radius: float = KNOWN_RADIUS  # known disk when a click encoder reads the clicks
    restarts: int = RESTARTS
    restart_steps: int = RESTART_STEPS
    pin: bool = PIN
    rounds: int = ROUNDS
    # the mask the clicks were made on (the mode 1 shown when clicking), on the image's (or
    # volume's) grid: click-conditioned models read the clicks as corrections of it
    shown: np.ndarray | None = None

    def __post_init__(self):
        inc, exc = _points(self.include, "include"), _points(self.exclude, "exclude")
        object.__setattr__(self, "include", inc)
        object.__setattr__(self, "exclude", exc)
        if self.shown is not None:
            object.__setattr__(self, "shown", np.asarray(self.shown).astype(bool))
        for name in ("include_mask", "exclude_mask"):
            m = getattr(self, name)
            if m is not None:
                m = np.asarray(m).astype(bool)
                object.__setattr__(self, name, m if m.any() else None)
        dims = {len(p) for p in inc + exc}
        dims |= {m.ndim for m in (self.include_mask, self.exclude_mask) if m is not None}
        if len(dims) > 1:
            raise InputError("include and exclude points mix (y, x) and (z, y, x): give all "
                             "on the image's axes")
        if (min(self.radius, self.known_radius) < 0 or self.restarts < 0
                or self.restart_steps < 1 or self.rounds < 1):
            raise InputError("the click radius and restarts must be >= 0, restart steps and "
                             "rounds >= 1")

    @classmethod
    def from_points(cls, points, include, **knobs) -> Constraints:
        """From a Points layer's data (K, 2) or (K, 3) in the image's data coordinates and
        one flag per point (True: include, False: exclude), e.g. a "sign" feature column."""
        a = np.asarray(points, dtype=float)
        a = a.reshape(len(a), -1) if a.size else np.zeros((0, 2))
        flags = np.broadcast_to(np.asarray(include, bool), (len(a),))
        return cls(a[flags], a[~flags], **knobs)

    @property
    def ndim(self) -> int | None:
        """2 for (y, x) points, 3 for (z, y, x), None when empty."""
        for p in self.include + self.exclude:
            return len(p)
        for m in (self.include_mask, self.exclude_mask):
            if m is not None:
                return m.ndim
        return None

    def __bool__(self) -> bool:
        return bool(self.include or self.exclude or self.include_mask is not None
                    or self.exclude_mask is not None)

    @property
    def has_include(self) -> bool:
        return bool(self.include) or self.include_mask is not None

    # -- where ------------------------------------------------------------------------
    def slices(self, include_only: bool = False) -> list[int]:
        """Slices (volume constraints) carrying a click or painted pixel."""
        if self.ndim != 3:
            return []
        zs = {p[0] for p in self.include}
        masks = [self.include_mask]
        if not include_only:
            zs |= {p[0] for p in self.exclude}
            masks.append(self.exclude_mask)
        for m in masks:
            if m is not None:
                zs |= set(np.flatnonzero(m.reshape(len(m), -1).any(1)).tolist())
        return sorted(int(z) for z in zs)

    def plane(self, z: int | None = None) -> Constraints:
        """The 2D constraints of slice `z` (volume constraints); 2D constraints as they are."""
        if self.ndim != 3:
            return self
        def on_z(m):
            return None if m is None or not 0 <= z < len(m) else m[z]

        return dataclasses.replace(
            self, include=[p[1:] for p in self.include if p[0] == z],
            exclude=[p[1:] for p in self.exclude if p[0] == z],
            include_mask=on_z(self.include_mask), exclude_mask=on_z(self.exclude_mask),
            shown=on_z(self.shown))

    def on(self, shown: np.ndarray | None) -> Constraints:
        """These clicks as made on `shown` (the mask shown when clicking; `shown`)."""
        return dataclasses.replace(self, shown=shown)

    def includes_on(self, z: int | None = None) -> bool:
        """An include click (or painted include) on slice z (2D: at all)."""
        return self.plane(z).has_include

    # -- checks -----------------------------------------------------------------------
    def check(self, shape: Sequence[int], slab: tuple[int, int] | None = None) -> None:
        """One clear `InputError` for constraints that cannot be used on an image (H, W) or a
        volume (Z, H, W) whose sampled slices are `slab` (first, last)."""
        shape = tuple(int(v) for v in shape)
        kind = "a volume takes (z, y, x)" if len(shape) == 3 else "an image takes (y, x)"
        for name, pts in (("include", self.include), ("exclude", self.exclude)):
            for p in pts:
                if len(p) != len(shape):
                    raise InputError(f"{name} point {_text(p)} has {len(p)} coordinates; {kind}")
                if not all(0 <= v < s for v, s in zip(p, shape)):
                    axes = ["rows", "columns"] if len(shape) == 2 else ["slices", "rows",
                                                                         "columns"]
                    where = ", ".join(f"{a} 0..{s - 1}" for a, s in zip(axes, shape))
                    raise InputError(f"{name} point {_text(p)} is outside the image ({where})")
                if slab is not None and len(p) == 3 and not slab[0] <= p[0] <= slab[1]:
                    raise InputError(f"{name} point {_text(p)} is on slice {p[0]}, outside the "
                                     f"sampled slices {slab[0]}..{slab[1]}")
        for name in ("include_mask", "exclude_mask"):
            m = getattr(self, name)
            if m is not None and m.shape != shape:
                raise InputError(f"painted {name.split('_')[0]} area of shape {m.shape} does not "
                                 f"match the image's {shape}")
        if self.shown is not None and self.shown.shape != shape:
            raise InputError(f"the mask the clicks were made on has shape {self.shown.shape}, "
                             f"not the image's {shape}")
        same = set(self.include) & set(self.exclude)
        if same:
            raise InputError(f"include and exclude on the same pixel {_text(min(same))}")
        if self.exclude_mask is not None:
            for p in self.include:
                if self.exclude_mask[p]:
                    raise InputError(f"include point {_text(p)} lies in the painted exclude "
                                     "area")
        if self.include_mask is not None and not self.include:
            left = self.include_mask.copy()
            if self.exclude_mask is not None:
                left &= ~self.exclude_mask
            for p in self.exclude:
                left[p] = False
            if not left.any():
                raise InputError("the exclude covers the only include: nothing is left to "
                                 "include")

    def outside_view(self, region, size: int) -> list[Point]:
        """Include points of this plane (2D) outside the size x size model view `region`."""
        return [p for p in self.include if not _inside(_model_xy(p, region, size), size)]

    # -- the diffusion's known pixels ---------------------------------------------------
    def known_disk(self, encoder: bool) -> float:
        """The radius (model pixels) of a click's known disk: `known_radius` for a model
        whose click encoder reads the clicks, `radius` for one without (module notes)."""
        return self.known_radius if encoder else self.radius

    def known(self, region, size: int, radius: float | None = None) -> np.ndarray:
        """(size, size) float32 in the model's crop frame of this plane's (2D) constraints:
        +1 known inside (include), -1 known outside (exclude), 0 unknown, +2 an include's
        clicked pixel; each click a disk of `radius` (default: `self.radius`) model pixels,
        painted areas as painted (module notes)."""
        radius = self.radius if radius is None else radius
        iy, ix = np.indices((size, size), dtype=np.float64)
        inc = np.zeros((size, size), bool)
        exc = np.zeros((size, size), bool)
        pins = []
        for pts, into, value in ((self.include, inc, 1.0), (self.exclude, exc, -1.0)):
            for p in pts:
                my, mx = _model_xy(p, region, size)
                into |= (iy - my) ** 2 + (ix - mx) ** 2 <= radius ** 2
                py, px = int(np.floor(my + 0.5)), int(np.floor(mx + 0.5))
                if 0 <= py < size and 0 <= px < size:
                    pins.append((py, px, value))
        for m, into in ((self.include_mask, inc), (self.exclude_mask, exc)):
            if m is not None:
                into |= region.extract(m.astype(np.float32), size) > 0.5
        out = np.where(inc & ~exc, 1.0, np.where(exc & ~inc, -1.0, 0.0)).astype(np.float32)
        for py, px, value in pins:  # an include's own pixel is marked 2 (`pin`)
            out[py, px] = 2 * value if value > 0 else value
        return out

    def shown_map(self, region, size: int) -> np.ndarray:
        """(size, size) float32 in {0, 1}: this plane's `shown` mask in the model's crop
        frame (zeros without one)."""
        if self.shown is None:
            return np.zeros((size, size), np.float32)
        return (region.extract(self.shown.astype(np.float32), size) > 0.5).astype(np.float32)

    # -- satisfied? --------------------------------------------------------------------
    def satisfied(self, masks: np.ndarray, z0: int | None = None,
                  spacing: Sequence[float] | None = None) -> np.ndarray:
        """(N,) bool: which samples satisfy the constraints (module notes). `masks` (N, H, W)
        for 2D constraints, (N, Z, H, W) for slices z0.. of a volume; `spacing` the mask
        axes' mm per pixel (the speck rule's size), None: pixels."""
        from .measure import _spacing, speck_voxels, without_specks
        from .modes import SPECK_PX

        masks = np.asarray(masks, bool)
        nd = masks.ndim - 1
        off = (0,) * nd if self.ndim != 3 else (int(z0 or 0), 0, 0)
        inplane, dz = _spacing(spacing, nd)
        minimum = speck_voxels(nd, inplane, dz)

        def local(pts: Iterable[Point]) -> list[Point]:
            out = []
            for p in pts:
                q = tuple(v - o for v, o in zip(p, off))
                out.append(q if all(0 <= v < s for v, s in zip(q, masks.shape[1:])) else None)
            return out

        inc, exc = local(self.include), local(self.exclude)
        areas = [self._area(m, off, masks.shape[1:])
                 for m in (self.include_mask, self.exclude_mask)]
        ok = np.ones(len(masks), bool)
        for k, m in enumerate(masks):
            if any(p is not None and m[p] for p in exc):
                ok[k] = False
                continue
            if areas[1] is not None and m[areas[1]].mean() > 1 - AREA_SHARE:
                ok[k] = False
                continue
            if not inc and areas[0] is None:
                continue
            if any(p is None for p in inc) or not m.any():
                ok[k] = False
                continue
            kept = without_specks(m, minimum)[0]
            labels, _ = ndimage.label(kept, structure=np.ones((3,) * nd, bool))
            big = np.bincount(labels.ravel()) > SPECK_PX
            big[0] = False
            solid = big[labels]
            ok[k] = all(solid[p] for p in inc) and (
                areas[0] is None or solid[areas[0]].mean() >= AREA_SHARE)
        return ok

    @staticmethod
    def _area(m: np.ndarray | None, off, shape) -> np.ndarray | None:
        """A painted area cut to the masks' slices (bool of `shape`), None if none there."""
        if m is None:
            return None
        if m.ndim == 3:
            z0 = off[0]
            cut = np.zeros(shape, bool)
            lo, hi = max(z0, 0), min(z0 + shape[0], len(m))
            if hi > lo:
                cut[lo - z0:hi - z0] = m[lo:hi]
            m = cut
        return m if m.any() else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly record (summary.json, the output layers' metadata)."""
        area = {name: None if m is None else int(m.sum())
                for name, m in (("include_area_px", self.include_mask),
                                ("exclude_area_px", self.exclude_mask))}
        return {"include": [list(p) for p in self.include],
                "exclude": [list(p) for p in self.exclude], **area,
                "radius_px": float(self.radius),
                "known_radius_px": float(self.known_radius), "restarts": int(self.restarts),
                "restart_steps": int(self.restart_steps), "pin": bool(self.pin),
                "rounds": int(self.rounds),
                "shown_px": None if self.shown is None else int(self.shown.sum())}


def next_click(shown: np.ndarray, target: np.ndarray):
    """The click a simulated annotator who wants `target` puts on `shown` (2D bool masks):
    ("include" | "exclude", (y, x)) at the centre (the maximum of the distance transform) of
    the largest error region, include where the target is missed, exclude where `shown` marks
    too much (SAM's and nnInteractive's click simulation); None when they agree."""
    best = None
    for kind, err in (("include", target & ~shown), ("exclude", shown & ~target)):
        labels, k = ndimage.label(err)
        if not k:
            continue
        sizes = np.bincount(labels.ravel())[1:]
        j = int(sizes.argmax()) + 1
        if best is None or sizes[j - 1] > best[0]:
            region = np.pad(labels == j, 1)
            dist = ndimage.distance_transform_edt(region)[1:-1, 1:-1]
            best = (sizes[j - 1], kind, tuple(int(v) for v in np.unravel_index(dist.argmax(),
                                                                                dist.shape)))
    return None if best is None else (best[1], best[2])


def pick(satisfies: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n samples kept from a pool drawn in rounds: those that satisfy the
    constraints first, then the others, each in draw order; returned in draw order."""
    satisfies = np.asarray(satisfies, bool)
    order = np.concatenate([np.flatnonzero(satisfies), np.flatnonzero(~satisfies)])
    return np.sort(order[:n])


def _model_xy(p: Point, region, size: int) -> tuple[float, float]:
    """An image pixel index (y, x) in the model grid's pixel units (`Region.paste`'s map)."""
    y, x = p[-2:]
    return ((y + 0.5 - region.cy) * region.zoom + size / 2 - 0.5,
            (x + 0.5 - region.cx) * region.zoom + size / 2 - 0.5)


def _inside(yx: tuple[float, float], size: int) -> bool:
    return all(-0.5 < v < size - 0.5 for v in yx)
