"""Stand-ins for the real model, for tests, benchmarks and docs screenshots.

* `tiny_segmenter()`: a real, untrained `Segmenter` small enough for CPU tests.
* `save_tiny_weights(path)`: the same as a weights file (.safetensors + .json).
* `ScriptedSegmenter`: same interface, known answers (three modes of sizes 9/5/2 of 16, by
  default) and a known pace per step, to test modes, frequencies, cancel and responsiveness.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

TINY = dict(crop_size=32, context_size=64, image_widths=(8, 16, 32), mask_widths=(8, 16, 32))


def tiny_config():
    from ..config import ModelConfig

    return ModelConfig(**TINY)


def tiny_segmenter(seed: int = 0, device: str = "cpu"):
    """An untrained tiny `Segmenter` (its masks mean nothing; its plumbing is real)."""
    import torch

    from ..models import build_model
    from ..segmenter import Segmenter

    torch.manual_seed(seed)
    cfg = tiny_config()
    return Segmenter(build_model(cfg), cfg, device)


def save_tiny_weights(path: str | Path, seed: int = 0) -> Path:
    """Write an untrained tiny model to `path` (.safetensors with its .json)."""
    from ..weights_io import save_weights

    seg = tiny_segmenter(seed)
    return save_weights(seg.model, seg.cfg, path, info={"note": "untrained tiny test model"})


def _disk(shape, center, radius) -> np.ndarray:
    yy, xx = np.ogrid[:shape[0], :shape[1]]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius ** 2


class ScriptedSegmenter:
    """Known masks at the prompt: disks of radius `radii[i]` (0 = empty) in `groups` of
    samples, taking `step_s` seconds per step, honouring `progress` and `should_stop`."""

    def __init__(self, groups=(9, 5, 2), radii=(5, 9, 0), step_s: float = 0.0):
        self.groups, self.radii, self.step_s = tuple(groups), tuple(radii), step_s
        self.calls: list[dict] = []

    def sample(self, image, n=None, steps=None, seed=0, *, center=None, box=None, spacing=None,
               modality="auto", progress=None, should_stop=None, **_):
        from ..errors import Cancelled
        from ..modes import find_modes
        from ..segmenter import SampleResult, binary_entropy

        image = np.asarray(image)
        shape = image.shape[:2]
        n, steps = n or sum(self.groups), steps or 10
        if box is not None:
            center = ((box[0] + box[2]) / 2 - 0.5, (box[1] + box[3]) / 2 - 0.5)
        cy, cx = center if center is not None else (shape[0] // 2, shape[1] // 2)
        self.calls.append({"shape": shape, "center": (cy, cx), "box": box, "spacing": spacing,
                           "modality": modality, "n": n, "steps": steps})
        for i in range(steps):
            if should_stop is not None and should_stop():
                raise Cancelled("sampling stopped")
            if self.step_s:
                time.sleep(self.step_s)
            if progress is not None:
                progress(i + 1, steps)
        kinds = np.repeat(np.arange(len(self.groups)), self.groups)
        kinds = np.resize(kinds, n)
        masks = np.stack([_disk(shape, (cy, cx), self.radii[k]) if self.radii[k] else
                          np.zeros(shape, bool) for k in kinds])
        agreement = masks.mean(0, dtype=np.float32)
        r = max(self.radii) + 4
        bounds = (max(int(cy) - r, 0), max(int(cx) - r, 0), min(int(cy) + r, shape[0]),
                  min(int(cx) + r, shape[1]))
        return SampleResult(masks, agreement, binary_entropy(agreement), find_modes(masks),
                            bounds, steps, seed)
