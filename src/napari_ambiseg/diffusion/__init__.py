"""Continuous-time variance-preserving diffusion on masks in {-1, +1} (no Qt, no napari)."""

from .denoiser import Denoiser
from .parameterization import convert, loss_weight, x_from_prediction
from .sampler import sample_masks, time_grid
from .schedule import Schedule

__all__ = ["Denoiser", "Schedule", "convert", "loss_weight", "x_from_prediction", "sample_masks", "time_grid"]
