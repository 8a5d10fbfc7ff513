"""Speed of sampling: parameters, FLOPs per network evaluation, and wall time for N masks.

    python benchmarks/bench_speed.py [--weights W] [--n 16] [--steps 10] [--repeats 7] [--write-doc]

Times `Segmenter.sample` end to end (crop, normalise, encode once, N x steps evaluations,
paste back, agreement, entropy, modes) on a real LIDC test crop when ../shared is present,
else on CT_small.dcm. The median of --repeats runs after one warm-up is reported. Also times
the evaluation metric: GED16 over 300 images (16 masks vs 4 readers, 128x128; target < 2 s).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).parent))
from _report import machine, write_section  # noqa: E402

from napari_ambiseg import metrics  # noqa: E402
from napari_ambiseg.config import ModelConfig  # noqa: E402
from napari_ambiseg.models import build_model  # noqa: E402
from napari_ambiseg.segmenter import Segmenter  # noqa: E402
from napari_ambiseg.weights_io import bundled_weights_path  # noqa: E402

LIDC_TEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "lidc" / "test.npz"


def test_image() -> tuple[np.ndarray, str]:
    if LIDC_TEST.is_file():
        with np.load(LIDC_TEST) as d:
            return d["images"][0], "LIDC test crop 0 (128x128 uint8)"
    import pydicom

    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    return pydicom.pixels.apply_modality_lut(ds.pixel_array, ds), "CT_small.dcm (128x128 HU)"


def ged16_seconds(images: int = 300, size: int = 128) -> float:
    """Wall time of GED16 (16 samples vs 4 readers) over `images` random images."""
    rng = np.random.default_rng(4)
    s, y = rng.random((16, size, size)) < 0.3, rng.random((4, size, size)) < 0.3
    t = time.perf_counter()
    for _ in range(images):
        metrics.ged(s, y)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default=None)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--write-doc", action="store_true")
    args = ap.parse_args()

    if args.weights or bundled_weights_path().is_file():
        seg = Segmenter.load(args.weights, device="cpu")
        source = args.weights or "bundled"
    else:
        cfg = ModelConfig()
        seg, source = Segmenter(build_model(cfg), cfg, "cpu"), "untrained default config"
    cfg, model = seg.cfg, seg.model
    params = sum(p.numel() for p in model.parameters())
    enc_params = sum(p.numel() for p in model.encoder.parameters())
    c = cfg.crop_size
    with torch.inference_mode():
        with FlopCounterMode(display=False) as fc:
            feats = model.encode_image(torch.zeros(1, cfg.in_channels, c, c))
        enc_flops = fc.get_total_flops()
        with FlopCounterMode(display=False) as fc:
            z = torch.zeros(1, cfg.latent_dim) if cfg.latent_dim else None
            model.denoise(torch.zeros(1, 1, c, c), torch.zeros(1), feats, z)
        eval_flops = fc.get_total_flops()

    image, what = test_image()
    seg.sample(image, n=args.n, steps=args.steps, seed=0)  # warm-up
    runs = []
    for r in range(args.repeats):
        t = time.perf_counter()
        res = seg.sample(image, n=args.n, steps=args.steps, seed=r)
        runs.append(time.perf_counter() - t)
    med = statistics.median(runs)
    lines = [
        f"- model: {source}; {params / 1e6:.2f} M parameters ({enc_params / 1e6:.2f} M in the "
        f"image encoder, run once per request), crop {c}x{c}",
        f"- FLOPs: image encoder {enc_flops / 1e9:.3f} GFLOP once; mask denoiser "
        f"{eval_flops / 1e9:.3f} GFLOP per evaluation per mask; {args.n} masks x {args.steps} "
        f"steps = {(enc_flops + args.n * args.steps * eval_flops) / 1e9:.2f} GFLOP per request",
        f"- wall time for {args.n} masks, {args.steps} steps ({args.steps} network evaluations "
        f"per mask), end to end on {what}: median {med:.3f} s, min {min(runs):.3f} s, "
        f"max {max(runs):.3f} s over {args.repeats} runs (target <= 1.0 s)",
        "- split of the last run: " + ", ".join(f"{k} {v:.3f} s" for k, v in res.timings.items()),
        f"- evaluation metric: GED16 (16 masks vs 4 readers, 128x128) over 300 images in "
        f"{ged16_seconds():.2f} s (target < 2 s)",
        f"- machine: {machine()}",
        f"- command: `python benchmarks/bench_speed.py --n {args.n} --steps {args.steps} "
        f"--repeats {args.repeats} --write-doc`",
    ]
    text = "## Sampling speed\n\n" + "\n".join(lines)
    print(text)
    if args.write_doc:
        print("written to", write_section("speed", text))


if __name__ == "__main__":
    main()
