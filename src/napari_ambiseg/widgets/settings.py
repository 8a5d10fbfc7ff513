"""The plugin's settings (napari >= 0.9 ``configurations``), with defaults when unavailable."""

from __future__ import annotations

from dataclasses import dataclass

PLUGIN = "napari-ambiseg"
SECTION = "ambiseg"  # the key under `contributions.configurations` in napari.yaml
DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass(frozen=True)
class Defaults:
    """What the widgets start with: Preferences > Plugins > AmbiSeg in napari 0.9.

    `n_samples` / `steps` None: the loaded model's own (`ModelConfig`); the settings store 0
    for "no override", a number only when the user chose one."""

    n_samples: int | None = None
    steps: int | None = None
    device: str = "auto"
    weights_path: str = ""


def load_defaults() -> Defaults:
    """Read ``get_plugin_settings('napari-ambiseg').ambiseg``; fall back to `Defaults()`.

    Older napari versions have no plugin settings, and a half-installed plugin may not be
    registered: neither is an error for the widgets, which then use the built-in defaults.
    """
    base = Defaults()
    try:
        from napari.settings import get_plugin_settings

        section = getattr(get_plugin_settings(PLUGIN), SECTION)
    except Exception:  # noqa: BLE001 - any failure means "no settings": use the defaults
        return base
    device = str(getattr(section, "device", base.device) or base.device)
    return Defaults(
        n_samples=_override(getattr(section, "n_samples", 0), 64),
        steps=_override(getattr(section, "steps", 0), 100),
        device=device if device in DEVICES else base.device,
        weights_path=str(getattr(section, "weights_path", "") or ""),
    )


def _override(value, most: int) -> int | None:
    """A count from the settings: 0 (or nothing) = no override (None), else 1..most."""
    value = int(value or 0)
    return None if value <= 0 else min(value, most)
