"""Inference for the widgets, free of Qt and napari: what to sample, and running it off-thread.

* `Request` says what to sample (a 2D image, or slices of a volume, with a prompt);
  `run_request` does it with the core `Segmenter` and returns `Outputs` (masks, agreement,
  entropy, modes) for a 2D image or for a slab of consecutive slices of a volume.
* `stream` runs any long function in a helper thread and turns its callbacks into a generator,
  so a napari generator worker can yield progress and notice an abort within `tick` seconds,
  and tests can iterate it directly, without Qt.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import Cancelled, InputError
from ..modes import Mode, find_modes

Progress = Callable[[int, int, str], None]  # (done, total, description)


@dataclass
class Prompt:
    """Where to look, in the source layer's data coordinates (rows, cols of a plane)."""

    center: tuple[float, float] | None = None             # (y, x) pixel index
    box: tuple[float, float, float, float] | None = None  # (y0, x0, y1, x1), pixel edges
    z: int | None = None                                  # slice it was given on (volumes)


@dataclass
class Request:
    """One sampling job: `image` is (H, W[, C]) or, with `volume`, (Z, H, W[, C])."""

    image: Any
    prompt: Prompt = field(default_factory=Prompt)
    n: int = 16
    steps: int = 10
    seed: int = 0
    spacing: tuple[float, float] | None = None
    modality: str = "auto"
    volume: bool = False
    slices: list[int] | None = None   # volume: the slices to sample (contiguous slab out)
    propagate: bool = False           # volume: follow the finding up and down from prompt.z
    max_slices: int = 64              # propagation limit (each way)
    consensus: float = 0.5            # propagation continues while this consensus is non-empty


@dataclass
class Outputs:
    """Sampling results aligned with the source: a 2D image or a slab of slices z0..z0+Z-1."""

    masks: np.ndarray         # (N, H, W) or (N, Z, H, W) bool
    agreement: np.ndarray     # (H, W) or (Z, H, W) float32, fraction of samples
    entropy: np.ndarray       # same shape, bits
    modes: list[Mode]         # sorted by frequency
    bounds: tuple[int, int, int, int]  # model region (y0, x0, y1, x1) on the prompt slice
    steps: int
    seed: int
    z0: int | None = None     # first slice of the slab (None for a 2D image)
    key: int = 0              # index of the prompt slice within the slab
    seconds: float = 0.0

    @property
    def n(self) -> int:
        return int(self.masks.shape[0])

    def consensus(self, threshold: float = 0.5) -> np.ndarray:
        """Pixels marked by at least `threshold` of the samples (never the empty background)."""
        return (self.agreement >= threshold) & (self.agreement > 0)

    def labelled(self) -> np.ndarray:
        """Samples as uint8 labels: each sample's pixels carry its mode's rank (1 = commonest)."""
        rank = np.zeros(self.n, dtype=np.uint8)
        for r, mode in enumerate(self.modes):
            rank[mode.members] = r + 1
        return self.masks.astype(np.uint8) * rank.reshape((-1,) + (1,) * (self.masks.ndim - 1))

    def describe(self) -> dict[str, Any]:
        """JSON-friendly summary kept in the output layers' metadata (the gallery reads it)."""
        return {"n": self.n, "steps": self.steps, "seed": self.seed,
                "modes": [m.members for m in self.modes], "bounds": list(self.bounds),
                "z0": self.z0, "key": self.key, "seconds": round(self.seconds, 3)}


def _plane(image: Any, z: int | None) -> np.ndarray:
    return np.asarray(image if z is None else image[z])


def _sample(seg, req: Request, z: int | None, prompt: Prompt, progress, should_stop):
    return seg.sample(_plane(req.image, z), req.n, req.steps, req.seed, center=prompt.center,
                      box=prompt.box, spacing=req.spacing, modality=req.modality,
                      progress=progress, should_stop=should_stop)


def _follow(c: np.ndarray, prompt: Prompt) -> Prompt:
    """Prompt for the next slice: re-centred on the consensus centroid, same box size."""
    cy, cx = (float(round(v)) for v in np.argwhere(c).mean(0))
    if prompt.box is None:
        return Prompt(center=(cy, cx))
    hy, hx = (prompt.box[2] - prompt.box[0]) / 2, (prompt.box[3] - prompt.box[1]) / 2
    return Prompt(box=(cy + 0.5 - hy, cx + 0.5 - hx, cy + 0.5 + hy, cx + 0.5 + hx))


def _volume_plan(req: Request, depth: int) -> list[int]:
    if req.propagate:
        return [req.prompt.z if req.prompt.z is not None else depth // 2]
    zs = sorted(set(req.slices or [req.prompt.z if req.prompt.z is not None else depth // 2]))
    if zs[0] < 0 or zs[-1] >= depth:
        raise InputError(f"slices {zs[0]}..{zs[-1]} are outside the volume (0..{depth - 1})")
    return list(range(zs[0], zs[-1] + 1))


def run_request(seg, req: Request, progress: Progress | None = None,
                should_stop: Callable[[], bool] | None = None) -> Outputs:
    """Sample `req` with the `Segmenter` `seg`; `progress(done, total, text)` per network step.

    Raises `Cancelled` (from the core) within one network evaluation of `should_stop()`.
    """
    from ..segmenter import binary_entropy

    t0 = time.perf_counter()
    report = progress or (lambda *a: None)
    if not req.volume:
        r = _sample(seg, req, None, req.prompt,
                    lambda i, k: report(i, k, "sampling"), should_stop)
        return Outputs(r.masks, r.agreement, r.entropy, r.modes, r.bounds, r.steps, r.seed,
                       seconds=time.perf_counter() - t0)

    depth = int(np.shape(req.image)[0])
    todo = _volume_plan(req, depth)
    total = len(todo) * req.steps
    results: dict[int, Any] = {}
    prompts = {z: req.prompt for z in todo}
    start = todo[0] if req.propagate else (req.prompt.z if req.prompt.z in todo else todo[0])
    queue_ = [(z, None) for z in todo]
    while queue_:
        z, direction = queue_.pop(0)
        if should_stop is not None and should_stop():
            raise Cancelled("sampling stopped")
        done = len(results) * req.steps
        total = max(total, done + req.steps)
        results[z] = _sample(seg, req, z, prompts[z],
                             lambda i, k, d=done, z=z: report(d + i, total, f"slice {z}"),
                             should_stop)
        if not req.propagate:
            continue
        c = results[z].consensus(req.consensus)
        for step in ((1, -1) if direction is None else (direction,)):
            nz = z + step
            if c.any() and 0 <= nz < depth and abs(nz - start) <= req.max_slices:
                prompts[nz] = _follow(c, prompts[z])
                queue_.append((nz, step))
    zs = sorted(results)
    masks = np.stack([results[z].masks for z in zs], axis=1)
    agreement = np.stack([results[z].agreement for z in zs])
    n, w = masks.shape[0], masks.shape[-1]
    return Outputs(masks, agreement, binary_entropy(agreement),
                   find_modes(masks.reshape(n, -1, w)), results[start].bounds, req.steps,
                   req.seed, z0=zs[0], key=start - zs[0], seconds=time.perf_counter() - t0)


_DONE = object()


def stream(fn: Callable[[Callable[[Any], None], Callable[[], bool]], Any],
           stop: threading.Event, tick: float = 0.05) -> Generator[Any, None, Any]:
    """Run ``fn(emit, should_stop)`` in a helper thread; yield what it emits, as it emits it.

    Yields None every `tick` seconds when nothing happens (so a napari worker checks its
    abort flag), returns fn's result, and re-raises fn's exception. Closing or abandoning
    the generator sets `stop`, which the work sees through `should_stop`.
    """
    events: queue.SimpleQueue = queue.SimpleQueue()
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["value"] = fn(events.put, stop.is_set)
        except BaseException as e:  # noqa: BLE001 - handed over to the consumer
            out["error"] = e
        finally:
            events.put(_DONE)

    thread = threading.Thread(target=target, name="ambiseg-work", daemon=True)
    thread.start()
    finished = False
    try:
        while True:
            try:
                item = events.get(timeout=tick)
            except queue.Empty:
                yield None
                continue
            if item is _DONE:
                finished = True
                break
            yield item
    finally:
        if not finished:
            stop.set()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out.get("value")


def leave_a_core() -> int:
    """Intra-op threads for work behind a GUI: all cores but one, so the event loop always
    has a core. (On a busy 2-core machine, two spinning OpenMP threads beside the GUI
    thread made sampling 5-20x slower and the viewer jerky; see the responsiveness bench.)"""
    import torch

    return max(1, min(torch.get_num_threads(), (os.cpu_count() or 2) - 1))


def sampling_job(get_segmenter: Callable[[], Any], req: Request, stop: threading.Event,
                 tick: float = 0.05) -> Generator[dict | None, None, Outputs]:
    """Generator for a napari worker: yields {"done", "total", "text"} (or None), returns
    `Outputs`. The segmenter is loaded inside the helper thread (weights load off the GUI)."""

    def work(emit, should_stop):
        import torch

        torch.set_num_threads(leave_a_core())  # OpenMP: this thread's parallel regions
        emit({"done": 0, "total": 0, "text": "loading model"})
        seg = get_segmenter()
        return run_request(seg, req, lambda d, t, s: emit({"done": d, "total": t, "text": s}),
                           should_stop)

    return (yield from stream(work, stop, tick))
