"""Noise schedules as log-SNR functions of continuous time t in [0, 1].

x_t = alpha(t) x + sigma(t) eps with alpha^2 + sigma^2 = 1 (variance preserving), so
alpha^2 = sigmoid(logSNR) and sigma^2 = sigmoid(-logSNR).

Input scaling b (Christensen et al. 2025; Chen 2023) shifts the log-SNR by 2 ln b, i.e.
SNR_b(t) = b^2 SNR(t), equivalent to gamma_b = b^2 gamma / ((b^2 - 1) gamma + 1): the data is
"scaled by b" but x_t keeps unit variance. For cosine and b = 0.1 the SNR = 1 point moves from
t = 0.5 to t = (2/pi) atan(b) ~ 0.064.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# continuous-time limit of DDPM's linear betas (1e-4 .. 0.02 over T = 1000)
_LINEAR_BETA0, _LINEAR_BETA1 = 0.1, 20.0


@dataclass(frozen=True)
class Schedule:
    kind: str = "cosine"
    input_scale: float = 1.0
    logsnr_min: float = -20.0
    logsnr_max: float = 20.0

    @classmethod
    def from_config(cls, cfg) -> Schedule:
        return cls(cfg.schedule, cfg.input_scale, cfg.logsnr_min, cfg.logsnr_max)

    def logsnr(self, t: torch.Tensor) -> torch.Tensor:
        t = t.to(torch.float64)
        if self.kind == "cosine":
            # gamma = cos^2(pi t / 2)  =>  logSNR = -2 log tan(pi t / 2)
            base = -2.0 * torch.log(torch.tan(math.pi * t / 2))
        elif self.kind == "linear":
            # log gamma = -(b0 t + (b1 - b0) t^2 / 2);  logSNR = log gamma - log(1 - gamma)
            neg_log_gamma = _LINEAR_BETA0 * t + 0.5 * (_LINEAR_BETA1 - _LINEAR_BETA0) * t**2
            base = -torch.log(torch.expm1(neg_log_gamma))
        else:
            raise ValueError(f"unknown schedule {self.kind!r}")
        shifted = base + 2.0 * math.log(self.input_scale)
        return shifted.nan_to_num(posinf=self.logsnr_max, neginf=self.logsnr_min).clamp(
            self.logsnr_min, self.logsnr_max).to(torch.float32)

    @staticmethod
    def alpha_sigma(logsnr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.sigmoid(logsnr).sqrt(), torch.sigmoid(-logsnr).sqrt()

    def gamma(self, t: torch.Tensor) -> torch.Tensor:
        """alpha(t)^2, the signal fraction."""
        return torch.sigmoid(self.logsnr(t))

    def add_noise(self, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None):
        """Draw x_t ~ q(x_t | x). t has one entry per batch item. Returns (x_t, noise, logsnr)."""
        noise = torch.randn_like(x) if noise is None else noise
        logsnr = self.logsnr(t)
        alpha, sigma = self.alpha_sigma(_expand(logsnr, x))
        return alpha * x + sigma * noise, noise, logsnr


def _expand(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (like.ndim - 1)))
