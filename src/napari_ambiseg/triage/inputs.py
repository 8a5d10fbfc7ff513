"""What a triage run samples: the cases of its input, the prompts (one per case, or a CSV)
and, once a case is read, the `volume_sampling.Request` of each prompt (docs/triage.md).

The prompt list is known before any image is read (keys and seeds depend on names only):
cases sorted by name (a .npz: by index), each case's prompts in CSV order; prompt `i` of that
list is sampled with `seed + i` whichever process samples it. Coordinates are resolved against
the image when it is read (`request_for`): voxels of the data as read, or mm of the source's
LPS patient frame through its geometry (as SimpleITK's TransformPhysicalPointToContinuousIndex
on the displayed grid).
"""

from __future__ import annotations

import csv
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..volume_sampling import Prompt, Request

VOXEL, MM = "voxel", "mm"
POINT = ("z", "y", "x")
BOX = ("z0", "y0", "x0", "z1", "y1", "x1")
POINT_MM = ("x_mm", "y_mm", "z_mm")
BOX_MM = ("x0_mm", "y0_mm", "z0_mm", "x1_mm", "y1_mm", "z1_mm")
NPZ_MODALITY = "8bit"  # training.data.DATA_INTENSITY: .npz images are on the LIDC 8-bit scale


@dataclass(frozen=True)
class Case:
    """One case of the input: a folder entry (`entry`, relative to the input folder) or an
    image of a .npz (`index`)."""

    name: str
    entry: str | None = None
    index: int | None = None

    def source(self) -> dict[str, Any]:
        return {"npz_index": self.index} if self.index is not None else {"path": self.entry}


@dataclass(frozen=True)
class PromptSpec:
    """Prompt `index` of the run (seed + index): the k-th prompt of `case`, as given.

    kind: "centre" (the image's centre; a volume's middle slice, as one plane), "point"
    (`values` = z, y, x; mm: x, y, z) or "box" (z0, y0, x0, z1, y1, x1; mm: x0 .. z1_mm).
    """

    index: int
    case: str
    k: int = 0
    kind: str = "centre"
    units: str = VOXEL
    values: tuple[float | None, ...] = ()
    line: int | None = None  # the CSV line it came from

    @property
    def key(self) -> str:
        return prompt_key(self.case, self.k)

    def text(self) -> str:
        """"centre", "point z 12, y 40, x 33", "box z 3-7, y 10-20, x 12-30 (mm)"."""
        if self.kind == "centre":
            return "centre"

        def f(v):
            return "?" if v is None else f"{v:g}"

        v = self.values
        if self.units == MM:
            if self.kind == "point":
                return f"point x {f(v[0])}, y {f(v[1])}, z {f(v[2])} mm"
            return (f"box x {f(v[0])}..{f(v[3])}, y {f(v[1])}..{f(v[4])}, "
                    f"z {f(v[2])}..{f(v[5])} mm")
        if self.kind == "point":
            z = "" if v[0] is None else f"z {f(v[0])}, "
            return f"point {z}y {f(v[1])}, x {f(v[2])}"
        z = "" if v[0] is None else f"z {f(v[0])}-{f(v[3])}, "
        return f"box {z}y {f(v[1])}-{f(v[4])}, x {f(v[2])}-{f(v[5])}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"key": self.key, "values": list(self.values)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PromptSpec:
        """The spec `to_dict` wrote (result.json's "prompt"; extra keys such as "text"
        ignored)."""
        names = {f.name for f in fields(cls)}
        spec = {k: v for k, v in d.items() if k in names}
        return cls(**spec | {"values": tuple(spec.get("values", ()))})


def prompt_key(case: str, k: int) -> str:
    return case if k == 0 else f"{case}~{k}"


# ---- cases --------------------------------------------------------------------------------


def is_npz(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() == ".npz"


def folder_cases(root: str | os.PathLike, exclude: str | os.PathLike | None = None
                 ) -> tuple[list[Case], list[str]]:
    """The cases of a folder (entries the readers claim, sorted by name) and the entries
    ignored. A case's name is its entry's name without extension(s); when two entries share
    a name, both keep their full entry name."""
    from ..io import can_read
    from ..io.sitk_io import stem_of

    root = Path(root)
    if not root.is_dir():
        raise InputError(f"input not found: {root} (give a folder of cases or a .npz)")
    skip = Path(exclude).resolve() if exclude is not None else None
    entries, ignored = [], []
    for name in sorted(os.listdir(root)):
        path = root / name
        if name.startswith(".") or (skip is not None and path.resolve() == skip):
            continue
        (entries if can_read(path) else ignored).append(name)
    stems = [stem_of(e) if (root / e).is_file() else e for e in entries]
    cases = [Case(s if stems.count(s) == 1 else e, entry=e) for s, e in zip(stems, entries)]
    if not cases:
        raise InputError(f"{root} holds no case the readers open (DICOM series folders, "
                         "NIfTI / MHA / NRRD volumes, DICOM, PNG or TIFF images)")
    return sorted(cases, key=lambda c: c.name), ignored


def npz_cases(path: str | os.PathLike) -> list[Case]:
    """Case i of a multi-rater .npz is image i (name: its index), read from headers only."""
    from .._reader_npz import is_multi_rater, npz_arrays

    p = Path(path)
    if not p.is_file():
        raise InputError(f"input not found: {p}")
    arrays = npz_arrays(p)
    if not is_multi_rater(arrays):
        raise InputError(f"{p.name} is not a multi-rater dataset: it needs 'images' (K, H, W) "
                         "and 'masks' (K, R, H, W)")
    return [Case(str(i), index=i) for i in range(arrays["images"][0][0])]


# ---- prompts ------------------------------------------------------------------------------


def centre_prompts(cases: list[Case]) -> list[PromptSpec]:
    return [PromptSpec(i, c.name) for i, c in enumerate(cases)]


def _number(text: str | None, name: str, where: str) -> float | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        v = float(text)
    except ValueError:
        raise InputError(f"{where}: {name} = {text!r} is not a number") from None
    if not np.isfinite(v):
        raise InputError(f"{where}: {name} = {text!r} is not a finite number")
    return v


def read_prompts(path: str | os.PathLike, cases: list[Case]) -> list[PromptSpec]:
    """The prompts of a CSV (docs/triage.md), sorted by case name then CSV order, numbered.
    Raises `InputError` (one line) for a CSV without the columns, a row without the values
    of its units, or case names not in the input."""
    p = Path(path)
    try:
        with open(p, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [(h or "").strip().lower() for h in reader.fieldnames or []]
            rows = [{(k or "").strip().lower(): v for k, v in r.items()} for r in reader]
    except FileNotFoundError:
        raise InputError(f"prompts file not found: {p}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"cannot read {p}: {e}") from None
    sets = {"z, y, x": POINT, "z0, y0, x0, z1, y1, x1": BOX, "x_mm, y_mm, z_mm": POINT_MM,
            "x0_mm, y0_mm, z0_mm, x1_mm, y1_mm, z1_mm": BOX_MM}
    if "case" not in header or not any(set(cols) <= set(header) for cols in sets.values()):
        missing = "a column 'case' and " if "case" not in header else ""
        raise InputError(f"{p.name} needs {missing}the columns of a point or a box: "
                         f"{' | '.join(sets)} (it has: {', '.join(h for h in header if h) or 'none'})")
    if not rows:
        raise InputError(f"{p.name} has no prompts (no rows below its header)")
    names = {c.name for c in cases}
    unknown = sorted({(r.get("case") or "").strip() for r in rows} - names)
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        some = ", ".join(sorted(names)[:5]) + (" ..." if len(names) > 5 else "")
        raise InputError(f"{p.name} names {len(unknown)} case(s) not in the input: {shown} "
                         f"(the input's cases: {some})")
    specs: list[tuple[str, int, str, str, tuple]] = []
    for line, r in enumerate(rows, start=2):
        where = f"{p.name} line {line}"
        units = (r.get("units") or "").strip().lower()
        has = {k for k, v in r.items() if (v or "").strip()}
        if not units:
            units = MM if has & set(POINT_MM + BOX_MM) and not has & set(POINT + BOX) else VOXEL
        if units not in (VOXEL, MM):
            raise InputError(f"{where}: units {units!r} must be 'voxel' or 'mm'")
        box, point = (BOX, POINT) if units == VOXEL else (BOX_MM, POINT_MM)
        plane = (1, 2, 4, 5) if units == VOXEL else (0, 1, 3, 4)  # what a 2D box needs
        if all(box[i] in has for i in plane):
            kind, cols = "box", box
        elif all(point[i] in has for i in ((1, 2) if units == VOXEL else (0, 1))):
            kind, cols = "point", point
        else:
            raise InputError(f"{where}: a prompt in {units}s needs {', '.join(point)} (a point) "
                             f"or {', '.join(box)} (a box)")
        values = tuple(_number(r.get(c), c, where) for c in cols)
        if units == MM and None in values:
            raise InputError(f"{where}: a prompt in mm needs all of {', '.join(cols)}")
        if kind == "box" and units == VOXEL and (values[0] is None) != (values[3] is None):
            raise InputError(f"{where}: a box needs both z0 and z1 (or neither, on a 2D image)")
        specs.append((r["case"].strip(), line, kind, units, values))
    specs.sort(key=lambda s: (s[0], s[1]))
    out, seen = [], {}
    for i, (case, line, kind, units, values) in enumerate(specs):
        k = seen.get(case, 0)
        seen[case] = k + 1
        out.append(PromptSpec(i, case, k, kind, units, values, line))
    return out


# ---- a prompt on its image ----------------------------------------------------------------


def world_to_index(image, point_xyz) -> np.ndarray:
    """Continuous (z, y, x) data index of an LPS point (mm) on the image's displayed grid
    (SimpleITK's TransformPhysicalPointToContinuousIndex there): voxel centres are whole
    numbers. 2D images use their 3D source geometry (z 0 = the image's plane)."""
    from ..io.geometry import direction_matrix, flip_geometry

    geom = image.geometry
    shown = flip_geometry(geom, list(geom.get("flip", [])))
    d = direction_matrix(shown)
    spacing = np.asarray(shown["spacing"], float)
    origin = np.asarray(shown["origin"], float)
    index_xyz = np.linalg.solve(d, np.asarray(point_xyz, float) - origin) / spacing
    return index_xyz[::-1]


def _plane_check(cy: float, cx: float, h: int, w: int, what: str) -> tuple[float, float]:
    if not (-0.5 <= cy < h - 0.5 and -0.5 <= cx < w - 0.5):
        raise InputError(f"{what} (row {cy:.1f}, column {cx:.1f}) is outside the image "
                         f"(rows 0..{h - 1}, columns 0..{w - 1})")
    return min(max(cy, 0.0), h - 1.0), min(max(cx, 0.0), w - 1.0)


def _slice_check(z: float, depth: int, what: str) -> int:
    if not -0.5 <= z < depth - 0.5:
        raise InputError(f"{what} is on slice {z:.1f}, outside the volume (slices 0..{depth - 1})")
    return int(round(min(max(z, 0.0), depth - 1.0)))


def _index_values(spec: PromptSpec, image) -> tuple[float | None, ...]:
    """The prompt in data indices: a point (z, y, x), a box (z0, y0, x0, z1, y1, x1) with y/x
    as pixel edges (as `ambiseg sample --box`) and z0..z1 slices."""
    if spec.units == VOXEL:
        return spec.values
    v = spec.values
    if spec.kind == "point":
        return tuple(float(c) for c in world_to_index(image, v[:3]))
    a, b = world_to_index(image, v[:3]), world_to_index(image, v[3:])
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    return (lo[0], lo[1] + 0.5, lo[2] + 0.5, hi[0], hi[1] + 0.5, hi[2] + 0.5)


def _off_plane(z: float | None, what: str) -> None:
    if z is not None and abs(z) > 0.5:
        raise InputError(f"{what} is {z:.1f} slices off this 2D image's plane")


def request_for(spec: PromptSpec, image, *, n: int | None, steps: int | None, seed: int,
                given_finding: bool, spacing, modality: str) -> Request:
    """The `Request` of a prompt on its image (a `MedicalImage`): a plane, or for a box on a
    volume its slab; `InputError` for a prompt outside the image."""
    data = image.model_image
    shape = tuple(image.spatial_shape)
    volume = len(shape) == 3
    h, w = shape[-2:]
    req = Request(image=data, n=n, steps=steps, seed=seed, spacing=spacing, modality=modality,
                  given_finding=given_finding)
    what = f"the prompt ({spec.text()})"
    if spec.kind == "centre":
        if volume:
            z = shape[0] // 2
            req.volume, req.slices, req.prompt = True, [z], Prompt(z=z)
        return req
    v = _index_values(spec, image)
    if spec.kind == "point":
        cy, cx = _plane_check(v[1], v[2], h, w, what)
        req.prompt = Prompt(center=(cy, cx))
        if volume:
            if v[0] is None:
                raise InputError(f"{what} needs z on a volume of {shape[0]} slices")
            z = _slice_check(v[0], shape[0], what)
            req.volume, req.slices, req.prompt.z = True, [z], z
        else:
            _off_plane(v[0], what)
        return req
    y0, x0, y1, x1 = v[1], v[2], v[4], v[5]
    if y1 <= y0 or x1 <= x0:
        raise InputError(f"{what} needs y1 > y0 and x1 > x0")
    if y1 <= 0 or x1 <= 0 or y0 >= h or x0 >= w:
        raise InputError(f"{what} does not overlap the image ({h} x {w} pixels)")
    req.prompt = Prompt(box=(y0, x0, y1, x1))
    if not volume:
        _off_plane(v[0], what)
        _off_plane(v[3], what)
        return req
    if v[0] is None:
        raise InputError(f"{what} needs z0 and z1 on a volume of {shape[0]} slices")
    z0, z1 = sorted((_slice_check(v[0], shape[0], what), _slice_check(v[3], shape[0], what)))
    req.volume, req.slices = True, list(range(z0, z1 + 1))
    req.prompt.z = z0 if z0 == z1 else None  # a slab starts where the finding is most evident
    return req
