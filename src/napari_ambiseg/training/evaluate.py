"""Evaluate a model on a multi-rater set: sample N masks per image, then the metrics."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .. import metrics
from ..config import sampling_counts
from ..segmenter import Segmenter
from .data import DATA_INTENSITY, MultiRaterData


def sample_dataset(seg: Segmenter, data: MultiRaterData, n: int | None = None,
                   steps: int | None = None, seed: int = 0, batch_images: int = 8,
                   sampler: str | None = None,
                   progress: Callable[[int, int], None] | None = None,
                   should_stop: Callable[[], bool] | None = None,
                   given_finding: bool = False) -> np.ndarray:
    """Samples (K, N, H, W) bool, each image sampled at its centre (the nodule crops' centre)
    through `Segmenter.sample_slices`, `batch_images` images per batch; N and steps default
    to the model's. Image i is sampled with seed `seed + i`: with one seed for all, one set
    of N existence draws would decide every image alike and bias the whole set's figures.
    The benchmark distribution (empty samples included) unless `given_finding`."""
    k, h, w = data.images.shape
    n, steps = sampling_counts(seg.cfg, n, steps)
    out = np.zeros((k, n, h, w), bool)
    for start in range(0, k, batch_images):
        zs = range(start, min(start + batch_images, k))
        seeds = [seed + i for i in zs]  # aligned with zs
        slices = seg.sample_slices(data.images, zs, [(None, None)] * len(zs), n, steps, seeds,
                                   modality=DATA_INTENSITY, sampler=sampler,
                                   should_stop=should_stop, max_batch=len(zs) * n,
                                   given_finding=given_finding)
        for i, one in zip(zs, slices):
            out[i] = one.masks
        if progress is not None:
            progress(zs.stop, k)
    return out


def finding_probabilities(seg: Segmenter, data: MultiRaterData) -> np.ndarray | None:
    """(K,) the model's p(readers outline a finding) of each image at its centre, data order
    (None for a model without an existence head)."""
    k = len(data.images)
    return seg.finding_probabilities(data.images, range(k), [(None, None)] * k,
                                     modality=DATA_INTENSITY)


def finding_calibration(p: np.ndarray, data: MultiRaterData, bins: int = 10) -> dict:
    """How well p predicts the share of readers who outlined (slice level): ECE over `bins`
    equal-width bins, BCE against that share, and the BCE of the best constant (the share's
    mean) and of the share itself (the floor: the readers' own entropy)."""
    share = data.masks.reshape(*data.masks.shape[:2], -1).any(-1).mean(1)
    cal = metrics.calibration(np.asarray(p, float), share, bins)

    def bce(q):
        q = np.clip(np.asarray(q, float), 1e-6, 1 - 1e-6)
        return float(np.mean(-(share * np.log(q) + (1 - share) * np.log(1 - q))))

    return {"count": int(len(share)), "ece": cal["ece"], "bce": bce(p),
            "bce_constant": bce(np.full_like(share, share.mean())), "bce_floor": bce(share),
            "mean_probability": float(np.mean(p)), "mean_share": float(share.mean()),
            "bin_confidence": cal["bin_confidence"], "bin_frequency": cal["bin_frequency"],
            "bin_count": cal["bin_count"]}


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
