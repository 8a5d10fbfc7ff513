"""Small synthetic multi-rater data with known modes, and tiny models, for fast tests."""

from __future__ import annotations

import numpy as np

from napari_ambiseg.config import ModelConfig
from napari_ambiseg.training.data import MultiRaterData

TINY = dict(crop_size=32, context_size=32, image_widths=(8, 16, 32), mask_widths=(8, 16, 32),
            time_dim=32)


def tiny_config(**kw) -> ModelConfig:
    return ModelConfig(**(TINY | kw))


def disk(size: int, radius: float, cy: float | None = None, cx: float | None = None) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    cy = size / 2 - 0.5 if cy is None else cy
    cx = size / 2 - 0.5 if cx is None else cx
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2).astype(np.uint8)


def two_mode_data(k: int = 16, size: int = 32, raters: int = 10, frac_a: float = 0.7,
                  seed: int = 0) -> MultiRaterData:
    """Each image: a bright blob with a faint halo. Mode A (frac_a of the raters) outlines the
    core (radius 5), mode B the halo (radius 10)."""
    rng = np.random.default_rng(seed)
    a, b = disk(size, 5), disk(size, 10)
    images = np.empty((k, size, size), np.uint8)
    for i in range(k):
        img = 40 + 60 * b + 120 * a + rng.normal(0, 6, (size, size))
        images[i] = np.clip(img, 0, 255).astype(np.uint8)
    n_a = int(round(frac_a * raters))
    masks = np.stack([np.stack([a] * n_a + [b] * (raters - n_a))] * k)
    return MultiRaterData(images, masks, "two-mode toy")


class ThresholdSegmenter:
    """Stand-in segmenter: every sample marks the plane's bright pixels (> 0); records each
    prompt's centre in `calls`; one plane at a time."""

    def __init__(self):
        self.calls = []

    def sample(self, image, n, steps, seed, *, center=None, box=None, progress=None, **_):
        from napari_ambiseg.modes import find_modes
        from napari_ambiseg.segmenter import SampleResult, binary_entropy

        self.calls.append(center)
        for i in range(steps):
            progress and progress(i + 1, steps)
        masks = np.repeat((np.asarray(image) > 0)[None], n, 0)
        agreement = masks.mean(0, dtype=np.float32)
        return SampleResult(masks, agreement, binary_entropy(agreement), find_modes(masks),
                            (0, 0, *image.shape), steps, seed)
