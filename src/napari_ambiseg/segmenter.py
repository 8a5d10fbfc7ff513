"""`Segmenter`: N plausible masks for one 2D image, with agreement, entropy, modes, consensus."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from .config import ModelConfig
from .device import autocast, resolve_device
from .diffusion import Schedule, sample_masks
from .errors import InputError
from .geometry import Region, region_for
from .io.preprocess import check_image_2d, guess_modality, to_model_scale, to_network_input
from .modes import Mode, find_modes

Progress = Callable[[int, int], None]


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """Pixel entropy in bits of a Bernoulli(p): 0 where all samples agree, 1 at p = 0.5."""
    p = np.clip(p, 1e-7, 1 - 1e-7)
    h = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    return np.where((p <= 1e-7) | (p >= 1 - 1e-7), 0.0, h).astype(np.float32)


@dataclass
class SampleResult:
    masks: np.ndarray               # (N, H, W) bool, aligned with the input image
    agreement: np.ndarray           # (H, W) float32: fraction of samples marking each pixel
    entropy: np.ndarray             # (H, W) float32: pixel entropy (bits)
    modes: list[Mode]               # sorted by frequency
    bounds: tuple[int, int, int, int]  # (y0, x0, y1, x1) image region the model saw
    steps: int
    seed: int
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.masks.shape[0])

    def consensus(self, threshold: float = 0.5) -> np.ndarray:
        """Pixels marked by at least `threshold` of the samples (never the empty background)."""
        return (self.agreement >= threshold) & (self.agreement > 0)

    def summary(self) -> dict[str, Any]:
        return {
            "n": self.n, "steps": self.steps, "seed": self.seed,
            "bounds": list(self.bounds),
            "modes": [{"rank": r + 1, "label": m.label(r + 1, self.n), "count": len(m.members),
                       "frequency": m.frequency, "representative": m.representative,
                       "members": m.members, "area_px": int(self.masks[m.representative].sum())}
                      for r, m in enumerate(self.modes)],
            "empty_fraction": float((self.masks.reshape(self.n, -1).sum(1) == 0).mean()),
            "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
        }


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

    @classmethod
    def load(cls, weights: str | os.PathLike | None = None, device: str | None = "auto"):
        """`weights=None` loads the bundled LIDC model."""
        from .weights_io import load_weights

        model, cfg, info = load_weights(weights)
        return cls(model, cfg, device, info)

    def prepare(self, image: np.ndarray, region: Region, modality: str) -> torch.Tensor:
        """Validated float image -> normalised (1, 1, crop, crop) network input at `region`."""
        cfg = self.cfg
        ctx = to_model_scale(region.extract(image, cfg.context_size), modality)
        lo = (cfg.context_size - cfg.crop_size) // 2
        crop = ctx[lo:lo + cfg.crop_size, lo:lo + cfg.crop_size]
        return torch.from_numpy(to_network_input(crop))[None, None]

    @torch.inference_mode()
    def draw(self, x_in: torch.Tensor, n: int, steps: int, seed: int = 0, *,
             sampler: str | None = None, progress: Progress | None = None,
             should_stop: Callable[[], bool] | None = None) -> np.ndarray:
        """x_in (B, C, crop, crop) network inputs -> x_hat (B, n, crop, crop) in [-1, 1].

        The image is encoded once per input; all B * n samples run as one batch; z (if the
        model has a latent) is drawn from the prior, one per sample. Seeded: same seed, same
        masks on the same device.
        """
        cfg, b = self.cfg, x_in.shape[0]
        generator = torch.Generator().manual_seed(int(seed))
        x_in = x_in.to(self.device)
        if self.device.type == "cpu":
            x_in = x_in.contiguous(memory_format=torch.channels_last)
        with autocast(self.device):
            feats = self.model.encode_image(x_in)
            z = None
            if self.model.latent is not None:
                prior = self.model.latent.prior(feats[-1])
                mu, std = (v.repeat_interleave(n, 0) for v in (prior.mu, (0.5 * prior.logvar).exp()))
                z = mu + std * torch.randn(mu.shape, generator=generator).to(self.device)
            if b > 1:  # batch 1 broadcasts inside the denoiser
                feats = [f.repeat_interleave(n, 0) for f in feats]

            def denoise(x_t, logsnr):
                return self.model.denoise(x_t, logsnr, feats, z)

            x_hat = sample_masks(denoise, self.schedule, (b * n, 1, cfg.crop_size, cfg.crop_size),
                                 steps=steps, prediction=cfg.prediction,
                                 sampler=sampler or cfg.sampler, generator=generator,
                                 device=self.device, on_step=progress, should_stop=should_stop)
        return x_hat.float().cpu().numpy().reshape(b, n, cfg.crop_size, cfg.crop_size)

    @torch.inference_mode()
    def sample(self, image: np.ndarray, n: int | None = None, steps: int | None = None,
               seed: int = 0, *, center: tuple[float, float] | None = None,
               box: tuple[float, float, float, float] | None = None,
               spacing: tuple[float, float] | None = None, modality: str = "auto",
               sampler: str | None = None, progress: Progress | None = None,
               should_stop: Callable[[], bool] | None = None,
               mode_min_iou: float = 0.5) -> SampleResult:
        cfg = self.cfg
        n = cfg.n_samples if n is None else int(n)
        steps = cfg.steps if steps is None else int(steps)
        if not 1 <= n <= 1024:
            raise InputError(f"n must be between 1 and 1024; got {n}")
        if steps < 1:
            raise InputError(f"steps must be >= 1; got {steps}")
        t0 = time.perf_counter()
        img = check_image_2d(image)
        region = region_for(img.shape, cfg.crop_size, center=center, box=box, spacing=spacing,
                            model_spacing=cfg.extra.get("pixel_spacing_mm"))
        x_in = self.prepare(img, region, guess_modality(image, modality))
        t1 = time.perf_counter()
        x_hat = self.draw(x_in, n, steps, seed, sampler=sampler, progress=progress,
                          should_stop=should_stop)[0]
        t2 = time.perf_counter()
        soft = region.paste(x_hat, img.shape)
        masks = soft > 0
        agreement = masks.mean(0, dtype=np.float32)
        result = SampleResult(masks=masks, agreement=agreement, entropy=binary_entropy(agreement),
                              modes=find_modes(masks, mode_min_iou),
                              bounds=region.bounds(cfg.crop_size, img.shape), steps=steps,
                              seed=int(seed))
        result.timings = {"prepare": t1 - t0, "sample": t2 - t1,
                          "postprocess": time.perf_counter() - t2,
                          "total": time.perf_counter() - t0}
        return result
