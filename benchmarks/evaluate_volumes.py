"""Volumes: sampled 3D outlines of LIDC nodule stacks against the readers' 3D outlines.

    python benchmarks/evaluate_volumes.py [--split test] [--min-slices 4] [--limit K]
        [--n 16] [--steps S] [--weights W] [--starts auto,first,middle,last]
        [--given-finding] [--cost] [--write-doc]

A nodule's rows in ../shared/data/lidc/index.csv are consecutive, aligned crops: each nodule
is a stack (Z, 128, 128). Every stack is sampled with the core volume sampler
(`volume_sampling.sample_request`, a slice range over the whole stack, the crop's centre as
the prompt, the LIDC 8-bit scale, no resampling: the same as `ambiseg evaluate` per slice)
and compared with the readers linked into 3D tracks (`volume_metrics`, where the metrics are
defined). Each stack is sampled once per start in `--starts`: `auto` lets the sampler start
where the finding is most evident (the default of `ambiseg sample --slices` and the volume
dock), `first` / `middle` / `last` force the start slice (`Request.start`); the spread is
taken over the forced starts. The benchmark distribution (empty samples included) unless
`--given-finding`. `--limit K` takes K stacks evenly spaced in index order. `--cost` also
times a 20-slice stack against one of its slices (same request, the sampler's in-process
timings, as `summary.json` reports them), in one run.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _report import machine, write_section  # noqa: E402

from napari_ambiseg.segmenter import Segmenter  # noqa: E402
from napari_ambiseg.training.examples import nodule_stacks  # noqa: E402
from napari_ambiseg.volume_metrics import link_readers, stack_metrics  # noqa: E402
from napari_ambiseg.volume_sampling import Prompt, Request, sample_request  # noqa: E402

LIDC = Path(__file__).resolve().parents[2] / "shared" / "data" / "lidc"


METHODS = {
    "per-slice": "per-slice method: each slice on its own, the same seed on every slice",
    "coherent": "coherent method: outward from the start slice, sample k on each slice "
                "conditioned on sample k on the slice before, existence drawn per sample "
                "(stratified) with one draw shared by all slices against the envelope of the "
                "finding probability from its peak",
}


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def lidc_stacks(split: str = "test", min_slices: int = 4, root: Path = LIDC) -> list[dict]:
    """Nodule stacks of a split: images (Z, H, W) uint8, masks (Z, R, H, W), spacing (z, y, x)
    in mm or None, in index.csv order."""
    with open(root / "index.csv", newline="") as f:
        records = {int(r["row"]): r for r in csv.DictReader(f) if r["split"] == split}
    with np.load(root / f"{split}.npz", allow_pickle=False) as d:
        images, masks = d["images"], d["masks"]
    stacks = []
    for idx in nodule_stacks(root / "index.csv", split):
        if len(idx) < min_slices:
            continue
        rows = [records[i] for i in idx]
        patient, nodule = rows[0]["patient_id"], rows[0]["nodule"]
        z = [_float(r["z_mm"]) for r in rows]
        dz = (float(np.median(np.abs(np.diff(z)))) if None not in z
              else _float(rows[0]["slice_thickness"]))
        px = _float(rows[0]["pixel_spacing"])
        stacks.append({"name": f"{patient}/{nodule}", "images": images[idx],
                       "masks": masks[idx].astype(bool),
                       "spacing": (dz, px, px) if dz and px else None})
    return stacks


STARTS = ("auto", "first", "middle", "last")


def start_slice(start: str, depth: int) -> int | None:
    """The forced start slice of a stack of `depth` slices (None: the sampler's choice)."""
    return {"auto": None, "first": 0, "middle": depth // 2, "last": depth - 1}[start]


def oracle_existence(share: float, n: int):
    """A diagnostic, never the product: the slab's existence plan rescaled so that exactly
    round(share x n) samples see a finding (share = the readers' non-empty 3D tracks), their
    extent along z still the model's (the envelope q). Shows what the outlines reach when the
    existence decision is taken away from the model."""
    from napari_ambiseg import volume_sampling

    made = volume_sampling._Existence.of

    def of(*args, **kw):
        plan = made(*args, **kw)
        if plan is not None:
            k = round(share * n)
            plan.scale = plan.q[plan.peak] * n / k if k else float("inf")
        return plan

    return of


def sample_stack(seg, stack: dict, n: int, steps: int | None, seed: int = 0,
                 start: str = "auto", given_finding: bool = False, oracle: bool = False):
    from napari_ambiseg import volume_sampling

    depth = len(stack["images"])
    req = Request(stack["images"], Prompt(z=start_slice(start, depth)), n=n, steps=steps,
                  seed=seed, volume=True, slices=[0, depth - 1], modality="8bit",
                  start=start_slice(start, depth), given_finding=given_finding)
    if not oracle:
        return sample_request(seg, req)
    tracks = link_readers(stack["masks"])
    made = volume_sampling._Existence.of
    volume_sampling._Existence.of = oracle_existence(
        float(tracks.reshape(len(tracks), -1).any(1).mean()), n)
    try:
        return sample_request(seg, req)
    finally:
        volume_sampling._Existence.of = made


def evaluate(seg, stacks: list[dict], n: int, steps: int | None, start: str = "auto",
             given_finding: bool = False, oracle: bool = False) -> tuple[dict, list[dict]]:
    from napari_ambiseg.progress import ProgressBar

    rows = []
    with ProgressBar(f"stacks, start {start}", "stacks") as bar:
        for i, stack in enumerate(stacks):
            res = sample_stack(seg, stack, n, steps, i, start, given_finding, oracle)
            sp = stack["spacing"]
            m = stack_metrics(res.masks, link_readers(stack["masks"]),
                              sp[0] * sp[1] * sp[2] if sp else None)
            rows.append(m | {"name": stack["name"], "slices": len(stack["images"]),
                             "seconds": res.seconds, "start": res.start})
            bar(i + 1, len(stacks), stack["name"])
    pooled = lambda key: float(np.mean([v for r in rows for v in r[key]]))  # noqa: E731
    w1 = [r["volume_w1_mm"] for r in rows if "volume_w1_mm" in r]
    summary = {
        "stacks": len(rows), "n": n, "steps": res.steps, "method": res.method, "start": start,
        "given_finding": given_finding,
        "ged3d": float(np.mean([r["ged"] for r in rows])),
        "hm_iou3d": float(np.mean([r["hm_iou"] for r in rows])),
        "ged2d": float(np.mean([r["ged_2d"] for r in rows])),
        "hm_iou2d": float(np.mean([r["hm_iou_2d"] for r in rows])),
        "slice_dice_samples": pooled("slice_dice_samples"),
        "slice_dice_readers": pooled("slice_dice_readers"),
        "volume_w1_mm_mean": float(np.mean(w1)) if w1 else None,
        "volume_w1_mm_median": float(np.median(w1)) if w1 else None,
        "volume_w1_stacks": len(w1),
    }
    return summary, rows


def timing_table(rows: list[dict]) -> list[str]:
    bins = [(4, 5), (6, 9), (10, 15), (16, 999)]
    lines = ["| slices | stacks | seconds per stack | seconds per slice |", "|---|---|---|---|"]
    for lo, hi in bins:
        g = [r for r in rows if lo <= r["slices"] <= hi]
        if g:
            s = np.array([r["seconds"] for r in g])
            per = np.array([r["seconds"] / r["slices"] for r in g])
            label = f"{lo}-{hi}" if hi < 999 else f">= {lo}"
            lines.append(f"| {label} | {len(g)} | {s.mean():.2f} | {per.mean():.3f} |")
    return lines


def cost(seg, stacks: list[dict], n: int, steps: int | None, repeats: int = 3) -> dict:
    """Seconds for 20 slices against one slice of the same stack, same request, one run."""
    long = next((s for s in stacks if len(s["images"]) >= 20), None)
    if long is None:
        return {}
    images = long["images"][:20]
    one = Request(images[10], n=n, steps=steps, modality="8bit")
    many = Request(images, n=n, steps=steps, volume=True, slices=[0, 19], modality="8bit")
    sample_request(seg, one)  # warm-up
    t_one, t_many = [], []
    for _ in range(repeats):  # the sampler's own timings (summary.json's timings_s.total)
        t_one.append(sample_request(seg, one).timings["total"])
        t_many.append(sample_request(seg, many).timings["total"])
    a, b = float(np.median(t_one)), float(np.median(t_many))
    return {"stack": long["name"], "one_slice_s": a, "twenty_slices_s": b, "ratio": b / a,
            "repeats": repeats}


def steps_after(s: dict) -> str:
    """How many steps the neighbour-conditioned slices took (coherent method only)."""
    if s.get("method") != "coherent":
        return ""
    return f" and {s['neighbour_steps']} on the others"


def figure_rows(s: dict) -> list[str]:
    rows = [
        f"| 3D GED{s['n']} | {s['ged3d']:.3f} | |",
        f"| 3D HM-IoU{s['n']} | {s['hm_iou3d']:.3f} | |",
        f"| per-slice GED{s['n']} / HM-IoU{s['n']} (same stacks) | {s['ged2d']:.3f} / "
        f"{s['hm_iou2d']:.3f} | |",
        f"| slice-to-slice Dice of one outline (pooled pairs, not both empty) | "
        f"{s['slice_dice_samples']:.3f} | {s['slice_dice_readers']:.3f} |",
    ]
    if s["volume_w1_mm_mean"] is not None:
        rows.append(f"| W1 of equivalent-sphere diameters, samples vs readers (mm; mean / "
                    f"median over {s['volume_w1_stacks']} stacks with spacing) | "
                    f"{s['volume_w1_mm_mean']:.2f} / {s['volume_w1_mm_median']:.2f} | |")
    return rows


def starts_table(summaries: dict[str, dict]) -> list[str]:
    """One row per start, then the spread (max - min) over the forced starts."""
    n = next(iter(summaries.values()))["n"]
    lines = [f"| start | 3D GED{n} | 3D HM-IoU{n} | slice-to-slice Dice, samples (readers) |",
             "|---|---|---|---|"]
    for start, s in summaries.items():
        lines.append(f"| {start} | {s['ged3d']:.3f} | {s['hm_iou3d']:.3f} | "
                     f"{s['slice_dice_samples']:.3f} ({s['slice_dice_readers']:.3f}) |")
    forced = [s for k, s in summaries.items() if k != "auto"]
    if len(forced) > 1:
        spread = {k: max(s[k] for s in forced) - min(s[k] for s in forced)
                  for k in ("ged3d", "hm_iou3d")}
        lines.append(f"| spread over the forced starts | {spread['ged3d']:.3f} | "
                     f"{spread['hm_iou3d']:.3f} | |")
    return lines


def report(summaries: dict[str, dict], rows: list[dict], cost_: dict, command: str) -> str:
    s = next(iter(summaries.values()))
    given = ("drawn given a finding on the start slice" if s["given_finding"] else
             "the benchmark distribution (empty samples included)")
    lines = [
        "## Volumes",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine()}.",
        "",
        f"{s['stacks']} `{s.get('split', 'test')}` nodule stacks (>= {s.get('min_slices', 4)} "
        f"slices), N = {s['n']}, {s['steps']} steps on the start slice"
        f"{steps_after(s)}, stack i sampled with seed i, every stack sampled as one slice "
        f"range with the core volume sampler at the crop's centre, {given} "
        f"({METHODS[s.get('method', 'per-slice')]}). Readers are linked into 3D tracks "
        "(Hungarian, maximum Dice with each track's last non-empty outline); definitions in "
        "`src/napari_ambiseg/volume_metrics.py`.",
        "",
        "From each start (`auto`: where the finding is most evident, the default; `first` / "
        "`middle` / `last`: forced with `Request.start`, as `ambiseg sample --slices A B "
        "--slice Z` does):",
        "",
        *starts_table(summaries),
        "",
        f"All figures, start `{next(iter(summaries))}`:",
        "",
        "| figure | samples | readers |",
        "|---|---|---|",
        *figure_rows(s),
    ]
    lines += ["", "Seconds per stack against stack length (sizes and modes included):", ""]
    lines += timing_table(rows)
    if cost_:
        lines += ["", f"Cost of a 20-slice stack against one of its slices ({cost_['stack']}, "
                  f"same request, the sampler's in-process timings as `summary.json` reports "
                  f"them, median of {cost_['repeats']} in one run): "
                  f"{cost_['twenty_slices_s']:.2f} s vs {cost_['one_slice_s']:.2f} s, "
                  f"{cost_['ratio']:.1f}x."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--split", default="test")
    p.add_argument("--min-slices", type=int, default=4)
    p.add_argument("--limit", type=int, default=None, help="K stacks, evenly spaced")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--steps", type=int, default=None, help="default: the model's")
    p.add_argument("--weights", default=None)
    p.add_argument("--neighbour-steps", type=int, default=None,
                   help="coherent models: steps of neighbour-conditioned slices (default: the model's)")
    p.add_argument("--starts", default="auto,first,middle,last",
                   help=f"comma-separated starts among {', '.join(STARTS)}")
    p.add_argument("--given-finding", dest="given_finding", action="store_true",
                   help="draw given a finding on the start slice (default: the benchmark "
                   "distribution)")
    p.add_argument("--oracle-existence", dest="oracle", action="store_true",
                   help="diagnostic: round(readers' 3D share x N) samples see a finding "
                   "(printed only, refused with --write-doc)")
    p.add_argument("--cost", action="store_true", help="also time 20 slices against one")
    p.add_argument("--json", default=None, help="write the figures and per-stack rows here")
    p.add_argument("--write-doc", action="store_true")
    args = p.parse_args(argv)

    stacks = lidc_stacks(args.split, args.min_slices)
    chosen = stacks
    if args.limit:
        chosen = [stacks[i] for i in np.unique(np.linspace(0, len(stacks) - 1, args.limit)
                                               .round().astype(int))]
    seg = Segmenter.load(args.weights, device="cpu")
    if args.neighbour_steps is not None:
        seg.cfg = seg.cfg.replace(neighbour_steps=args.neighbour_steps)
    if args.oracle and args.write_doc:
        p.error("--oracle-existence is a diagnostic: it is never written to docs")
    starts = [s for s in args.starts.split(",") if s]
    if not starts or set(starts) - set(STARTS):
        p.error(f"--starts takes {', '.join(STARTS)}")
    summaries, all_rows = {}, {}
    for start in starts:
        summary, rows = evaluate(seg, chosen, args.n, args.steps, start, args.given_finding,
                                 args.oracle)
        summary.update(min_slices=args.min_slices, split=args.split,
                       neighbour_steps=seg.neighbour_steps(summary["steps"]))
        summaries[start], all_rows[start] = summary, rows
    cost_ = cost(seg, stacks, args.n, args.steps) if args.cost else {}
    command = "python benchmarks/evaluate_volumes.py " + " ".join(argv or sys.argv[1:])
    text = report(summaries, all_rows[starts[0]], cost_, command.strip())
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"summaries": summaries, "cost": cost_, "stacks": {
            start: [{k: v for k, v in r.items()
                     if not k.startswith(("slice_dice", "sample_", "reader_"))} for r in rows]
            for start, rows in all_rows.items()}}, indent=2))
    if args.write_doc:
        print(f"written to {write_section('volumes', text)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
