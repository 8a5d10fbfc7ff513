"""Ancestral (DDPM) and DDIM samplers over a uniform time grid, all samples in one batch.

From t to s < t with r = SNR(t) / SNR(s):
  mean = r (alpha_s / alpha_t) x_t + (1 - r) alpha_s x_hat
  var  = (1 - r) sigma_t^2 (the "large" variance; the true posterior's is (1 - r) sigma_s^2)
DDIM (eta = 0): x_s = alpha_s x_hat + sigma_s eps_hat. The last step returns x_hat.
Exactly `steps` network evaluations per sample.

Known pixels (`Known`, the annotator's include / exclude clicks): RePaint-style replacement
of the x-prediction. After every network evaluation x_hat takes the known values (+1 / -1)
where they are known, so the next x_s carries them at that noise level (for DDIM with the
noise that x_t implies there) and the network completes the rest around them; optionally
each step is redone `jumps` times from x_t re-drawn from q(x_t | x_s) (RePaint's
resampling), `jumps` more evaluations per step but the last. Without `Known` nothing changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .schedule import Schedule

# denoise(x_t, logsnr) -> x_0 estimate (a network behind `Denoiser.x_hat`)
Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Known:
    """Known pixels of x_0: `values` (in {-1, +1}) where `where` is True, both shaped like
    the samples; `pins` (bool, or None) are also set in the returned x_hat (the clicked
    pixels themselves). `restarts` times, after the last step, the sampler goes back
    `restart_steps` steps (x_t drawn around the completed estimate) and runs them again."""

    values: torch.Tensor
    where: torch.Tensor
    pins: torch.Tensor | None = None
    restarts: int = 0
    restart_steps: int = 3

    def to(self, device) -> Known:
        return Known(self.values.to(device), self.where.to(device),
                     None if self.pins is None else self.pins.to(device), self.restarts,
                     self.restart_steps)

    def apply(self, x_hat: torch.Tensor, where: torch.Tensor | None = None) -> torch.Tensor:
        where = self.where if where is None else where
        return torch.where(where, self.values.to(x_hat.dtype), x_hat)


def time_grid(steps: int) -> torch.Tensor:
    if steps < 1:
        raise ValueError("steps must be >= 1")
    return torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)


def grid_order(steps: int, known: Known | None = None) -> list[int]:
    """The time-grid indices evaluated in order: 0..steps-1, then each restart's last
    `restart_steps` again."""
    order = list(range(steps))
    if known is not None and steps > 1:
        back = min(known.restart_steps, steps - 1)
        order += list(range(steps - back, steps)) * known.restarts
    return order


@torch.no_grad()
def sample_masks(denoise: Denoise, schedule: Schedule, shape: tuple[int, ...], *, steps: int,
                 sampler: str = "ddpm",
                 generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                 on_step: Callable[[int, int], None] | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 noise: Callable[[tuple[int, ...]], torch.Tensor] | None = None,
                 known: Known | None = None) -> torch.Tensor:
    """Draw x_0 estimates of the given shape (clamped to [-1, 1]).

    `on_step(i, steps)` is called after each step's network evaluation; `should_stop()` is
    checked before each evaluation and stops early (raising `Cancelled`). `noise(shape)` draws
    the standard normal noise on the CPU (default: `torch.randn` with `generator`).
    `known`: pixels whose x_0 is known (module notes).
    """
    from ..errors import Cancelled

    if noise is None:
        def noise(s):
            return torch.randn(s, generator=generator, device="cpu")
    if sampler not in ("ddim", "ddpm"):
        raise ValueError(f"unknown sampler {sampler!r}")
    device = torch.device(device)
    known = None if known is None else known.to(device)
    x = noise(shape).to(device)
    ts = time_grid(steps)
    logsnrs = schedule.logsnr(ts).to(device)

    def step(x_t, x_hat, l_t, l_s):  # one step from t down to s
        alpha_t, sigma_t = Schedule.alpha_sigma(l_t)
        alpha_s, sigma_s = Schedule.alpha_sigma(l_s)
        if sampler == "ddim":
            eps_hat = (x_t - alpha_t * x_hat) / sigma_t
            return alpha_s * x_hat + sigma_s * eps_hat
        r = torch.exp(l_t - l_s)
        mean = r * (alpha_s / alpha_t) * x_t + (1 - r) * alpha_s * x_hat
        var = (1 - r) * sigma_t**2
        return mean + var.clamp_min(0).sqrt() * noise(shape).to(device)

    def estimate(x_t, l_t, final):
        if should_stop is not None and should_stop():
            raise Cancelled("sampling cancelled")
        x_hat = denoise(x_t, l_t.expand(shape[0])).float().clamp(-1.0, 1.0)
        if known is not None and not final:
            x_hat = known.apply(x_hat)
        elif known is not None and known.pins is not None:
            x_hat = known.apply(x_hat, known.pins)
        return x_hat

    order = grid_order(steps, known)
    x_hat = x
    for p, i in enumerate(order):
        l_t = logsnrs[i]
        final = p == len(order) - 1
        x_hat = estimate(x, l_t, final)
        if on_step is not None:
            on_step(min(steps, (p + 1) * steps // len(order)) if known else i + 1, steps)
        if final:
            break
        j = order[p + 1]
        if j == i + 1:
            x = step(x, x_hat, l_t, logsnrs[j])
        else:  # a restart: back to step j, x_t drawn around the completed estimate
            alpha, sigma = Schedule.alpha_sigma(logsnrs[j])
            x = alpha * x_hat + sigma * noise(shape).to(device)
    return x_hat
