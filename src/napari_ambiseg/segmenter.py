"""`Segmenter`: N plausible masks for one 2D image, with agreement, entropy, modes, consensus."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .config import ModelConfig
from .device import autocast, resolve_device
from .diffusion import Denoiser, Schedule, sample_masks
from .errors import InputError
from .geometry import Region, region_for
from .io.preprocess import check_image_2d, guess_modality, to_model_scale, to_network_input
from .modes import find_modes
from .result import SampleResult, binary_entropy
from .volume_sampling import COHERENT, PER_SLICE

Progress = Callable[[int, int], None]

__all__ = ["Segmenter", "SampleResult", "binary_entropy", "PER_SLICE", "COHERENT"]



def existence_draws(generator: torch.Generator, rows: int, n: int) -> torch.Tensor:
    """(rows, n) uniforms, one in each stratum [j/n, (j+1)/n) in random order per row; sample
    k exists where its draw is below p. Stratified rather than independent: the number that
    exist is floor(pn) or ceil(pn) (pn on average, so calibration is kept) instead of a
    binomial count, which costs HM-IoU and GED (docs/benchmarks.md, "Existence")."""
    order = torch.rand((rows, n), generator=generator).argsort(1)
    return (order + torch.rand((rows, 1), generator=generator)) / n


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

    @torch.inference_mode()
    def draw(self, x_in: torch.Tensor, n: int, steps: int, seed: int | Sequence[int] = 0, *,
             sampler: str | None = None, progress: Progress | None = None,
             should_stop: Callable[[], bool] | None = None, same_noise: bool = False,
             neighbour: np.ndarray | None = None, alive: np.ndarray | None = None,
             with_existence: bool = False):
        """x_in (B, C, crop, crop) network inputs -> x_hat (B, n, crop, crop) in [-1, 1].

        The image is encoded once per input; the samples run as one batch; z (if the model has
        a latent) is drawn from the prior, one per sample. With an existence head, sample k
        exists where its existence draw u_k < p(finding | crop) (`existence_draws`: stratified,
        so floor(pn) or ceil(pn) samples exist, pn on average); samples that do
        not exist are empty (-1) and cost no network evaluation. Seeded: same seed, same masks
        on the same device. With `same_noise`, every input gets exactly the noise it would get
        alone with this seed (so a batch of slices gives the masks of sampling them one by
        one, and sample k's existence draw is the same on every slice: slices agree on which
        samples see a finding, in order of p); otherwise the draws come from one stream.
        `seed` may also be one seed per input: each input gets the noise it would get alone
        with its own seed (datasets: one set of existence draws must not serve every slice).

        3D models: `neighbour` (B, n, crop, crop) in {-1, +1} is each sample's mask on the
        adjacent slice (in this input's crop frame), `alive` (B, n) bool the samples that may
        still exist (a sample that ended on the adjacent slice stays ended).
        With `with_existence`, returns (x_hat, p (B,) or None).
        """
        cfg, b = self.cfg, x_in.shape[0]
        if isinstance(seed, (int, np.integer)):
            seed = [int(seed)] * (b if same_noise else 1)
        if len(seed) not in (1, b):
            raise ValueError(f"{len(seed)} seeds for {b} inputs")
        generators = [torch.Generator().manual_seed(int(s)) for s in seed]
        per = b // len(generators)  # inputs per stream: 1, or all of them in one stream

        def drawn(draw, rows):  # each generator's rows, input-major
            return torch.cat([draw(g, rows) for g in generators])

        def noise(shape):  # standard normal on the CPU; shape[0] = b * (n or 1)
            return drawn(lambda g, r: torch.randn((r, *shape[1:]), generator=g, device="cpu"),
                         shape[0] // b * per)

        x_in = x_in.to(self.device)
        if self.device.type == "cpu":
            x_in = x_in.contiguous(memory_format=torch.channels_last)
        shape = (b * n, 1, cfg.crop_size, cfg.crop_size)
        x_hat = torch.full(shape, -1.0)
        p = None
        with autocast(self.device):
            feats = self.model.encode_image(x_in)
            keep = torch.ones(b * n, dtype=torch.bool)
            logit = self.model.existence_logit(feats)
            if logit is not None:
                p = torch.sigmoid(logit.float()).cpu()
                u = drawn(lambda g, r: existence_draws(g, r, n), per)
                keep &= (u < p[:, None]).reshape(-1)
            if alive is not None:
                keep &= torch.as_tensor(np.asarray(alive, bool)).reshape(-1)
            z = None
            if self.model.latent is not None:
                prior = self.model.latent.prior(feats[-1])
                mu, std = (v.repeat_interleave(n, 0) for v in (prior.mu, (0.5 * prior.logvar).exp()))
                z = (mu + std * noise(tuple(mu.shape)).to(self.device))
            idx = keep.nonzero()[:, 0]
            m = len(idx)
            every = m == b * n
            if b > 1 or not every:  # batch 1 with every sample broadcasts inside the denoiser
                feats = [f.repeat_interleave(n, 0)[idx.to(self.device)] for f in feats]
            if z is not None:
                z = z[idx.to(self.device)]
            nb = None  # every kept sample has its neighbour
            if neighbour is not None and m:
                nb = torch.as_tensor(np.asarray(neighbour, np.float32)).reshape(shape)[idx]
                nb = nb.to(self.device)

            def denoise(x_t, logsnr):
                raw = self.model.denoise(x_t, logsnr, feats, z, nb)
                return self.denoiser.x_hat(raw, x_t, logsnr)

            def noise_kept(sub_shape):  # the noise of all samples, then the kept ones
                return noise((b * n, *sub_shape[1:]))[idx]

            if m:
                x_hat[idx] = sample_masks(
                    denoise, self.schedule, (m, *shape[1:]), steps=steps,
                    sampler=sampler or cfg.sampler,
                    device=self.device, on_step=progress,
                    should_stop=should_stop, noise=noise if every else noise_kept).float().cpu()
            elif progress is not None:
                progress(steps, steps)
        out = x_hat.numpy().reshape(b, n, cfg.crop_size, cfg.crop_size)
        return (out, p) if with_existence else out

    def _counts(self, n: int | None, steps: int | None) -> tuple[int, int]:
        n = self.cfg.n_samples if n is None else int(n)
        steps = self.cfg.steps if steps is None else int(steps)
        if not 1 <= n <= 1024:
            raise InputError(f"n must be between 1 and 1024; got {n}")
        if steps < 1:
            raise InputError(f"steps must be >= 1; got {steps}")
        return n, steps

    @torch.inference_mode()
    def sample_slices(self, volume, zs: Sequence[int], prompts: Sequence[tuple[Any, Any]],
                      n: int | None = None, steps: int | None = None,
                      seed: int | Sequence[int] = 0, *,
                      spacing: tuple[float, ...] | None = None, modality: str = "auto",
                      sampler: str | None = None, progress: Progress | None = None,
                      should_stop: Callable[[], bool] | None = None,
                      max_batch: int | None = None,
                      neighbours: Sequence[np.ndarray] | None = None
                      ) -> list[tuple[np.ndarray, tuple]]:
        """Masks of slices `zs` of `volume` (anything indexable by slice: (Z, H, W[, C])), each
        at its prompt (center, box); returns per slice ((n, H, W) bool masks, bounds).

        The slices go through the network together, `max_batch` samples per evaluation
        (whole slices; default `default_batch()`): the image encoder runs once per slice.
        Every slice uses `seed` (or its own entry of a sequence aligned with `zs`) as if
        sampled alone, so the result does not depend on how the slices are batched.
        `neighbours` (coherent models): per slice, the (n, H, W) masks of the same samples on
        the adjacent slice; each sample continues its own outline and a sample empty there
        stays empty; these slices take `neighbour_steps(steps)` steps.
        `progress(done, total)` counts network evaluations over all batches; `should_stop` is
        checked before each.
        """
        n, steps = self._counts(n, steps)
        if neighbours is not None:
            steps = self.neighbour_steps(steps)
        planes = [check_image_2d(np.asarray(volume[z]), f"slice {z}") for z in zs]
        modality = guess_modality(np.asarray(volume[zs[0]]), modality)
        regions = [self.region(p.shape, c, b, spacing) for p, (c, b) in zip(planes, prompts)]
        x_all = [self.prepare(p, r, modality) for p, r in zip(planes, regions)]
        size = self.cfg.crop_size
        per = max(1, (max_batch or self.default_batch()) // n)
        chunks = [range(i, min(i + per, len(zs))) for i in range(0, len(zs), per)]
        out = []
        for c, chunk in enumerate(chunks):
            step_report = (None if progress is None else
                           lambda i, k, c=c: progress(c * steps + i, len(chunks) * steps))
            nb = alive = None
            if neighbours is not None:
                prev = [np.asarray(neighbours[i], bool) for i in chunk]
                alive = np.stack([m.reshape(n, -1).any(1) for m in prev])
                nb = np.stack([[np.where(regions[i].extract(m.astype(np.float32), size) > 0.5,
                                         1.0, -1.0) for m in ms] for i, ms in zip(chunk, prev)])
            seeds = seed if isinstance(seed, (int, np.integer)) else [seed[i] for i in chunk]
            x_hat = self.draw(torch.cat([x_all[i] for i in chunk]), n, steps, seeds,
                              sampler=sampler, progress=step_report, should_stop=should_stop,
                              same_noise=True, neighbour=nb, alive=alive)
            for j, i in enumerate(chunk):
                shape = planes[i].shape
                masks = regions[i].paste(x_hat[j], shape) > 0
                out.append((masks, regions[i].bounds(size, shape)))
        return out

    def sample(self, image: np.ndarray, n: int | None = None, steps: int | None = None,
               seed: int = 0, *, center: tuple[float, float] | None = None,
               box: tuple[float, float, float, float] | None = None,
               spacing: tuple[float, ...] | None = None, modality: str = "auto",
               sampler: str | None = None, progress: Progress | None = None,
               should_stop: Callable[[], bool] | None = None,
               mode_min_iou: float = 0.5) -> SampleResult:
        """N masks of one 2D image (H, W) or RGB (H, W, 3) at a centre or box (pixel
        coordinates); `spacing` (y, x) mm/pixel resamples to the model's pixel size."""
        n, steps = self._counts(n, steps)
        t0 = time.perf_counter()
        check_image_2d(image)  # bad input is reported before any work
        ((masks, bounds),) = self.sample_slices(
            [image], [0], [(center, box)], n, steps, seed, spacing=spacing, modality=modality,
            sampler=sampler, progress=progress, should_stop=should_stop)
        t1 = time.perf_counter()
        agreement = masks.mean(0, dtype=np.float32)
        inplane = tuple(spacing)[-2:] if spacing is not None else None
        result = SampleResult(masks=masks, agreement=agreement, entropy=binary_entropy(agreement),
                              modes=find_modes(masks, mode_min_iou), bounds=bounds, steps=steps,
                              seed=int(seed), spacing=inplane)
        result.timings = {"sample": t1 - t0, "postprocess": time.perf_counter() - t1,
                          "total": time.perf_counter() - t0}
        return result
