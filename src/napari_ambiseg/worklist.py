"""Reading a triage run folder (docs/triage.md), Qt-free: what the Worklist dock and
`ambiseg train --data RUN` use.

* :func:`read_run` -> :class:`Run`: ``run.json`` and the ranked ``worklist.csv`` rows
  (:class:`Row`), plus the paths of every prompt's files.
* :func:`load_case` -> :class:`Case` ``(image, samples, agreement, result)``: the case's image
  (a :class:`~napari_ambiseg.io.MedicalImage`, also for a ``.npz`` image), its samples and
  agreement (the slab's slices only for a volume: ``result["z0"]`` is the first) and its
  ``result.json``.
* The dock's state (``worklist_state.json``): :func:`read_state`, :func:`set_status`
  (todo / done / skipped per key, who, when), written atomically.
* Labels beside the run: :func:`labels_path`, :func:`saved_labels`, :func:`save_labels`.

Nothing here imports torch, napari or Qt.
"""

from __future__ import annotations

import csv
import getpass
import json
import os
import re
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .errors import InputError

FORMAT = "ambiseg-triage/1"
RUN_JSON = "run.json"
WORKLIST_CSV = "worklist.csv"
REPORT_HTML = "report.html"
STATE_JSON = "worklist_state.json"
CASES = "cases"
LABELS = "labels"
RESULT_JSON = "result.json"
ERROR_JSON = "error.json"
SAMPLES_NPZ = "samples.npz"
AGREEMENT_FILE = "agreement.nii.gz"

COLUMNS = ("rank", "case", "score", "finding_probability", "disagreement", "size",
           "size_unit", "slices", "modes", "status", "prompt", "key", "error")
STATUSES = ("todo", "done", "skipped")
OK, ERROR, PENDING = "ok", "error", "pending"  # the `status` column of worklist.csv


@dataclass
class Row:
    """One row of worklist.csv (one prompt); numbers are None where the row has none."""

    rank: int | None
    case: str
    score: float | None
    finding_probability: float | None
    disagreement: float | None
    size: float | None
    size_unit: str
    slices: str
    modes: int | None
    status: str
    prompt: str
    key: str
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK

    @classmethod
    def from_csv(cls, rec: dict[str, str]) -> Row:
        def num(name: str, kind=float):
            v = (rec.get(name) or "").strip()
            return kind(v) if v else None

        return cls(rank=num("rank", int), case=rec.get("case", ""), score=num("score"),
                   finding_probability=num("finding_probability"),
                   disagreement=num("disagreement"), size=num("size"),
                   size_unit=rec.get("size_unit", ""), slices=rec.get("slices", ""),
                   modes=num("modes", int), status=rec.get("status", ""),
                   prompt=rec.get("prompt", ""), key=rec.get("key", ""),
                   error=rec.get("error", ""))

    def to_csv(self) -> dict[str, str]:
        def fmt(v) -> str:
            if v is None:
                return ""
            if isinstance(v, float):
                return f"{v:.4f}"
            return str(v)

        return {c: fmt(getattr(self, c)) for c in COLUMNS}


@dataclass
class Run:
    """A triage run folder: ``info`` is run.json, ``rows`` worklist.csv in rank order."""

    root: Path
    info: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    _npz: dict[str, np.ndarray] | None = field(default=None, repr=False, compare=False)

    @property
    def model(self) -> dict[str, Any]:
        return self.info.get("model", {})

    @property
    def n(self) -> int:
        return int(self.info["n"])

    @property
    def steps(self) -> int:
        return int(self.info["steps"])

    @property
    def seed(self) -> int:
        return int(self.info["seed"])

    @property
    def inputs(self) -> dict[str, Any]:
        return self.info.get("inputs", {})

    @property
    def keys(self) -> list[str]:
        return [r.key for r in self.rows]

    def row(self, key: str) -> Row:
        for r in self.rows:
            if r.key == key:
                return r
        raise KeyError(f"no prompt {key!r} in {self.root / WORKLIST_CSV}")

    def case_dir(self, key: str) -> Path:
        return case_dir(self.root, key)

    def done(self, key: str) -> bool:
        """Whether the prompt's result.json exists (it is written last)."""
        return (self.case_dir(key) / RESULT_JSON).is_file()


def case_dir(run_dir: str | os.PathLike, key: str) -> Path:
    return Path(run_dir) / CASES / key


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{p} not found") from None
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read {p}: {e}") from None


def read_rows(path: str | os.PathLike) -> list[Row]:
    """worklist.csv's rows as written (rank order; error rows last)."""
    p = Path(path)
    try:
        with open(p, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(f"{p} lacks the columns {', '.join(missing)}: it is not a "
                                 "triage worklist")
            return [Row.from_csv(rec) for rec in reader]
    except FileNotFoundError:
        raise InputError(f"{p} not found: the run has not been merged yet (run `ambiseg "
                         "triage` again with the same arguments to finish it)") from None
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read {p}: {e}") from None


def read_run(run_dir: str | os.PathLike) -> Run:
    """The run folder's run.json and worklist.csv. Raises `InputError` with one line when the
    folder is not a triage run (or its worklist has not been written yet)."""
    root = Path(run_dir)
    if not (root / RUN_JSON).is_file():
        raise InputError(f"{root} is not a triage run folder (no {RUN_JSON}); make one with "
                         "`ambiseg triage INPUT --out RUN`")
    info = read_json(root / RUN_JSON)
    if info.get("format") != FORMAT:
        raise InputError(f"{root / RUN_JSON} has format {info.get('format')!r}; this version "
                         f"reads {FORMAT!r}")
    return Run(root, info, read_rows(root / WORKLIST_CSV))


class Case(NamedTuple):
    """One prompt's data: unpacks as ``image, samples, agreement, result``."""

    image: Any                # MedicalImage (a .npz image too: 2D, assumed 1 mm pixels)
    samples: np.ndarray       # (N, H, W) or (N, Z, H, W) uint8: slices z0.. of a volume
    agreement: np.ndarray     # float32, the samples' grid
    result: dict[str, Any]    # result.json


def read_result(run: Run | str | os.PathLike, key: str) -> dict[str, Any]:
    """A prompt's result.json; an `InputError` saying why there is none (error, pending)."""
    root = run.root if isinstance(run, Run) else Path(run)
    folder = case_dir(root, key)
    if not (folder / RESULT_JSON).is_file():
        if (folder / ERROR_JSON).is_file():
            err = read_json(folder / ERROR_JSON).get("error", "unknown error")
            raise InputError(f"{key}: this prompt failed: {err}")
        raise InputError(f"{key}: not sampled yet (no {folder / RESULT_JSON}); run `ambiseg "
                         "triage` again with the same arguments to finish the run")
    return read_json(folder / RESULT_JSON)


def load_samples(run: Run | str | os.PathLike, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(samples uint8, agreement float32) of a prompt, from its samples.npz."""
    root = run.root if isinstance(run, Run) else Path(run)
    path = case_dir(root, key) / SAMPLES_NPZ
    try:
        with np.load(path, allow_pickle=False) as z:
            return z["masks"], z["agreement"]
    except (OSError, KeyError, ValueError) as e:
        raise InputError(f"cannot read {path}: {e}") from None


def npz_image(images: np.ndarray, index: int, name: str, spacing=None) -> Any:
    """Image `index` of a multi-rater .npz as a 2D MedicalImage (LIDC 8-bit scale); without
    `spacing` in the file its pixels are taken as 1 mm (as the npz reader shows them)."""
    from .io import MedicalImage

    return MedicalImage(np.asarray(images[index]), tuple(spacing or (1.0, 1.0)), (0.0, 0.0),
                        axes=("y", "x"), name=name, modality="")


def read_npz_images(path: str | os.PathLike) -> tuple[np.ndarray, tuple[float, float] | None]:
    """The `images` of a multi-rater .npz and its in-plane `spacing` (None: not in the file)."""
    from .io.npz import read_npz

    try:
        images = read_npz(Path(path), ("images",))["images"]
    except (KeyError, OSError, ValueError, zipfile.BadZipFile) as e:
        raise InputError(f"cannot read the images of {path}: {e}") from None
    spacing = None
    try:
        extra = read_npz(Path(path), ("spacing",))
        spacing = tuple(float(v) for v in np.ravel(extra["spacing"])[-2:])
    except (KeyError, OSError, ValueError, zipfile.BadZipFile):
        pass
    return images, spacing


def case_image(run: Run, result: dict[str, Any]) -> Any:
    """The image a result was sampled on, read again from its source (a file or folder of the
    input folder, or an image of the input .npz)."""
    from .io import read_image

    source = result.get("source", {})
    if "npz_index" in source:
        if run._npz is None:
            images, spacing = read_npz_images(run.inputs["path"])
            run._npz = {"images": images, "spacing": spacing}
        return npz_image(run._npz["images"], int(source["npz_index"]), result["case"],
                         run._npz["spacing"])
    path = Path(source.get("path", ""))
    if not path.is_absolute():
        path = Path(run.inputs.get("path", "")) / path
    images = [im for im in read_image(path) if not im.is_labels] or read_image(path)
    index = int(source.get("image", 0))
    if index >= len(images):
        raise InputError(f"{path} now holds {len(images)} image(s); the run used image "
                         f"{index + 1}")
    return images[index]


def load_case(run: Run, key: str) -> Case:
    """``(image, samples, agreement, result)`` of a prompt: the image read again from its
    source, the samples and agreement from samples.npz (for a volume, slices
    ``result["z0"]`` on), result.json as a dict."""
    result = read_result(run, key)
    samples, agreement = load_samples(run, key)
    return Case(case_image(run, result), samples, agreement, result)


# ---- the Worklist dock's state ----------------------------------------------------------


@dataclass
class CaseState:
    status: str = "todo"   # todo / done / skipped
    who: str = ""
    when: str = ""         # ISO 8601, UTC

    def to_dict(self) -> dict[str, str]:
        return {"status": self.status, "who": self.who, "when": self.when}


def default_annotator() -> str:
    """The annotator's name: $AMBISEG_ANNOTATOR, else the OS user."""
    name = os.environ.get("AMBISEG_ANNOTATOR", "").strip()
    if not name:
        try:
            name = getpass.getuser()
        except (KeyError, OSError):
            name = "annotator"
    return safe_name(name)


def safe_name(name: str) -> str:
    """A name usable as a file name (annotators, keys): other characters become '_'."""
    return re.sub(r"[^A-Za-z0-9._~-]+", "_", name).strip("._") or "_"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def read_state(run_dir: str | os.PathLike | Run) -> dict[str, CaseState]:
    """worklist_state.json: the status of every key marked so far (others are todo)."""
    root = run_dir.root if isinstance(run_dir, Run) else Path(run_dir)
    path = root / STATE_JSON
    if not path.is_file():
        return {}
    cases = read_json(path).get("cases", {})
    return {k: CaseState(str(v.get("status", "todo")), str(v.get("who", "")),
                         str(v.get("when", ""))) for k, v in cases.items()}


def write_state(run_dir: str | os.PathLike | Run, state: dict[str, CaseState]) -> Path:
    """Write worklist_state.json atomically."""
    from .io.atomic import atomic_write_bytes

    root = run_dir.root if isinstance(run_dir, Run) else Path(run_dir)
    doc = {"format": FORMAT, "cases": {k: s.to_dict() for k, s in sorted(state.items())}}
    return atomic_write_bytes(root / STATE_JSON, json.dumps(doc, indent=2).encode())


def set_status(run_dir: str | os.PathLike | Run, key: str, status: str, who: str | None = None,
               when: str | None = None) -> CaseState:
    """Mark one key todo / done / skipped (who: the annotator, default the OS user; when:
    now), re-reading the file first so that other keys' marks are kept."""
    if status not in STATUSES:
        raise InputError(f"status {status!r} is not one of {', '.join(STATUSES)}")
    state = read_state(run_dir)
    state[key] = CaseState(status, who if who is not None else default_annotator(),
                           when or now_iso())
    write_state(run_dir, state)
    return state[key]


# ---- labels beside the run --------------------------------------------------------------


def labels_path(run_dir: str | os.PathLike | Run, key: str, annotator: str | None = None) -> Path:
    """labels/<key>/<annotator>.nii.gz (annotator: default the OS user)."""
    root = run_dir.root if isinstance(run_dir, Run) else Path(run_dir)
    return root / LABELS / key / f"{safe_name(annotator or default_annotator())}.nii.gz"


def saved_labels(run_dir: str | os.PathLike | Run, key: str) -> dict[str, Path]:
    """{annotator: path} of the labels saved for a key."""
    root = run_dir.root if isinstance(run_dir, Run) else Path(run_dir)
    folder = root / LABELS / key
    if not folder.is_dir():
        return {}
    return {p.name[:-len(".nii.gz")]: p for p in sorted(folder.glob("*.nii.gz"))}


def save_labels(run_dir: str | os.PathLike | Run, key: str, labels: np.ndarray, reference: Any,
                annotator: str | None = None, provenance: dict[str, Any] | None = None) -> Path:
    """Write labels drawn on the case image's grid (`reference`: its MedicalImage or layer
    metadata) to labels/<key>/<annotator>.nii.gz on the source grid."""
    from .io import write_labels

    path = labels_path(run_dir, key, annotator)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_labels(labels, path, reference, provenance=provenance)
    return path
