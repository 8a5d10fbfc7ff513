"""Triage: does the disagreement score rank LIDC slices and nodules as the readers disagree?

    python benchmarks/triage_score.py [--split test] [--limit K] [--write-doc]

For every `test` slice: the readers' disagreement (1 - the 4 readers' mean pairwise IoU,
empty-vs-empty counted as agreement; "readers disagree" = that mean IoU < 0.5) against
candidate scores built from what `ambiseg triage` draws for an .npz case (the crop centre,
slice i with seed i: the finding probability p and N samples drawn given a finding, mean
pairwise IoU m; the same functions of triage/score.py):

* `score` (shipped, triage/score.py): 1 - (p^2 m + (1 - p)^2), two readers drawn from the model;
* outline spread only: 1 - m;  finding uncertainty only: 2 p (1 - p);
* the benchmark distribution's own samples: 1 - mean pairwise IoU of N unconditional samples
  (`Segmenter.sample_slices`, the draw `ambiseg evaluate` makes), i.e. the issue's baseline.

Per slice and per finding (a nodule: index.csv's patient and nodule; slice figures averaged
over its slices): Spearman rho and AUROC for "readers disagree". Beside them the noise
ceiling: the same figures if the model were exactly right, its own 4 pseudo-readers (each
outlines with probability p, drawing one of the first 4 samples) against the score of the
other samples: four readers per slice cap what any score can reach.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
from scipy.stats import mannwhitneyu, spearmanr

sys.path.insert(0, str(Path(__file__).parent))
from _report import machine, write_section  # noqa: E402

from napari_ambiseg.segmenter import Segmenter  # noqa: E402
from napari_ambiseg.training.data import DATA_INTENSITY, load_npz  # noqa: E402
from napari_ambiseg.triage.score import expected_agreement, mean_pairwise_iou  # noqa: E402

LIDC = Path(__file__).resolve().parents[2] / "shared" / "data" / "lidc"


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    pos, neg = score[positive], score[~positive]
    if not len(pos) or not len(neg):
        return float("nan")
    return float(mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg)))


def nodules(split: str, count: int) -> np.ndarray:
    """(K,) a finding id per slice of the split (index.csv: patient and nodule)."""
    with open(LIDC / "index.csv", newline="") as f:
        rows = {int(r["row"]): (r["patient_id"], r["nodule"]) for r in csv.DictReader(f)
                if r["split"] == split}
    ids = {key: i for i, key in enumerate(dict.fromkeys(rows[i] for i in range(count)))}
    return np.array([ids[rows[i]] for i in range(count)])


def draws(seg, data, n: int, steps: int | None, given_finding: bool):
    """Per slice (samples (N, H, W), p): slice i with seed i, at the crop centre, as
    `ambiseg triage` and `ambiseg evaluate` sample an .npz case."""
    for start in range(0, len(data), 8):
        zs = range(start, min(start + 8, len(data)))
        for one in seg.sample_slices(data.images, zs, [(None, None)] * len(zs), n, steps,
                                     list(zs), modality=DATA_INTENSITY, max_batch=8 * n,
                                     given_finding=given_finding):
            yield one.masks, one.finding_probability
        print(f"\rsamples ({'given a finding' if given_finding else 'unconditional'}): "
              f"{zs.stop}/{len(data)}", end="", file=sys.stderr)
    print(file=sys.stderr)


def figures(scores: dict[str, np.ndarray], readers: np.ndarray, groups: np.ndarray | None):
    """rho and AUROC of each score against the readers' disagreement, per slice, or per
    finding (`groups`: mean over each finding's slices)."""
    if groups is not None:
        ids = np.unique(groups)
        mean = lambda v: np.array([v[groups == g].mean() for g in ids])  # noqa: E731
        scores = {k: mean(v) for k, v in scores.items()}
        readers = mean(readers)
    disagree = readers > 0.5  # mean pairwise IoU < 0.5
    return {k: (float(spearmanr(v, readers).statistic), auroc(v, disagree))
            for k, v in scores.items()}, int(disagree.sum()), len(readers)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=None, help="the first K slices")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--steps", type=int, default=None, help="default: the model's")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--write-doc", action="store_true")
    args = ap.parse_args(argv)
    data = load_npz(LIDC / f"{args.split}.npz", limit=args.limit)
    seg = Segmenter.load(args.weights, device="auto")
    k = len(data)
    p, m, ceiling_readers, ceiling_score = (np.zeros(k) for _ in range(4))
    rng = np.random.default_rng(0)
    for i, (samples, p_i) in enumerate(draws(seg, data, args.n, args.steps, True)):
        p[i], m[i] = p_i, mean_pairwise_iou(samples)
        # the ceiling: 4 pseudo-readers from the model against the score of the rest
        pseudo = samples[:4] & (rng.random(4) < p_i)[:, None, None]
        ceiling_readers[i] = 1 - mean_pairwise_iou(pseudo)
        ceiling_score[i] = 1 - expected_agreement(p_i, mean_pairwise_iou(samples[4:]))
    readers = np.array([1 - mean_pairwise_iou(y) for y in data.masks.astype(bool)])
    unconditional = np.array([1 - mean_pairwise_iou(s)
                              for s, _ in draws(seg, data, args.n, args.steps, False)])
    candidates = {
        "score = 1 - (p^2 m + (1 - p)^2) (shipped)": 1 - expected_agreement_all(p, m),
        "outline spread only, 1 - m": 1 - m,
        "finding uncertainty only, 2 p (1 - p)": 2 * p * (1 - p),
        f"unconditional samples, 1 - mean pairwise IoU (N = {args.n})": unconditional,
    }
    groups = nodules(args.split, k)
    which = f"all of `{args.split}`" if args.limit is None else f"the first {k} of `{args.split}`"
    lines = [f"## Triage: ranking by disagreement (LIDC `{args.split}`)", "",
             f"{k} slices ({which}) of {len(np.unique(groups))} findings (patients never used "
             f"in training), N = {args.n}, the model's steps, slice i with seed i. Readers' "
             "disagreement: 1 - their mean pairwise IoU (empty-vs-empty = agreement); "
             "\"readers disagree\": that mean IoU < 0.5 (a finding: averaged over its slices). "
             "Noise ceiling: the model's own 4 pseudo-readers against the shipped score of its "
             "other samples (the best a score can do against 4 readers if the model were "
             "right). Targets: per slice at or above the ceiling, per finding rho >= 0.5.", ""]
    for level, g in (("per slice", None), ("per finding", groups)):
        got, positives, count = figures(candidates, readers, g)
        ceil, _, _ = figures({"ceiling": ceiling_score}, ceiling_readers, g)
        lines += [f"### {level.capitalize()} ({count}, readers disagree on {positives})", "",
                  "| score | Spearman rho | AUROC (readers disagree) |", "|---|---|---|"]
        lines += [f"| {name} | {r:.3f} | {a:.3f} |" for name, (r, a) in got.items()]
        r, a = ceil["ceiling"]
        lines += [f"| noise ceiling (model as readers) | {r:.3f} | {a:.3f} |", ""]
    cmd = f"python benchmarks/triage_score.py --split {args.split}" + (
        "" if args.limit is None else f" --limit {args.limit}")
    lines += [f"Machine: {machine()}.", f"Command: `{cmd} --write-doc`"]
    text = "\n".join(lines)
    print(text)
    if args.write_doc:
        print(f"written to {write_section('triage_score', text)}")
    return 0


def expected_agreement_all(p: np.ndarray, m: np.ndarray) -> np.ndarray:
    return np.array([expected_agreement(a, b) for a, b in zip(p, m)])


if __name__ == "__main__":
    sys.exit(main())
