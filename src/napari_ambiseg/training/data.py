"""Multi-rater datasets: LIDC npz, a documented folder format, an annotated triage run
(`from_worklist`), and (opt-in) the community pickle.

All loaders return a `MultiRaterData` holding images (K, H, W) uint8 on the LIDC 8-bit scale
and masks (K, R, H, W) uint8 in {0, 1}; a rater who did not mark a case has an empty mask.

Folder format (one case per sub-folder, any of PNG / NPY / NIfTI):
    root/<case>/image.png|image.npy|image.nii.gz
    root/<case>/mask_<rater>.png|.npy|.nii.gz     (k >= 1 masks, non-zero = foreground)
    root/<case>/case.json                          (optional: where the case came from)
Cases may have different numbers of raters; missing raters are padded with empty masks.
Images that are not uint8 are mapped to 0..255 with the model's preprocessing. Folders whose
names start with "." are not cases (`write_case` assembles a case in one, then renames it).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.npz import read_npz

IMAGE_EXTS = (".png", ".npy", ".nii.gz", ".nii")
DATA_INTENSITY = "8bit"  # every MultiRaterData image is on the model's 8-bit scale (see above)


@dataclass
class MultiRaterData:
    images: np.ndarray  # (K, H, W) uint8
    masks: np.ndarray   # (K, R, H, W) uint8 {0, 1}
    source: str = ""

    def __post_init__(self) -> None:
        check_pair(self.images, self.masks, self.source)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx) -> MultiRaterData:
        return MultiRaterData(self.images[idx], self.masks[idx], self.source)


def check_pair(images: np.ndarray, masks: np.ndarray, source: str = "") -> None:
    where = f" in {source}" if source else ""
    if images.ndim != 3:
        raise InputError(f"images{where} must be (K, H, W); got shape {images.shape}")
    if masks.ndim != 4:
        raise InputError(f"masks{where} must be (K, R, H, W); got shape {masks.shape}")
    if masks.shape[0] != images.shape[0] or masks.shape[2:] != images.shape[1:]:
        raise InputError(f"images {images.shape} and masks {masks.shape}{where} do not match")
    if len(images) == 0:
        raise InputError(f"no cases{where}")


def load_npz(path: str | Path, limit: int | None = None) -> MultiRaterData:
    """LIDC npz as in ../shared/data/lidc: `images` (K,H,W) uint8, `masks` (K,R,H,W)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"data file not found: {path}")
    try:
        arrays = read_npz(path, ("images", "masks"))
    except KeyError as e:
        missing, present = e.args
        raise InputError(f"{path.name} lacks the keys {missing} (has {present}); expected "
                         "'images' and 'masks'") from None
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise InputError(f"cannot read {path}: {e}") from None
    images, masks = arrays["images"], arrays["masks"]
    if limit is not None:
        images, masks = images[:limit], masks[:limit]
    return MultiRaterData(_as_uint8(images), _as_binary(masks), str(path))


def _as_binary(masks: np.ndarray) -> np.ndarray:
    """uint8 {0, 1}; masks already in that form are kept (no 0.7 GB copy for LIDC train)."""
    if masks.dtype == np.uint8 and (masks.size == 0 or masks.max() <= 1):
        return masks
    return (np.asarray(masks) > 0).astype(np.uint8)


def _as_uint8(images: np.ndarray) -> np.ndarray:
    if images.dtype == np.uint8:
        return images
    from ..io.preprocess import guess_modality, to_model_scale

    a = np.asarray(images, dtype=np.float32)
    if not np.isfinite(a).all():
        raise InputError("images contain NaN or infinite values")
    return np.stack([np.round(to_model_scale(im, guess_modality(im))).astype(np.uint8)
                     for im in a])


def _read_plane(path: Path) -> np.ndarray:
    name = path.name.lower()
    if name.endswith(".npy"):
        a = np.load(path, allow_pickle=False)
    elif name.endswith((".nii", ".nii.gz")):
        import SimpleITK as sitk

        a = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    else:
        from PIL import Image

        with Image.open(path) as im:
            a = np.asarray(im.convert("L") if im.mode not in ("L", "I", "I;16", "F") else im)
    a = np.squeeze(a)
    if a.ndim != 2:
        raise InputError(f"{path} is not a 2D image (shape {a.shape})")
    return a


def _find(case: Path, stem: str) -> list[Path]:
    return sorted(p for p in case.iterdir()
                  if p.name.lower().startswith(stem) and p.name.lower().endswith(IMAGE_EXTS))


def load_folder(root: str | Path) -> MultiRaterData:
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"data folder not found: {root}")
    images, masks = [], []
    for case in _cases(root):
        img_files, mask_files = _find(case, "image"), _find(case, "mask")
        if len(img_files) != 1 or not mask_files:
            raise InputError(f"case {case.name}: need exactly one image.* and at least one "
                             f"mask_*.* (found {len(img_files)} images, {len(mask_files)} masks)")
        img = _read_plane(img_files[0])
        ms = [(_read_plane(m) > 0).astype(np.uint8) for m in mask_files]
        if any(m.shape != img.shape for m in ms):
            raise InputError(f"case {case.name}: masks and image differ in shape")
        images.append(img)
        masks.append(ms)
    if not images:
        raise InputError(f"no case folders in {root}")
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise InputError(f"cases in {root} have different sizes {sorted(shapes)}; "
                         "crop them to one size first")
    r = max(len(m) for m in masks)
    stacked = np.zeros((len(images), r, *images[0].shape), np.uint8)
    for k, ms in enumerate(masks):
        stacked[k, :len(ms)] = ms
    return MultiRaterData(_as_uint8(np.stack(images)), stacked, str(root))


def _cases(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:40] or "reader"


def write_case(root: str | Path, image: np.ndarray, masks: np.ndarray,
               reader_names: list[str] | None = None, info: dict | None = None,
               name: str | None = None) -> Path:
    """Add a case to a case folder (created if missing): image (S, S) uint8, masks (R, S, S)
    {0, 1} -> root/case_NNNN/{image.png, mask_00[_name].png, ..., case.json}.

    The case appears whole or not at all: it is written into a hidden folder beside the
    others (each file through `io.atomic.atomic_output`), then renamed into place. A case of
    another size than the folder's cases is refused (the folder would no longer load)."""
    from PIL import Image

    from ..io.atomic import atomic_output

    root = Path(root)
    image, masks = np.asarray(image), np.asarray(masks)
    if image.dtype != np.uint8 or image.ndim != 2:
        raise InputError(f"a case image must be 2D uint8 (the model scale); got {image.dtype} "
                         f"{image.shape}")
    if masks.ndim != 3 or masks.shape[1:] != image.shape or len(masks) == 0:
        raise InputError(f"case masks must be (readers, {image.shape[0]}, {image.shape[1]}); "
                         f"got {masks.shape}")
    names = list(reader_names or [])
    if names and len(names) != len(masks):
        raise InputError(f"{len(names)} reader names for {len(masks)} masks")
    if root.exists() and not root.is_dir():
        raise InputError(f"{root} is a file, not a training folder")
    root.mkdir(parents=True, exist_ok=True)
    existing = _cases(root)
    if existing:
        found = _find(existing[0], "image")
        if found and _read_plane(found[0]).shape != image.shape:
            raise InputError(f"the cases in {root} are {_read_plane(found[0]).shape}; this one "
                             f"is {image.shape}: use another folder or the model those fit")
    if name is None:
        taken = {p.name for p in root.iterdir()}
        n = len(existing) + 1
        while f"case_{n:04d}" in taken:
            n += 1
        name = f"case_{n:04d}"
    target = root / name
    if target.exists():
        raise InputError(f"{target} exists already")
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=root))
    try:
        files = {"image.png": image}
        for r, m in enumerate(masks):
            suffix = f"_{_safe(names[r])}" if names else ""
            files[f"mask_{r:02d}{suffix}.png"] = ((m > 0) * 255).astype(np.uint8)
        for fname, plane in files.items():
            with atomic_output(staging / fname) as tmp:
                Image.fromarray(plane).save(tmp, format="PNG")
        meta = dict(info or {}, readers=names or len(masks))
        with atomic_output(staging / "case.json") as tmp:
            tmp.write_text(json.dumps(meta, indent=2, default=str))
        os.rename(staging, target)
    finally:
        if staging.exists():
            import shutil

            shutil.rmtree(staging, ignore_errors=True)
    return target


def count_cases(root: str | Path) -> int:
    """Case sub-folders in a training folder (0 if it does not exist)."""
    root = Path(root)
    return len(_cases(root)) if root.is_dir() else 0


def load_lidc_pickle(path: str | Path, allow_pickle: bool = False) -> MultiRaterData:
    """The community `data_lidc.pickle` (dict of {image, masks}). Unpickling runs code from the
    file: only with `allow_pickle=True` (CLI: --allow-pickle), for files you trust."""
    if not allow_pickle:
        raise InputError(f"{path} is a pickle: loading it can run arbitrary code. Pass "
                         "--allow-pickle (allow_pickle=True) only if you trust the file.")
    import pickle

    warnings.warn(f"unpickling {path}: this runs code from the file", stacklevel=2)
    with open(path, "rb") as f:
        raw = pickle.load(f)  # noqa: S301 - explicit, documented opt-in
    items = list(raw.values()) if isinstance(raw, dict) else list(raw)
    images = np.stack([np.asarray(it["image"]) for it in items])
    masks = np.stack([np.stack([np.asarray(m) for m in it["masks"]]) for it in items])
    if images.dtype != np.uint8:  # the pickle stores floats in [0, 1]
        images = np.round(np.clip(images, 0, 1) * 255).astype(np.uint8)
    return MultiRaterData(images, (masks > 0).astype(np.uint8), str(path))


def load_data(path: str | Path, allow_pickle: bool = False,
              limit: int | None = None) -> MultiRaterData:
    from .from_worklist import is_worklist, load_worklist

    p = Path(path)
    if p.is_dir() and is_worklist(p):  # an annotated triage run (docs/triage.md)
        data = load_worklist(p)
    elif p.is_dir():
        data = load_folder(p)
    elif p.suffix == ".npz":
        return load_npz(p, limit)
    elif p.suffix in (".pickle", ".pkl"):
        data = load_lidc_pickle(p, allow_pickle)
    else:
        raise InputError(f"unknown data format: {p} (use an .npz, a case folder or a pickle)")
    return data if limit is None else data.subset(slice(0, limit))
