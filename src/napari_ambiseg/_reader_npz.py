"""npe2 reader for multi-rater ``.npz`` files (the training format) and the LIDC sample data.

A file with ``images`` (N, H, W) and ``masks`` (N, R, H, W) opens as an image stack plus one
Labels layer of the readers' outlines with a leading reader axis (contract C5):
data (R, N, H, W) uint8, 1 where reader r outlined, metadata
``{"ambiseg": <image reference>, "ambiseg_readers": {"count": R, "image_name": <name>}}``.

Optional keys: ``spacing`` ((z, y, x) or (y, x) mm), ``info`` (JSON text: ``name``,
``modality``, provenance). Without ``spacing`` the pixel size is unknown: the layers are shown
at 1 unit per pixel, the reference says ``"assumed": True`` and the sampler does not resample
(the model's training crops were used at their native pixel size too).

``.npz`` files without ``images`` and ``masks`` of matching shapes are not claimed (None), so
other readers get their turn. Pickled arrays are never loaded. Files whose arrays would take
more than ``MAX_BYTES`` in memory are refused with a clear message (npz members are
compressed as a whole, so they cannot be opened lazily).
"""

from __future__ import annotations

import copy
import json
import os
import zipfile
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .errors import ReadError
from .io import MedicalImage
from .layer_contract import METADATA_KEY, READERS_KEY, readers_record

LayerData = tuple[Any, dict[str, Any], str]
MAX_BYTES = 2 << 30  # images + masks in memory (the LIDC train split is 0.8 GB)


def npz_arrays(path: str | os.PathLike) -> dict[str, tuple[tuple[int, ...], np.dtype]] | None:
    """Shape and dtype of each array in an .npz, read from the headers only (no data); None
    if the file is not a readable .npz."""
    out = {}
    try:
        with zipfile.ZipFile(path) as z:
            for name in z.namelist():
                if not name.endswith(".npy"):
                    continue
                with z.open(name) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                    elif version == (2, 0):
                        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                    else:
                        continue  # format 3.0: utf-8 field names, not an image or mask
                out[name[:-4]] = (tuple(shape), dtype)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        return None
    return out


def is_multi_rater(arrays: dict[str, tuple[tuple[int, ...], np.dtype]] | None) -> bool:
    """`images` (N, H, W) and `masks` (N, R, H, W) with matching N, H, W, numeric (never
    object arrays, which would need pickle)."""
    if not arrays or "images" not in arrays or "masks" not in arrays:
        return False
    (ishape, idtype), (mshape, mdtype) = arrays["images"], arrays["masks"]
    return (len(ishape) == 3 and len(mshape) == 4 and mshape[0] == ishape[0]
            and mshape[2:] == ishape[1:] and min(ishape) > 0 and mshape[1] > 0
            and idtype.kind in "biuf" and mdtype.kind in "biuf")


def napari_get_reader(path: str | os.PathLike | Sequence
                      ) -> Callable[[Any], list[LayerData]] | None:
    """Claim one .npz with `images` and `masks` (multi-rater training format), else None."""
    if not isinstance(path, (str, os.PathLike)):
        if len(path) != 1:
            return None
        path = path[0]
    path = os.fspath(path)
    if not path.lower().endswith(".npz") or not os.path.isfile(path):
        return None
    return read_npz if is_multi_rater(npz_arrays(path)) else None


def read_npz(path: str | os.PathLike | Sequence) -> list[LayerData]:
    """The image stack and the readers' Labels layer (C5) of a multi-rater .npz."""
    if not isinstance(path, (str, os.PathLike)):
        path = path[0]
    path = os.fspath(path)
    name = os.path.basename(path)
    arrays = npz_arrays(path)
    if not is_multi_rater(arrays):
        raise ReadError(f"Cannot read {name}: expected 'images' (N, H, W) and 'masks' "
                        f"(N, R, H, W) with matching sizes; found {_shapes(arrays)}.")
    need = sum(int(np.prod(arrays[k][0])) * arrays[k][1].itemsize for k in ("images", "masks"))
    if need > MAX_BYTES:
        raise ReadError(f"Cannot open {name}: its images and masks need {need / 2**20:,.0f} MB "
                        f"in memory (limit {MAX_BYTES / 2**20:,.0f} MB). Open a subset: save "
                        "images[a:b] and masks[a:b] to a smaller .npz.")
    try:
        with np.load(path, allow_pickle=False) as d:
            images, masks = d["images"], d["masks"]
            spacing = d["spacing"] if "spacing" in d.files else None
            info = json.loads(str(d["info"])) if "info" in d.files else {}
        info = info if isinstance(info, dict) else {}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise ReadError(f"Cannot read {name}: {type(e).__name__}: {e}") from None
    return multi_rater_layers(images, masks, spacing=spacing, info=info,
                              name=info.get("name") or os.path.splitext(name)[0], source=path)


def multi_rater_layers(images: np.ndarray, masks: np.ndarray, *, spacing=None,
                       info: dict | None = None, name: str = "image",
                       source: str = "") -> list[LayerData]:
    """LayerData of an image stack (N, H, W) and its readers' outlines (N, R, H, W)."""
    info = dict(info or {})
    if images.dtype.kind == "f" and not np.isfinite(images).all():
        raise ReadError(f"Cannot read {name}: the images contain NaN or infinite values.")
    known = spacing is not None and np.size(spacing) in (2, 3)
    if known:
        sp = [float(s) for s in np.ravel(spacing)]
        sp = ([1.0] if len(sp) == 2 else []) + sp
        if not all(np.isfinite(sp)) or min(sp) <= 0:
            raise ReadError(f"Cannot read {name}: invalid spacing {sp}.")
    image = MedicalImage(data=images, spacing=tuple(sp) if known else (1.0, 1.0, 1.0),
                         origin=(0.0, 0.0, 0.0), axes=("z", "y", "x"),
                         modality=str(info.get("modality", "")), name=name,
                         metadata={"source": source, "source_files": [source]} if source else {})
    data, kwargs, _ = image.to_layer_data()
    kwargs["axis_labels"] = ("z", "y", "x")
    ref = kwargs["metadata"][METADATA_KEY]
    if images.dtype == np.uint8:  # the training format's 8-bit scale, whatever the modality
        ref["model_modality"] = "8bit"
        kwargs["contrast_limits"] = [0, 255]
    if not known:
        ref["assumed"] = True
        ref["warnings"] = [*ref.get("warnings", []), "pixel spacing unknown (the file has no "
                           "'spacing'): shown and sampled at 1 unit per pixel"]
    if info:
        ref["source_info"] = info
    masks = np.asarray(masks)
    if masks.dtype != np.uint8 or masks.max(initial=0) > 1:
        masks = (masks > 0).astype(np.uint8)
    readers = np.moveaxis(masks, 1, 0)  # (R, N, H, W), a view: no copy of a large file
    labels_meta = {METADATA_KEY: copy.deepcopy(ref),
                   READERS_KEY: readers_record(readers.shape[0], name)}
    labels_kwargs = {"name": f"{name} readers", "scale": (1.0, *image.spacing),
                     "translate": (0.0, *image.origin), "metadata": labels_meta,
                     "axis_labels": ("reader", "z", "y", "x")}
    return [(data, kwargs, "image"), (readers, labels_kwargs, "labels")]


def _shapes(arrays) -> str:
    if not arrays:
        return "no arrays"
    return ", ".join(f"{k} {v[0]}" for k, v in arrays.items())
