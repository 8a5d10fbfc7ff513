"""Simulated annotator clicks for training a click-conditioned model (issue #25).

The annotator of `benchmarks/steer_clicks.py` and of the dock wants one reader's outline and
clicks where what it is shown is wrong (`constraints.next_click`). Training items mimic that:
what the annotator is shown starts as something a model would plausibly show (another
reader's outline on the same slice, nothing, the target grown or shrunk by 1-3 pixels, the
readers' union or intersection), each click goes to the largest error region left (sometimes
to another pixel of it: people do not click centres), and the region it points at is then
taken as fixed, so the next click goes to the next error. The click maps are the disks the
sampler knows (`Constraints.known`) and, mostly, the mask the last click was made on (what
the annotator saw: in the dock and the benchmark, mode 1 of the result clicked on), drawn in
the stored crop's frame before augmentation so they move with the image.

With `TrainConfig.p_own_clicks`, a share of the batches instead click on what the model being
trained shows (`on_own_masks`, RITM's iterative training): the first click on its unsteered
mask, each next one on its mask given the clicks so far, as the benchmark's annotator clicks
on mode 1 of each redraw; so the encoder also learns from the errors it leaves itself (a
region half fixed, clicked again).

Leak-free: the clicks are made from the target outline only, as an annotator makes them from
the outline they want; nothing about other slices or about which crops exist enters.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

from ..constraints import Constraints, next_click
from ..geometry import Region
from ..models.network import CLICK_CHANNELS

MAX_CLICKS = 3      # clicks per item: 1..MAX_CLICKS, uniformly
P_ELSEWHERE = 0.3   # a click at a random pixel of its error region instead of its centre
P_SHOWN = 0.8       # the model told what the last click was made on (else: not known)


def _shown(readers: np.ndarray, target: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What the simulated annotator is shown before the first click."""
    u = rng.random()
    if u < 0.5:
        others = [m for m in readers if not np.array_equal(m, target)]
        if others:
            return others[rng.integers(len(others))].copy()
    if u < 0.65:
        return np.zeros_like(target)
    if u < 0.85:
        r = int(rng.integers(1, 4))
        grow = ndimage.binary_dilation if rng.random() < 0.5 else ndimage.binary_erosion
        return grow(target, iterations=r)
    return readers.any(0) if rng.random() < 0.5 else readers.all(0)


def simulate(readers: np.ndarray, target: np.ndarray, rng: np.random.Generator,
             clicks: int | None = None) -> Constraints:
    """Include / exclude clicks, (y, x) in the crop's pixels, of an annotator who wants
    `target` (H, W bool) on a slice the readers (R, H, W bool) outlined (module notes)."""
    target, readers = np.asarray(target, bool), np.asarray(readers, bool)
    for _ in range(8):  # something to click on (a reader may have drawn just the target)
        shown = _shown(readers, target, rng)
        if (shown != target).any():
            break
    k = int(rng.integers(1, MAX_CLICKS + 1)) if clicks is None else clicks
    include, exclude, before = [], [], shown
    for _ in range(k):
        fix = correct(shown, target)
        if fix is None:
            break
        before = shown
        (kind, p), region, shown = fix
        p = _placed(p, region, rng)
        (include if kind == "include" else exclude).append(p)
    seen = before if rng.random() < P_SHOWN else None
    return Constraints(include, exclude, shown=seen)


def _placed(p: tuple[int, int], region: np.ndarray, rng: np.random.Generator):
    """Where the annotator clicks: the error region's centre `p`, or (P_ELSEWHERE) another
    pixel of it."""
    if rng.random() >= P_ELSEWHERE:
        return p
    ys, xs = np.nonzero(region)
    j = rng.integers(len(ys))
    return int(ys[j]), int(xs[j])


def correct(shown: np.ndarray, target: np.ndarray):
    """The next click on `shown` (`constraints.next_click`), the error region it points at
    (its connected piece of missed or extra pixels) and `shown` with that region set as the
    target has it; None when they agree."""
    click = next_click(shown, target)
    if click is None:
        return None
    kind, p = click
    wrong = target & ~shown if kind == "include" else shown & ~target
    labels, _ = ndimage.label(wrong)
    region = labels == labels[p]
    return click, region, np.where(region, target, shown)


def click_maps(constraints: Constraints, size: int) -> np.ndarray:
    """(3, size, size) uint8: the include and exclude disks the sampler knows
    (`Constraints.known`) and the mask the clicks were made on, on a square crop in its own
    pixels (the click encoder's input, `models.network.ClickEncoder`)."""
    region = Region(size / 2, size / 2, 1.0)
    known = constraints.known(region, size)
    return np.stack([known > 0, known < 0, constraints.shown_map(region, size) > 0]
                    ).astype(np.uint8)


def batch_clicks(masks: np.ndarray, rows: np.ndarray, target: np.ndarray,
                 learn: np.ndarray, p_clicks: float, rng: np.random.Generator) -> np.ndarray:
    """(B, 3, H, W) uint8 click maps for a batch: items with an outline to learn (`learn`)
    get simulated clicks with probability `p_clicks`, the others none."""
    out = np.zeros((len(rows), CLICK_CHANNELS, *target.shape[1:]), np.uint8)
    for i, (row, t) in enumerate(zip(rows, target)):
        if learn[i] and t.any() and rng.random() < p_clicks:
            out[i] = click_maps(simulate(masks[row].astype(bool), t, rng), t.shape[-1])
    return out


def on_own_masks(clicked: np.ndarray, target: np.ndarray,
                 predict: Callable[[np.ndarray], np.ndarray],
                 rng: np.random.Generator) -> np.ndarray:
    """(B, 3, H, W) uint8 click maps made on the model's own masks (module notes): the items
    `clicked` (B,) get 1..MAX_CLICKS clicks against `target` (B, H, W bool), each on
    `predict(maps)` ((B, 3, H, W) uint8 -> (B, H, W) bool, the mask the model shows given the
    maps so far; no clicks: its unsteered mask) with the clicked disks (the encoder's,
    `Constraints.radius`) set, as the sampler set them for models 7 and 8's training (it now
    keeps only `Constraints.known_radius` of them); the others none."""
    b, size = len(target), target.shape[-1]
    maps = np.zeros((b, CLICK_CHANNELS, size, size), np.uint8)
    wanted = np.where(clicked, rng.integers(1, MAX_CLICKS + 1, b), 0)
    told = rng.random(b) < P_SHOWN
    for k in range(int(wanted.max(initial=0))):
        shown = predict(maps)
        for i in np.flatnonzero(wanted > k):
            seen = (shown[i] | (maps[i, 0] > 0)) & ~(maps[i, 1] > 0)  # known pixels hold
            fix = correct(seen, target[i])
            if fix is None:
                wanted[i] = k  # nothing left to click
                continue
            (kind, p), region, _ = fix
            disk = click_maps(Constraints([_placed(p, region, rng)], []), size)[0]
            maps[i, 0 if kind == "include" else 1] |= disk
            maps[i, 2] = seen if told[i] else 0
    return maps
