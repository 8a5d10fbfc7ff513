"""Ablations under one equal budget: prediction type, input scale b, the CIMD latent.

    python benchmarks/ablations.py --runs /path/to/runs [--iterations 1500] [--batch-size 16]
        [--val-limit 200] [--only x,eps] [--write-doc [--section ablations]]

Each variant changes one thing from the default recipe (x-prediction, b = 0.1, v-loss
weighting SNR+1, no latent) and trains with the same iterations, batch, lr schedule and seed;
all are evaluated with the same sampler (10 ancestral steps, N = 16) on the same evenly spaced
`val` slices. Runs resume where they stopped (each has its own folder under --runs); a variant
with val_metrics.json is not evaluated again.
The loss weighting stays SNR+1 for every prediction type, so only the parameterisation changes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _report import machine, write_section  # noqa: E402

from napari_ambiseg.config import ModelConfig, Scope  # noqa: E402
from napari_ambiseg.segmenter import Segmenter  # noqa: E402
from napari_ambiseg.training.config import TrainConfig  # noqa: E402
from napari_ambiseg.training.data import load_npz  # noqa: E402
from napari_ambiseg.training.evaluate import evaluate_model  # noqa: E402
from napari_ambiseg.training.trainer import train  # noqa: E402
from napari_ambiseg.weights_io import load_weights  # noqa: E402

LIDC = Path(__file__).resolve().parents[2] / "shared" / "data" / "lidc"
VARIANTS = {
    "x": {},                                  # the default recipe
    "eps": {"prediction": "eps"},
    "v": {"prediction": "v"},
    "b=1": {"input_scale": 1.0},
    "latent": {"latent_dim": 6},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", required=True)
    ap.add_argument("--iterations", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--val-limit", type=int, default=200)
    ap.add_argument("--only", default=",".join(VARIANTS))
    ap.add_argument("--write-doc", action="store_true")
    ap.add_argument("--section", default="ablations",
                    help="docs/benchmarks.md section to write (one per budget)")
    args = ap.parse_args()

    train_data = load_npz(LIDC / "train.npz")
    val = load_npz(LIDC / "val.npz")
    val = val.subset(np.linspace(0, len(val) - 1, min(args.val_limit, len(val))).astype(int))
    results = {}
    for name in args.only.split(","):
        out = Path(args.runs) / f"ablation_{name.replace('=', '')}"
        cfg = ModelConfig(scope=Scope(pixel_spacing_mm=0.7), **VARIANTS[name])
        tcfg = TrainConfig(iterations=args.iterations, batch_size=args.batch_size, lr=5e-4,
                           warmup=min(300, args.iterations // 5), val_every=10**9,
                           checkpoint_every=100, seed=0)
        t = time.perf_counter()
        if (out / "val_metrics.json").is_file():  # done earlier: reuse its figures
            results[name] = json.loads((out / "val_metrics.json").read_text())
            continue
        if not (out / "last.safetensors").is_file():
            train(cfg, tcfg, out, resume=True, train_data=train_data)
        model, mcfg, info = load_weights(out / "last")
        m = evaluate_model(Segmenter(model, mcfg, "auto"), val, n=16, steps=10, seed=0)
        m["train_s"] = info.get("elapsed_s")
        results[name] = m
        (out / "val_metrics.json").write_text(json.dumps(m, indent=2))
        print(name, {k: round(v, 4) for k, v in m.items() if isinstance(v, float)},
              f"({time.perf_counter() - t:.0f} s)", flush=True)
    lines = [f"## Ablations ({args.iterations} iterations x batch {args.batch_size} each, "
             f"{len(val)} `val` slices, N = 16, 10 steps)", "",
             "| variant | GED16 | HM-IoU16 | CI | ECE | training s |", "|---|---|---|---|---|---|"]
    lines += [f"| {k} | {m['ged']:.3f} | {m['hm_iou']:.3f} | {m['ci']:.3f} | {m['ece']:.4f} | "
              f"{m['train_s']} |" for k, m in results.items()]
    lines += ["", f"Machine: {machine()}.", f"Command: `python benchmarks/ablations.py --runs RUNS "
              f"--iterations {args.iterations} --batch-size {args.batch_size} --val-limit "
              f"{args.val_limit} --write-doc --section {args.section}`"]
    text = "\n".join(lines)
    print(text)
    if args.write_doc:
        write_section(args.section, text)


if __name__ == "__main__":
    main()
