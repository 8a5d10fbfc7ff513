"""`Denoiser`: the one owner of the prediction type (k-diffusion's `layers.Denoiser` idea).

The network returns a raw output; this wrapper turns it into the x_0 estimate (with the output
activation: tanh for x-prediction, since masks live in [-1, 1]) and weights the training loss,
so samplers and the trainer never branch on eps / x / v.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .parameterization import loss_weight, x_from_prediction
from .schedule import Schedule


@dataclass(frozen=True)
class Denoiser:
    prediction: str = "x"            # what the network predicts: "eps", "x" or "v"
    weighting: str = "snr+1"         # w(t) of the x-space squared error
    sigmoid_bias: float = 0.0

    @classmethod
    def from_config(cls, cfg) -> Denoiser:
        return cls(cfg.prediction, cfg.loss_weighting, cfg.sigmoid_bias)

    def x_hat(self, raw: torch.Tensor, x_t: torch.Tensor, logsnr: torch.Tensor) -> torch.Tensor:
        """Raw network output at (x_t, logsnr) -> x_0 estimate (float32)."""
        if self.prediction == "x":
            raw = torch.tanh(raw)
        alpha, sigma = Schedule.alpha_sigma(logsnr.reshape(-1, *([1] * (x_t.ndim - 1))))
        return x_from_prediction(raw.float(), x_t, alpha, sigma, self.prediction)

    def loss(self, raw: torch.Tensor, x_t: torch.Tensor, x: torch.Tensor,
             logsnr: torch.Tensor) -> torch.Tensor:
        """w(t) ||x_hat - x||^2 per item (mean over its pixels); w = SNR + 1 is the v-loss."""
        err = ((self.x_hat(raw, x_t, logsnr) - x) ** 2).mean(tuple(range(1, x.ndim)))
        return loss_weight(logsnr, self.weighting, self.sigmoid_bias) * err
