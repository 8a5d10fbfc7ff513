"""Evaluate a model on a multi-rater set: sample N masks per image, then the metrics."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .. import metrics
from ..segmenter import Segmenter
from .data import DATA_INTENSITY, MultiRaterData


def sample_dataset(seg: Segmenter, data: MultiRaterData, n: int | None = None,
                   steps: int | None = None, seed: int = 0, batch_images: int = 8,
                   sampler: str | None = None,
                   progress: Callable[[int, int], None] | None = None,
                   should_stop: Callable[[], bool] | None = None) -> np.ndarray:
    """Samples (K, N, H, W) bool, each image sampled at its centre (the nodule crops' centre)
    through `Segmenter.sample_slices`, `batch_images` images per batch; N and steps default
    to the model's. Image i is sampled with seed `seed + i`: with one seed for all, one set
    of N existence draws would decide every image alike and bias the whole set's figures."""
    k, h, w = data.images.shape
    n = seg.cfg.n_samples if n is None else n
    out = np.zeros((k, n, h, w), bool)
    for start in range(0, k, batch_images):
        zs = range(start, min(start + batch_images, k))
        seeds = [seed + i for i in zs]  # aligned with zs
        slices = seg.sample_slices(data.images, zs, [(None, None)] * len(zs), n, steps, seeds,
                                   modality=DATA_INTENSITY, sampler=sampler,
                                   should_stop=should_stop, max_batch=len(zs) * n)
        for i, (masks, _) in zip(zs, slices):
            out[i] = masks
        if progress is not None:
            progress(zs.stop, k)
    return out


def evaluate_samples(samples: np.ndarray, data: MultiRaterData) -> dict:
    """Mean per-image metrics plus pixel calibration over the whole set."""
    per_image = [metrics.evaluate_set(s, y) for s, y in zip(samples, data.masks)]
    result = metrics.summarize(per_image)
    cal = metrics.calibration(samples.mean(1), data.masks.mean(1))
    result["ece"] = cal["ece"]
    result["count"] = len(per_image)
    return result, cal


def evaluate_model(seg: Segmenter, data: MultiRaterData, n: int | None = None,
                   steps: int | None = None, seed: int = 0, **kw) -> dict:
    samples = sample_dataset(seg, data, n, steps, seed, **kw)
    result, _ = evaluate_samples(samples, data)
    result.update(n=samples.shape[1], steps=steps or seg.cfg.steps,
                  sampler=kw.get("sampler") or seg.cfg.sampler)
    return result
