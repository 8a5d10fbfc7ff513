"""`Segmenter`: N plausible masks for one 2D image, with agreement, entropy, modes, consensus."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from .config import COHERENT, PER_SLICE, ModelConfig, sampling_counts
from .constraints import ROUND_SEED, Constraints, pick
from .device import autocast, resolve_device
from .diffusion import Denoiser, Schedule, sample_masks
from .diffusion.sampler import Known
from .errors import InputError
from .existence import existence_draws
from .geometry import Region, region_for
from .io.preprocess import check_image_2d, guess_modality, to_model_scale, to_network_input
from .result import SampleResult

Progress = Callable[[int, int], None]

__all__ = ["Segmenter", "SampleResult", "SliceSample", "Constraints", "PER_SLICE", "COHERENT"]


class SliceSample(NamedTuple):
    """One slice's samples (`Segmenter.sample_slices`)."""

    masks: np.ndarray                 # (n, H, W) bool
    bounds: tuple[int, int, int, int]  # (y0, x0, y1, x1) the region the model saw
    finding_probability: float | None  # the existence head's p (None: no head)


class _Streams:
    """The random streams of one `draw`: one generator per seed, `per` inputs each."""

    def __init__(self, seed: int | Sequence[int], b: int, same_noise: bool):
        if isinstance(seed, (int, np.integer)):
            seed = [int(seed)] * (b if same_noise else 1)
        if len(seed) not in (1, b):
            raise ValueError(f"{len(seed)} seeds for {b} inputs")
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seed]
        self.b, self.per = b, b // len(self.generators)

    def rows(self, draw: Callable[[torch.Generator, int], torch.Tensor], rows: int):
        """`rows` rows from each generator, input-major."""
        return torch.cat([draw(g, rows) for g in self.generators])

    def normal(self, shape: tuple[int, ...]) -> torch.Tensor:
        """Standard normal on the CPU; shape[0] = b * (n or 1)."""
        return self.rows(lambda g, r: torch.randn((r, *shape[1:]), generator=g, device="cpu"),
                         shape[0] // self.b * self.per)


class Segmenter:
    """Load a model once, then `sample` as often as needed."""

    def __init__(self, model: torch.nn.Module, cfg: ModelConfig, device: str | None = "auto",
                 info: dict[str, Any] | None = None):
        self.device = resolve_device(device)
        self.cfg = cfg
        self.info = info or {}
        self.model = model.to(self.device).eval()
        if self.device.type == "cpu":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.schedule = Schedule.from_config(cfg)
        self.denoiser = Denoiser.from_config(cfg)

    @classmethod
    def load(cls, weights: str | os.PathLike | None = None, device: str | None = "auto"):
        """`weights=None` loads the bundled LIDC model."""
        from .weights_io import load_weights

        model, cfg, info = load_weights(weights)
        return cls(model, cfg, device, info)

    @property
    def volume_method(self) -> str:
        return COHERENT if self.cfg.neighbour_conditioning else PER_SLICE

    def neighbour_steps(self, steps: int) -> int:
        """Steps for slices conditioned on their neighbour (the model's, at most `steps`)."""
        return min(steps, self.cfg.neighbour_steps or steps)

    def default_batch(self) -> int:
        """Samples per network evaluation when sampling many slices: on the CPU a larger batch
        is not faster per sample (measured: 16 to 320 samples, flat or slower), so a few
        slices at a time bound the memory; on a GPU batching is what makes it fast."""
        return 64 if self.device.type == "cpu" else 1024

    def region(self, shape: tuple[int, int], center=None, box=None, spacing=None) -> Region:
        """Where the model looks on a (H, W) plane; `spacing` is the in-plane (y, x) mm/pixel
        (extra leading entries are ignored)."""
        inplane = tuple(spacing)[-2:] if spacing is not None else None
        return region_for(shape, self.cfg.crop_size, center=center, box=box, spacing=inplane,
                          model_spacing=self.cfg.scope.pixel_spacing_mm)

    def prepare(self, image: np.ndarray, region: Region, modality: str) -> torch.Tensor:
        """Validated float image -> normalised (1, 1, crop, crop) network input at `region`."""
        cfg = self.cfg
        ctx = to_model_scale(region.extract(image, cfg.context_size), modality, cfg.hu_window)
        lo = (cfg.context_size - cfg.crop_size) // 2
        crop = ctx[lo:lo + cfg.crop_size, lo:lo + cfg.crop_size]
        return torch.from_numpy(to_network_input(crop))[None, None]

    def _to_device(self, x_in: torch.Tensor) -> torch.Tensor:
        x_in = x_in.to(self.device)
        if self.device.type == "cpu":
            x_in = x_in.contiguous(memory_format=torch.channels_last)
        return x_in

    def inputs(self, volume, zs: Sequence[int], prompts: Sequence[tuple[Any, Any]],
               spacing=None, modality: str = "auto"):
        """(planes, regions, network inputs) of slices `zs` of `volume`, each at its prompt
        (center, box); bad slices are reported before any network work."""
        planes = [check_image_2d(np.asarray(volume[z]), f"slice {z}") for z in zs]
        modality = guess_modality(np.asarray(volume[zs[0]]), modality)
        regions = [self.region(p.shape, c, b, spacing) for p, (c, b) in zip(planes, prompts)]
        return planes, regions, [self.prepare(p, r, modality) for p, r in zip(planes, regions)]

    @torch.inference_mode()
    def finding_probabilities(self, volume, zs: Sequence[int],
                              prompts: Sequence[tuple[Any, Any]], spacing=None,
                              modality: str = "auto") -> np.ndarray | None:
        """p(readers would outline a finding) on each slice `zs` at its prompt (image encoder
        and existence head only), or None for a model without an existence head."""
        if self.model.existence is None:
            return None
        x_all = self.inputs(volume, zs, prompts, spacing, modality)[2]
        out = []
        for i in range(0, len(x_all), 64):
            with autocast(self.device):
                feats = self.model.encode_image(self._to_device(torch.cat(x_all[i:i + 64])))
                out.append(torch.sigmoid(self.model.existence_logit(feats).float()).cpu())
        return torch.cat(out).numpy()

    @torch.inference_mode()
    def draw(self, x_in: torch.Tensor, n: int, steps: int, seed: int | Sequence[int] = 0, *,
             sampler: str | None = None, progress: Progress | None = None,
             should_stop: Callable[[], bool] | None = None, same_noise: bool = False,
             neighbour: np.ndarray | None = None, exists: np.ndarray | None = None,
             given_finding: bool = False, with_existence: bool = False,
             known: np.ndarray | None = None, steering: Constraints | None = None,
             included: Sequence[bool] | None = None, shown: np.ndarray | None = None,
             clicked: np.ndarray | None = None):
        """x_in (B, C, crop, crop) network inputs -> x_hat (B, n, crop, crop) in [-1, 1].

        The image is encoded once per input; the samples run as one batch; z (if the model has
        a latent) is drawn from the prior, one per sample. Which samples see a finding
        (`existence`): with an existence head, sample k where its draw u_k < p(finding | crop)
        (stratified: floor(pn) or ceil(pn) of them); with `given_finding`, every sample (the
        outlines given a finding); with `exists` (B, n) bool, those it says (a slab's plan);
        `included` (B,) bool: inputs with an include click, where every sample exists.
        Samples without a finding are empty (-1) and cost no network evaluation.
        Seeded: same seed, same masks on the same device. With `same_noise`, every input gets
        exactly the noise it would get alone with this seed (a batch of slices gives the masks
        of sampling them one by one); otherwise the draws come from one stream. `seed` may
        also be one seed per input: each input gets the noise it would get alone with it.

        3D models: `neighbour` (B, n, crop, crop) in {-1, +1} is each sample's mask on the
        adjacent slice (in this input's crop frame); a sample empty there is drawn without it
        (it begins here) or, when no `exists` plan is given, stays ended.
        Steering (`constraints`): `known` (B, crop, crop) are the pixels whose mask is known
        in each input's crop frame (`Constraints.known`: > 0 inside, < 0 outside, 0 unknown,
        +-2 the clicked pixels); every step's x-prediction takes them
        (`diffusion.sampler.Known`) with the knobs of `steering` (restarts, pinned clicks).
        Without `known` nothing changes. Click-conditioned models also read the clicks
        (`clicked`, like `known` with each click's `Constraints.radius` disk; default `known`)
        and `shown` (B, crop, crop) in {0, 1}, the mask they were made on, through their click
        encoder.
        With `with_existence`, returns (x_hat, p (B,) or None).
        """
        b = x_in.shape[0]
        streams = _Streams(seed, b, same_noise)
        shape = (b * n, 1, self.cfg.crop_size, self.cfg.crop_size)
        x_hat = torch.full(shape, -1.0)
        with autocast(self.device):
            feats = self.model.encode_image(self._to_device(x_in))
            p, keep = self._existence(feats, streams, n, exists, given_finding)
            feats = self._steered(feats, known if clicked is None else clicked, shown)
            z = self._latents(feats, streams, n)
            nb, has = self._neighbours(neighbour, shape)
            if nb is not None and exists is None:
                keep &= has  # a sample that ended on the adjacent slice stays ended
            if included is not None:  # an include click: a finding in every sample
                keep |= torch.as_tensor(np.asarray(included, bool)).repeat_interleave(n)
            idx = keep.nonzero()[:, 0]
            if len(idx):
                x_hat[idx] = self._denoise(feats, z, nb, has, idx, shape, streams, steps,
                                           sampler, progress, should_stop,
                                           self._known(known, n, idx, shape, steering))
            elif progress is not None:
                progress(steps, steps)
        out = x_hat.numpy().reshape(b, n, *shape[2:])
        return (out, p) if with_existence else out

    def _existence(self, feats, streams: _Streams, n: int, exists, given_finding: bool):
        """(p (B,) or None, keep (B*n,) bool): which samples see a finding (`draw`)."""
        keep = torch.ones(streams.b * n, dtype=torch.bool)
        logit = self.model.existence_logit(feats)
        p = None if logit is None else torch.sigmoid(logit.float()).cpu()
        if p is not None:  # always drawn, so that the noise after them stays the same
            u = streams.rows(lambda g, r: existence_draws(g, r, n), streams.per)
            if exists is None and not given_finding:
                keep &= (u < p[:, None]).reshape(-1)
        if exists is not None:
            keep &= torch.as_tensor(np.asarray(exists, bool)).reshape(-1)
        return p, keep

    def _latents(self, feats, streams: _Streams, n: int) -> torch.Tensor | None:
        """One latent per sample from the prior (models with a CIMD-style latent)."""
        if self.model.latent is None:
            return None
        prior = self.model.latent.prior(feats[-1])
        mu, std = (v.repeat_interleave(n, 0) for v in (prior.mu, (0.5 * prior.logvar).exp()))
        return mu + std * streams.normal(tuple(mu.shape)).to(self.device)

    def _steered(self, feats, known, shown=None):
        """The image features given each input's clicks (models with click conditioning:
        include = known > 0, exclude = known < 0, and the mask they were made on); inputs
        without clicks keep theirs."""
        if known is None or self.model.clicks is None:
            return feats
        k = torch.as_tensor(np.asarray(known, np.float32))
        on = torch.zeros_like(k) if shown is None else torch.as_tensor(
            np.asarray(shown, np.float32))
        clicks = torch.stack([k > 0, k < 0, on > 0.5], 1).float()
        has = (k != 0).flatten(1).any(1)
        if not bool(has.any()):
            return feats
        return self.model.steer(feats, self._to_device(clicks), has)

    @staticmethod
    def _known(known, n: int, idx, shape, steering: Constraints | None) -> Known | None:
        """The known pixels of samples `idx` (`draw`), None when nothing is known."""
        if known is None:
            return None
        k = torch.as_tensor(np.asarray(known, np.float32)).repeat_interleave(n, 0)
        k = k.reshape(shape)[idx]
        if not bool((k != 0).any()):
            return None
        steering = steering or Constraints()
        return Known(torch.where(k > 0, 1.0, -1.0), k != 0,
                     k.abs() > 1.5 if steering.pin else None, steering.restarts,
                     steering.restart_steps)

    @staticmethod
    def _neighbours(neighbour, shape):
        """(neighbour masks (B*n, 1, crop, crop) or None, has a non-empty neighbour (B*n,))."""
        if neighbour is None:
            return None, None
        nb = torch.as_tensor(np.asarray(neighbour, np.float32)).reshape(shape)
        return nb, (nb > 0).flatten(1).any(1)

    def _denoise(self, feats, z, nb, has, idx, shape, streams: _Streams, steps: int, sampler,
                 progress, should_stop, known: Known | None = None) -> torch.Tensor:
        """The diffusion sampling loop for samples `idx` of the (B*n) batch."""
        m, b = len(idx), len(feats[0])
        on = idx.to(self.device)
        if b > 1 or m < shape[0]:  # batch 1 with every sample broadcasts inside the denoiser
            feats = [f.repeat_interleave(shape[0] // b, 0)[on] for f in feats]
        z = None if z is None else z[on]
        if nb is not None:
            nb, has = nb[idx].to(self.device), has[idx].to(self.device)

        def denoise(x_t, logsnr):
            raw = self.model.denoise(x_t, logsnr, feats, z, nb, has)
            return self.denoiser.x_hat(raw, x_t, logsnr)

        def noise_kept(sub_shape):  # the noise of all samples, then the kept ones
            return streams.normal((shape[0], *sub_shape[1:]))[idx]

        return sample_masks(denoise, self.schedule, (m, *shape[1:]), steps=steps,
                            sampler=sampler or self.cfg.sampler, device=self.device,
                            on_step=progress, should_stop=should_stop, known=known,
                            noise=streams.normal if m == shape[0] else noise_kept).float().cpu()

    def slice_steps(self, steps: int, neighbours, exists=None) -> int:
        """Steps for slices drawn with `neighbours`: the model's neighbour steps when every
        sample drawn continues its neighbour's outline, all `steps` when one begins there."""
        if neighbours is None:
            return steps
        if exists is not None:
            has = [np.asarray(m).reshape(len(m), -1).any(1) for m in neighbours]
            if any((np.asarray(e, bool) & ~h).any() for e, h in zip(exists, has)):
                return steps
        return self.neighbour_steps(steps)

    @torch.inference_mode()
    def sample_slices(self, volume, zs: Sequence[int], prompts: Sequence[tuple[Any, Any]],
                      n: int | None = None, steps: int | None = None,
                      seed: int | Sequence[int] = 0, *,
                      spacing: tuple[float, ...] | None = None, modality: str = "auto",
                      sampler: str | None = None, progress: Progress | None = None,
                      should_stop: Callable[[], bool] | None = None,
                      max_batch: int | None = None,
                      neighbours: Sequence[np.ndarray] | None = None,
                      exists: Sequence[np.ndarray] | None = None,
                      given_finding: bool = False,
                      constraints: Constraints | None = None) -> list[SliceSample]:
        """Samples of slices `zs` of `volume` (anything indexable by slice: (Z, H, W[, C])),
        each at its prompt (center, box): one `SliceSample` per slice.

        The slices go through the network together, `max_batch` samples per evaluation
        (whole slices; default `default_batch()`): the image encoder runs once per slice.
        Every slice uses `seed` (or its own entry of a sequence aligned with `zs`) as if
        sampled alone, so the result does not depend on how the slices are batched.
        Existence (`draw`): each slice's own draws against its p, or `given_finding` (every
        sample), or `exists` (per slice, (n,) bool: a slab's plan).
        `neighbours` (coherent models): per slice, the (n, H, W) masks of the same samples on
        the adjacent slice; each sample continues its own outline (`slice_steps`).
        `progress(done, total)` counts network evaluations over all batches; `should_stop` is
        checked before each.
        `constraints` (`constraints.Constraints`; (z, y, x) clicks, z a slice of `volume`; 2D
        ones apply to every slice): each slice's samples are drawn given its clicks (known
        pixels at every step, all `steps` even beside a neighbour); an include click means a
        finding on its slice in every sample.
        A slice prompted nowhere (no centre, no box) is looked at around its include clicks.
        """
        n, steps = self._counts(n, steps)
        planes_of = self._steering(constraints, zs)
        if planes_of is None or not any(planes_of):  # a clicked slice takes all the steps
            steps = self.slice_steps(steps, neighbours, exists)
        if planes_of is not None:
            prompts = [_around_includes(c, pr) for c, pr in zip(planes_of, prompts)]
        planes, regions, x_all = self.inputs(volume, zs, prompts, spacing, modality)
        size = self.cfg.crop_size
        known = clicked = None
        if planes_of is not None:
            known, clicked = self._known_maps(planes_of, zs, regions, size)
        per = max(1, (max_batch or self.default_batch()) // n)
        chunks = [range(i, min(i + per, len(zs))) for i in range(0, len(zs), per)]
        out = []
        for c, chunk in enumerate(chunks):
            step_report = (None if progress is None else
                           lambda i, k, c=c: progress(c * steps + i, len(chunks) * steps))
            nb = None
            if neighbours is not None:
                nb = np.stack([[np.where(regions[i].extract(m.astype(np.float32), size) > 0.5,
                                         1.0, -1.0) for m in np.asarray(neighbours[i], bool)]
                               for i in chunk])
            seeds = seed if isinstance(seed, (int, np.integer)) else [seed[i] for i in chunk]
            plan = None if exists is None else np.stack([exists[i] for i in chunk])
            steer = {}
            if known is not None:
                steer = {"known": known[list(chunk)], "clicked": clicked[list(chunk)],
                         "steering": constraints,
                         "included": [planes_of[i].has_include for i in chunk],
                         "shown": np.stack([planes_of[i].shown_map(regions[i], size)
                                            for i in chunk])}
            x_hat, p = self.draw(torch.cat([x_all[i] for i in chunk]), n, steps, seeds,
                                 sampler=sampler, progress=step_report, should_stop=should_stop,
                                 same_noise=True, neighbour=nb, exists=plan,
                                 given_finding=given_finding, with_existence=True, **steer)
            for j, i in enumerate(chunk):
                shape = planes[i].shape
                out.append(SliceSample(regions[i].paste(x_hat[j], shape) > 0,
                                       regions[i].bounds(size, shape),
                                       None if p is None else float(p[j])))
        return out

    @staticmethod
    def _steering(constraints: Constraints | None, zs) -> list[Constraints] | None:
        """Each slice's 2D constraints, or None when there are none at all."""
        if not constraints:
            return None
        return [constraints.plane(z) for z in zs]

    def _known_maps(self, planes_of: list[Constraints], zs, regions,
                    size: int) -> tuple[np.ndarray, np.ndarray]:
        """(known, clicked): (slices, crop, crop) known pixels of every slice (each click's
        `Constraints.known_disk` for this model) and the clicks as its click encoder reads
        them (their `radius` disks); an include click the model cannot see from its prompt is
        refused before any network work."""
        for z, c, r in zip(zs, planes_of, regions):
            far = c.outside_view(r, size)
            if far:
                y0, x0, y1, x1 = r.bounds(size, (10**9, 10**9))
                on = f" on slice {z}" if len(far[0]) == 3 or len(zs) > 1 else ""
                raise InputError(
                    f"include point {tuple(far[0][-2:])}{on} is outside the region the model "
                    f"sees around the prompt (rows {y0}..{y1 - 1}, columns {x0}..{x1 - 1}): "
                    "prompt nearer to it or leave it out")
        encoder = self.model.clicks is not None

        def maps(radius_of) -> np.ndarray:
            return np.stack([c.known(r, size, radius_of(c)) if c else
                             np.zeros((size, size), np.float32)
                             for c, r in zip(planes_of, regions)])

        return maps(lambda c: c.known_disk(encoder)), maps(lambda c: c.radius)

    def _counts(self, n: int | None, steps: int | None) -> tuple[int, int]:
        return sampling_counts(self.cfg, n, steps)

    def sample(self, image: np.ndarray, n: int | None = None, steps: int | None = None,
               seed: int = 0, *, center: tuple[float, float] | None = None,
               box: tuple[float, float, float, float] | None = None,
               spacing: tuple[float, ...] | None = None, modality: str = "auto",
               sampler: str | None = None, progress: Progress | None = None,
               should_stop: Callable[[], bool] | None = None, given_finding: bool = True,
               mode_min_iou: float = 0.5,
               constraints: Constraints | None = None) -> SampleResult:
        """N masks of one 2D image (H, W) or RGB (H, W, 3) at a centre or box (pixel
        coordinates); `spacing` (y, x) mm/pixel resamples to the model's pixel size.
        By default the masks are drawn given a finding at the prompt and the model's
        probability of one is `finding_probability`; `given_finding=False` draws the
        benchmark distribution (some samples empty).
        `constraints`: include / exclude clicks ((y, x) pixel indices) the samples are drawn
        given (`constraints` module; an include implies a finding); the result records them
        and the share of samples that satisfy them. Without a centre or box the model looks
        around the include clicks."""
        n, steps = self._counts(n, steps)
        t0 = time.perf_counter()
        check_image_2d(image)  # bad input is reported before any work
        if constraints:
            constraints.check(np.shape(image)[:2])
        inplane = tuple(spacing)[-2:] if spacing is not None else None
        pool, satisfies = [], []
        for r in range(constraints.rounds if constraints else 1):
            if r and sum(s.sum() for s in satisfies) >= n:
                break
            (one,) = self.sample_slices(
                [image], [0], [(center, box)], n, steps, seed + r * ROUND_SEED,
                spacing=spacing, modality=modality, sampler=sampler, progress=progress,
                should_stop=should_stop, given_finding=given_finding,
                constraints=constraints or None)
            pool.append(one.masks)
            if constraints:
                satisfies.append(constraints.satisfied(one.masks, spacing=inplane))
        masks = pool[0]
        if constraints:
            masks, satisfies = np.concatenate(pool), np.concatenate(satisfies)
            keep = pick(satisfies, n)
            masks, satisfies = masks[keep], satisfies[keep]
        t1 = time.perf_counter()
        given = given_finding or bool(constraints and constraints.has_include)
        conditional = given and one.finding_probability is not None
        result = SampleResult.from_masks(
            masks, one.bounds, steps, seed, mode_min_iou, spacing=inplane,
            finding_probability=one.finding_probability, conditional=conditional)
        if constraints:
            result.steered(constraints, satisfies, drawn=n * len(pool))
        result.timings = {"sample": t1 - t0, "postprocess": time.perf_counter() - t1,
                          "total": time.perf_counter() - t0}
        return result


def _around_includes(c: Constraints, prompt: tuple[Any, Any]) -> tuple[Any, Any]:
    """A slice's (center, box) prompt; with neither, the centroid of its include clicks."""
    center, box = prompt
    if center is None and box is None and c.include:
        center = tuple(float(v) for v in np.mean([p[-2:] for p in c.include], 0))
    return center, box
