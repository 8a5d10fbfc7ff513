"""Steering with clicks: how fast include / exclude clicks bring the samples to one reader.

    python benchmarks/steer_clicks.py [--data ../shared/data/lidc/test.npz] [--limit 150]
        [--clicks 3] [--n 16] [--steps S] [--method KEY=VALUE,... [--method ...]]
        [--weights W] [--write-doc]

On `--limit` evenly spaced slices of the LIDC test split, every reader with a non-empty mask
is once the *target*: a simulated annotator wants that reader's outline. Each step's next
click goes to the centre (the maximum of the distance transform) of the largest error region
between the current mode 1 (`SampleResult.modes[0].representative`) and the target: an
include where the target was missed, an exclude where mode 1 marks too much (the click
simulation of SAM and nnInteractive). Slice i is sampled with seed i at the crop's centre
(LIDC 8-bit scale), given a finding, every click count with the same seed.

Three annotators, each clicking on what its own method shows:
* steered: N new samples drawn given the clicks (`Segmenter.sample(..., constraints=)`);
* rejection: the N unconstrained samples, keeping those that satisfy the clicks (mode 1 of the
  kept; when none is kept, the unconstrained mode 1 stays and counts);
* one mask: the unconstrained samples' mean thresholded at 0.5, the clicks' disks forced.

Reported per click count (0..`--clicks`): Dice of mode 1 and of the best of N samples to the
target reader, the share of samples satisfying the clicks (`Constraints.satisfied`), the
diversity left (mean 1 - IoU over distinct pairs of samples), the median in-process time of
one request (`SampleResult.timings["total"]`: N masks x the model's steps per round; 0 clicks:
the unconstrained request) and the mean number of samples drawn (rounds, `Constraints`).
`--method radius=R,restarts=K,restart_steps=S,pin=0|1,rounds=M` sets `Constraints`' knobs
(default: the shipped ones); several `--method` give one table each (how the method was
chosen). `--write-doc` writes the tables into docs/benchmarks.md, section "steer_clicks".
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).parent))
from _report import machine, write_section  # noqa: E402

from napari_ambiseg.config import sampling_counts  # noqa: E402
from napari_ambiseg.constraints import Constraints  # noqa: E402
from napari_ambiseg.metrics import dice, pairwise_iou  # noqa: E402
from napari_ambiseg.modes import find_modes  # noqa: E402
from napari_ambiseg.segmenter import Segmenter  # noqa: E402
from napari_ambiseg.training.data import DATA_INTENSITY  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "lidc" / "test.npz"


def cases(masks: np.ndarray, limit: int) -> list[tuple[int, int]]:
    """(slice, reader) pairs: `limit` evenly spaced slices, readers with a non-empty mask."""
    idx = np.unique(np.linspace(0, len(masks) - 1, min(limit, len(masks))).round().astype(int))
    return [(int(i), r) for i in idx for r in range(masks.shape[1]) if masks[i, r].any()]


def next_click(shown: np.ndarray, target: np.ndarray):
    """("include" | "exclude", (y, x)) at the centre of the largest error region, or None."""
    best = None
    for kind, err in (("include", target & ~shown), ("exclude", shown & ~target)):
        labels, k = ndimage.label(err)
        if not k:
            continue
        sizes = np.bincount(labels.ravel())[1:]
        j = int(sizes.argmax()) + 1
        if best is None or sizes[j - 1] > best[0]:
            region = np.pad(labels == j, 1)
            dist = ndimage.distance_transform_edt(region)[1:-1, 1:-1]
            best = (sizes[j - 1], kind, tuple(int(v) for v in np.unravel_index(dist.argmax(),
                                                                                dist.shape)))
    return None if best is None else (best[1], best[2])


def diversity(masks: np.ndarray) -> float:
    """Mean 1 - IoU over distinct pairs (0 for fewer than two samples)."""
    if len(masks) < 2:
        return 0.0
    iou = pairwise_iou(masks, masks)
    return float(1 - iou[np.triu_indices(len(masks), 1)].mean())


def constraints_of(clicks, method: dict) -> Constraints:
    return Constraints([p for k, p in clicks if k == "include"],
                       [p for k, p in clicks if k == "exclude"], **method)


def parse_method(text: str) -> dict:
    """'radius=2,restarts=1' -> Constraints keyword arguments."""
    kinds = {"radius": float, "restarts": int, "restart_steps": int,
             "pin": lambda v: bool(int(v)), "rounds": int}
    out = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        if key not in kinds:
            raise SystemExit(f"--method: unknown key {key!r} (one of {', '.join(kinds)})")
        out[key] = kinds[key](value)
    return out


def method_text(method: dict) -> str:
    c = Constraints(**method)
    return (f"radius {c.radius:g} model px, {c.restarts} restart(s) of {c.restart_steps} steps, "
            f"clicked include pixels {'pinned' if c.pin else 'not pinned'}, up to {c.rounds} "
            f"round(s) of N")


def forced(mask: np.ndarray, c: Constraints) -> np.ndarray:
    """The one-mask baseline's clicks: their disks (radius in image pixels) set."""
    out = mask.copy()
    yy, xx = np.indices(mask.shape)
    for pts, value in ((c.include, True), (c.exclude, False)):
        for y, x in pts:
            disk = (yy - y) ** 2 + (xx - x) ** 2 <= c.radius ** 2
            disk[y, x] = True
            out[disk] = value
    for y, x in c.include:
        out[y, x] = True
    return out


class Case:
    """One (slice, target reader): the unconstrained draw and the three annotators."""

    def __init__(self, seg, image, target, seed, n, steps):
        self.seg, self.image, self.target, self.seed = seg, image, target, seed
        self.n, self.steps = n, steps
        self.center = (image.shape[0] // 2, image.shape[1] // 2)
        self.free = self.sample(None)

    def sample(self, c: Constraints | None):
        return self.seg.sample(self.image, self.n, self.steps, self.seed, center=self.center,
                               modality=DATA_INTENSITY, constraints=c)

    def steered(self, clicks_max: int, method: dict) -> list[dict]:
        rows, clicks, res = [], [], self.free
        for k in range(clicks_max + 1):
            if k:
                click = next_click(res.masks[res.modes[0].representative], self.target)
                if click is not None:
                    clicks.append(click)
                    res = self.sample(constraints_of(clicks, method))
            shown = res.masks[res.modes[0].representative]
            sat = res.constraints_satisfied
            rows.append({"dice": dice(shown, self.target),
                         "best": max(dice(m, self.target) for m in res.masks),
                         "satisfied": 1.0 if sat is None else sat,
                         "diversity": diversity(res.masks),
                         "seconds": res.timings["total"] if not k or clicks else None,
                         "drawn": res.drawn or self.n})
        return rows

    def rejection(self, clicks_max: int, method: dict) -> list[dict]:
        masks, rows, clicks = self.free.masks, [], []
        shown = masks[self.free.modes[0].representative]
        for k in range(clicks_max + 1):
            kept = np.ones(len(masks), bool)
            if k:
                click = next_click(shown, self.target)
                if click is not None:
                    clicks.append(click)
            if clicks:
                kept = constraints_of(clicks, method).satisfied(masks)
            if kept.any():
                idx = np.flatnonzero(kept)
                shown = masks[idx[find_modes(masks[idx])[0].representative]]
            rows.append({"dice": dice(shown, self.target),
                         "best": max((dice(m, self.target) for m in masks[kept]), default=0.0),
                         "satisfied": float(kept.mean()), "none_kept": float(not kept.any()),
                         "diversity": diversity(masks[kept])})
        return rows

    def one_mask(self, clicks_max: int, method: dict) -> list[dict]:
        mean = self.free.masks.mean(0) >= 0.5
        rows, clicks, shown = [], [], mean
        for k in range(clicks_max + 1):
            if k:
                click = next_click(shown, self.target)
                if click is not None:
                    clicks.append(click)
            c = constraints_of(clicks, method)
            shown = forced(mean, c)
            rows.append({"dice": dice(shown, self.target),
                         "satisfied": float(c.satisfied(shown[None])[0]) if c else 1.0})
        return rows


def _mean(rows, key):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(vals)) if vals else float("nan")


def _median(rows, key):
    return float(np.median([r[key] for r in rows]))


def table(results: dict, clicks_max: int) -> list[str]:
    lines = ["| clicks | steered: mode-1 Dice mean (median) | best of N | satisfied | diversity "
             "| latency (median) | drawn | rejection: mode-1 Dice | kept | none kept | one "
             "mask: Dice |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for k in range(clicks_max + 1):
        s = [r[k] for r in results["steered"]]
        j = [r[k] for r in results["rejection"]]
        o = [r[k] for r in results["one_mask"]]
        secs = [r["seconds"] for r in s if r["seconds"] is not None]
        lat = f"{np.median(secs):.3f} s" if secs else "-"
        lines.append(
            f"| {k} | {_mean(s, 'dice'):.3f} ({_median(s, 'dice'):.3f}) | "
            f"{_mean(s, 'best'):.3f} | {100 * _mean(s, 'satisfied'):.1f}% | "
            f"{_mean(s, 'diversity'):.3f} | {lat} | {_mean(s, 'drawn'):.1f} | "
            f"{_mean(j, 'dice'):.3f} | {100 * _mean(j, 'satisfied'):.1f}% | "
            f"{100 * _mean(j, 'none_kept'):.1f}% | {_mean(o, 'dice'):.3f} |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--limit", type=int, default=150, help="evenly spaced slices")
    ap.add_argument("--clicks", type=int, default=3)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--steps", type=int, default=None, help="default: the model's")
    ap.add_argument("--method", action="append", default=None, metavar="KEY=VALUE,...",
                    help="steering knobs: radius, restarts, restart_steps, pin (repeatable)")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--write-doc", action="store_true")
    args = ap.parse_args(argv)

    d = np.load(args.data)
    images, masks = d["images"], d["masks"].astype(bool)
    seg = Segmenter.load(args.weights, device="cpu")
    steps = sampling_counts(seg.cfg, args.n, args.steps)[1]
    todo = cases(masks, args.limit)
    variants = [parse_method(m) for m in args.method or [""]]
    t0 = time.perf_counter()
    found = [{"steered": [], "rejection": [], "one_mask": []} for _ in variants]
    for i, (z, reader) in enumerate(todo):
        case = Case(seg, images[z], masks[z, reader], z, args.n, steps)
        for method, out in zip(variants, found):
            out["steered"].append(case.steered(args.clicks, method))
            out["rejection"].append(case.rejection(args.clicks, method))
            out["one_mask"].append(case.one_mask(args.clicks, method))
        print(f"\r{i + 1}/{len(todo)} cases", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    slices = len({z for z, _ in todo})
    body = []
    for method, out in zip(variants, found):
        body += [f"Steering: {method_text(method)}", ""] + table(out, args.clicks) + [""]
    cmd = " ".join(["python benchmarks/steer_clicks.py", *(argv or sys.argv[1:])])
    text = "\n".join([
        "## Steering with clicks", "",
        f"- {len(todo)} (slice, target reader) cases on {slices} evenly spaced slices of "
        f"`{Path(args.data).name}` (readers with a non-empty mask), N = {args.n}, {steps} "
        f"{seg.cfg.sampler.upper()} steps, slice i with seed i, given a finding; clicks at the "
        "centre of the largest error region of mode 1 against the target reader",
        "- steered: N samples drawn given the clicks (known-pixel replacement of the "
        "x-prediction in a disk per click at every step; samples that miss a click replaced "
        "from further rounds of N: `drawn`); rejection: the unconstrained samples that satisfy "
        "the clicks; one mask: their mean >= 0.5 with the clicks' disks forced",
        "- satisfied: every include in a non-speck part of the sample, no exclude inside; "
        "diversity: mean 1 - IoU over distinct pairs of samples; latency: in-process time of "
        "one request (0 clicks: the unconstrained one), all its rounds",
        "- targets: mode-1 Dice >= 0.85 after 2 clicks, satisfied >= 95%, latency <= 1 s",
        "", *body,
        f"- {time.perf_counter() - t0:.0f} s in all; machine: {machine()}",
        f"- command: `{cmd}`"])
    print(text)
    if args.write_doc:
        print(f"wrote {write_section('steer_clicks', text)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
