"""Prediction types (eps, x, v), their conversions, and loss weightings in x space.

With x_t = alpha x + sigma eps:  v = alpha eps - sigma x,  x = alpha x_t - sigma v,
eps = sigma x_t + alpha v,  x = (x_t - sigma eps) / alpha.
A loss w(t) ||x_hat - x||^2 equals the eps-loss for w = SNR, the v-loss for w = SNR + 1 and the
x-loss for w = 1 (Christensen et al. 2025, Kingma & Gao 2023).
"""

from __future__ import annotations

import torch


def convert(out: torch.Tensor, x_t: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor,
            source: str, target: str) -> torch.Tensor:
    """Convert a prediction of type `source` into type `target` (all of eps, x, v)."""
    if source == target:
        return out
    x = x_from_prediction(out, x_t, alpha, sigma, source)
    if target == "x":
        return x
    eps = out if source == "eps" else (x_t - alpha * x) / sigma
    if source == "v":
        eps = sigma * x_t + alpha * out
    if target == "eps":
        return eps
    if target == "v":
        return alpha * eps - sigma * x
    raise ValueError(f"unknown prediction type {target!r}")


def x_from_prediction(out: torch.Tensor, x_t: torch.Tensor, alpha: torch.Tensor,
                      sigma: torch.Tensor, prediction: str) -> torch.Tensor:
    if prediction == "x":
        return out
    if prediction == "eps":
        return (x_t - sigma * out) / alpha
    if prediction == "v":
        return alpha * x_t - sigma * out
    raise ValueError(f"unknown prediction type {prediction!r}")


def loss_weight(logsnr: torch.Tensor, weighting: str, bias: float = 0.0) -> torch.Tensor:
    """w(t) multiplying the x-space squared error."""
    if weighting == "snr":
        return torch.exp(logsnr)
    if weighting == "snr+1":
        return torch.exp(logsnr) + 1.0
    if weighting == "1":
        return torch.ones_like(logsnr)
    if weighting == "sigmoid":
        # w = sigmoid(logSNR - k), as written in x space by Christensen et al. 2025
        return torch.sigmoid(logsnr - bias)
    raise ValueError(f"unknown loss weighting {weighting!r}")
