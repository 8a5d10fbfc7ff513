"""How much of the HM-IoU / GED gap is the existence decision: the bundled model's outlines
with (a) its own existence draws from its p, independent per sample (as model 5 first
shipped) and stratified (`existence_draws`, as shipped now), (b) an oracle that makes exactly
round(share x N) samples non-empty, share = the readers' non-empty share on that slice,
(c) every sample outlined.

Every sample is first drawn as if it existed (the head's logit forced high; the head's p is
kept), so the rows share the same outlines and differ only in which are emptied.

    python benchmarks/existence_oracle.py [--split test] [--limit 400] [--n 16] [--write-doc]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _report import machine, write_section  # noqa: E402

from napari_ambiseg import metrics  # noqa: E402
from napari_ambiseg.existence import existence_draws  # noqa: E402
from napari_ambiseg.segmenter import Segmenter  # noqa: E402
from napari_ambiseg.training.data import load_npz  # noqa: E402
from napari_ambiseg.training.evaluate import sample_dataset  # noqa: E402

LIDC = Path(__file__).resolve().parents[2] / "shared" / "data" / "lidc"


def outlines_and_p(seg: Segmenter, data, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Samples (K, n, H, W) with every sample existing, and the head's p (K,)."""
    model, logits = seg.model, []
    own = model.existence_logit

    def forced(feats):
        logit = own(feats)
        logits.append(logit.float().cpu())
        return torch.full_like(logit, 30.0)  # p = 1: every sample is drawn

    model.existence_logit = forced
    try:
        samples = sample_dataset(seg, data, n, None, seed)
    finally:
        del model.existence_logit  # the class's method again
    p = torch.sigmoid(torch.cat(logits)).numpy()
    assert len(p) == len(data), "one existence logit per slice"
    return samples, p


def independent_draws(generator: torch.Generator, rows: int, n: int) -> torch.Tensor:
    """Existence drawn independently per sample (model 5 as first shipped): the counterpart
    of `segmenter.existence_draws`, for comparisons only."""
    return torch.rand((rows, n), generator=generator)


def marked(masks: np.ndarray) -> np.ndarray:
    """(K, R, H, W) -> (K, R) bool: which masks are non-empty (readers or samples)."""
    return masks.reshape(*masks.shape[:2], -1).any(-1)


def readers_share(data) -> np.ndarray:
    """The readers' non-empty share per slice (K,)."""
    return marked(data.masks).mean(1)


def figures(samples: np.ndarray, data) -> dict:
    per = [metrics.evaluate_set(s, y) for s, y in zip(samples, data.masks)]
    out = metrics.summarize(per)
    outlined, empty = marked(data.masks).sum(1), ~marked(samples)
    out["empty_by_readers"] = {int(r): float(empty[outlined == r].mean())
                               for r in np.unique(outlined)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=400)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write-doc", action="store_true")
    args = ap.parse_args()
    data = load_npz(LIDC / f"{args.split}.npz")
    if args.limit and args.limit < len(data):
        data = data.subset(np.linspace(0, len(data) - 1, args.limit).astype(int))
    seg = Segmenter.load(None, device="cpu")
    outlines, p = outlines_and_p(seg, data, args.n, args.seed)
    share = readers_share(data)
    empty = np.zeros_like(outlines)

    def drawn(draw):  # which samples exist under an existence rule
        return draw(torch.Generator().manual_seed(args.seed), len(data), args.n).numpy() < p[:, None]

    own, stratified = drawn(independent_draws), drawn(existence_draws)
    oracle = np.arange(args.n)[None, :] < np.round(share * args.n)[:, None]

    def emptied(keep):
        return np.where(keep[..., None, None], outlines, empty)

    rows = {"own p, independent draws (model 5 as first shipped)": emptied(own),
            "own p, stratified draws (as shipped)": emptied(stratified),
            "oracle: round(share x N) outlined": emptied(oracle),
            "every sample outlined": outlines}
    lines = [f"## Existence: the model's draws against an oracle ({len(data)} evenly spaced "
             f"`{args.split}` slices, N = {args.n})", "",
             "The shipped model's outlines, each slice sampled once with every sample drawn; "
             "the rows differ only in which samples are then emptied.", "",
             "| existence | GED | HM-IoU | CI | empty where 1 / 2 / 3 / 4 readers outlined |",
             "|---|---|---|---|---|"]
    for name, samples in rows.items():
        f = figures(samples, data)
        e = " / ".join(f"{100 * f['empty_by_readers'].get(r, float('nan')):.0f}%"
                       for r in (1, 2, 3, 4))
        lines.append(f"| {name} | {f['ged']:.3f} | {f['hm_iou']:.3f} | {f['ci']:.3f} | {e} |")
        print(lines[-1], flush=True)
    readers = figures(data.masks.astype(bool), data)["empty_by_readers"]
    lines += ["", "Readers' own empty share: " + " / ".join(
        f"{100 * readers.get(r, float('nan')):.0f}%" for r in (1, 2, 3, 4)) + ".", "",
        f"Machine: {machine()}.",
        f"Command: `python benchmarks/existence_oracle.py --split {args.split} --limit "
        f"{args.limit} --n {args.n} --write-doc`"]
    text = "\n".join(lines)
    print(text)
    if args.write_doc:
        write_section("existence_oracle", text)


if __name__ == "__main__":
    main()
