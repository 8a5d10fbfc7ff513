"""What to sample and how: a 2D image, a range of slices, or "follow the finding" (Qt-free).

One implementation for the CLI, the widgets (`widgets.engine.run_request`) and the
benchmarks. `sample_request(seg, Request(...))` returns a `SampleResult`:

* 2D image: the segmenter's `sample`.
* Slice range (`Request.slices`, contiguous from the lowest to the highest listed): every
  slice at the same prompt, all slices x samples through the network together
  (`Segmenter.sample_slices`, `max_batch` samples per evaluation); a coherent model goes
  outward from the start slice: `Request.start`, else the slice where the finding is most
  evident (highest finding probability at the prompt; without an existence head, the prompt's
  slice).
* Follow the finding (`Request.propagate`): from the prompt slice up and down while the
  consensus (>= `Request.consensus` of the samples) is non-empty; each next slice is prompted
  at the centroid of its neighbour's consensus (a box keeps its size). The two directions go
  through the network together, one slice each per round.

Two answers (`Request.given_finding`, the default): the samples are drawn given a finding at
the prompt (on the start slice), and the model's probability of one is the result's
`finding_probability`; which samples see a finding on which slice follows one plan for the
whole slab (`_Existence`, after `existence`), so it does not depend on the start slice.

Steering (`Request.constraints`, `constraints.Constraints`): include / exclude clicks
((y, x) on an image, (z, y, x) on a volume) the samples are drawn given; a click on any slice
of the slab steers that slice's draw (and, through the neighbour conditioning, the slices
drawn after it), and the existence plan makes every sample see a finding on each slice with
an include click (and, through its shared draw, on the slices between it and the peak). The
result records the constraints and the share of samples that satisfy them.

The slab's modes are 3D (IoU over the whole slab) and every sample's size is measured with the
source spacing (`measure`), in this worker, before the result is returned.

A segmenter is anything with `sample(image, n, steps, seed, *, center, box, spacing,
modality, ...)`; if it also has `sample_slices(volume, zs, prompts, ...)` (the real
`Segmenter`) the slices are batched through it, else sampled one by one (test doubles).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .config import COHERENT, PER_SLICE, sampling_counts
from .constraints import ROUND_SEED, Constraints, pick
from .errors import Cancelled, InputError
from .existence import envelope, peak_slice, sample_draws
from .result import SampleResult

__all__ = ["PER_SLICE", "COHERENT", "Constraints", "Prompt", "Request", "sample_request",
           "sample_volume"]

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
    given_finding: bool = True        # samples given a finding; False: the benchmark distribution
    start: int | None = None          # slice range: start here (None: where the finding is most
                                      # evident); follow: prompt.z
    constraints: Constraints | None = None  # include / exclude clicks the samples are drawn
                                      # given: (y, x), or (z, y, x) on a volume


def _counts(seg, req: Request) -> tuple[int, int]:
    return sampling_counts(getattr(seg, "cfg", None), req.n, req.steps)


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


class _Existence:
    """Which samples see a finding on which slab slice (`existence` module): the head's p
    per slice, its envelope q from the peak (for "follow", the start slice is the peak), and
    the samples' shared draws u, scaled by q(start) when drawn given a finding on the start
    slice. Every sample's finding is a run of slices through the peak, so outlines are drawn
    outward from the peak, where the finding is most evident, whatever the start. A slice with
    an include click (`Request.constraints`) is given a finding too: the draws are scaled by
    its q as well, and every sample exists there."""

    def __init__(self, seg, req: Request, n: int, todo: list[int]):
        self.seg, self.req = seg, req
        self.u = sample_draws(req.seed, n)
        self.p: dict[int, float] = {}
        self.q: dict[int, float] = {}
        if req.propagate:
            self.start = self.peak = todo[0]
            self.p[self.start] = self._probabilities([self.start])[0]
            self.q[self.start] = self.p[self.start]
        else:
            p = self._probabilities(todo)
            prefer = req.prompt.z if req.prompt.z in todo else None
            peak = peak_slice(p, None if prefer is None else todo.index(prefer))
            self.peak = todo[peak]
            self.start = self.peak if req.start is None else req.start
            self.p = dict(zip(todo, map(float, p)))
            self.q = dict(zip(todo, map(float, envelope(p, peak))))
        self.scale = self.q[self.start] if req.given_finding else 1.0
        c = req.constraints
        self.included = set(c.slices(include_only=True)) if c else set()
        ahead = sorted(z for z in self.included if z not in self.q)  # "follow": not planned yet
        q_ahead = dict(zip(ahead, map(float, self._probabilities(ahead)))) if ahead else {}
        for z in self.included:
            self.scale = min(self.scale, self.q.get(z, min(q_ahead.get(z, 1.0), self.q[self.start])))

    @staticmethod
    def of(seg, req: Request, n: int, todo: list[int]) -> _Existence | None:
        """The plan for a segmenter with an existence head, else None (each draw decides)."""
        head = getattr(getattr(seg, "model", None), "existence", None)
        return None if head is None else _Existence(seg, req, n, todo)

    def _probabilities(self, zs: list[int], prompts: list[Prompt] | None = None) -> np.ndarray:
        prompts = prompts or [self.req.prompt] * len(zs)
        return self.seg.finding_probabilities(self.req.image, zs,
                                              [(p.center, p.box) for p in prompts],
                                              self.req.spacing, self.req.modality)

    def follow(self, zs: list[int], prompts: list[Prompt], heading: dict[int, int]) -> None:
        """p and q of the next wave of a followed finding (q: the running minimum outward)."""
        new = [z for z in zs if z not in self.p]
        if new:
            self.p.update(zip(new, map(float, self._probabilities(new, prompts))))
        for z in zs:
            self.q.setdefault(z, min(self.p[z], self.q[z - heading[z]]))

    def exists(self, z: int) -> np.ndarray:
        """(n,) bool: the samples that see a finding on slice z."""
        if (z == self.start and self.req.given_finding) or z in self.included:
            return np.ones(len(self.u), bool)
        return self.u * self.scale < self.q[z]

    @property
    def probability(self) -> float:
        """p(readers outline a finding) at the start slice (for a slab: at its peak, unless
        asked to start elsewhere)."""
        return self.q[self.start]


class _Slices:
    """Samples slices through the segmenter, batched when it can; counts network steps."""

    def __init__(self, seg, req: Request, n: int, steps: int, progress: Progress,
                 should_stop: Callable[[], bool] | None, plan: _Existence | None):
        self.seg, self.req, self.n, self.steps, self.plan = seg, req, n, steps, plan
        self.report, self.should_stop = progress, should_stop
        self.done = 0
        self.network_s = 0.0

    def __call__(self, zs: list[int], prompts: list[Prompt], expected: int,
                 neighbours: list[np.ndarray] | None = None,
                 heading: dict[int, int] | None = None) -> list[tuple]:
        """((n, H, W) masks, bounds) of slices zs; `expected` = steps known to be left;
        `neighbours`: each slice's adjacent (n, H, W) masks (coherent models), the adjacent
        slice of z being z - heading[z]."""
        if self.should_stop is not None and self.should_stop():
            raise Cancelled("sampling stopped")
        req, done = self.req, self.done
        exists = None
        if self.plan is not None:
            exists = [self.plan.exists(z) for z in zs]
            if neighbours is not None:  # an outline that vanished on the adjacent slice ended
                exists = [e & (m.reshape(len(m), -1).any(1) | ~self.plan.exists(z - heading[z]))
                          | (z in self.plan.included)  # unless an include click is there
                          for e, m, z in zip(exists, neighbours, zs)]
        steps = self.steps
        if hasattr(self.seg, "slice_steps"):
            steps = self.seg.slice_steps(self.steps, neighbours, exists)
        total = max(done + expected, done + len(zs) * steps)
        text = f"slice {zs[0]}" if len(zs) == 1 else f"slices {min(zs)}-{max(zs)}"
        t0 = time.perf_counter()
        if hasattr(self.seg, "sample_slices"):
            extra = {} if neighbours is None else {"neighbours": neighbours}
            if req.constraints:
                extra["constraints"] = req.constraints
            out = self.seg.sample_slices(
                req.image, zs, [(p.center, p.box) for p in prompts], self.n, self.steps,
                req.seed, spacing=req.spacing, modality=req.modality, sampler=req.sampler,
                max_batch=req.max_batch, should_stop=self.should_stop, exists=exists,
                given_finding=req.given_finding,
                progress=lambda i, k: self.report(done + i * len(zs) * steps // k, total, text),
                **extra)
            out = [(s[0], s[1]) for s in out]
        else:  # a stand-in with `sample` only: one slice at a time
            out = []
            for j, (z, p) in enumerate(zip(zs, prompts)):
                base = done + j * self.steps
                steer = {"constraints": req.constraints.plane(z)} if req.constraints else {}
                r = self.seg.sample(np.asarray(req.image[z]), self.n, self.steps, req.seed,
                                    center=p.center, box=p.box, spacing=req.spacing,
                                    modality=req.modality, should_stop=self.should_stop,
                                    progress=lambda i, k, b=base: self.report(b + i, total, text),
                                    **steer)
                out.append((r.masks, r.bounds))
        self.network_s += time.perf_counter() - t0
        self.done = done + len(zs) * steps
        return out


def _check_memory(n: int, depth: int, shape: tuple[int, ...]) -> None:
    need = n * depth * int(np.prod(shape[1:3]))
    if need > MAX_MASK_BYTES:
        raise InputError(f"{n} samples x {depth} slices of {shape[1]}x{shape[2]} pixels need "
                         f"{need / 2**30:.1f} GB of masks; sample fewer slices or samples")


def _volume_shape(req: Request) -> tuple[int, ...]:
    shape = tuple(np.shape(req.image))
    if len(shape) not in (3, 4):
        raise InputError(f"a volume must be (Z, H, W) or (Z, H, W, C); got shape {shape}")
    return shape


def _start_slice(req: Request, todo: list[int], plan: _Existence | None) -> int:
    """The slab's start (the slice whose finding is given and shown): the plan's (most
    evident, or `Request.start`), else the requested start, else the prompt's slice, else
    the first."""
    if plan is not None:
        return plan.start
    for z in (req.start, req.prompt.z):
        if z in todo:
            return z
    return todo[0]


def _next_slices(req: Request, z: int, masks: np.ndarray, heading: int,
                 coherent: bool) -> tuple[list[int], np.ndarray | None]:
    """The slices to sample after z (one step on in its heading, both ways from the start)
    and, when following the finding, the consensus that prompts them (None: same prompt)."""
    c = None
    if req.propagate and coherent:  # on while any hypothesis goes on
        share = masks.mean(0)
        c = share >= share.max() / 2
    elif req.propagate:
        c = (masks.mean(0) >= req.consensus) & masks.any(0)
    if c is not None and not c.any():
        return [], c
    return [z + step for step in ((1, -1) if heading == 0 else (heading,))], c


def _towards_includes(req: Request, z: int, heading: int) -> list[int]:
    """Next slices from z (in its heading; both ways from the start) toward include clicks
    not yet reached: a followed finding goes on to every slice with one."""
    zs = req.constraints.slices(include_only=True) if req.constraints else []
    return [z + s for s in ((1, -1) if heading == 0 else (heading,))
            if any((v - z) * s > 0 for v in zs)]


def _outward(run: _Slices, req: Request, start: int, lo: int, hi: int, coherent: bool,
             plan: _Existence | None):
    """Sample outward from `start` in waves of one slice per direction (coherent models
    and "follow the finding"); returns masks and bounds per slice."""
    masks: dict[int, np.ndarray] = {}
    bounds: dict[int, tuple] = {}
    wave, prompts, heading = [start], {start: req.prompt}, {start: 0}
    while wave:
        if plan is not None and req.propagate:
            plan.follow(wave, [prompts[z] for z in wave], heading)
        neighbours = None
        if coherent and heading[wave[0]] != 0:
            neighbours = [masks[z - heading[z]] for z in wave]
        out = run(wave, [prompts[z] for z in wave], len(wave) * run.steps, neighbours, heading)
        for z, (m, b) in zip(wave, out):
            masks[z], bounds[z] = m, b
        nxt = []
        for z in wave:
            ahead, c = _next_slices(req, z, masks[z], heading[z], coherent)
            if not ahead and req.propagate:  # the finding ended, but a click lies further on
                ahead, c = _towards_includes(req, z, heading[z]), None
            for nz in ahead:
                if lo <= nz <= hi and abs(nz - start) <= req.max_slices and nz not in masks:
                    prompts[nz] = (prompts[z] if c is None and req.propagate else req.prompt
                                   if c is None else follow_prompt(c, prompts[z]))
                    heading[nz] = nz - z
                    nxt.append(nz)
        wave = nxt
    return masks, bounds


def sample_volume(seg, req: Request, progress: Progress | None = None,
                  should_stop: Callable[[], bool] | None = None) -> SampleResult:
    """A slab of `req.image` (Z, H, W[, C]): a slice range or the followed finding."""
    t0 = time.perf_counter()
    n, steps = _counts(seg, req)
    shape = _volume_shape(req)
    depth = shape[0]
    todo = slice_plan(req, depth)
    if req.start is not None and not req.propagate and req.start not in todo:
        raise InputError(f"start slice {req.start} is outside the slices {todo[0]}..{todo[-1]}")
    _check_memory(n, min(depth, 2 * req.max_slices + 1) if req.propagate else len(todo), shape)
    if req.constraints:
        slab = ((max(0, todo[0] - req.max_slices), min(depth - 1, todo[0] + req.max_slices))
                if req.propagate else (todo[0], todo[-1]))
        req.constraints.check(shape[:3], slab)
    plan = _Existence.of(seg, req, n, todo)
    run = _Slices(seg, req, n, steps, progress or (lambda *a: None), should_stop, plan)
    method = getattr(seg, "volume_method", PER_SLICE)
    start = _start_slice(req, todo, plan)
    if not req.propagate and method != COHERENT:  # independent slices: all through at once
        out = run(todo, [req.prompt] * len(todo), len(todo) * steps)
        masks = dict(zip(todo, (m for m, _ in out)))
        bounds = dict(zip(todo, (b for _, b in out)))
    else:
        lo, hi = (0, depth - 1) if req.propagate else (todo[0], todo[-1])
        origin = start if plan is None else plan.peak
        masks, bounds = _outward(run, req, origin, lo, hi, method == COHERENT, plan)
    t1 = time.perf_counter()
    zs = sorted(masks)
    result = SampleResult.from_masks(
        np.stack([masks[z] for z in zs], axis=1), bounds[start], steps, req.seed, z0=zs[0],
        key=start - zs[0], spacing=_spacing(req.spacing, 3), method=method,
        finding_probability=None if plan is None else plan.probability,
        conditional=plan is not None and (req.given_finding or start in plan.included),
        slice_probabilities=None if plan is None else [plan.p.get(z) for z in zs])
    more_s = 0.0
    if req.constraints:
        result.steered(req.constraints, req.constraints.satisfied(
            result.masks, z0=zs[0], spacing=_spacing(req.spacing, 3)))
        result, more_s = _more_rounds(seg, req, result, progress, should_stop)
    _ = result.sizes  # measured here, in the worker
    t2 = time.perf_counter()
    result.timings = {"sample": run.network_s + more_s,
                      "prepare_and_plan": t1 - t0 - run.network_s,
                      "postprocess": t2 - t1, "total": t2 - t0,
                      "per_slice": (t2 - t0) / len(zs)}
    return result


def _more_rounds(seg, req: Request, result: SampleResult, progress, should_stop):
    """(result, seconds of the further rounds): a slice range's samples that miss a click
    replaced from further rounds of the slab (`Constraints.rounds`, seeds
    `seed + r * ROUND_SEED`); a followed finding keeps its one round (its extent differs
    from draw to draw)."""
    c, n = req.constraints, result.n
    if req.propagate or c.rounds < 2 or result.satisfies.sum() >= n:
        return result, 0.0
    masks, satisfies, seconds = [result.masks], [result.satisfies], 0.0
    once = replace(c, rounds=1)
    for r in range(1, c.rounds):
        more = sample_volume(seg, replace(req, seed=req.seed + r * ROUND_SEED, constraints=once),
                             progress, should_stop)
        masks.append(more.masks)
        satisfies.append(more.satisfies)
        seconds += more.timings.get("sample", 0.0)
        if sum(s.sum() for s in satisfies) >= n:
            break
    satisfies = np.concatenate(satisfies)
    keep = pick(satisfies, n)
    out = SampleResult.from_masks(
        np.concatenate(masks)[keep], result.bounds, result.steps, result.seed,
        **{k: getattr(result, k) for k in ("z0", "key", "spacing", "method",
                                           "finding_probability", "conditional",
                                           "slice_probabilities")})
    out.steered(c, satisfies[keep], drawn=n * len(masks))
    return out, seconds


def _spacing(spacing, ndim: int) -> tuple[float, ...] | None:
    """The spacing as given when it covers the mask axes, else None (sizes in pixels);
    an in-plane-only spacing of a volume keeps the in-plane part (diameters in mm)."""
    if spacing is None:
        return None
    s = tuple(float(v) for v in spacing)
    return s[-ndim:] if len(s) >= ndim else s


def _clicked_on_unsteered(seg, req: Request, progress, should_stop) -> Request:
    """Clicks that do not say what they were made on (`Constraints.shown`) were made on
    what the request draws without them (same seed: the result shown before clicking);
    drawn first for models that read it (click conditioning), e.g. `ambiseg sample
    --include`. The dock says it itself (the result on screen)."""
    c = req.constraints
    if not c or c.shown is not None or getattr(getattr(seg, "model", None), "clicks",
                                               None) is None:
        return req
    free = sample_request(seg, replace(req, constraints=None), progress, should_stop)
    shape = np.shape(req.image)[:3 if req.volume else 2]
    return replace(req, constraints=c.on(free.mode_one(shape)))


def sample_request(seg, req: Request, progress: Progress | None = None,
                   should_stop: Callable[[], bool] | None = None) -> SampleResult:
    """Sample `req` with `seg`; `progress(done, total, text)` per network step.

    Raises `Cancelled` within one network evaluation of `should_stop()` returning True.
    """
    req = _clicked_on_unsteered(seg, req, progress, should_stop)
    if req.volume:
        return sample_volume(seg, req, progress, should_stop)
    t0 = time.perf_counter()
    n, steps = _counts(seg, req)
    report = progress or (lambda *a: None)
    r = seg.sample(np.asarray(req.image), n, steps, req.seed, center=req.prompt.center,
                   box=req.prompt.box, spacing=req.spacing, modality=req.modality,
                   sampler=req.sampler, progress=lambda i, k: report(i, k, "sampling"),
                   should_stop=should_stop, given_finding=req.given_finding,
                   **({"constraints": req.constraints} if req.constraints else {}))
    if r.spacing is None and req.spacing is not None:
        r.spacing = _spacing(req.spacing, 2)
    _ = r.sizes  # measured here, in the worker
    r.seconds = time.perf_counter() - t0
    return r
