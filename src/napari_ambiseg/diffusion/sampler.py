"""Ancestral (DDPM) and DDIM samplers over a uniform time grid, all samples in one batch.

From t to s < t with r = SNR(t) / SNR(s):
  mean = r (alpha_s / alpha_t) x_t + (1 - r) alpha_s x_hat
  var  = (1 - r) sigma_t^2 (the "large" variance; the true posterior's is (1 - r) sigma_s^2)
DDIM (eta = 0): x_s = alpha_s x_hat + sigma_s eps_hat. The last step returns x_hat.
Exactly `steps` network evaluations per sample.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .schedule import Schedule

# denoise(x_t, logsnr) -> x_0 estimate (a network behind `Denoiser.x_hat`)
Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def time_grid(steps: int) -> torch.Tensor:
    if steps < 1:
        raise ValueError("steps must be >= 1")
    return torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)


@torch.no_grad()
def sample_masks(denoise: Denoise, schedule: Schedule, shape: tuple[int, ...], *, steps: int,
                 sampler: str = "ddpm",
                 generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                 on_step: Callable[[int, int], None] | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 noise: Callable[[tuple[int, ...]], torch.Tensor] | None = None) -> torch.Tensor:
    """Draw x_0 estimates of the given shape (clamped to [-1, 1]).

    `on_step(i, steps)` is called after each network evaluation; `should_stop()` is checked
    before each one and stops early (raising `Cancelled`). `noise(shape)` draws the standard
    normal noise on the CPU (default: `torch.randn` with `generator`).
    """
    from ..errors import Cancelled

    if noise is None:
        def noise(s):
            return torch.randn(s, generator=generator, device="cpu")
    device = torch.device(device)
    x = noise(shape).to(device)
    ts = time_grid(steps)
    logsnrs = schedule.logsnr(ts).to(device)
    x_hat = x
    for i in range(steps):
        if should_stop is not None and should_stop():
            raise Cancelled("sampling cancelled")
        l_t, l_s = logsnrs[i], logsnrs[i + 1]
        alpha_t, sigma_t = Schedule.alpha_sigma(l_t)
        x_hat = denoise(x, l_t.expand(shape[0])).float().clamp(-1.0, 1.0)
        if on_step is not None:
            on_step(i + 1, steps)
        if i == steps - 1:
            break
        alpha_s, sigma_s = Schedule.alpha_sigma(l_s)
        if sampler == "ddim":
            eps_hat = (x - alpha_t * x_hat) / sigma_t
            x = alpha_s * x_hat + sigma_s * eps_hat
        elif sampler == "ddpm":
            r = torch.exp(l_t - l_s)
            mean = r * (alpha_s / alpha_t) * x + (1 - r) * alpha_s * x_hat
            var = (1 - r) * sigma_t**2
            x = mean + var.clamp_min(0).sqrt() * noise(shape).to(device)
        else:
            raise ValueError(f"unknown sampler {sampler!r}")
    return x_hat
