"""From what the user pointed at (a click, a Points or Shapes layer, the slider) to a `Request`.

World coordinates go through napari's transforms (``layer.data_to_world`` /
``layer.world_to_data``), so prompts work on scaled, translated or affine-transformed images
and on prompt layers with another geometry than the image.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..config import MODEL_MODALITIES
from ..errors import InputError
from ..layer_contract import METADATA_KEY, base_data, layer_record, spatial_shape
from .engine import Prompt, Request
from .layers import axis_names


def world_to_source(viewer, source, world) -> np.ndarray:
    """A world position (any length; missing leading axes from the viewer's current point)
    in the source layer's data coordinates."""
    full = np.array(viewer.dims.point, dtype=float)
    w = np.asarray(world, dtype=float).ravel()
    if len(w) > len(full):
        full = w
    else:
        full[len(full) - len(w):] = w
    return np.asarray(source.world_to_data(full[-source.ndim:]), dtype=float)


def current_slice(viewer, source) -> int:
    """The slice of the volume `source` that the viewer shows (the one napari draws: the
    nearest). Raises InputError when the viewer's position lies outside the volume: the
    canvas does not show it, so no slice of it is sampled silently."""
    z = int(round(world_to_source(viewer, source, viewer.dims.point)[0]))
    depth = spatial_shape(source)[0]
    if 0 <= z < depth:
        return z
    axis = viewer.dims.ndim - source.ndim
    name = str(viewer.dims.axis_labels[axis])
    if name.lstrip("-").isdigit():  # napari's default label: the axis' own name
        name = axis_names(source)[0]
    lo, hi = sorted(source.extent.world[:, 0])
    raise InputError(f"The viewer is at {name} = {viewer.dims.point[axis]:g}, outside "
                     f"'{source.name}' (its {depth} slices span {lo:g} to {hi:g}): move the "
                     f"{name} slider onto it first.")


def _pick(layer) -> int:
    selected = sorted(getattr(layer, "selected_data", ()) or ())
    return selected[-1] if selected else len(layer.data) - 1


def prompt_from(viewer, source, where: Any, click=None) -> Prompt:
    """`where` is "centre", "click" (with `click` a world position), or a Points / Shapes
    layer (its selected item, else its last one). Pixel indices in source data coordinates."""
    from napari.layers import Points, Shapes

    if where == "centre":
        return Prompt()
    if where == "click":
        if click is None:
            raise InputError("No click yet: tick 'Sample where I click' and click on the image.")
        d = world_to_source(viewer, source, click)
        return Prompt(center=(float(round(d[-2])), float(round(d[-1]))))
    if isinstance(where, Points):
        if len(where.data) == 0:
            raise InputError(f"Points layer '{where.name}' has no points: add one on the image.")
        d = world_to_source(viewer, source, where.data_to_world(where.data[_pick(where)]))
        return Prompt(center=(float(round(d[-2])), float(round(d[-1]))))
    if isinstance(where, Shapes):
        if len(where.data) == 0:
            raise InputError(f"Shapes layer '{where.name}' has no shapes: draw a rectangle.")
        verts = np.array([world_to_source(viewer, source, where.data_to_world(v))
                          for v in where.data[_pick(where)]])
        (y0, x0), (y1, x1) = verts[:, -2:].min(0), verts[:, -2:].max(0)
        return Prompt(box=(y0 + 0.5, x0 + 0.5, y1 + 0.5, x1 + 0.5))  # pixel centres -> edges
    raise InputError(f"Unknown prompt {where!r}")


def spacing_of(source, axes: int = 2) -> tuple[float, ...] | None:
    """Pixel spacing (mm) of the last `axes` axes ((y, x), or (z, y, x) for volumes so that
    sizes come in mm^3): the reader's record (unless it was assumed, not read), else a
    non-unit layer scale."""
    meta = layer_record(source, METADATA_KEY) or {}
    spacing = meta.get("spacing")
    if spacing and len(spacing) >= axes and not meta.get("assumed"):
        return tuple(float(s) for s in spacing[-axes:])
    scale = tuple(float(s) for s in source.scale[-axes:])
    return None if np.allclose(scale, 1.0) else scale


def modality_of(source, chosen: str = "auto") -> str:
    """The user's choice, else the reader's modality when the model knows it (or the 8-bit
    scale of the training crops), else "auto"."""
    if chosen != "auto":
        return chosen
    meta = layer_record(source, METADATA_KEY) or {}
    for key in ("model_modality", "modality"):
        if meta.get(key) in MODEL_MODALITIES:
            return meta[key]
    return "auto"


def build_request(viewer, source, where: Any, *, click=None, slices: str = "current",
                  z_range: tuple[int, int] | None = None, n: int | None = None,
                  steps: int | None = None, seed: int = 0, modality: str = "auto") -> Request:
    """A `Request` for `source`: 2D images as they are; volumes on the current slice, a slice
    range (`slices="range"`, inclusive `z_range`) or the whole finding (`slices="follow"`).
    `n` / `steps` None: the model's."""
    shape = spatial_shape(source)
    if len(shape) not in (2, 3):
        raise InputError(f"'{source.name}' has {len(shape)} spatial axes; AmbiSeg samples 2D "
                         "images and 3D volumes (z, y, x).")
    data = base_data(source)
    prompt = prompt_from(viewer, source, where, click)
    req = Request(image=data, prompt=prompt, n=n, steps=steps, seed=seed,
                  spacing=spacing_of(source, len(shape)),
                  modality=modality_of(source, modality))
    if len(shape) == 3:
        prompt.z = current_slice(viewer, source)
        req.volume = True
        if slices == "range":
            lo, hi = sorted(z_range or (prompt.z, prompt.z))
            req.slices = list(range(lo, hi + 1))
        elif slices == "follow":
            req.propagate = True
        else:
            req.slices = [prompt.z]
    return req
