"""Evaluate a model on a multi-rater set: sample N masks per image, then the metrics."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .. import metrics
from ..geometry import region_for
from ..segmenter import Segmenter
from .data import MultiRaterData


def sample_dataset(seg: Segmenter, data: MultiRaterData, n: int = 16, steps: int | None = None,
                   seed: int = 0, batch_images: int = 8, sampler: str | None = None,
                   progress: Callable[[int, int], None] | None = None,
                   should_stop: Callable[[], bool] | None = None) -> np.ndarray:
    """Samples (K, N, H, W) bool, each image sampled at its centre (the nodule crops' centre)."""
    k, h, w = data.images.shape
    region = region_for((h, w), seg.cfg.crop_size)
    out = np.zeros((k, n, h, w), bool)
    for start in range(0, k, batch_images):
        stop = min(start + batch_images, k)
        x_in = torch.cat([seg.prepare(data.images[i].astype(np.float32), region, "8bit")
                          for i in range(start, stop)])
        x_hat = seg.draw(x_in, n, steps or seg.cfg.steps, seed + start, sampler=sampler,
                         should_stop=should_stop)
        for j, i in enumerate(range(start, stop)):
            out[i] = region.paste(x_hat[j], (h, w)) > 0
        if progress is not None:
            progress(stop, k)
    return out


def evaluate_samples(samples: np.ndarray, data: MultiRaterData) -> dict:
    """Mean per-image metrics plus pixel calibration over the whole set."""
    per_image = [metrics.evaluate_set(s, y) for s, y in zip(samples, data.masks)]
    result = metrics.summarize(per_image)
    cal = metrics.calibration(samples.mean(1), data.masks.mean(1))
    result["ece"] = cal["ece"]
    result["count"] = len(per_image)
    return result, cal


def evaluate_model(seg: Segmenter, data: MultiRaterData, n: int = 16, steps: int | None = None,
                   seed: int = 0, **kw) -> dict:
    samples = sample_dataset(seg, data, n, steps, seed, **kw)
    result, _ = evaluate_samples(samples, data)
    result.update(n=n, steps=steps or seg.cfg.steps, sampler=kw.get("sampler") or seg.cfg.sampler)
    return result
