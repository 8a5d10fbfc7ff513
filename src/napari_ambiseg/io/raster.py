"""2D raster images (PNG, JPEG, TIFF, BMP) with Pillow: ultrasound exports, screenshots.

Grayscale stays grayscale (8 or 16 bit); colour becomes an rgb layer plus a grayscale ``gray``;
multi-page TIFFs become a ``t`` axis (frames of an exported cine). No geometry: spacing 1.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError

from ..errors import ReadError
from .volume import MedicalImage, grayscale_uint8

RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MAX_PIXELS = 2**31


def _frame_array(frame: Image.Image) -> np.ndarray:
    mode = frame.mode
    if mode in ("RGB", "L", "I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(frame)
    elif mode in ("1", "LA"):
        a = np.asarray(frame.convert("L"))
    else:  # P, RGBA, CMYK, YCbCr, ...
        a = np.asarray(frame.convert("RGB"))
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    return a


def read_raster(path: str | os.PathLike) -> MedicalImage:
    """Read a 2D raster image (or a multi-page TIFF as frames) into a :class:`MedicalImage`."""
    path = os.fspath(path)
    name = os.path.basename(path)
    if os.path.getsize(path) == 0:
        raise ReadError(f"Cannot open {name}: the file is empty (0 bytes).")
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with Image.open(path) as im:
            frames = [_frame_array(f) for f in ImageSequence.Iterator(im)]
    except (UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise ReadError(f"Cannot read {name}: not an image Pillow can read ({e}).") from e
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise ReadError(f"Cannot read {name}: the image is truncated or corrupt ({e}).") from e
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise ReadError(f"Cannot read {name}: its pages have different sizes {sorted(shapes)}.")
    arr = frames[0] if len(frames) == 1 else np.stack(frames)
    rgb = frames[0].ndim == 3
    nd = arr.ndim - rgb
    gray = None
    if rgb:
        gray = grayscale_uint8(arr)
    return MedicalImage(
        data=arr, spacing=(1.0,) * nd, origin=(0.0,) * nd, axes=("t", "y", "x")[-nd:],
        name=os.path.splitext(name)[0], rgb=rgb, gray=gray,
        metadata={"source": path, "source_files": [path]},
    )
