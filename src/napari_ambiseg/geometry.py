"""Where the model looks: a square region of the image mapped to and from model pixels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .errors import InputError


@dataclass(frozen=True)
class Region:
    """A square region centred at (cy, cx) in edge coordinates (pixel k spans [k, k + 1)).

    Model pixel i of a size-wide grid sits at image index cy + (i + 0.5 - size/2) / zoom - 0.5,
    so at zoom 1 a centre (64, 64) and size 64 is exactly the crop [32:96, 32:96]."""

    cy: float
    cx: float
    zoom: float  # model pixels per image pixel

    def coords(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Image indices (rows, cols) of the model grid's pixel centres."""
        offs = (np.arange(size) + 0.5 - size / 2) / self.zoom - 0.5
        return self.cy + offs, self.cx + offs

    def extract(self, image: np.ndarray, size: int) -> np.ndarray:
        """Resample a size x size patch (edge values outside the image)."""
        ys, xs = self.coords(size)
        if self.zoom == 1.0 and float(self.cy).is_integer() and float(self.cx).is_integer():
            y0, x0 = int(ys[0]), int(xs[0])  # exact crop at integer offsets
            pad = np.pad(image, size, mode="edge")
            return pad[y0 + size:y0 + 2 * size, x0 + size:x0 + 2 * size].astype(np.float32)
        yy, xx = np.meshgrid(ys, xs, indexing="ij")
        return ndimage.map_coordinates(image, [yy, xx], order=1, mode="nearest").astype(np.float32)

    def bounds(self, size: int, shape: tuple[int, int]) -> tuple[int, int, int, int]:
        """Image-pixel box (y0, x0, y1, x1) covered by a size x size model grid, clipped."""
        half = size / 2 / self.zoom
        y0, y1 = int(np.floor(self.cy - half)), int(np.ceil(self.cy + half))
        x0, x1 = int(np.floor(self.cx - half)), int(np.ceil(self.cx + half))
        return max(y0, 0), max(x0, 0), min(y1, shape[0]), min(x1, shape[1])

    def paste(self, patches: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """Map (N, size, size) model-grid values back to (N, H, W) image pixels (0 outside)."""
        n, size = patches.shape[0], patches.shape[-1]
        out = np.zeros((n, *shape), dtype=np.float32)
        y0, x0, y1, x1 = self.bounds(size, shape)
        if y1 <= y0 or x1 <= x0:
            return out
        iy = (np.arange(y0, y1) + 0.5 - self.cy) * self.zoom + size / 2 - 0.5
        ix = (np.arange(x0, x1) + 0.5 - self.cx) * self.zoom + size / 2 - 0.5
        yy, xx = np.meshgrid(iy, ix, indexing="ij")
        inside = (yy > -0.5) & (yy < size - 0.5) & (xx > -0.5) & (xx < size - 0.5)
        for k in range(n):
            vals = ndimage.map_coordinates(patches[k], [yy, xx], order=1, mode="nearest")
            out[k, y0:y1, x0:x1] = np.where(inside, vals, 0.0)
        return out


def region_for(shape: tuple[int, int], crop_size: int, *, center=None, box=None,
               spacing=None, model_spacing=None) -> Region:
    """Pick centre (edge coordinates; a pixel index works as is) and zoom: image centre by
    default; the box's centre and a zoom that fits the box in 80% of the crop; pixel spacing
    (mm) resampled to the model's spacing when both known.
    """
    h, w = shape
    zoom = 1.0
    if spacing is not None and model_spacing:
        zoom = float(np.mean(spacing)) / float(model_spacing)
    if box is not None:
        y0, x0, y1, x1 = (float(v) for v in box)
        if y1 <= y0 or x1 <= x0:
            raise InputError(f"box must be (y0, x0, y1, x1) with y1 > y0 and x1 > x0; got {box}")
        cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
        extent = max(y1 - y0, x1 - x0) * zoom
        if extent > 0.8 * crop_size:
            zoom *= 0.8 * crop_size / extent
    elif center is not None:
        cy, cx = (float(v) for v in center)
    else:
        cy, cx = h // 2, w // 2
    if not (0 <= cy < h and 0 <= cx < w):
        raise InputError(f"centre ({cy:g}, {cx:g}) is outside the image of shape {shape}")
    if zoom <= 0 or not np.isfinite(zoom):
        raise InputError(f"invalid pixel spacing {spacing}")
    return Region(cy, cx, zoom)
