"""A training case from an image plane and its readers' outlines, as the model will see it.

The LIDC training crops are context_size x context_size patches centred on the finding, on the
8-bit model scale (`io.preprocess.to_model_scale` over the patch). `make_case` cuts the same
patch from any image, the way inference does (`Segmenter.prepare`: the same `Region`, the
same scaling, resampled to the model's pixel spacing when both spacings are known), centred
on the union of the readers' outlines. `data.write_case` stores it in the case-folder format.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError
from ..geometry import Region, region_for
from ..io.preprocess import check_image_2d, guess_modality, to_model_scale


@dataclass
class Case:
    image: np.ndarray        # (S, S) uint8, model scale
    masks: np.ndarray        # (R, S, S) uint8 {0, 1}
    info: dict[str, Any] = field(default_factory=dict)  # where it came from (case.json)
    warnings: list[str] = field(default_factory=list)


def make_case(image: np.ndarray, readers: np.ndarray, *, context_size: int, crop_size: int,
              modality: str = "auto", spacing=None, model_spacing=None,
              center: tuple[float, float] | None = None) -> Case:
    """image (H, W) (or RGB), readers (R, H, W) (non-zero = outlined; an empty plane is a
    reader who saw nothing) -> a `Case`. The patch is centred on the readers' outlines, or at
    `center` (pixel indices; default the image centre) when no reader outlined anything."""
    plane = check_image_2d(image)
    masks = np.asarray(readers)
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3 or masks.shape[1:] != plane.shape:
        raise InputError(f"the readers' outlines {masks.shape} do not match the image "
                         f"{plane.shape}: need (readers, {plane.shape[0]}, {plane.shape[1]})")
    if masks.shape[0] == 0:
        raise InputError("no readers: choose at least one Labels layer")
    masks = masks != 0
    union = masks.any(0)
    warnings: list[str] = []
    if union.any():
        ys, xs = np.nonzero(union)
        # the centre pixel of the outlines' box (an exact crop, no interpolation at zoom 1)
        cy, cx = math.floor((ys.min() + ys.max()) / 2 + 0.5), math.floor((xs.min() + xs.max()) / 2 + 0.5)
        extent = max(ys.max() - ys.min(), xs.max() - xs.min()) + 1
    else:
        cy, cx = (plane.shape[0] // 2, plane.shape[1] // 2) if center is None else \
            (math.floor(center[0] + 0.5), math.floor(center[1] + 0.5))
        extent = 0
        warnings.append("no reader outlined anything here: the case teaches 'no finding'")
    region = region_for(plane.shape, crop_size, center=(cy, cx), spacing=spacing,
                        model_spacing=model_spacing)
    if extent * region.zoom > crop_size:
        warnings.append(f"the outlines span {extent * region.zoom:.0f} model pixels, more than "
                        f"the model's {crop_size}-pixel view: training sees them cut")
    mod = guess_modality(np.asarray(image) if np.asarray(image).ndim == 2 else plane, modality)
    scaled = to_model_scale(region.extract(plane, context_size), mod)
    # masks: zero outside the image (Region.extract repeats edge values, right for images only)
    pad = int(math.ceil(context_size / region.zoom)) + 2
    shifted = Region(region.cy + pad, region.cx + pad, region.zoom)
    cut = np.stack([shifted.extract(np.pad(m.astype(np.float32), pad), context_size) > 0.5
                    for m in masks])
    info = {"center": [float(cy), float(cx)], "zoom": region.zoom, "modality": mod,
            "context_size": context_size, "readers": int(masks.shape[0]),
            "outlined_by": int(sum(bool(m.any()) for m in masks))}
    return Case(np.round(scaled).clip(0, 255).astype(np.uint8), cut.astype(np.uint8), info,
                warnings)
