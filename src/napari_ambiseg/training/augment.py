"""Training batches: one rater per image, joint geometric augmentation, intensity augmentation.

A single `grid_sample` per batch does the crop, jitter, flips, rot90 and small affine for the
image and all its masks together, straight from the stored crops to the model's crop size.
What to augment (`AugmentConfig`) is part of the recipe, in `training.config` (no PyTorch).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .config import AugmentConfig

__all__ = ["AugmentConfig", "augment_batch", "make_batch"]


def _thetas(b: int, size_in: int, size_out: int, cfg: AugmentConfig, train: bool,
            rng: np.random.Generator) -> torch.Tensor:
    """Affine maps from output-normalised to input-normalised coordinates, (b, 2, 3)."""
    ratio = size_out / size_in
    th = np.zeros((b, 2, 3), np.float64)
    for k in range(b):
        a = np.eye(2)
        if train and cfg.enabled:
            if cfg.flips:
                a = np.diag(rng.choice([-1.0, 1.0], 2)) @ a
                rot = rng.integers(4) * math.pi / 2
                a = np.array([[math.cos(rot), -math.sin(rot)], [math.sin(rot), math.cos(rot)]]) @ a
            ang = math.radians(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg))
            s = rng.uniform(1 - cfg.scale, 1 + cfg.scale)
            a = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]]) @ a / s
        if train and cfg.crop_mode == "random":
            shift = rng.uniform(-(1 - ratio), 1 - ratio, 2)
        elif train and cfg.enabled:
            shift = rng.uniform(-1, 1, 2) * cfg.jitter * 2 / size_in
        else:
            shift = np.zeros(2)
        th[k, :, :2] = a * ratio
        th[k, :, 2] = shift
    return torch.from_numpy(th).float()


def make_batch(images: np.ndarray, masks: np.ndarray, idx: np.ndarray, size: int,
               cfg: AugmentConfig, rng: np.random.Generator, train: bool = True,
               all_raters: bool = False):
    """images (K,H,W) uint8, masks (K,R,H,W) -> image (B,1,s,s) in [-1,1], mask (B,1,s,s) or
    (B,R,s,s) with all_raters, in {-1,+1}. Each item draws one rater uniformly (empty included)."""
    if all_raters:
        m = masks[idx]
    else:
        raters = rng.integers(masks.shape[1], size=len(idx))
        m = masks[idx, raters][:, None]
    return augment_batch(images[idx], m, size, cfg, rng, train)


def augment_batch(images: np.ndarray, masks: np.ndarray, size: int, cfg: AugmentConfig,
                  rng: np.random.Generator, train: bool = True):
    """images (B,H,W) uint8 and masks (B,C,H,W) {0,1} (channels share the item's geometry, e.g.
    a target and its neighbour-slice mask) -> (B,1,s,s) in [-1,1] and (B,C,s,s) in {-1,+1}."""
    img = torch.from_numpy(np.ascontiguousarray(images)).float()[:, None] / 255.0
    m = torch.from_numpy(np.ascontiguousarray(masks)).float()
    b = len(img)
    theta = _thetas(b, images.shape[-1], size, cfg, train, rng)
    grid = F.affine_grid(theta, [b, 1, size, size], align_corners=False)
    img = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)
    m = F.grid_sample(m, grid, mode="bilinear", padding_mode="zeros", align_corners=False) > 0.5
    if train and cfg.enabled:
        g = torch.from_numpy(np.exp(rng.uniform(-cfg.gamma, cfg.gamma, b))).float()
        c = torch.from_numpy(rng.uniform(1 - cfg.contrast, 1 + cfg.contrast, b)).float()
        br = torch.from_numpy(rng.uniform(-cfg.brightness, cfg.brightness, b)).float()
        v = lambda t: t.view(-1, 1, 1, 1)  # noqa: E731
        img = img.clamp(0, 1) ** v(g)
        img = ((img - 0.5) * v(c) + 0.5 + v(br)).clamp(0, 1)
    return img * 2 - 1, m.float() * 2 - 1
