"""Can the drawn outlines say whether the finding is on the slice? Every sample is drawn as if
it existed (as in existence_oracle.py); a logistic model maps the head's logit and what the
16 outlines look like (how many are empty, their size, how much they agree) to the readers'
non-empty share. Fitted on `val` (soft-target BCE), judged on `test`: BCE against the share,
and GED / HM-IoU / empty rows when samples are emptied with its p instead of the head's.

    python benchmarks/existence_from_outlines.py [--limit 400] [--cache DIR] [--write-doc]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from _report import machine, write_section  # noqa: E402
from existence_oracle import LIDC, figures, outlines_and_p, readers_share  # noqa: E402

from napari_ambiseg.existence import existence_draws  # noqa: E402
from napari_ambiseg.segmenter import Segmenter  # noqa: E402
from napari_ambiseg.training.data import load_npz  # noqa: E402

FEATURES = ("head logit", "share of empty outlines", "log mean outline area",
            "mean pairwise IoU of the outlines", "area spread (std / mean)")


def outline_features(outlines: np.ndarray, p: np.ndarray) -> np.ndarray:
    """(K, n, H, W) bool outlines and the head's p (K,) -> (K, len(FEATURES))."""
    k, n = outlines.shape[:2]
    flat = outlines.reshape(k, n, -1).astype(np.float32)
    area = flat.sum(-1)
    inter = np.einsum("knp,kmp->knm", flat, flat)
    union = area[:, :, None] + area[:, None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    off = ~np.eye(n, dtype=bool)
    pc = np.clip(p, 1e-6, 1 - 1e-6)
    return np.stack([np.log(pc / (1 - pc)), (area == 0).mean(1), np.log1p(area.mean(1)),
                     iou[:, off].mean(1), area.std(1) / np.maximum(area.mean(1), 1)], 1)


def fit(x: np.ndarray, y: np.ndarray, l2: float = 1e-3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logistic regression with soft targets (standardised inputs): mean, scale, weights."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    xt = torch.as_tensor((x - mu) / sd, dtype=torch.float64)
    yt = torch.as_tensor(y, dtype=torch.float64)
    w = torch.zeros(x.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(xt @ w[1:] + w[0], yt) + l2 * (w[1:] ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return mu, sd, w.detach().numpy()


def predict(model, x: np.ndarray) -> np.ndarray:
    mu, sd, w = model
    return 1 / (1 + np.exp(-(((x - mu) / sd) @ w[1:] + w[0])))


def bce(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def split_outlines(seg, split: str, limit: int, cache: Path | None):
    data = load_npz(LIDC / f"{split}.npz")
    if limit and limit < len(data):
        data = data.subset(np.linspace(0, len(data) - 1, limit).astype(int))
    path = None if cache is None else cache / f"outlines_{split}_{limit}.npz"
    if path is not None and path.is_file():
        z = np.load(path)
        return data, z["outlines"], z["p"]
    outlines, p = outlines_and_p(seg, data, 16, 0)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, outlines=outlines, p=p)
    return data, outlines, p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=400)
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--write-doc", action="store_true")
    args = ap.parse_args()
    seg = Segmenter.load(None, device="cpu")
    sets = {s: split_outlines(seg, s, args.limit, args.cache) for s in ("val", "test")}
    share = {s: readers_share(d) for s, (d, _, _) in sets.items()}
    feats = {s: outline_features(o, p) for s, (_, o, p) in sets.items()}
    model = fit(feats["val"], share["val"])
    data, outlines, p_head = sets["test"]
    p_new = predict(model, feats["test"])
    floor = bce(share["test"], share["test"])
    lines = [f"## Existence from the drawn outlines ({args.limit} evenly spaced `val` slices "
             f"to fit, {args.limit} `test` slices to judge, N = 16)", "",
             "Features: " + ", ".join(FEATURES) + "; logistic, soft-target BCE, fitted on "
             "`val`. Weights (standardised): " + ", ".join(
                 f"{n} {w:+.2f}" for n, w in zip(FEATURES, model[2][1:])) + ".", "",
             f"`test` BCE against the readers' share: head {bce(p_head, share['test']):.3f}, "
             f"from the outlines {bce(p_new, share['test']):.3f} (the share's own entropy "
             f"{floor:.3f}).", "",
             "| existence | GED | HM-IoU | CI | empty where 1 / 2 / 3 / 4 readers outlined |",
             "|---|---|---|---|---|"]
    u = existence_draws(torch.Generator().manual_seed(0), *outlines.shape[:2]).numpy()
    for name, p in (("the head's p (as shipped)", p_head), ("p from the outlines", p_new)):
        keep = u < p[:, None]  # the shipped sampler's stratified draws, the same for both
        f = figures(np.where(keep[..., None, None], outlines, False), data)
        rows = " / ".join(f"{100 * f['empty_by_readers'].get(r, float('nan')):.0f}%"
                          for r in (1, 2, 3, 4))
        lines.append(f"| {name} | {f['ged']:.3f} | {f['hm_iou']:.3f} | {f['ci']:.3f} | {rows} |")
        print(lines[-1], flush=True)
    lines += ["", f"Machine: {machine()}.",
              f"Command: `python benchmarks/existence_from_outlines.py --limit {args.limit} "
              "--write-doc`"]
    text = "\n".join(lines)
    print(text)
    if args.write_doc:
        write_section("existence_outlines", text)


if __name__ == "__main__":
    main()
