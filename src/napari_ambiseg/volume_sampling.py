"""What to sample and how: a 2D image, a range of slices, or "follow the finding" (Qt-free).

One implementation for the CLI, the widgets (`widgets.engine.run_request`) and the
benchmarks. `sample_request(seg, Request(...))` returns a `SampleResult`:

* 2D image: the segmenter's `sample`.
* Slice range (`Request.slices`, contiguous from the lowest to the highest listed): every
  slice at the same prompt, all slices x samples through the network together
  (`Segmenter.sample_slices`, `max_batch` samples per evaluation).
* Follow the finding (`Request.propagate`): from the prompt slice up and down while the
  consensus (>= `Request.consensus` of the samples) is non-empty; each next slice is prompted
  at the centroid of its neighbour's consensus (a box keeps its size). The two directions go
  through the network together, one slice each per round.

The slab's modes are 3D (IoU over the whole slab) and every sample's size is measured with the
source spacing (`measure`), in this worker, before the result is returned.

A segmenter is anything with `sample(image, n, steps, seed, *, center, box, spacing,
modality, ...)`; if it also has `sample_slices(volume, zs, prompts, ...)` (the real
`Segmenter`) the slices are batched through it, else sampled one by one (test doubles).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import ModelConfig
from .errors import Cancelled, InputError
from .modes import find_modes
from .result import SampleResult, binary_entropy

PER_SLICE, COHERENT = "per-slice", "coherent"  # how a segmenter samples a slab's slices

Progress = Callable[[int, int, str], None]  # (done, total, description)

MAX_MASK_BYTES = 8 * 2**30  # the (N, Z, H, W) bool masks of one request


@dataclass
class Prompt:
    """Where to look, in the source's data coordinates (rows, cols of a plane)."""

    center: tuple[float, float] | None = None             # (y, x) pixel index
    box: tuple[float, float, float, float] | None = None  # (y0, x0, y1, x1), pixel edges
    z: int | None = None                                  # slice it was given on (volumes)


@dataclass
class Request:
    """One sampling job: `image` is (H, W[, C]) or, with `volume`, (Z, H, W[, C])."""

    image: Any
    prompt: Prompt = field(default_factory=Prompt)
    n: int | None = None              # None: the model's
    steps: int | None = None          # None: the model's
    seed: int = 0
    spacing: tuple[float, ...] | None = None  # mm per pixel: (y, x), or (z, y, x) for sizes in mm^3
    modality: str = "auto"
    volume: bool = False
    slices: list[int] | None = None   # volume: the slices to sample (contiguous slab out)
    propagate: bool = False           # volume: follow the finding up and down from prompt.z
    max_slices: int = 64              # propagation limit (each way)
    consensus: float = 0.5            # propagation continues while this consensus is non-empty
    sampler: str | None = None        # None: the model's
    max_batch: int | None = None      # samples per network evaluation (None: the segmenter's)


def _counts(seg, req: Request) -> tuple[int, int]:
    cfg = getattr(seg, "cfg", None)
    n = req.n if req.n is not None else getattr(cfg, "n_samples", ModelConfig.n_samples)
    steps = req.steps if req.steps is not None else getattr(cfg, "steps", ModelConfig.steps)
    return int(n), int(steps)


def slice_plan(req: Request, depth: int) -> list[int]:
    """Slices of a range request (contiguous), or the start slice of a follow request."""
    default = req.prompt.z if req.prompt.z is not None else depth // 2
    if req.propagate:
        if not 0 <= default < depth:
            raise InputError(f"slice {default} is outside the volume (0..{depth - 1})")
        return [default]
    zs = sorted(set(req.slices or [default]))
    if zs[0] < 0 or zs[-1] >= depth:
        raise InputError(f"slices {zs[0]}..{zs[-1]} are outside the volume (0..{depth - 1})")
    return list(range(zs[0], zs[-1] + 1))


def follow_prompt(consensus: np.ndarray, prompt: Prompt) -> Prompt:
    """Prompt for the next slice: re-centred on the consensus centroid, same box size."""
    cy, cx = (float(round(v)) for v in np.argwhere(consensus).mean(0))
    if prompt.box is None:
        return Prompt(center=(cy, cx))
    hy, hx = (prompt.box[2] - prompt.box[0]) / 2, (prompt.box[3] - prompt.box[1]) / 2
    return Prompt(box=(cy + 0.5 - hy, cx + 0.5 - hx, cy + 0.5 + hy, cx + 0.5 + hx))


class _Slices:
    """Samples slices through the segmenter, batched when it can; counts network steps."""

    def __init__(self, seg, req: Request, n: int, steps: int, progress: Progress,
                 should_stop: Callable[[], bool] | None):
        self.seg, self.req, self.n, self.steps = seg, req, n, steps
        self.report, self.should_stop = progress, should_stop
        self.done = 0
        self.network_s = 0.0

    def __call__(self, zs: list[int], prompts: list[Prompt], expected: int,
                 neighbours: list[np.ndarray] | None = None) -> list[tuple]:
        """((n, H, W) masks, bounds) of slices zs; `expected` = steps known to be left;
        `neighbours`: each slice's adjacent (n, H, W) masks (coherent models)."""
        if self.should_stop is not None and self.should_stop():
            raise Cancelled("sampling stopped")
        req, done = self.req, self.done
        steps = self.steps if neighbours is None else self.seg.neighbour_steps(self.steps)
        total = max(done + expected, done + len(zs) * steps)
        text = f"slice {zs[0]}" if len(zs) == 1 else f"slices {min(zs)}-{max(zs)}"
        t0 = time.perf_counter()
        if hasattr(self.seg, "sample_slices"):
            extra = {} if neighbours is None else {"neighbours": neighbours}
            out = self.seg.sample_slices(
                req.image, zs, [(p.center, p.box) for p in prompts], self.n, self.steps,
                req.seed, spacing=req.spacing, modality=req.modality, sampler=req.sampler,
                max_batch=req.max_batch, should_stop=self.should_stop,
                progress=lambda i, k: self.report(done + i * len(zs) * steps // k, total, text),
                **extra)
        else:  # a stand-in with `sample` only: one slice at a time
            out = []
            for j, (z, p) in enumerate(zip(zs, prompts)):
                base = done + j * self.steps
                r = self.seg.sample(np.asarray(req.image[z]), self.n, self.steps, req.seed,
                                    center=p.center, box=p.box, spacing=req.spacing,
                                    modality=req.modality, should_stop=self.should_stop,
                                    progress=lambda i, k, b=base: self.report(b + i, total, text))
                out.append((r.masks, r.bounds))
        self.network_s += time.perf_counter() - t0
        self.done = done + len(zs) * steps
        return out


def _check_memory(n: int, depth: int, shape: tuple[int, ...]) -> None:
    need = n * depth * int(np.prod(shape[1:3]))
    if need > MAX_MASK_BYTES:
        raise InputError(f"{n} samples x {depth} slices of {shape[1]}x{shape[2]} pixels need "
                         f"{need / 2**30:.1f} GB of masks; sample fewer slices or samples")


def sample_volume(seg, req: Request, progress: Progress | None = None,
                  should_stop: Callable[[], bool] | None = None) -> SampleResult:
    """A slab of `req.image` (Z, H, W[, C]): a slice range or the followed finding."""
    t0 = time.perf_counter()
    n, steps = _counts(seg, req)
    shape = tuple(np.shape(req.image))
    if len(shape) not in (3, 4):
        raise InputError(f"a volume must be (Z, H, W) or (Z, H, W, C); got shape {shape}")
    depth = shape[0]
    todo = slice_plan(req, depth)
    run = _Slices(seg, req, n, steps, progress or (lambda *a: None), should_stop)
    masks: dict[int, np.ndarray] = {}
    bounds: dict[int, tuple] = {}
    coherent = getattr(seg, "volume_method", PER_SLICE) == COHERENT
    if not req.propagate and not coherent:  # independent slices: all through at once
        _check_memory(n, len(todo), shape)
        start = req.prompt.z if req.prompt.z in todo else todo[0]
        for z, (m, b) in zip(todo, run(todo, [req.prompt] * len(todo), len(todo) * steps)):
            masks[z], bounds[z] = m, b
    else:  # outward from the start slice, in waves of one slice per direction
        if req.propagate:
            _check_memory(n, min(depth, 2 * req.max_slices + 1), shape)
            start, lo, hi = todo[0], 0, depth - 1
        else:
            _check_memory(n, len(todo), shape)
            start = req.prompt.z if req.prompt.z in todo else todo[0]
            lo, hi = todo[0], todo[-1]
        wave, prompts, heading = [start], {start: req.prompt}, {start: 0}
        while wave:
            neighbours = None
            if coherent and heading[wave[0]] != 0:
                neighbours = [masks[z - heading[z]] for z in wave]
            left = len(wave) * steps
            for z, (m, b) in zip(wave, run(wave, [prompts[z] for z in wave], left, neighbours)):
                masks[z], bounds[z] = m, b
            nxt = []
            for z in wave:
                c = None  # a slice range keeps the prompt; following needs a consensus
                if req.propagate and coherent:  # on while any hypothesis goes on
                    share = masks[z].mean(0)
                    c = share >= share.max() / 2
                elif req.propagate:
                    c = (masks[z].mean(0) >= req.consensus) & masks[z].any(0)
                for step in ((1, -1) if heading[z] == 0 else (heading[z],)):
                    nz = z + step
                    if ((c is None or c.any()) and lo <= nz <= hi
                            and abs(nz - start) <= req.max_slices and nz not in masks):
                        prompts[nz] = req.prompt if c is None else follow_prompt(c, prompts[z])
                        heading[nz] = step
                        nxt.append(nz)
            wave = nxt
    t1 = time.perf_counter()
    zs = sorted(masks)
    stack = np.stack([masks[z] for z in zs], axis=1)
    agreement = stack.mean(0, dtype=np.float32)
    w = stack.shape[-1]
    method = getattr(seg, "volume_method", PER_SLICE)
    result = SampleResult(stack, agreement, binary_entropy(agreement),
                          find_modes(stack.reshape(n, -1, w)), bounds[start], steps, int(req.seed),
                          z0=zs[0], key=start - zs[0], spacing=_spacing(req.spacing, 3),
                          method=method)
    _ = result.sizes  # measured here, in the worker
    t2 = time.perf_counter()
    result.timings = {"sample": run.network_s, "prepare_and_plan": t1 - t0 - run.network_s,
                      "postprocess": t2 - t1, "total": t2 - t0,
                      "per_slice": (t2 - t0) / len(zs)}
    return result


def _spacing(spacing, ndim: int) -> tuple[float, ...] | None:
    """The spacing as given when it covers the mask axes, else None (sizes in pixels);
    an in-plane-only spacing of a volume keeps the in-plane part (diameters in mm)."""
    if spacing is None:
        return None
    s = tuple(float(v) for v in spacing)
    return s[-ndim:] if len(s) >= ndim else s


def sample_request(seg, req: Request, progress: Progress | None = None,
                   should_stop: Callable[[], bool] | None = None) -> SampleResult:
    """Sample `req` with `seg`; `progress(done, total, text)` per network step.

    Raises `Cancelled` within one network evaluation of `should_stop()` returning True.
    """
    if req.volume:
        return sample_volume(seg, req, progress, should_stop)
    t0 = time.perf_counter()
    n, steps = _counts(seg, req)
    report = progress or (lambda *a: None)
    r = seg.sample(np.asarray(req.image), n, steps, req.seed, center=req.prompt.center,
                   box=req.prompt.box, spacing=req.spacing, modality=req.modality,
                   sampler=req.sampler, progress=lambda i, k: report(i, k, "sampling"),
                   should_stop=should_stop)
    if r.spacing is None and req.spacing is not None:
        r.spacing = _spacing(req.spacing, 2)
    _ = r.sizes  # measured here, in the worker
    r.seconds = time.perf_counter() - t0
    return r
