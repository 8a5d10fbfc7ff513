"""Training cases from an annotated triage run (docs/triage.md): the loop triage -> annotate
-> retrain -> triage.

A run folder whose cases were annotated in the Worklist dock holds, per prompt ``key``,
``labels/<key>/<annotator>.nii.gz`` on the case image's grid. Every key with saved labels
gives training cases, cut the way *Add case* cuts them (`training.cases.make_case`: the
patch the model sees, on the model's 8-bit scale, centred on the outlines):

* the raters of a case are the annotators who saved labels for its key (sorted by name);
  labels are non-zero = outlined, an annotator whose labels are empty on a slice is a rater
  who saw nothing there;
* a 2D image gives one case; a volume gives its prompt slice (where sampling started) and
  every other slice some annotator outlined;
* cases with fewer raters than the most annotated one repeat their raters in turn (never
  padded with empty masks, which would teach "no finding"), so that every case has the same
  rater count (`MultiRaterData` is (K, R, H, W)).

The patch geometry (context and crop size, the model's pixel spacing) is a model's: the one
passed in, else the run's own model when it is the bundled one, else the LIDC data's
(`ModelConfig()`: a 128-pixel context at the image's own spacing, what every preset trains
on from the LIDC .npz). `training.data.load_data` calls :func:`load_worklist` for a folder
that :func:`is_worklist`.

The run folder is read through `napari_ambiseg.worklist` (the one reader of its format,
below both this room and triage). Qt-free, torch-free.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import worklist as wl
from ..errors import InputError


def is_worklist(path: str | os.PathLike) -> bool:
    """A triage run folder (run.json with labels/ or worklist.csv beside it)."""
    p = Path(path)
    return (p / wl.RUN_JSON).is_file() and ((p / wl.LABELS).is_dir()
                                           or (p / wl.WORKLIST_CSV).is_file())


def labels_on_image(grid: tuple[int, ...], path: str | os.PathLike) -> np.ndarray:
    """A saved labels file read back (`io.read_image`) on the case image's displayed grid
    (`grid`, its spatial shape): (H, W) for a 2D image (the file's one slice), (Z, H, W) for
    a volume. `InputError` when it does not fit that grid."""
    from ..io import read_image

    found = read_image(path)
    if not found:
        raise InputError(f"{path} holds no labels")
    data, grid = np.asarray(found[0].data), tuple(grid)
    if data.shape == (1, *grid):
        data = data[0]  # a 2D image's labels are written as one slice
    if data.shape != grid:
        raise InputError(f"{path} is {data.shape}, not on the case image's grid {grid}")
    return data


def annotated(run: wl.Run) -> dict[str, dict[str, Path]]:
    """{key: {annotator: labels file}} of the keys with saved labels, keys sorted."""
    folder = run.root / wl.LABELS
    keys = sorted(d.name for d in folder.iterdir() if d.is_dir()) if folder.is_dir() else []
    return {k: saved for k in keys if (saved := wl.saved_labels(run, k))}


def run_model(run: wl.Run):
    """The `ModelConfig` of the weights the run was triaged with when they can be found (the
    bundled model, checked by its SHA-256), else None."""
    import hashlib

    from ..weights_io import bundled_weights_path, load_config

    if not str(run.model.get("name", "")).startswith("bundled"):
        return None
    path = bundled_weights_path()
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        return load_config(path)[0] if digest == run.model.get("sha256") else None
    except (OSError, ValueError):  # no or unreadable bundled weights (WeightsError is one)
        return None


@dataclass
class WorklistCase:
    """One training case of a run: the case (`training.cases.Case`) and its raters' names."""

    key: str
    slice: int | None
    case: Any
    raters: list[str]


def _plane_center(result: dict[str, Any]) -> tuple[float, float] | None:
    """The centre (pixel indices) of the region the model saw, for a case nobody outlined."""
    bounds = (result.get("result") or {}).get("bounds")
    if not bounds or len(bounds) != 4:
        return None
    y0, x0, y1, x1 = (float(v) for v in bounds)
    return (y0 + y1 - 1) / 2, (x0 + x1 - 1) / 2


def _slices(result: dict[str, Any], labels: np.ndarray) -> list[int | None]:
    """The planes to cut of a case: [None] for a 2D image; for a volume its prompt slice and
    every slice some rater outlined."""
    if labels.ndim == 3:  # (raters, H, W)
        return [None]
    res = result.get("result") or {}
    start = res.get("start")
    if start is None and result.get("z0") is not None:
        start = int(result["z0"]) + int(res.get("key") or 0)
    marked = set(np.flatnonzero(labels.any(axis=(0, 2, 3))))  # (raters, Z, H, W)
    if start is not None and 0 <= int(start) < labels.shape[1]:
        marked.add(int(start))
    return sorted(int(z) for z in marked)


def case_cuts(run: wl.Run, key: str, saved: dict[str, Path], model) -> list[WorklistCase]:
    """The training cases of one key (`saved`: {annotator: labels file}, its raters)."""
    from .cases import make_case

    result = wl.read_result(run, key)
    image = wl.case_image(run, result)
    data, grid = np.asarray(image.model_image), tuple(image.spatial_shape)
    names = sorted(saved)
    labels = np.stack([labels_on_image(grid, saved[name]) != 0 for name in names])
    spacing = result.get("spacing")
    inplane = None if spacing is None else tuple(float(s) for s in spacing[-2:])
    out = []
    for z in _slices(result, labels):
        case = make_case(data if z is None else data[z], labels if z is None else labels[:, z],
                         context_size=model.context_size, crop_size=model.crop_size,
                         modality=result.get("modality") or "auto", spacing=inplane,
                         model_spacing=model.scope.pixel_spacing_mm,
                         center=_plane_center(result))
        case.info.update(run=str(run.root), key=key, case=result.get("case", key), slice=z,
                         raters=names)
        out.append(WorklistCase(key, z, case, names))
    return out


def worklist_cases(run_dir: str | os.PathLike, model=None) -> list[WorklistCase]:
    """Every training case of an annotated run, keys in name order (`model`: the patch
    geometry, see the module docstring)."""
    from ..config import ModelConfig

    run = wl.read_run(run_dir)
    model = model or run_model(run) or ModelConfig()
    keys = annotated(run)
    if not keys:
        raise InputError(f"{run.root} has no labels yet ({run.root / wl.LABELS} is empty): "
                         "annotate cases in the Worklist dock (Plugins > AmbiSeg > Worklist) "
                         "and Save them first")
    out = []
    for key, saved in keys.items():
        try:
            out.extend(case_cuts(run, key, saved, model))
        except InputError as e:
            raise InputError(f"{run.root}: case {key}: {e}") from None
    return out


def load_worklist(run_dir: str | os.PathLike, model=None):
    """An annotated run as a `MultiRaterData` (rater counts evened out by repeating a case's
    raters in turn, see the module docstring)."""
    from .data import MultiRaterData

    cases = worklist_cases(run_dir, model)
    r = max(len(c.raters) for c in cases)
    images = np.stack([c.case.image for c in cases])
    masks = np.stack([c.case.masks[np.arange(r) % len(c.raters)] for c in cases])
    return MultiRaterData(images, masks.astype(np.uint8), str(run_dir))
