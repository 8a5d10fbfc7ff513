"""Gallery thumbnails: the image around the model's region with one sample's outline (numpy)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _gray(plane: np.ndarray) -> np.ndarray:
    a = np.asarray(plane, dtype=np.float32)
    if a.ndim == 3:  # RGB(A)
        a = a[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return a


def crop_box(bounds, shape, margin: float = 0.15) -> tuple[int, int, int, int]:
    """A square box around `bounds` (y0, x0, y1, x1) with a margin, inside `shape`."""
    y0, x0, y1, x1 = bounds
    side = max(y1 - y0, x1 - x0, 8) * (1 + 2 * margin)
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    side = min(side, shape[0], shape[1])
    ty = int(round(min(max(cy - side / 2, 0), shape[0] - side)))
    tx = int(round(min(max(cx - side / 2, 0), shape[1] - side)))
    return ty, tx, ty + int(side), tx + int(side)


def thumbnail(plane: np.ndarray, mask: np.ndarray, box, clim, color, size: int = 80) -> np.ndarray:
    """(size, size, 3) uint8: `plane` in `box` (y0, x0, y1, x1) windowed by `clim`, with the
    outline of `mask` drawn in `color` (RGB(A) floats in 0..1)."""
    y0, x0, y1, x1 = box
    img = _gray(plane)[y0:y1, x0:x1]
    lo, hi = (float(c) for c in clim)
    g = np.clip((img - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    iy = np.minimum((np.arange(size) * g.shape[0] / size).astype(int), g.shape[0] - 1)
    ix = np.minimum((np.arange(size) * g.shape[1] / size).astype(int), g.shape[1] - 1)
    g = g[np.ix_(iy, ix)]
    m = np.asarray(mask, dtype=bool)[y0:y1, x0:x1][np.ix_(iy, ix)]
    rgb = np.repeat((g * 255).astype(np.uint8)[..., None], 3, axis=2)
    edge = m & ~ndimage.binary_erosion(m, iterations=max(1, size // 64), border_value=0)
    rgb[edge] = (np.asarray(color[:3], dtype=float) * 255).astype(np.uint8)
    return rgb


def to_pixmap(rgb: np.ndarray):
    """An RGB uint8 array as a QPixmap."""
    from qtpy.QtGui import QImage, QPixmap

    rgb = np.ascontiguousarray(rgb)
    h, w, _ = rgb.shape
    image = QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888)
    return QPixmap.fromImage(image.copy())
