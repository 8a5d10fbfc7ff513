"""Evaluation report on the LIDC test split: GED16, HM-IoU16, CI and parts, S_NCC, ECE, a
reliability diagram, reference points, where the GED comes from, and a sweep over samplers
and sampling steps. `--sweep-only` on `val` is how the shipped sampler is chosen.

    python benchmarks/evaluate_lidc.py [--weights W] [--split test] [--n 16] [--limit K]
        [--sweep 1,2,5,10,25] [--sweep-limit 300] [--samplers ddpm,ddim] [--sweep-only]
        [--write-doc] [--independent-existence]

Uses exactly the code of `ambiseg evaluate` (sample_dataset + evaluate_samples).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _report import DOCS, machine, write_section  # noqa: E402
from existence_oracle import independent_draws  # noqa: E402

from napari_ambiseg import metrics, segmenter  # noqa: E402
from napari_ambiseg.segmenter import Segmenter  # noqa: E402
from napari_ambiseg.training.data import load_npz  # noqa: E402
from napari_ambiseg.training.evaluate import evaluate_samples, sample_dataset  # noqa: E402

LIDC = Path(__file__).resolve().parents[2] / "shared" / "data" / "lidc"
EMPTY_ARG = "''"  # how a shell spells an empty --sweep
KEYS = ("ged", "hm_iou", "ci", "s_c", "d_max", "d_a", "s_ncc", "ece")


def references(data, n: int, seed: int = 0) -> dict[str, dict]:
    """Oracles that see the readers: n copies of the 2-of-4 majority; the readers resampled."""
    rng = np.random.default_rng(seed)
    maj = np.stack([np.repeat((m.sum(0) >= 2)[None], n, 0) for m in data.masks])
    res = data.masks[np.arange(len(data))[:, None], rng.integers(data.masks.shape[1],
                                                                 size=(len(data), n))]
    return {"majority x16": evaluate_samples(maj, data)[0],
            "readers resampled": evaluate_samples(res.astype(bool), data)[0]}


def by_empty_readers(samples: np.ndarray, data) -> list[str]:
    """Where the GED comes from: slices grouped by how many readers marked nothing, with the
    share of empty samples against the share of empty readers and GED's three terms."""
    n_empty = (~data.masks.reshape(*data.masks.shape[:2], -1).any(-1)).sum(1)
    s_empty = (~samples.reshape(*samples.shape[:2], -1).any(-1)).mean(1)
    terms = [metrics.ged_terms(s, y) for s, y in zip(samples, data.masks)]
    k = data.masks.shape[1]
    lines = [f"| readers with no mark (of {k}) | slices | GED | empty samples | empty readers | "
             "E d(S,Y) | E d(S,S') | E d(Y,Y') |", "|---|---|---|---|---|---|---|---|"]
    for e in range(k + 1):
        g = np.flatnonzero(n_empty == e)
        if len(g) == 0:
            continue
        t = {key: np.mean([terms[i][key] for i in g]) for key in terms[0]}
        ged = 2 * t["cross"] - t["within_samples"] - t["within_truths"]
        lines.append(f"| {e} | {len(g)} | {ged:.3f} | {s_empty[g].mean():.2f} | {e / k:.2f} | "
                     f"{t['cross']:.3f} | {t['within_samples']:.3f} | {t['within_truths']:.3f} |")
    return lines


def row(name: str, m: dict) -> str:
    return f"| {name} | " + " | ".join(f"{m[k]:.3f}" for k in KEYS) + " |"


def quality_section(seg, data, args) -> list[str]:
    """The shipped sampler and steps on the whole split: metrics, oracles, where GED comes from."""
    n, steps = args.n, args.steps or seg.cfg.steps
    t = time.perf_counter()
    samples = sample_dataset(seg, data, n, steps, seed=0)
    seconds = time.perf_counter() - t
    main_m, cal = evaluate_samples(samples, data)
    refs = references(data, n)
    if args.write_doc:  # figures and raw numbers only with the doc they belong to
        (DOCS / "img").mkdir(parents=True, exist_ok=True)
        metrics.reliability_diagram(cal, DOCS / "img" / "reliability.png",
                                    title=f"LIDC {args.split}, N={n}, {len(data)} slices")
        out = {"model": main_m, "references": refs, "n": n, "steps": steps,
               "sampler": seg.cfg.sampler, "split": args.split, "count": len(data),
               "sampling_seconds": seconds, "weights": args.weights or "bundled",
               "info": seg.info}
        (DOCS / "results").mkdir(exist_ok=True)
        (DOCS / "results" / f"eval_{args.split}.json").write_text(
            json.dumps(out, indent=2, default=float))
    which = f"all of `{args.split}`" + ("" if args.limit is None else f", first {args.limit}")
    iters = seg.info.get("iterations", seg.info.get("step", "?"))
    return [f"## Quality on LIDC `{args.split}` (N = {n})", "",
            f"{len(data)} slices ({which}), {n} samples each, {steps} steps ({seg.cfg.sampler}), "
            f"slice i with seed i; sampling took {seconds / 60:.1f} min. "
            f"Weights: {args.weights or 'bundled'} ({iters} training iterations).",
            "", f"| | GED{n} | HM-IoU{n} | CI | S_c | D_max | D_a | S_NCC | ECE |",
            "|---|" + "---|" * len(KEYS), row("napari-ambiseg", main_m),
            row(f"oracle: majority x{n}", refs["majority x16"]),
            row("oracle: readers resampled", refs["readers resampled"]), "",
            "Reliability diagram: `docs/img/reliability.png`. Targets: GED16 <= 0.20, "
            "HM-IoU16 >= 0.65, ECE <= 0.02.", "",
            "### Where the GED comes from", "",
            *by_empty_readers(samples, data), "",
            "Read across a row: a well-calibrated model draws an empty mask as often as the "
            "readers left the slice empty; E d(S,S') above E d(Y,Y') means samples disagree "
            "more than the readers do."]


def sweep_section(seg, data, args) -> list[str]:
    """Samplers x numbers of steps on evenly spaced slices of the split."""
    n, sweep = args.n, [int(s) for s in args.sweep.split(",") if s]
    if not sweep:
        return []
    sub = data.subset(np.linspace(0, len(data) - 1, min(args.sweep_limit, len(data))).astype(int))
    lines = [f"### Samplers and steps ({len(sub)} evenly spaced `{args.split}` slices, N = {n})",
             "", f"| sampler | steps | GED{n} | HM-IoU{n} | CI | ECE | seconds per image |",
             "|---|---|---|---|---|---|---|"]
    for sampler in args.samplers.split(","):
        for steps in sweep:
            t = time.perf_counter()
            m, _ = evaluate_samples(sample_dataset(seg, sub, n, steps, seed=0, sampler=sampler),
                                    sub)
            lines.append(f"| {sampler} | {steps} | {m['ged']:.3f} | {m['hm_iou']:.3f} | "
                         f"{m['ci']:.3f} | {m['ece']:.4f} | "
                         f"{(time.perf_counter() - t) / len(sub):.3f} |")
            print(lines[-1], flush=True)
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default=None)
    ap.add_argument("--split", default="test")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--sweep", default="1,2,5,10,25")
    ap.add_argument("--sweep-limit", type=int, default=300)
    ap.add_argument("--samplers", default="ddpm,ddim", help="samplers in the steps sweep")
    ap.add_argument("--sweep-only", action="store_true",
                    help="only the sweep (e.g. to choose the sampler on val)")
    ap.add_argument("--write-doc", action="store_true")
    ap.add_argument("--independent-existence", action="store_true",
                    help="for comparison: each sample's existence drawn on its own (model 5 "
                         "as first shipped) instead of stratified; printed only")
    args = ap.parse_args()
    if args.independent_existence:
        if args.write_doc:
            ap.error("--independent-existence is a comparison: it is never written to docs")
        segmenter.existence_draws = independent_draws

    data = load_npz(LIDC / f"{args.split}.npz", limit=args.limit)
    seg = Segmenter.load(args.weights, device="auto")
    lines = [] if args.sweep_only else quality_section(seg, data, args) + [""]
    lines += sweep_section(seg, data, args)
    if args.sweep_only:
        lines = [f"## Sampler selection on `{args.split}`", "", *lines]
    cmd = ["python benchmarks/evaluate_lidc.py", f"--split {args.split}", f"--n {args.n}"]
    cmd += [] if args.limit is None else [f"--limit {args.limit}"]
    cmd += [f"--sweep {args.sweep or EMPTY_ARG}", f"--sweep-limit {args.sweep_limit}",
            f"--samplers {args.samplers}"]
    cmd += ["--sweep-only"] if args.sweep_only else []
    cmd += [] if args.weights is None else [f"--weights {args.weights}"]
    lines += ["", f"Machine: {machine()}.", f"Command: `{' '.join(cmd)} --write-doc`"]
    text = "\n".join(lines)
    print(text)
    if args.write_doc:
        write_section(f"{'sweep' if args.sweep_only else 'eval'}_{args.split}", text)


if __name__ == "__main__":
    main()
