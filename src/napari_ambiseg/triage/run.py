"""`ambiseg triage`: sample every prompt of a dataset once, score it, rank the run
(docs/triage.md is the run folder's contract; `worklist.py` reads what this writes).

`plan_run` lists the cases and prompts and describes the run (run.json); `check_resume`
refuses an existing run folder made with another model, n, steps, seed, distribution or
inputs; `sample_prompts` samples this process's share of the prompts (prompt i goes to rank
i % world, with seed + i), writing each prompt's files with result.json last; `merge`
(rank 0, after every rank is done) writes worklist.csv and the report.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import worklist as wl
from ..errors import AmbisegError, InputError
from ..io.atomic import atomic_output, atomic_write_bytes
from .inputs import (
    NPZ_MODALITY,
    Case,
    PromptSpec,
    centre_prompts,
    folder_cases,
    is_npz,
    npz_cases,
    read_prompts,
    request_for,
)

IDENTITY = ("model", "n", "steps", "seed", "given_finding", "inputs")


@dataclass
class Settings:
    """What `ambiseg triage` was asked (the CLI's arguments)."""

    input: str
    out: str
    prompts: str | None = None
    n: int | None = None
    steps: int | None = None
    seed: int = 0
    weights: str | None = None
    device: str = "auto"
    limit: int | None = None
    given_finding: bool = True


@dataclass
class Plan:
    """The run: its cases, every prompt (`prompts`, seeds seed + index) and the ones this run
    samples (`selected`: all, or those of the first `limit` cases); `info` is run.json."""

    settings: Settings
    root: Path
    kind: str                      # "folder" or "npz"
    cases: list[Case]
    prompts: list[PromptSpec]
    selected: list[PromptSpec]
    info: dict[str, Any]
    ignored: list[str] = field(default_factory=list)

    @property
    def out(self) -> Path:
        return Path(self.settings.out)

    def case(self, name: str) -> Case:
        return self._by_name[name]

    def __post_init__(self) -> None:
        self._by_name = {c.name: c for c in self.cases}


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_identity(weights: str | None) -> dict[str, str]:
    """{"name", "sha256"} of the weights file (the bundled model's likewise)."""
    from ..weights_io import resolve_weights, weights_problem

    path = resolve_weights(weights)
    problem = weights_problem(path)
    if problem:
        raise InputError(problem)
    st = path.with_suffix(".safetensors")
    name = st.name if weights not in (None, "bundled") else f"bundled ({st.name})"
    return {"name": name, "sha256": sha256_of(st)}


def score_definition() -> str:
    """The score's meaning: triage/score.py's docstring."""
    from . import score

    return (score.__doc__ or "").strip()


def plan_run(s: Settings, model: dict[str, str], n: int, steps: int, sampler: str) -> Plan:
    """Cases and prompts of the input, and run.json (without `created`)."""
    src = Path(s.input)
    ignored: list[str] = []
    if is_npz(src):
        if s.prompts:
            raise InputError("--prompts is for a folder of cases; a .npz dataset is prompted "
                             "at the centre of every image")
        cases, kind = npz_cases(src), "npz"
        inputs = {"kind": kind, "path": str(src.resolve()), "count": len(cases),
                  "bytes": src.stat().st_size}
    else:
        if src.is_file():
            raise InputError(f"{src} is a file: give a folder of cases (DICOM series folders, "
                             "volumes, images) or a multi-rater .npz")
        cases, ignored = folder_cases(src, exclude=s.out)
        kind = "folder"
        inputs = {"kind": kind, "path": str(src.resolve()), "cases": [c.name for c in cases]}
    if s.prompts:
        prompts = read_prompts(s.prompts, cases)
        inputs["prompts"] = {"path": str(Path(s.prompts).resolve()),
                             "sha256": sha256_of(s.prompts)}
    else:
        prompts = centre_prompts(cases)
    if s.limit is not None:
        if s.limit < 1:
            raise InputError(f"--limit {s.limit}: give at least 1 case")
        first = {c.name for c in cases[:s.limit]}
        selected = [p for p in prompts if p.case in first]
    else:
        selected = list(prompts)
    from .. import __version__

    info = {"format": wl.FORMAT, "version": __version__, "model": model, "n": n,
            "steps": steps, "seed": s.seed, "sampler": sampler,
            "given_finding": s.given_finding, "inputs": inputs, "limit": s.limit,
            "prompts": [p.to_dict() for p in selected],
            "score": {"name": "disagreement", "definition": score_definition()}}
    return Plan(s, src, kind, cases, prompts, selected, info, ignored)


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two runs' identities, in words ("steps 2 (now 3)")."""
    out = []
    for key in IDENTITY:
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if key == "model":
            a, b = a or {}, b or {}
            if a.get("sha256") != b.get("sha256"):
                out.append(f"model {a.get('name')} sha256 {str(a.get('sha256'))[:12]} (now "
                           f"{b.get('name')} sha256 {str(b.get('sha256'))[:12]})")
        elif key == "inputs":
            out.extend(_input_differences(a or {}, b))
        elif key == "given_finding":
            said = {True: "samples given a finding", False: "--unconditional"}
            out.append(f"{said[bool(a)]} (now {said[bool(b)]})")
        else:
            out.append(f"{key} {a} (now {b})")
    return out


def _input_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    if a.get("kind") != b.get("kind") or a.get("path") != b.get("path"):
        return [f"input {a.get('path')} (now {b.get('path')})"]
    out = []
    if a.get("cases") != b.get("cases"):
        old, new = set(a.get("cases") or []), set(b.get("cases") or [])
        parts = []
        if new - old:
            parts.append(f"{len(new - old)} added: " + ", ".join(sorted(new - old)[:3]))
        if old - new:
            parts.append(f"{len(old - new)} removed: " + ", ".join(sorted(old - new)[:3]))
        out.append("the input's cases (now " + ("; ".join(parts) or "in another order") + ")")
    for k in ("count", "bytes"):
        if a.get(k) != b.get(k):
            out.append(f"the input .npz's {k} {a.get(k)} (now {b.get(k)})")
    pa, pb = a.get("prompts"), b.get("prompts")
    if (pa or {}).get("sha256") != (pb or {}).get("sha256"):
        if pa and pb and pa["path"] == pb["path"]:
            out.append(f"prompts {pa['path']} (edited since)")
        else:
            out.append(f"prompts {pa['path'] if pa else 'at the centre of every case'} (now "
                       f"{pb['path'] if pb else 'at the centre of every case'})")
    return out


def check_resume(plan: Plan) -> dict[str, Any] | None:
    """The existing run.json of the output folder if it is the same run (None: a new run);
    `InputError` naming every difference otherwise."""
    path = plan.out / wl.RUN_JSON
    if not path.is_file():
        if plan.out.is_dir() and any(plan.out.iterdir()):
            raise InputError(f"{plan.out} is not empty and holds no {wl.RUN_JSON}: give a new "
                             "or empty folder for the run")
        return None
    old = wl.read_json(path)
    if old.get("format") != wl.FORMAT:
        raise InputError(f"{path} has format {old.get('format')!r}, not {wl.FORMAT!r}: use "
                         "another --out")
    diff = _differences(old, plan.info)
    if diff:
        raise InputError(f"{plan.out} holds another run, made with " + "; ".join(diff)
                         + ": use another --out, or that run's settings to resume it")
    return old


def write_run_json(plan: Plan, old: dict[str, Any] | None) -> None:
    info = dict(plan.info)
    info["created"] = (old or {}).get("created") or wl.now_iso()
    plan.info = info
    atomic_write_bytes(plan.out / wl.RUN_JSON, json.dumps(info, indent=1).encode())


# ---- one prompt ---------------------------------------------------------------------------


class CaseReader:
    """Reads a case once for its consecutive prompts (a failure is kept too)."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.name: str | None = None
        self.value: Any = None
        self._npz: tuple[np.ndarray, Any] | None = None

    def __call__(self, name: str):
        if name != self.name:
            self.name = name
            try:
                self.value = self._read(self.plan.case(name))
            except AmbisegError as e:
                self.value = e
            except Exception as e:  # noqa: BLE001 - a case that breaks a reader is an error row
                self.value = InputError(f"cannot read case {name}: {type(e).__name__}: {e}")
        if isinstance(self.value, Exception):
            raise self.value
        return self.value

    def _read(self, case: Case):
        if case.index is not None:
            if self._npz is None:
                self._npz = wl.read_npz_images(self.plan.root)
            images, spacing = self._npz
            return wl.npz_image(images, case.index, case.name, spacing), spacing, NPZ_MODALITY
        from ..io import read_image

        images = read_image(self.plan.root / case.entry)
        pick = [im for im in images if not im.is_labels]
        if not pick:
            raise InputError(f"{case.entry} holds labels only, no image to sample")
        img = pick[0]
        spacing = tuple(img.spacing)
        if img.axes and img.axes[0] == "t":
            spacing = spacing[1:]  # frames are time: sizes in the plane
        return img, spacing, img.model_modality


def headline_size(res) -> dict[str, Any]:
    """The size of the commonest outlined mode: median volume (mm^3) of a slab, area (mm^2)
    of a plane, else voxels / pixels (spacing unknown)."""
    for s in res.mode_sizes():
        if s["empty"]:
            continue
        for key, unit in (("volume_mm3", "mm^3"), ("area_mm2", "mm^2")):
            if key in s:
                return {"value": s[key]["median"], "unit": unit, "text": s["text"],
                        "mode": s["rank"]}
        unit = "voxels" if s.get("ndim") == 3 else "pixels"
        return {"value": s["voxels"]["median"], "unit": unit, "text": s["text"],
                "mode": s["rank"]}
    return {"value": None, "unit": "", "text": "no finding", "mode": None}


def slices_text(res) -> str:
    if res.z0 is None:
        return ""
    z1 = res.z0 + res.masks.shape[1] - 1
    return str(res.z0) if z1 == res.z0 else f"{res.z0}-{z1}"


def _has_geometry(plan: Plan, case: Case, image) -> bool:
    """Volumes and files with a geometry get agreement.nii.gz (not .npz or PNG/TIFF images)."""
    if case.index is not None:
        return False
    from ..io.sniff import content_kind, extension_kind

    path = plan.root / case.entry
    if path.is_file() and (content_kind(path) or extension_kind(path)) == "raster":
        return False
    return image.geometry is not None


def sample_one(plan: Plan, seg, spec: PromptSpec, read: CaseReader) -> dict[str, Any]:
    """Sample one prompt and write its files (thumbnail, samples.npz, agreement, result.json
    last); returns result.json. `AmbisegError` for a bad case or prompt."""
    from ..scope import layer_scope_warnings
    from ..volume_sampling import sample_request
    from .report import thumbnail
    from .score import disagreement

    image, spacing, modality = read(spec.case)
    s = plan.settings
    req = request_for(spec, image, n=plan.info["n"], steps=plan.info["steps"],
                      seed=s.seed + spec.index, given_finding=s.given_finding, spacing=spacing,
                      modality=modality)
    res = sample_request(seg, req)
    score = disagreement(res)
    folder = wl.case_dir(plan.out, spec.key)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".*.tmp"):  # a write cut short by a kill
        shutil.rmtree(stale, ignore_errors=True)
    case = plan.case(spec.case)
    plane = np.asarray(req.image if res.start is None else req.image[res.start])
    thumbnail(plane, modality, res, plan.out / "img" / f"{spec.key}.png")
    with atomic_output(folder / wl.SAMPLES_NPZ) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, masks=res.masks.astype(np.uint8),
                                agreement=res.agreement.astype(np.float32))
    files = {"samples": wl.SAMPLES_NPZ, "thumbnail": f"img/{spec.key}.png"}
    if _has_geometry(plan, case, image):
        from ..io import write_agreement

        ref = image.reference()
        write_agreement(res.agreement, folder / wl.AGREEMENT_FILE,
                        ref if res.z0 is None else ref | {"z0": res.z0})
        files["agreement"] = wl.AGREEMENT_FILE
    outside = [] if case.index is not None else layer_scope_warnings(
        seg.cfg, image.reference(), rgb=image.rgb, data=image.model_image)
    result = {
        "status": wl.OK, "key": spec.key, "case": spec.case, "index": spec.index,
        "seed": s.seed + spec.index, "prompt": spec.to_dict() | {"text": spec.text()},
        "request": {"volume": req.volume, "slices": [req.slices[0], req.slices[-1]]
                    if req.slices else None, "center": req.prompt.center,
                    "box": req.prompt.box, "z": req.prompt.z},
        "source": case.source(), "image_shape": list(image.spatial_shape),
        "spacing": None if spacing is None else list(spacing), "modality": modality,
        "z0": res.z0, "slices": slices_text(res), "size": headline_size(res),
        "score": score, "outside_scope": outside, "files": files, "result": res.summary(),
    }
    atomic_write_bytes(folder / wl.RESULT_JSON, json.dumps(result, indent=1).encode())
    (folder / wl.ERROR_JSON).unlink(missing_ok=True)
    return result


def record_error(plan: Plan, spec: PromptSpec, message: str) -> None:
    folder = wl.case_dir(plan.out, spec.key)
    doc = {"status": wl.ERROR, "key": spec.key, "case": spec.case, "index": spec.index,
           "prompt": spec.to_dict() | {"text": spec.text()}, "error": message}
    atomic_write_bytes(folder / wl.ERROR_JSON, json.dumps(doc, indent=1).encode())


def sample_prompts(plan: Plan, seg, rank: int = 0, world: int = 1,
                   progress: Callable[[int, int, str], None] | None = None) -> dict[str, int]:
    """Sample this rank's prompts that have no result.json yet (prompt i -> rank i % world);
    a failing prompt gets error.json and the run goes on. Returns counts."""
    mine = [p for p in plan.selected if p.index % world == rank]
    todo = [p for p in mine if not (wl.case_dir(plan.out, p.key) / wl.RESULT_JSON).is_file()]
    read = CaseReader(plan)
    counts = {"mine": len(mine), "done_before": len(mine) - len(todo), "ok": 0, "error": 0}
    report = progress or (lambda *a: None)
    report(0, len(todo), "")
    for j, spec in enumerate(todo):
        try:
            sample_one(plan, seg, spec, read)
            counts["ok"] += 1
        except AmbisegError as e:
            record_error(plan, spec, str(e))
            counts["error"] += 1
        except Exception as e:  # noqa: BLE001 - one failing prompt never stops the run
            record_error(plan, spec, f"{type(e).__name__}: {e}")
            counts["error"] += 1
        report(j + 1, len(todo), spec.key)
    return counts


# ---- rank 0: the worklist and the report --------------------------------------------------


def row_of(plan: Plan, spec: PromptSpec) -> tuple[wl.Row, dict[str, Any] | None]:
    """The worklist row of a prompt from its result.json / error.json (pending: neither)."""
    folder = wl.case_dir(plan.out, spec.key)
    blank = dict(rank=None, case=spec.case, score=None, finding_probability=None,
                 disagreement=None, size=None, size_unit="", slices="", modes=None,
                 prompt=spec.text(), key=spec.key)
    if (folder / wl.RESULT_JSON).is_file():
        r = wl.read_json(folder / wl.RESULT_JSON)
        sc, size = r["score"], r["size"]
        return wl.Row(**blank | dict(
            score=sc["score"], finding_probability=sc.get("finding_probability"),
            disagreement=sc.get("outline_disagreement"), size=size.get("value"),
            size_unit=size.get("unit", ""), slices=r.get("slices", ""),
            modes=len(r["result"]["modes"]), status=wl.OK)), r
    if (folder / wl.ERROR_JSON).is_file():
        err = wl.read_json(folder / wl.ERROR_JSON).get("error", "unknown error")
        return wl.Row(**blank | dict(status=wl.ERROR, error=err)), None
    return wl.Row(**blank | dict(status=wl.PENDING, error="not sampled yet: run again with the "
                                 "same arguments to finish")), None


def ranked_rows(plan: Plan) -> tuple[list[wl.Row], dict[str, dict[str, Any]]]:
    """Rows ranked by score (ties: prompt order), then error and pending rows unranked."""
    rows, results = [], {}
    for spec in plan.selected:
        row, result = row_of(plan, spec)
        rows.append((spec.index, row))
        if result is not None:
            results[spec.key] = result
    ok = sorted((r for r in rows if r[1].status == wl.OK), key=lambda r: (-r[1].score, r[0]))
    for rank, (_, row) in enumerate(ok, start=1):
        row.rank = rank
    rest = [r for r in rows if r[1].status != wl.OK]
    return [row for _, row in ok + rest], results


def write_worklist(path: Path, rows: list[wl.Row]) -> None:
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=wl.COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(r.to_csv() for r in rows)
    atomic_write_bytes(path, buf.getvalue().encode("utf-8"))


def merge(plan: Plan) -> list[wl.Row]:
    """worklist.csv and report.html from every prompt's files (rank 0, after all ranks)."""
    from .report import write_report

    rows, results = ranked_rows(plan)
    write_worklist(plan.out / wl.WORKLIST_CSV, rows)
    write_report(plan.out, plan.info, rows, results)
    return rows


def summary_line(rows: list[wl.Row], out: Path) -> str:
    ok = [r for r in rows if r.ok]
    errors = sum(r.status == wl.ERROR for r in rows)
    pending = sum(r.status == wl.PENDING for r in rows)
    parts = [f"{len(ok)} ranked"] + ([f"{errors} error(s)"] if errors else []) + (
        [f"{pending} pending"] if pending else [])
    top = f"; most disagreement: {ok[0].key} (score {ok[0].score:.2f})" if ok else ""
    return (f"{len(rows)} prompts ({', '.join(parts)}){top} -> {out / wl.WORKLIST_CSV}, "
            f"{out / wl.REPORT_HTML}")


def print_ignored(plan: Plan, stream=sys.stderr) -> None:
    if plan.ignored:
        names = ", ".join(plan.ignored[:5]) + (" ..." if len(plan.ignored) > 5 else "")
        print(f"ambiseg triage: note: {len(plan.ignored)} entries of {plan.root} are not "
              f"images and were left out: {names}", file=stream)


def triage(s: Settings, stream=None) -> int:
    """`ambiseg triage`: plan, check a resumed run, sample this process's prompts with a
    progress bar, then (rank 0, once every rank is done) the worklist and the report."""
    from ..config import sampling_counts
    from ..progress import ProgressBar
    from ..segmenter import Segmenter
    from ..weights_io import load_config, resolve_weights
    from .shard import Shard

    stream = stream if stream is not None else sys.stderr
    for name, v in (("--n", s.n), ("--steps", s.steps)):
        if v is not None and v < 1:
            raise InputError(f"{name} {v}: give at least 1")
    shard = Shard.from_env()
    try:
        model = model_identity(s.weights)
        cfg, _ = load_config(resolve_weights(s.weights))
        n, steps = sampling_counts(cfg, s.n, s.steps)
        plan = plan_run(s, model, n, steps, cfg.sampler)
        old = check_resume(plan)
        shard.barrier()  # every rank has checked the folder before it changes
        if shard.main:
            plan.out.mkdir(parents=True, exist_ok=True)
            print_ignored(plan, stream)
            write_run_json(plan, old)
        seg = Segmenter.load(s.weights, device=shard.device(s.device))
        with ProgressBar(f"triage{shard.label()}", "prompts", stream=stream) as bar:
            counts = sample_prompts(plan, seg, shard.rank, shard.world, progress=bar)
        if counts["done_before"] and shard.main:
            print(f"ambiseg triage: resumed: {counts['done_before']} prompt(s) of this "
                  "process were done before", file=stream)
        shard.barrier()  # every rank's files are written
        if shard.main:
            rows = merge(plan)
            print(f"ambiseg triage: {summary_line(rows, plan.out)}", flush=True)
        shard.barrier()
    finally:
        shard.close()
    return 0
