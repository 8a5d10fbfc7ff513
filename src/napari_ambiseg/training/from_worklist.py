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
that :func:`is_worklist`. Qt-free, torch-free.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..triage import worklist as wl


def is_worklist(path: str | os.PathLike) -> bool:
    """A triage run folder (run.json with labels/ or worklist.csv beside it)."""
    p = Path(path)
    return (p / wl.RUN_JSON).is_file() and ((p / wl.LABELS).is_dir()
                                            or (p / wl.WORKLIST_CSV).is_file())


def labels_on_image(image: Any, path: str | os.PathLike) -> np.ndarray:
    """A saved labels file read back (`io.read_image`) on the case image's displayed grid:
    (H, W) for a 2D image (the file's one slice), (Z, H, W) for a volume. `InputError` when
    it does not fit that grid."""
    from ..io import read_image

    found = read_image(path)
    if not found:
        raise InputError(f"{path} holds no labels")
    data = np.asarray(found[0].data)
    grid = tuple(image.spatial_shape)
    if data.shape != grid and data.shape == (1, *grid):
        data = data[0]  # a 2D image's labels are written as one slice
    if data.shape != grid:
        raise InputError(f"{path} is {data.shape}, not on the case image's grid {grid}")
    return data


def run_model(run: wl.Run):
    """The `ModelConfig` of the weights the run was triaged with when they can be found (the
    bundled model, checked by its SHA-256), else None."""
    from ..weights_io import bundled_weights_path, load_config

    model = run.model
    if not str(model.get("name", "")).startswith("bundled"):
        return None
    from ..triage.run import sha256_of

    path = bundled_weights_path()
    try:
        return load_config(path)[0] if sha256_of(path) == model.get("sha256") else None
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


def case_cuts(run: wl.Run, key: str, model) -> list[WorklistCase]:
    """The training cases of one key (its saved labels as raters)."""
    from .cases import make_case

    saved = wl.saved_labels(run, key)
    if not saved:
        return []
    result = wl.read_result(run, key)
    image = wl.case_image(run, result)
    names = sorted(saved)
    labels = np.stack([labels_on_image(image, saved[name]) != 0 for name in names])
    plane_data = np.asarray(image.model_image)
    spacing = result.get("spacing")
    inplane = None if spacing is None else tuple(float(s) for s in spacing[-2:])
    modality = result.get("modality") or image.model_modality
    out = []
    for z in _slices(result, labels):
        plane = plane_data if z is None else plane_data[z]
        readers = labels if z is None else labels[:, z]
        case = make_case(plane, readers, context_size=model.context_size,
                         crop_size=model.crop_size, modality=modality, spacing=inplane,
                         model_spacing=model.scope.pixel_spacing_mm,
                         center=_plane_center(result))
        case.info.update(run=str(run.root), key=key, case=result.get("case", key), slice=z,
                         raters=names)
        out.append(WorklistCase(key, z, case, names))
    return out


def worklist_cases(run_dir: str | os.PathLike | wl.Run, model=None) -> list[WorklistCase]:
    """Every training case of an annotated run, in the worklist's rank order (`model`: the
    patch geometry, see the module docstring)."""
    from ..config import ModelConfig

    run = run_dir if isinstance(run_dir, wl.Run) else wl.read_run(run_dir)
    model = model or run_model(run) or ModelConfig()
    keys = [k for k in run.keys if wl.saved_labels(run, k)]
    if not keys:
        raise InputError(f"{run.root} has no labels yet ({run.root / wl.LABELS} is empty): "
                         "annotate cases in the Worklist dock (Plugins > AmbiSeg > Worklist) "
                         "and Save them first")
    out = []
    for key in keys:
        try:
            out.extend(case_cuts(run, key, model))
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
