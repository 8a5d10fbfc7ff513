"""napari docks of napari-ambiseg: sampling, gallery of modes, training; and the demo.

Imported lazily so that ``import napari_ambiseg.widgets`` stays cheap (napari reads the
manifest without importing Qt or torch).
"""

from __future__ import annotations

from typing import Any

__all__ = ["GalleryWidget", "SamplingWidget", "TrainingWidget", "run_demo"]

_WHERE = {"SamplingWidget": ".sampling", "GalleryWidget": ".gallery",
          "TrainingWidget": ".training", "run_demo": ".demo"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        from importlib import import_module

        return getattr(import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
