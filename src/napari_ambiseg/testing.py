"""Test support: a tiny real model, stand-in segmenters with known answers, synthetic data.

Used by the test suite, the benchmarks and the docs' screenshots; production code never
imports it (the tiny model's configuration lives in `training.presets`, with the dock's other
presets).

* `TINY`, `tiny_config()`: the tiny model configuration (`training.presets.TINY`; CPU-fast,
  untrained).
* `tiny_segmenter()`, `save_tiny_weights(path)`: a real, untrained `Segmenter` / weights file.
* `ScriptedSegmenter`: the `Segmenter.sample` interface with known answers (three modes of
  sizes 9/5/2 of 16, by default) and a known pace per step (modes, cancel, responsiveness).
* `ThresholdSegmenter`: every sample marks the bright pixels of the plane (geometry tests).
* `disk`, `two_mode_data`: synthetic masks and multi-rater data with known modes.
* `write_ct_series`, `ramp_volume`: synthetic DICOM CT series (from `io.synthetic`).

Imports stay light (numpy only at module level).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .config import ModelConfig
from .training.presets import TINY


def tiny_config(**overrides):
    """`ModelConfig` of the tiny model; `overrides` change single fields (e.g. latent_dim=4)."""

    return ModelConfig(**(TINY | overrides))


def tiny_segmenter(seed: int = 0, device: str = "cpu"):
    """An untrained tiny `Segmenter` (its masks mean nothing; its plumbing is real)."""
    import torch

    from .models import build_model
    from .segmenter import Segmenter

    torch.manual_seed(seed)
    cfg = tiny_config()
    return Segmenter(build_model(cfg), cfg, device)


def save_tiny_weights(path: str | Path, seed: int = 0) -> Path:
    """Write an untrained tiny model to `path` (.safetensors with its .json)."""
    from .weights_io import save_weights

    seg = tiny_segmenter(seed)
    return save_weights(seg.model, seg.cfg, path, info={"note": "untrained tiny test model"})


def __getattr__(name: str):
    """`write_ct_series`, `ramp_volume`: the synthetic DICOM writer of `io.synthetic`, imported
    on first use (it loads pydicom)."""
    if name in ("write_ct_series", "ramp_volume"):
        from .io import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def disk(shape: int | tuple[int, int], radius: float,
         center: tuple[float, float] | None = None) -> np.ndarray:
    """Bool mask of a disk; `shape` an int means square; `center` defaults to the middle."""
    h, w = (shape, shape) if isinstance(shape, int) else shape
    cy, cx = center if center is not None else (h / 2 - 0.5, w / 2 - 0.5)
    yy, xx = np.ogrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2


def two_mode_data(k: int = 16, size: int = 32, raters: int = 10, frac_a: float = 0.7,
                  seed: int = 0):
    """`MultiRaterData`: each image a bright blob with a faint halo. Mode A (frac_a of the
    raters) outlines the core (radius 5), mode B the halo (radius 10)."""
    from .training.data import MultiRaterData

    rng = np.random.default_rng(seed)
    a, b = disk(size, 5).astype(np.uint8), disk(size, 10).astype(np.uint8)
    images = np.empty((k, size, size), np.uint8)
    for i in range(k):
        img = 40 + 60 * b + 120 * a + rng.normal(0, 6, (size, size))
        images[i] = np.clip(img, 0, 255).astype(np.uint8)
    n_a = int(round(frac_a * raters))
    masks = np.stack([np.stack([a] * n_a + [b] * (raters - n_a))] * k)
    return MultiRaterData(images, masks, "two-mode toy")


def _result(masks: np.ndarray, bounds, steps: int, seed: int):
    from .result import SampleResult

    return SampleResult.from_masks(masks, bounds, steps, seed)


class ScriptedSegmenter:
    """Known masks at the prompt: disks of radius `radii[i]` (0 = empty) in `groups` of
    samples, taking `step_s` seconds per step, honouring `progress` and `should_stop`."""

    def __init__(self, groups=(9, 5, 2), radii=(5, 9, 0), step_s: float = 0.0):
        self.groups, self.radii, self.step_s = tuple(groups), tuple(radii), step_s
        self.calls: list[dict] = []

    def sample(self, image, n=None, steps=None, seed=0, *, center=None, box=None, spacing=None,
               modality="auto", progress=None, should_stop=None, **_):
        from .errors import Cancelled

        image = np.asarray(image)
        shape = image.shape[:2]
        n, steps = n or sum(self.groups), steps or ModelConfig.steps
        if box is not None:
            center = ((box[0] + box[2]) / 2 - 0.5, (box[1] + box[3]) / 2 - 0.5)
        cy, cx = center if center is not None else (shape[0] // 2, shape[1] // 2)
        self.calls.append({"shape": shape, "center": (cy, cx), "box": box, "spacing": spacing,
                           "modality": modality, "n": n, "steps": steps, "seed": seed})
        for i in range(steps):
            if should_stop is not None and should_stop():
                raise Cancelled("sampling stopped")
            if self.step_s:
                time.sleep(self.step_s)
            if progress is not None:
                progress(i + 1, steps)
        kinds = np.resize(np.repeat(np.arange(len(self.groups)), self.groups), n)
        masks = np.stack([disk(shape, self.radii[k], (cy, cx)) if self.radii[k] else
                          np.zeros(shape, bool) for k in kinds])
        r = max(self.radii) + 4
        bounds = (max(int(cy) - r, 0), max(int(cx) - r, 0), min(int(cy) + r, shape[0]),
                  min(int(cx) + r, shape[1]))
        return _result(masks, bounds, steps, seed)


class ThresholdSegmenter:
    """Every sample marks the plane's bright pixels (> 0); records each prompt's centre in
    `calls`; one plane at a time."""

    def __init__(self):
        self.calls = []

    def sample(self, image, n, steps, seed, *, center=None, box=None, progress=None, **_):
        self.calls.append(center)
        for i in range(steps):
            if progress is not None:
                progress(i + 1, steps)
        masks = np.repeat((np.asarray(image) > 0)[None], n, 0)
        return _result(masks, (0, 0, *np.shape(image)), steps, seed)
