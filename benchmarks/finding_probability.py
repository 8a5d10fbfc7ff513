"""The first answer: is the finding probability calibrated against the readers' share?

    python benchmarks/finding_probability.py [--split test] [--weights W] [--write-doc]

For every slice of a LIDC split: the model's p(readers outline a finding) at the crop centre
(`training.evaluate.finding_probabilities`: image encoder and existence head, exactly what
`ambiseg evaluate` writes to finding_probability.npy) against the share of the 4 readers who
outlined something on that slice. Prints and (with --write-doc) writes to docs/benchmarks.md:
ECE over 10 equal-width bins, BCE against the share beside the best constant (the split's
mean share, known only after the fact) and the readers' own entropy (the floor), mean p by
number of readers who outlined, and a reliability plot (docs/img/finding_reliability.png).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _report import DOCS, machine, write_section  # noqa: E402

from napari_ambiseg import metrics  # noqa: E402
from napari_ambiseg.segmenter import Segmenter  # noqa: E402
from napari_ambiseg.training.data import load_npz  # noqa: E402
from napari_ambiseg.training.evaluate import (  # noqa: E402
    finding_calibration,
    finding_probabilities,
)

LIDC = Path(__file__).resolve().parents[2] / "shared" / "data" / "lidc"


def by_readers(p: np.ndarray, data) -> list[str]:
    marked = data.masks.reshape(*data.masks.shape[:2], -1).any(-1).sum(1)
    lines = ["| readers who outlined | slices | mean finding probability | share |",
             "|---|---|---|---|"]
    raters = data.masks.shape[1]
    for k in range(raters + 1):
        g = marked == k
        if g.any():
            lines.append(f"| {k} of {raters} | {int(g.sum())} | {p[g].mean():.2f} | "
                         f"{k / raters:.2f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="test")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--write-doc", action="store_true")
    args = ap.parse_args(argv)
    data = load_npz(LIDC / f"{args.split}.npz")
    seg = Segmenter.load(args.weights, device="auto")
    p = finding_probabilities(seg, data)
    if p is None:
        print("this model has no existence head: it gives no finding probability")
        return 1
    cal = finding_calibration(p, data)
    plot = DOCS / "img" / "finding_reliability.png"
    if args.write_doc:
        metrics.reliability_diagram(cal, plot, xlabel="finding probability",
                                    ylabel="share of readers who outlined",
                                    title=f"LIDC {args.split}, {cal['count']} slices, "
                                          f"ECE {cal['ece']:.3f}")
    cmd = f"python benchmarks/finding_probability.py --split {args.split}" + (
        "" if args.weights is None else f" --weights {args.weights}")
    text = "\n".join([
        f"## Finding probability on LIDC `{args.split}`", "",
        f"{cal['count']} slices (all of `{args.split}`: patients never used in training), one "
        "value per slice at the crop centre; target: ECE <= 0.05 (10 equal-width bins).", "",
        "| | value |", "|---|---|",
        f"| ECE (10 bins) | {cal['ece']:.3f} |",
        f"| BCE against the readers' share | {cal['bce']:.3f} |",
        f"| BCE of the best constant ({cal['mean_share']:.2f}, the split's mean share) | "
        f"{cal['bce_constant']:.3f} |",
        f"| BCE floor (the readers' own entropy) | {cal['bce_floor']:.3f} |",
        f"| mean finding probability / mean share | {cal['mean_probability']:.3f} / "
        f"{cal['mean_share']:.3f} |", "",
        *by_readers(p, data), "",
        "Reliability plot: `docs/img/finding_reliability.png` (bars: the readers' share per "
        "bin of finding probability; dots: bin means).", "",
        f"Machine: {machine()}.", f"Command: `{cmd} --write-doc`"])
    print(text)
    if args.write_doc:
        print(f"written to {write_section('finding_probability', text)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
