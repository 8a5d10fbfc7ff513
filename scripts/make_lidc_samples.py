"""Make the LIDC nodule sample data shipped in src/napari_ambiseg/sample_data/ from ../shared.

    .venv/bin/python scripts/make_lidc_samples.py [--lidc ../shared/data/lidc] [--out DIR]

Selection rule (no hand picking), on the `test` split (patients the model was neither trained
nor selected on):
  eligible  - the nodule's rows are consecutive slices with one z step and a known pixel
              spacing within 5% above the model's 0.7 mm (so the sampler's resampling to
              0.7 mm/pixel is a near identity and never pads the 128x128 crop), 5 to 12 slices,
              and its largest reader outline covers >= 150 pixels (about 10 mm across);
  clear     - all 4 readers outlined it on >= 80% of its slices: highest mean pairwise Dice;
  contested - all 4 readers outlined it: lowest mean pairwise Dice between outlines;
  unseen    - exactly 2 of 4 readers ever outlined it: largest outline.
Ties go to the first nodule in index.csv order.

Each case is written as <role>.npz in the multi-rater training format (`images` (Z, H, W)
uint8, `masks` (Z, R, H, W) uint8) plus `spacing` (z, y, x) mm and `info` (JSON text), read
by napari_ambiseg._reader_npz. Reader order in LIDC carries no identity from slice to slice;
here the masks are reordered so that reader r is one 3D track (`link_readers`).
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from itertools import combinations
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from napari_ambiseg.io.atomic import atomic_output

ROOT = Path(__file__).resolve().parents[1]
LIDC = ROOT.parent / "shared" / "data" / "lidc"
OUT = ROOT / "src" / "napari_ambiseg" / "sample_data"
SPLIT = "test"
MODEL_SPACING_MM = 0.7
SPACING_TOLERANCE = 0.05
Z_RANGE = (5, 12)
MIN_AREA_PX = 150
CLEAR_FRACTION_ALL4 = 0.8
ROLES = {
    "clear": "all 4 readers outlined it on most slices and agree",
    "contested": "all 4 readers outlined it but disagree in extent",
    "unseen": "2 of 4 readers outlined it; 2 saw nothing",
}
CREDIT = """\
LIDC-IDRI is distributed by The Cancer Imaging Archive under CC BY 3.0
(https://creativecommons.org/licenses/by/3.0/). Credit:
- Armato SG III et al. (2015). Data From LIDC-IDRI. The Cancer Imaging Archive.
  https://doi.org/10.7937/K9/TCIA.2015.LO9QL9SX
- Armato SG III et al. (2011). The Lung Image Database Consortium (LIDC) and Image Database
  Resource Initiative (IDRI). Medical Physics 38(2):915-931.
- Clark K et al. (2013). The Cancer Imaging Archive (TCIA). J Digit Imaging 26(6):1045-1057.
"""


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two binary masks; 1 for two empty masks (they are interchangeable)."""
    sa, sb = int(a.sum()), int(b.sum())
    if sa + sb == 0:
        return 1.0
    return 2.0 * int(np.logical_and(a, b).sum()) / (sa + sb)


def link_readers(masks: np.ndarray) -> np.ndarray:
    """(Z, R, H, W) masks with per-slice reader order -> the same masks reordered so that
    index r follows one reader through the slices: slice z + 1 is matched to the tracks by
    maximum total Dice (Hungarian assignment) with each track's last non-empty outline.
    Empty masks are interchangeable, so they fill the tracks nothing matched."""
    masks = np.asarray(masks)
    out = masks.copy()
    last = [out[0, r] for r in range(out.shape[1])]
    for z in range(1, len(out)):
        score = np.array([[dice(last[t], masks[z, r]) if last[t].any() and masks[z, r].any()
                           else 0.0 for r in range(masks.shape[1])] for t in range(len(last))])
        tracks, readers = linear_sum_assignment(score, maximize=True)
        out[z, tracks] = masks[z, readers]
        for t in tracks:
            if out[z, t].any():
                last[t] = out[z, t]
    return out


def mean_pairwise_dice(masks: np.ndarray) -> float:
    """Mean Dice over pairs of non-empty outlines on the same slice (nan if there are none)."""
    values = [dice(s[a], s[b]) for s in masks
              for a, b in combinations([r for r in range(len(s)) if s[r].any()], 2)]
    return float(np.mean(values)) if values else float("nan")


def nodules(index_csv: Path, split: str) -> dict[tuple[str, int], list[dict]]:
    """Rows of each (patient, nodule) of a split, in slice order."""
    out: dict[tuple[str, int], list[dict]] = defaultdict(list)
    with open(index_csv, newline="") as f:
        for row in csv.DictReader(f):
            if row["split"] == split:
                out[row["patient_id"], int(row["nodule"])].append(row)
    return {k: sorted(v, key=lambda r: int(r["slice"])) for k, v in out.items()}


def describe(rows: list[dict], masks: np.ndarray) -> dict | None:
    """Selection figures of one nodule, or None when it is not eligible."""
    slices = [int(r["slice"]) for r in rows]
    z_mm = [float(r["z_mm"]) if r["z_mm"] else np.nan for r in rows]
    steps = np.round(np.diff(z_mm), 3)
    spacing = float(rows[0]["pixel_spacing"] or "nan")
    lo, hi = MODEL_SPACING_MM, MODEL_SPACING_MM * (1 + SPACING_TOLERANCE)
    if not (Z_RANGE[0] <= len(rows) <= Z_RANGE[1] and np.all(np.diff(slices) == 1)
            and np.all(np.isfinite(steps)) and len(set(steps.tolist())) == 1 and steps[0] > 0
            and lo <= spacing <= hi):
        return None
    area = masks.reshape(*masks.shape[:2], -1).sum(-1)
    if area.max() < MIN_AREA_PX:
        return None
    readers_per_slice = (area > 0).sum(1)
    return {"slices": len(rows), "z_step_mm": float(steps[0]), "pixel_spacing_mm": spacing,
            "max_readers": int(readers_per_slice.max()),
            "fraction_all4": float((readers_per_slice == 4).mean()),
            "mean_pairwise_dice": mean_pairwise_dice(masks), "max_area_px": int(area.max())}


def select(stats: dict[tuple[str, int], dict]) -> dict[str, tuple[str, int]]:
    """The three cases of the module docstring's rule."""
    keys = list(stats)  # index.csv order: ties go to the first
    clear = [k for k in keys if stats[k]["fraction_all4"] >= CLEAR_FRACTION_ALL4]
    contested = [k for k in keys if stats[k]["max_readers"] == 4]
    unseen = [k for k in keys if stats[k]["max_readers"] == 2]
    if not (clear and contested and unseen):
        raise SystemExit("no eligible case for one of the roles: relax the rule")
    return {
        "clear": max(clear, key=lambda k: stats[k]["mean_pairwise_dice"]),
        "contested": min(contested, key=lambda k: stats[k]["mean_pairwise_dice"]),
        "unseen": max(unseen, key=lambda k: stats[k]["max_area_px"]),
    }


def write_case(path: Path, role: str, key: tuple[str, int], rows: list[dict],
               images: np.ndarray, masks: np.ndarray, figures: dict) -> None:
    spacing = (figures["z_step_mm"], figures["pixel_spacing_mm"], figures["pixel_spacing_mm"])
    info = {"name": f"LIDC nodule {key[0].rsplit('-', 1)[-1]}-{key[1]}", "modality": "CT",
            "dataset": "LIDC-IDRI (CC BY 3.0)", "patient_id": key[0], "nodule": key[1],
            "role": role, "description": ROLES[role], "split": SPLIT,
            "rows": [int(r["row"]) for r in rows], "z_mm": [float(r["z_mm"]) for r in rows],
            "series_uid": rows[0]["series_uid"],
            "slice_thickness_mm": float(rows[0]["slice_thickness"]),
            "intensity": "8-bit lung-windowed crop, min-max scaled per slice (not HU)",
            "readers": "reordered into 3D tracks by maximum Dice between consecutive slices",
            "selection": {k: round(v, 4) if isinstance(v, float) else v
                          for k, v in figures.items()}}
    with atomic_output(path) as tmp:
        np.savez_compressed(tmp, images=images, masks=masks,
                            spacing=np.array(spacing, dtype=np.float64),
                            info=np.array(json.dumps(info)))


def write_readme(path: Path, chosen: dict, stats: dict) -> None:
    lines = ["# LIDC-IDRI nodule samples", "",
             "Three lung nodules from the LIDC-IDRI `test` split (patients the bundled model was "
             "neither trained nor selected on), 128x128 crops of consecutive CT slices, 8-bit "
             "lung-windowed (not HU), with the outlines of the 4 LIDC readers. Made by "
             "`scripts/make_lidc_samples.py`, which states the selection rule.", "",
             "| file | case | slices | z step | pixel | readers on all 4 | mean Dice | |",
             "|---|---|---|---|---|---|---|---|"]
    for role, key in chosen.items():
        s = stats[key]
        lines.append(f"| {role}.npz | {key[0]} nodule {key[1]} | {s['slices']} | "
                     f"{s['z_step_mm']:g} mm | {s['pixel_spacing_mm']:g} mm | "
                     f"{s['fraction_all4']:.0%} of slices | {s['mean_pairwise_dice']:.2f} | "
                     f"{ROLES[role]} |")
    lines += ["", "Changes to the LIDC-IDRI data: crops of the public \"lidcidri\" slice set, "
              "repacked unchanged except that each slice's 4 reader masks are reordered so that "
              "reader r is one reader's 3D outline (maximum Dice between consecutive slices).",
              "", "## Credit", "", CREDIT]
    with atomic_output(path) as tmp:
        tmp.write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lidc", type=Path, default=LIDC)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    with np.load(args.lidc / f"{SPLIT}.npz", allow_pickle=False) as d:
        images, masks = d["images"], d["masks"]
    groups = nodules(args.lidc / "index.csv", SPLIT)
    stats = {}
    for key, rows in groups.items():
        figures = describe(rows, masks[[int(r["row"]) for r in rows]])
        if figures is not None:
            stats[key] = figures
    chosen = select(stats)
    args.out.mkdir(parents=True, exist_ok=True)
    for role, key in chosen.items():
        rows = groups[key]
        idx = [int(r["row"]) for r in rows]
        linked = link_readers((masks[idx] > 0).astype(np.uint8))
        write_case(args.out / f"{role}.npz", role, key, rows, images[idx], linked, stats[key])
        print(f"{role}: {key[0]} nodule {key[1]} ({len(idx)} slices) {stats[key]}")
    write_readme(args.out / "README.md", chosen, stats)
    total = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"{len(stats)} eligible nodules; wrote {args.out} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
