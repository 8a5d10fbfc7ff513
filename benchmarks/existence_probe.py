"""How well "is the nodule on this slice" can be read from one crop: the bundled existence
head's mean p per readers' share on `val`, its BCE against the share, the share's own entropy
(the BCE of a head that knew each share exactly), the same head re-fitted on the frozen
encoder's pooled deepest features, (--cnn-minutes) a small CNN trained from scratch on the
64x64 crops the model sees, and (--context-minutes) the same CNN given the whole 128x128
context as well (a second channel: the context at half resolution, same cost per iteration).

    python benchmarks/existence_probe.py [--refit-epochs 60] [--cnn-minutes 12]
        [--context-minutes 0] [--skip-head]
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from existence_oracle import readers_share
from torch import nn

from napari_ambiseg.segmenter import Segmenter
from napari_ambiseg.training.augment import AugmentConfig, augment_batch
from napari_ambiseg.training.data import load_npz

LIDC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lidc"
SHARES = (0.25, 0.5, 0.75, 1.0)


def share(data) -> torch.Tensor:
    return torch.from_numpy(readers_share(data)).float()


def crops(data, idx, rng, train, context=False):
    """(B,1,64,64) crops as the model sees them; with context, (B,2,64,64): the crop and the
    whole augmented 128x128 view at half resolution."""
    x = augment_batch(data.images[idx], data.masks[idx, :1], 128 if context else 64,
                      AugmentConfig(enabled=train), rng, train=train)[0]
    return torch.cat([x[..., 32:96, 32:96], F.avg_pool2d(x, 2)], 1) if context else x


def by_share(p: torch.Tensor, y: torch.Tensor) -> str:
    return " / ".join(f"{float(p[(y - s).abs() < 1e-3].mean()):.2f}" for s in SHARES)


def report(name: str, p: torch.Tensor, y: torch.Tensor) -> None:
    print(f"{name}: val BCE {float(F.binary_cross_entropy(p, y)):.3f}; mean p on slices "
          f"1 / 2 / 3 / 4 readers outlined: {by_share(p, y)}", flush=True)


def pooled(model, data, rng, train, reps=1) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys, y = [], [], share(data)
    for _ in range(reps):
        for s in range(0, len(data), 256):
            idx = np.arange(s, min(s + 256, len(data)))
            with torch.no_grad():
                f = model.encode_image(crops(data, idx, rng, train))[-1]
            xs.append(torch.cat([f.mean((2, 3)), f.amax((2, 3))], 1))
            ys.append(y[idx])
    return torch.cat(xs), torch.cat(ys)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--refit-epochs", type=int, default=60)
    ap.add_argument("--cnn-minutes", type=float, default=0.0)
    ap.add_argument("--context-minutes", type=float, default=0.0)
    ap.add_argument("--skip-head", action="store_true", help="only the CNN probes")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    train, val = load_npz(LIDC / "train.npz"), load_npz(LIDC / "val.npz")
    yv = share(val)
    floor = F.binary_cross_entropy(yv.clamp(1e-6, 1 - 1e-6), yv)
    print(f"val: {len(val)} slices; the shares' own entropy (BCE of exact knowledge) "
          f"{float(floor):.3f}")
    if not args.skip_head:
        head_probe(train, val, yv, rng, args.refit_epochs)
    if args.cnn_minutes > 0:
        cnn_probe(train, val, yv, rng, args.cnn_minutes)
    if args.context_minutes > 0:
        cnn_probe(train, val, yv, rng, args.context_minutes, context=True)


def head_probe(train, val, yv, rng, epochs: int) -> None:
    model = Segmenter.load(None, device="cpu").model.float()
    xv, _ = pooled(model, val, rng, False)
    with torch.no_grad():
        report("bundled head", torch.sigmoid(model.existence.mlp(xv)[:, 0]), yv)
    xt, yt = pooled(model, train, rng, True, reps=2)
    head = copy.deepcopy(model.existence.mlp)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=1e-2)
    for _ in range(epochs):
        for i in torch.randperm(len(xt)).split(256):
            loss = F.binary_cross_entropy_with_logits(head(xt[i])[:, 0], yt[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        report(f"head re-fitted on frozen features ({len(xt)} crops, {epochs} epochs)",
               torch.sigmoid(head(xv)[:, 0]), yv)


def cnn_probe(train, val, yv, rng, minutes: float, context: bool = False) -> None:
    """A CNN trained from scratch for `minutes` (soft-target BCE, the training augmentation)
    on the 64x64 crops, with or without the whole context."""
    def block(i, o):
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.GroupNorm(4, o), nn.SiLU(),
                             nn.Conv2d(o, o, 3, padding=1), nn.GroupNorm(4, o), nn.SiLU(),
                             nn.MaxPool2d(2))

    net = nn.Sequential(block(2 if context else 1, 16), block(16, 32), block(32, 64),
                        block(64, 96), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(96, 1))
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-2)
    yt, xv = share(train), crops(val, np.arange(len(val)), rng, False, context)
    t0, it = time.time(), 0
    while time.time() - t0 < minutes * 60:
        idx = rng.integers(len(train), size=64)
        x = crops(train, idx, rng, True, context)
        loss = F.binary_cross_entropy_with_logits(net(x)[:, 0], yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        it += 1
    with torch.no_grad():
        what = "crop + 128x128 context" if context else "64x64 crop"
        report(f"CNN from scratch on the {what} ({it} iterations of 64, {minutes:g} min)",
               torch.sigmoid(net.eval()(xv)[:, 0]), yv)


if __name__ == "__main__":
    main()
