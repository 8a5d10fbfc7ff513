"""Steering with clicks: how fast include / exclude clicks bring the samples to one reader.

    python benchmarks/steer_clicks.py [--data ../shared/data/lidc/test.npz] [--limit 150]
        [--clicks 3] [--n 16] [--steps S] [--method KEY=VALUE,... [--method ...]]
        [--weights W [--weights ...]] [--write-doc]

On `--limit` evenly spaced slices of the LIDC test split, every reader with a non-empty mask
is once the *target*: a simulated annotator wants that reader's outline. Each step's next
click goes to the centre (the maximum of the distance transform) of the largest error region
between the current mode 1 (`SampleResult.modes[0].representative`) and the target: an
include where the target was missed, an exclude where mode 1 marks too much (the click
simulation of SAM and nnInteractive). Slice i is sampled with seed i at the crop's centre
(LIDC 8-bit scale), given a finding, every click count with the same seed.

Three annotators, each clicking on what its own method shows:
* steered: N new samples drawn given the clicks (`Segmenter.sample(..., constraints=)`), made
  on the mode 1 shown (`Constraints.on`: what a click-conditioned model reads them against);
* rejection: the N unconstrained samples, keeping those that satisfy the clicks (mode 1 of the
  kept; when none is kept, the unconstrained mode 1 stays and counts);
* one mask: the unconstrained samples' mean thresholded at 0.5, the clicks' disks forced.

Reported per click count (0..`--clicks`): Dice of mode 1 and of the best of N samples to the
target reader, the share of samples satisfying the clicks (`Constraints.satisfied`), the
diversity left (mean 1 - IoU over distinct pairs of samples), the median in-process time of
one request (`SampleResult.timings["total"]`: N masks x the model's steps per round; 0 clicks:
the unconstrained request) and the mean number of samples drawn (rounds, `Constraints`).
`--method radius=R,known_radius=Q,restarts=K,restart_steps=S,pin=0|1,rounds=M,encoder=0|1` sets
`Constraints`' knobs (default: the shipped ones; `encoder=0` leaves a click-conditioned
model's click encoder out: known pixels only, i.e. the model it was fine-tuned from); several
`--method` and `--weights` give one table each (how the method was chosen). Also printed: how
close the other readers come to the target (the spread clicks must overcome) and the Dice
after 2 clicks by target size. `--write-doc` writes the tables into docs/benchmarks.md,
section "steer_clicks".
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).parent))
from _report import machine, write_section  # noqa: E402

from napari_ambiseg.config import sampling_counts  # noqa: E402
from napari_ambiseg.constraints import Constraints, next_click  # noqa: E402
from napari_ambiseg.metrics import dice, pairwise_iou  # noqa: E402
from napari_ambiseg.modes import find_modes  # noqa: E402
from napari_ambiseg.segmenter import Segmenter  # noqa: E402
from napari_ambiseg.training.clicks import correct  # noqa: E402
from napari_ambiseg.training.data import DATA_INTENSITY  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "lidc" / "test.npz"


def cases(masks: np.ndarray, limit: int) -> list[tuple[int, int]]:
    """(slice, reader) pairs: `limit` evenly spaced slices, readers with a non-empty mask."""
    idx = np.unique(np.linspace(0, len(masks) - 1, min(limit, len(masks))).round().astype(int))
    return [(int(i), r) for i in idx for r in range(masks.shape[1]) if masks[i, r].any()]


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
    kinds = {"radius": float, "known_radius": float, "restarts": int, "restart_steps": int,
             "pin": lambda v: bool(int(v)), "rounds": int, "encoder": lambda v: bool(int(v))}
    out = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        if key not in kinds:
            raise SystemExit(f"--method: unknown key {key!r} (one of {', '.join(kinds)})")
        out[key] = kinds[key](value)
    return out


def method_text(method: dict) -> str:
    knobs = dict(method)
    encoder = knobs.pop("encoder", True)
    c = Constraints(**knobs)
    return (f"radius {c.radius:g} model px (known: {c.known_radius:g} with a click encoder), "
            f"{c.restarts} restart(s) of {c.restart_steps} steps, "
            f"clicked include pixels {'pinned' if c.pin else 'not pinned'}, up to {c.rounds} "
            f"round(s) of N" + ("" if encoder else ", click encoder off (known pixels only)"))


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
                shown = res.masks[res.modes[0].representative]
                click = next_click(shown, self.target)
                if click is not None:
                    clicks.append(click)
                    res = self.sample(constraints_of(clicks, method).on(shown))
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


def by_size(results: dict, areas: list[int], k: int) -> str:
    """Steered mode-1 Dice after k clicks by the target outline's area (pixels)."""
    parts = []
    for lo, hi in SIZES:
        dices = [r[k]["dice"] for r, a in zip(results["steered"], areas) if lo <= a < hi]
        if dices:
            name = f">= {lo}" if hi == np.inf else f"{lo}-{hi - 1}"
            parts.append(f"{name} px: {np.mean(dices):.3f} ({len(dices)} cases)")
    return f"- steered mode-1 Dice after {k} clicks by target area: " + "; ".join(parts)


SIZES = ((0, 50), (50, 150), (150, 400), (400, np.inf))


def references(free_shown: np.ndarray, target: np.ndarray, clicks_max: int) -> dict:
    """What the clicks and the readers allow, per case: `fixed` Dice after k perfect
    corrections of the unconstrained mode 1 (each click's error region set exactly to the
    target, nothing else changed); `halo` Dice of the target to itself grown by 1 pixel (a
    one-pixel boundary difference, which no click of this rule points at)."""
    shown, fixed = free_shown, [dice(free_shown, target)]
    for _ in range(clicks_max):
        fix = correct(shown, target)
        shown = shown if fix is None else fix[2]
        fixed.append(dice(shown, target))
    return {"fixed": fixed, "halo": dice(ndimage.binary_dilation(target), target)}


def reference_lines(refs: list[dict], areas: list[int], clicks_max: int) -> list[str]:
    fixed = np.mean([r["fixed"] for r in refs], 0)
    bins = []
    for lo, hi in SIZES:
        halo = [r["halo"] for r, a in zip(refs, areas) if lo <= a < hi]
        if halo:
            name = f">= {lo}" if hi == np.inf else f"{lo}-{hi - 1}"
            bins.append(f"{name} px: {np.mean(halo):.3f}")
    return [
        "- perfect corrections (an oracle: each click's error region of the unconstrained "
        "mode 1 set exactly to the target reader's, nothing else changed): mode-1 Dice "
        + " / ".join(f"{v:.3f}" for v in fixed) + f" after 0..{clicks_max} clicks (first "
        "model in the tables)",
        "- a one-pixel boundary difference (the target against itself grown by 1 pixel, "
        "0.7 mm) alone gives Dice " + "; ".join(bins)]


def plot_curves(measured: list[tuple[str, dict]], clicks_max: int, path: Path) -> Path:
    """The curves by click count: mode-1 Dice (and best of N) of each measured model and
    method with the two baselines, and the share of samples satisfying the clicks."""
    from matplotlib.figure import Figure

    ks = list(range(clicks_max + 1))
    fig = Figure(figsize=(9, 4.3), dpi=110, layout="constrained")
    dice_ax, sat_ax = fig.subplots(1, 2)
    for j, (label, out) in enumerate(measured):
        colour = f"C{j}"
        steered = [[r[k] for r in out["steered"]] for k in ks]
        dice_ax.plot(ks, [_mean(s, "dice") for s in steered], "o-", color=colour,
                     label=f"{label}: mode 1")
        dice_ax.plot(ks, [_mean(s, "best") for s in steered], "o--", color=colour, alpha=0.5,
                     label=f"{label}: best of N")
        sat_ax.plot(ks, [100 * _mean(s, "satisfied") for s in steered], "o-", color=colour,
                    label=label)
    first = measured[0][1]
    for key, name, style in (("rejection", "rejection: mode 1", "s:"),
                             ("one_mask", "one mean mask", "^:")):
        dice_ax.plot(ks, [_mean([r[k] for r in first[key]], "dice") for k in ks], style,
                     color="grey", label=name)
    dice_ax.axhline(0.85, color="k", lw=0.8, ls="--")
    dice_ax.annotate("target after 2 clicks", (0, 0.85), (0.05, 0.855), fontsize=7)
    sat_ax.axhline(95, color="k", lw=0.8, ls="--")
    for ax, title, unit in ((dice_ax, "Dice to the target reader", "Dice"),
                            (sat_ax, "samples satisfying the clicks", "%")):
        ax.set_xticks(ks)
        ax.set_xlabel("clicks")
        ax.set_ylabel(unit)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in (dice_ax, sat_ax):  # below the axes: inside, they would hide the baselines' points
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.17), ncol=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


PLOT = Path(__file__).resolve().parents[1] / "docs" / "img" / "steer_clicks.png"


def model_text(weights: str | None, seg) -> str:
    name = "bundled model" if weights is None else Path(weights).name
    clicks = "with" if seg.model.clicks is not None else "without"
    return f"{name} ({clicks} click conditioning)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--limit", type=int, default=150, help="evenly spaced slices")
    ap.add_argument("--clicks", type=int, default=3)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--steps", type=int, default=None, help="default: the model's")
    ap.add_argument("--method", action="append", default=None, metavar="KEY=VALUE,...",
                    help="steering knobs: radius, known_radius, restarts, restart_steps, pin, rounds, encoder "
                         "(0: known pixels only) (repeatable)")
    ap.add_argument("--weights", action="append", default=None,
                    help="a model to measure (repeatable; default: the bundled one)")
    ap.add_argument("--write-doc", action="store_true")
    args = ap.parse_args(argv)

    d = np.load(args.data)
    images, masks = d["images"], d["masks"].astype(bool)
    todo = cases(masks, args.limit)
    areas = [int(masks[z, r].sum()) for z, r in todo]
    others = [max(dice(masks[z, o], masks[z, r]) for o in range(masks.shape[1]) if o != r)
              for z, r in todo]
    variants = [parse_method(m) for m in args.method or [""]]
    t0 = time.perf_counter()
    body, steps, refs, measured = [], None, [], []
    for weights in args.weights or [None]:
        refs_now: list[dict] = []
        seg = Segmenter.load(weights, device="cpu")
        steps = sampling_counts(seg.cfg, args.n, args.steps)[1]
        encoder = seg.model.clicks
        found = [{"steered": [], "rejection": [], "one_mask": []} for _ in variants]
        for i, (z, reader) in enumerate(todo):
            case = Case(seg, images[z], masks[z, reader], z, args.n, steps)
            if not refs:
                refs_now.append(references(case.free.masks[case.free.modes[0].representative],
                                           masks[z, reader], args.clicks))
            for method, out in zip(variants, found):
                knobs = dict(method)
                seg.model.clicks = encoder if knobs.pop("encoder", True) else None
                out["steered"].append(case.steered(args.clicks, knobs))
                out["rejection"].append(case.rejection(args.clicks, knobs))
                out["one_mask"].append(case.one_mask(args.clicks, knobs))
                seg.model.clicks = encoder
            print(f"\r{i + 1}/{len(todo)} cases", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        refs = refs or refs_now
        for method, out in zip(variants, found):
            short = "known pixels only" if not method.get("encoder", True) else "steered"
            if len(args.weights or [None]) > 1:
                short = f"{Path(weights or 'bundled').name}, {short}"
            measured.append((short, out))
            body += [f"{model_text(weights, seg)}; steering: {method_text(method)}", "",
                     *table(out, args.clicks), "", by_size(out, areas, min(2, args.clicks)), ""]
    slices = len({z for z, _ in todo})
    cmd = "python benchmarks/steer_clicks.py " + shlex.join(argv or sys.argv[1:])
    text = "\n".join([
        "## Steering with clicks", "",
        f"- {len(todo)} (slice, target reader) cases on {slices} evenly spaced slices of "
        f"`{Path(args.data).name}` (readers with a non-empty mask), N = {args.n}, {steps} "
        "steps, slice i with seed i, given a finding; clicks at the centre of the largest "
        "error region of mode 1 against the target reader",
        "- steered: N samples drawn given the clicks (known-pixel replacement of the "
        "x-prediction in a disk per click at every step, and for click-conditioned models the "
        "clicks' disks as the click encoder's input; samples that miss a click replaced "
        "from further rounds of N: `drawn`); rejection: the unconstrained samples that satisfy "
        "the clicks; one mask: their mean >= 0.5 with the clicks' disks forced",
        "- satisfied: every include in a non-speck part of the sample, no exclude inside; "
        "diversity: mean 1 - IoU over distinct pairs of samples; latency: in-process time of "
        "one request (0 clicks: the unconstrained one), all its rounds",
        f"- the readers themselves: the other reader closest to the target reaches Dice "
        f"{np.mean(others):.3f} (mean over the cases; median {np.median(others):.3f}); target "
        f"outlines have a median area of {np.median(areas):.0f} px",
        *reference_lines(refs, areas, args.clicks),
        "- targets: mode-1 Dice >= 0.85 after 2 clicks, satisfied >= 95%, latency <= 1 s",
        *(["", f"![Mode-1 Dice and the share of samples satisfying the clicks, by click "
           f"count](img/{PLOT.name})"] if args.write_doc else []),
        "", *body,
        f"- {time.perf_counter() - t0:.0f} s in all; machine: {machine()}",
        f"- command: `{cmd}`"])
    print(text)
    if args.write_doc:
        print(f"wrote {write_section('steer_clicks', text)}")
        print(f"wrote {plot_curves(measured, args.clicks, PLOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
