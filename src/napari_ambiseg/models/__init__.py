"""Networks: an image encoder run once per request and a light conditional mask denoiser."""

from .network import AmbiSegNet, build_model

__all__ = ["AmbiSegNet", "build_model"]
